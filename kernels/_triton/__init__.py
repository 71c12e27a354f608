"""Triton kernels of ldb-hpc's fused ops, the package ``ldb_hpc._triton`` (contract: ``ldb_hpc.ops.reference``).

The build maps this folder (kernels/_triton) as ``ldb_hpc._triton`` (pyproject.toml, ``wheel.packages``): a wheel
carries these files, and an editable install imports them from here, so an edit needs no reinstall.
One module per op, launcher beside kernel; :mod:`ldb_hpc._triton.ops` gathers the launchers.

Import ``ldb_hpc._triton.ops`` (or an op module) only where Triton is usable: on a CUDA device, or with
``TRITON_INTERPRET=1`` set in the environment before the import (CPU tensors, Triton's interpreter; how the
tests run them).
"""
