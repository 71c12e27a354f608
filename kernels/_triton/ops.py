"""Every Triton op in one namespace: the table ``ldb_hpc.ops`` dispatches to (and the tests and benchmarks call).

One module per op (or small family), each launcher right beside its ``@triton.jit`` kernel; the contract
(names, signatures, shapes, numerics) is :mod:`ldb_hpc.ops.reference`:

- ``vq``: ``vq_nearest`` (``vq_kernel``);
- ``noise``: ``gaussian_noise``, ``diffusion_step`` (``noise_kernel``, ``diffusion_kernel``);
- ``build``: ``build_atoms`` (``build_kernel``, ``proline_kernel``);
- ``clash``: ``clash_flags``, ``clash_score`` (``flags_kernel``, ``score_kernel``);
- ``message``: ``message_mean``, ``message_mean_proj`` (``message_kernel``, after a GEMM for the latter);
- ``knn``: torch's cdist and topk (no kernel of its own: on a GPU each is already one pass);
- ``common``: what they share (interpreter switch, launch options and numerics, precise sin / cos / log,
  ``alloc`` and the input checks of the launchers, the slot-mask table).

On a CUDA device the kernels are compiled by Triton; with ``TRITON_INTERPRET=1`` in the environment *before
the first of these modules is imported* they run on CPU tensors in Triton's interpreter (how the tests check
them without a GPU).
"""

from ldb_hpc._triton.build import BUILD_BLOCK_M, build_atoms
from ldb_hpc._triton.clash import CLASH_NB, clash_flags, clash_score
from ldb_hpc._triton.common import INTERPRET
from ldb_hpc._triton.message import MESSAGE_BLOCK_R, message_mean, message_mean_proj
from ldb_hpc._triton.noise import NOISE_BLOCK, diffusion_step, gaussian_noise
from ldb_hpc._triton.vq import VQ_BLOCK_K, VQ_BLOCK_N, vq_nearest
from ldb_hpc.geometry.vectors import nearest as knn

# the op modules in import order (common first, this one last): what a test reloads to switch interpreter mode
MODULES = ("common", "vq", "noise", "build", "clash", "message", "ops")

__all__ = ["BUILD_BLOCK_M", "CLASH_NB", "INTERPRET", "MESSAGE_BLOCK_R", "MODULES", "NOISE_BLOCK", "VQ_BLOCK_K",
           "VQ_BLOCK_N", "build_atoms", "clash_flags", "clash_score", "diffusion_step", "gaussian_noise",
           "knn", "message_mean", "message_mean_proj", "vq_nearest"]
