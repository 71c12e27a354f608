"""vq_nearest in Triton: the nearest code of each latent row (contract: ``ldb_hpc.ops.reference.vq_nearest``).

One program per block of ``VQ_BLOCK_N`` rows keeps a running (min, argmin) over the codebook in blocks of
``VQ_BLOCK_K`` codes and gathers the winner: N × K is never stored. Numerics: :mod:`ldb_hpc._triton.common`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ldb_hpc._triton import common  # common.alloc: looked up per call (tests replace it)
from ldb_hpc._triton.common import LAUNCH, check_device, f32

# Rows per program and codebook entries per inner step. Tests read them to pick shapes that are not multiples
# of a block.
VQ_BLOCK_N = 64
VQ_BLOCK_K = 64


@triton.jit
def vq_kernel(z_ptr, cb_ptr, idx_ptr, q_ptr, N, K, D: tl.constexpr, BLOCK_D: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    best = tl.full([BLOCK_N], float("inf"), tl.float32)
    best_i = tl.zeros([BLOCK_N], tl.int32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < K
        d2 = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for c in tl.static_range(D):  # channel order, each square rounded before the add (as the reference)
            zc = tl.load(z_ptr + rows * D + c, mask=rmask, other=0.0)
            ec = tl.load(cb_ptr + ks * D + c, mask=kmask, other=0.0)
            diff = zc[:, None] - ec[None, :]
            d2 = d2 + diff * diff
        d2 = tl.where(kmask[None, :], d2, float("inf"))
        bmin = tl.min(d2, axis=1)
        # lowest index among this block's minima; blocks come in increasing k and only a strictly smaller
        # distance replaces the running one, so ties across blocks keep the earlier (lower) index
        bidx = tl.min(tl.where((d2 == bmin[:, None]) & kmask[None, :], ks[None, :], K), axis=1)
        better = bmin < best
        best = tl.where(better, bmin, best)
        best_i = tl.where(better, bidx, best_i)
    tl.store(idx_ptr + rows, best_i.to(tl.int64), mask=rmask)
    cols = tl.arange(0, BLOCK_D)
    m2 = rmask[:, None] & (cols[None, :] < D)
    q = tl.load(cb_ptr + best_i[:, None].to(tl.int64) * D + cols[None, :], mask=m2, other=0.0)
    tl.store(q_ptr + rows[:, None] * D + cols[None, :], q, mask=m2)


def vq_nearest(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z [N, d], codebook [K, d] float32 → (index [N] int64, quantized [N, d] = codebook[index]).

    Nearest code by Σ_c (z_c − e_c)² in float32, channel order; ties to the lowest index. Never forms N×K."""
    dev = check_device(z, codebook)
    z, codebook = f32(z), f32(codebook)
    N, D = z.shape
    K = codebook.shape[0]
    if codebook.shape[1] != D:
        raise ValueError(f"z has {D} channels, codebook {codebook.shape[1]}")
    idx = common.alloc((N,), torch.int64, dev)
    q = common.alloc((N, D), torch.float32, dev)
    if N == 0:
        return idx, q
    if K == 0:
        raise ValueError("empty codebook")
    vq_kernel[(triton.cdiv(N, VQ_BLOCK_N),)](z, codebook, idx, q, N, K, D=D, BLOCK_D=triton.next_power_of_2(D),
                                             BLOCK_N=VQ_BLOCK_N, BLOCK_K=VQ_BLOCK_K, **LAUNCH)
    return idx, q
