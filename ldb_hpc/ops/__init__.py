"""The fused ops of the hot path, dispatched to one of three implementations with the same contract:

- ``reference``: pure torch (:mod:`ldb_hpc.ops.reference`, the oracle; any device);
- ``cpu``: C++17/OpenMP kernels (kernels/cpu → ``ldb_hpc._cpu``, launchers in :mod:`ldb_hpc.ops.cpu`);
- ``triton``: Triton kernels (kernels/_triton → ``ldb_hpc._triton``, launchers gathered in ``ldb_hpc._triton.ops``;
  CUDA, or CPU under TRITON_INTERPRET=1).

:func:`backend` picks one per call from the device of the op's first tensor: CUDA → triton when it imports and a
GPU is there, CPU → cpu when the extension was built, otherwise the reference. ``LDB_HPC_KERNELS=reference|cpu|
triton`` forces one (an unknown value, or a forced backend that cannot run, is an :class:`InputError`).
Non-float32 coordinates always take the reference. Shapes and units of every op: :mod:`ldb_hpc.ops.reference`.

Fallbacks are loud: a GPU run needs the Triton kernels (:func:`require_kernels`: an :class:`InputError` when
they do not import, or when ``TRITON_INTERPRET=1`` would run Triton's interpreter on the GPU) unless
``LDB_HPC_KERNELS=reference`` asks for the torch reference explicitly; and every call is counted by the
implementation that ran it (:func:`kernel_calls`), so a run summary shows how many fused-kernel calls ran and how
many fell back to the reference.
"""

from __future__ import annotations

import torch

from ldb_hpc.chem.residues import NUM_SLOTS
from ldb_hpc.geometry import atoms as geometry_atoms
from ldb_hpc.geometry.vectors import broadcast_shape
from ldb_hpc.ops.backends import (
    BACKENDS,
    ENV_VAR,
    available_backends,
    backend,
    count_call,
    implementation,
    kernel_calls,
    require_kernels,
)
from ldb_hpc.ops.reference import step_coefficients

__all__ = ["atoms_from_backbone", "available_backends", "backend", "build_atoms", "clash_flags", "clash_score",
           "diffusion_step", "gaussian_noise", "kernel_calls", "knn", "message_mean", "message_mean_proj",
           "require_kernels", "step_coefficients", "vq_nearest", "BACKENDS", "ENV_VAR"]


def vq_nearest(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z [N, d], codebook [K, d] float32 → (index [N] int64 of the nearest code (ties: lowest index),
    quantized [N, d] = codebook[index])."""
    return implementation(z.device, z, codebook).vq_nearest(z, codebook)


def gaussian_noise(seed: int, frame_ids: torch.Tensor, samples: int, step: int, n_res: int, dim: int) -> torch.Tensor:
    """Counter-based standard normals [B, S, L, D] float32 keyed by (seed, frame_ids[b] (global frame, [B] int64),
    sample, step, residue, channel) — :mod:`ldb_hpc.ops.noise`; on frame_ids' device."""
    return implementation(frame_ids.device).gaussian_noise(seed, frame_ids, samples, step, n_res, dim)


def diffusion_step(x_t: torch.Tensor, eps: torch.Tensor, coef: tuple, seed: int, step: int,
                   frame_ids: torch.Tensor) -> torch.Tensor:
    """One DDIM update x_t, eps [B, S, L, D] float32 → x_{t_prev}; coef from :func:`step_coefficients`; the noise
    (drawn only when coef[4] ≠ 0) is gaussian_noise(seed, frame_ids [B], S, step, L, D)."""
    return implementation(x_t.device, x_t, eps).diffusion_step(x_t, eps, coef, seed, step, frame_ids)


def build_atoms(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor, o_torsion: torch.Tensor, chi: torch.Tensor,
                restype: torch.Tensor) -> torch.Tensor:
    """n, ca, c [M, 3] Å; o_torsion [M] rad; chi [M, 4] rad; restype [M] int64 → atom14 [M, 14, 3] Å with ideal
    geometry (:func:`ldb_hpc.geometry.atoms.atoms_from_backbone` per row); absent slots zero."""
    return implementation(ca.device, n, ca, c, o_torsion, chi).build_atoms(n, ca, c, o_torsion, chi, restype)


def atoms_from_backbone(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor, o_torsion: torch.Tensor,
                        chi: torch.Tensor, restype: torch.Tensor) -> torch.Tensor:
    """:func:`ldb_hpc.geometry.atoms.atoms_from_backbone` over batched shapes, on the fused kernel when it can run.

    n, ca, c: [..., L, 3] Å; o_torsion: [..., L] rad; chi: [..., L, 4] rad; restype: [L] long → [..., L, 14, 3] Å.
    Float32 input without autograd runs :func:`build_atoms` (C++ on CPU, Triton on CUDA) unless the backend is the
    reference; anything else (float64, gradients) runs the differentiable torch builder."""
    args = (n, ca, c, o_torsion, chi)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in args)
    if not needs_grad and all(t.dtype == torch.float32 for t in args) and backend(ca.device) != "reference":
        # build_atoms below counts the call
        lead = broadcast_shape(n.shape[:-1], ca.shape[:-1], c.shape[:-1], o_torsion.shape, chi.shape[:-1],
                               restype.shape)
        flat = lambda x, k: x.expand(*lead, *k).reshape(-1, *k)  # noqa: E731
        pos = build_atoms(flat(n, (3,)), flat(ca, (3,)), flat(c, (3,)), flat(o_torsion, ()),
                          flat(chi, (4,)), flat(restype.to(torch.int64), ()))
        return pos.reshape(*lead, NUM_SLOTS, 3)
    count_call("reference")
    return geometry_atoms.atoms_from_backbone(n, ca, c, o_torsion, chi, restype)


