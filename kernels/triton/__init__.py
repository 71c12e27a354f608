"""Triton kernels of ldb-hpc's fused ops (installed as ``ldb_hpc._triton``; contract: ``ldb_hpc.ops.reference``).

Import ``ldb_hpc._triton.ops`` only where Triton is usable: on a CUDA device, or with ``TRITON_INTERPRET=1``
set in the environment before the import (CPU tensors, Triton's interpreter; how the tests run them).
"""
