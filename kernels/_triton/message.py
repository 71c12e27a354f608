"""message_mean in Triton: mean over the k neighbours of silu(node_j[nbr] + node_i + edge), the per-edge work
of a message-passing layer (contract: ``ldb_hpc.ops.reference.message_mean``).

One program per block of ``MESSAGE_BLOCK_R`` residue rows; gather, both adds, SiLU and the mean in one pass.
The SiLU's exp is ``tl.exp`` (see :mod:`ldb_hpc._triton.common`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ldb_hpc._triton import common  # common.alloc: looked up per call (tests replace it)
from ldb_hpc._triton.common import LAUNCH, check_device, f32, i64

MESSAGE_BLOCK_R = 16  # residue rows per program


@triton.jit
def message_kernel(nj_ptr, ni_ptr, e_ptr, nbr_ptr, out_ptr, R, L, k, kf, D: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_R: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < R
    m2 = rmask[:, None] & (cols < D)[None, :]
    frame = (rows // L) * L
    own = tl.load(ni_ptr + rows[:, None] * D + cols[None, :], mask=m2, other=0.0)
    acc = tl.zeros([BLOCK_R, BLOCK_D], tl.float32)
    for j in range(0, k):
        src = frame + tl.load(nbr_ptr + rows * k + j, mask=rmask, other=0)
        x = tl.load(nj_ptr + src[:, None] * D + cols[None, :], mask=m2, other=0.0) + own
        x = x + tl.load(e_ptr + (rows[:, None] * k + j) * D + cols[None, :], mask=m2, other=0.0)
        acc = acc + tl.div_rn(x, 1.0 + tl.exp(-x))  # tl.exp: see the module notes
    tl.store(out_ptr + rows[:, None] * D + cols[None, :], tl.div_rn(acc, kf), mask=m2)


def message_mean(node_j: torch.Tensor, node_i: torch.Tensor, edge: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """node_j, node_i [B, L, D]; edge [B, L, k, D] float32; nbr [B, L, k] int64 within the frame (not checked on
    the device: the CA graph makes them) → [B, L, D] float32, mean over k of silu(node_j[b, nbr] + node_i + edge)."""
    dev = check_device(node_j, node_i, edge, nbr)
    nj, ni, e, nb = f32(node_j), f32(node_i), f32(edge), i64(nbr)
    if nj.dim() != 3 or ni.shape != nj.shape or nb.dim() != 3 or nb.shape[:2] != nj.shape[:2] \
            or e.shape != (*nb.shape, nj.shape[2]):
        raise ValueError(f"message_mean: shapes node_j {tuple(nj.shape)}, node_i {tuple(ni.shape)}, "
                         f"edge {tuple(e.shape)}, nbr {tuple(nb.shape)}")
    B, L, D = nj.shape
    k = nb.shape[2]
    out = common.alloc((B, L, D), torch.float32, dev)
    if B * L * D == 0:
        return out
    if k == 0:  # the mean of nothing, as torch has it
        return out.fill_(float("nan"))
    message_kernel[(triton.cdiv(B * L, MESSAGE_BLOCK_R),)](nj, ni, e, nb, out, B * L, L, k, float(k), D=D,
                                                           BLOCK_D=triton.next_power_of_2(D),
                                                           BLOCK_R=MESSAGE_BLOCK_R, **LAUNCH)
    return out


def message_mean_proj(node_j: torch.Tensor, node_i: torch.Tensor, edge: torch.Tensor, weight: torch.Tensor,
                      nbr: torch.Tensor) -> torch.Tensor:
    """message_mean with the per-edge term linear(edge, weight) (edge [B, L, k, E], weight [D, E]): on a GPU the
    projection is one GEMM (cuBLAS), then message_kernel; the C++ kernel fuses it instead (memory-bound on a CPU)."""
    check_device(node_j, node_i, edge, weight, nbr)
    return message_mean(node_j, node_i, torch.nn.functional.linear(f32(edge), f32(weight)), nbr)