def clash_flags(pos: torch.Tensor, rows: torch.Tensor, nbr: torch.Tensor, adjacent: torch.Tensor,
                restype: torch.Tensor, trigger: float) -> torch.Tensor:
    """pos [R, 14, 3] Å; rows [M] int64; nbr [R, k] int64; adjacent [R, k] bool; restype [R] int64 → [M] bool:
    row rows[m] has a counted pair (reference.pair_counts) with a neighbour closer than ``trigger`` Å."""
    return implementation(pos.device, pos).clash_flags(pos, rows, nbr, adjacent, restype, trigger)


def clash_score(cand: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor, nbr: torch.Tensor, adjacent: torch.Tensor,
                restype: torch.Tensor, contact: float) -> torch.Tensor:
    """cand [C, M, 14, 3] Å candidate atoms of rows [M]; pos [R, 14, 3] Å → [C, M] float32
    Σ relu(contact − d)² over the counted pairs with the current atoms of each row's neighbours."""
    return implementation(pos.device, cand, pos).clash_score(cand, pos, rows, nbr, adjacent, restype, contact)


def message_mean(node_j: torch.Tensor, node_i: torch.Tensor, edge: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """node_j, node_i [B, L, D]; edge [B, L, k, D] float32; nbr [B, L, k] int64 (within the frame) → [B, L, D]:
    mean over k of silu(node_j[b, nbr] + node_i + edge), the per-edge work of a message-passing layer in one pass
    (no [B, L, k, D] temporaries). Inference only: the kernels do not take gradients."""
    return implementation(node_j.device, node_j, node_i, edge).message_mean(node_j, node_i, edge, nbr)


def knn(points: torch.Tensor, k: int) -> torch.Tensor:
    """points [B, L, 3] float32 → [B, L, k'] int64 with k' = min(k, L − 1): every point's nearest other points of
    its frame, nearest first (C++: squared distances in one pass per row, ties to the lower index; torch's cdist and
    topk on other devices)."""
    k = max(0, min(k, points.shape[-2] - 1))
    return implementation(points.device, points).knn(points, k)


def message_mean_proj(node_j: torch.Tensor, node_i: torch.Tensor, edge: torch.Tensor, weight: torch.Tensor,
                      nbr: torch.Tensor) -> torch.Tensor:
    """:func:`message_mean` with the per-edge term ``linear(edge, weight)``: edge [B, L, k, E] features, weight
    [D, E]. The C++ kernel projects each edge in registers (no [B, L, k, D] tensor written and read back); the
    Triton path runs the projection as one GEMM, then :func:`message_mean`'s kernel. Inference only."""
    impl = implementation(node_j.device, node_j, node_i, edge, weight)
    return impl.message_mean_proj(node_j, node_i, edge, weight, nbr)
