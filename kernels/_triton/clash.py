"""clash_flags and clash_score in Triton: close pairs between a residue's side chain and its neighbours' atoms
(contract: ``ldb_hpc.ops.reference``; the pair rule of ``reference.pair_counts`` computed inline).

One program per row for clash_flags and per (row, candidate) for clash_score, with the neighbours walked in
blocks of ``CLASH_NB``; [M, k, 14, 14] is never stored. Numerics: :mod:`ldb_hpc._triton.common`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ldb_hpc._triton import common  # common.alloc: looked up per call (tests replace it)
from ldb_hpc._triton.common import CYS, LAUNCH, NUM_SLOTS, PRO, check_device, f32, i64, slot_mask

CLASH_NB = 8  # neighbours per inner step of the clash kernels (8 × 16 atom columns)


@triton.jit
def _pair_chunk(pos_ptr, nbr_ptr, adj_ptr, rt_ptr, exists_ptr, r, rt_i, k, j0, ax, ay, az, ok_i, a_slot,
                PRO: tl.constexpr, CYS: tl.constexpr, NSLOT: tl.constexpr, NB: tl.constexpr,
                BLOCK_S: tl.constexpr):
    """Distances [BLOCK_S, NB·BLOCK_S] between the atoms (ax, ay, az [BLOCK_S]) standing in for row r and the
    atoms of r's neighbours j0 .. j0+NB−1, and which of those pairs count (reference.pair_counts, inline)."""
    col = tl.arange(0, NB * BLOCK_S)
    jn = j0 + col // BLOCK_S
    b = col % BLOCK_S
    cm = (jn < k) & (b < NSLOT)
    nb = tl.load(nbr_ptr + r * k + jn, mask=cm, other=0)
    adj = tl.load(adj_ptr + r * k + jn, mask=cm, other=0) != 0
    rt_j = tl.load(rt_ptr + nb, mask=cm, other=0)
    ex_j = tl.load(exists_ptr + rt_j * NSLOT + b, mask=cm, other=0) != 0
    ex_j = ex_j & cm
    bx = tl.load(pos_ptr + nb * (NSLOT * 3) + b * 3 + 0, mask=ex_j, other=0.0)
    by = tl.load(pos_ptr + nb * (NSLOT * 3) + b * 3 + 1, mask=ex_j, other=0.0)
    bz = tl.load(pos_ptr + nb * (NSLOT * 3) + b * 3 + 2, mask=ex_j, other=0.0)
    # j's proline CD is bonded to its own N: exempt for sequence neighbours; Cys SG–SG exempt (disulfides)
    ok_j = ex_j & ~(adj & (rt_j == PRO) & (b == 6))
    sg_i = (a_slot == 5) & (rt_i == CYS)
    sg_j = (b == 5) & (rt_j == CYS)
    ok = ok_i[:, None] & ok_j[None, :] & ~(sg_i[:, None] & sg_j[None, :])
    dx = ax[:, None] - bx[None, :]
    dy = ay[:, None] - by[None, :]
    dz = az[:, None] - bz[None, :]
    d = tl.sqrt_rn(dx * dx + dy * dy + dz * dz)
    return d, ok


@triton.jit
def _own_atoms(src_ptr, rt_ptr, exists_ptr, r, NSLOT: tl.constexpr, BLOCK_S: tl.constexpr):
    """Side-chain atoms (slot ≥ 5, present for r's type) of one [14, 3] block: (x, y, z, ok, slot, restype)."""
    a = tl.arange(0, BLOCK_S)
    rt_i = tl.load(rt_ptr + r)
    ok_i = (tl.load(exists_ptr + rt_i * NSLOT + a, mask=a < NSLOT, other=0) != 0) & (a >= 5) & (a < NSLOT)
    ax = tl.load(src_ptr + a * 3 + 0, mask=ok_i, other=0.0)
    ay = tl.load(src_ptr + a * 3 + 1, mask=ok_i, other=0.0)
    az = tl.load(src_ptr + a * 3 + 2, mask=ok_i, other=0.0)
    return ax, ay, az, ok_i, a, rt_i


def _clash_inputs(pos, rows, nbr, adjacent, restype):
    dev = check_device(pos, rows, nbr, adjacent, restype)
    pos, rows, nbr, rt = f32(pos), i64(rows), i64(nbr), i64(restype)
    R = pos.shape[0]
    if pos.shape != (R, NUM_SLOTS, 3) or nbr.dim() != 2 or nbr.shape[0] != R or adjacent.shape != nbr.shape \
            or rt.shape != (R,) or rows.dim() != 1:
        raise ValueError(f"clash: shapes pos {tuple(pos.shape)}, rows {tuple(rows.shape)}, nbr {tuple(nbr.shape)}, "
                         f"adjacent {tuple(adjacent.shape)}, restype {tuple(rt.shape)}")
    adj = adjacent.to(torch.bool).contiguous().view(torch.uint8)
    return dev, pos, rows, nbr, adj, rt


@triton.jit
def flags_kernel(pos_ptr, rows_ptr, nbr_ptr, adj_ptr, rt_ptr, exists_ptr, out_ptr, k, trigger,
                 PRO: tl.constexpr, CYS: tl.constexpr, NSLOT: tl.constexpr, NB: tl.constexpr,
                 BLOCK_S: tl.constexpr):
    m = tl.program_id(0).to(tl.int64)
    r = tl.load(rows_ptr + m)
    ax, ay, az, ok_i, a_slot, rt_i = _own_atoms(pos_ptr + r * (NSLOT * 3), rt_ptr, exists_ptr, r, NSLOT, BLOCK_S)
    hit = tl.zeros([BLOCK_S, NB * BLOCK_S], tl.int32)
    for j0 in range(0, k, NB):
        d, ok = _pair_chunk(pos_ptr, nbr_ptr, adj_ptr, rt_ptr, exists_ptr, r, rt_i, k, j0, ax, ay, az, ok_i,
                            a_slot, PRO, CYS, NSLOT, NB, BLOCK_S)
        hit = hit | (ok & (d < trigger)).to(tl.int32)
    tl.store(out_ptr + m, tl.max(tl.max(hit, axis=1), axis=0).to(tl.int8))


def clash_flags(pos: torch.Tensor, rows: torch.Tensor, nbr: torch.Tensor, adjacent: torch.Tensor,
                restype: torch.Tensor, trigger: float) -> torch.Tensor:
    """pos [R, 14, 3] Å; rows [M] int64; nbr [R, k] int64 neighbour rows; adjacent [R, k] bool; restype [R] int64
    → [M] bool: row rows[m] has a counted pair (reference.pair_counts) closer than ``trigger`` Å."""
    dev, pos, rows, nbr, adj, rt = _clash_inputs(pos, rows, nbr, adjacent, restype)
    M, k = rows.shape[0], nbr.shape[1]
    out = common.alloc((M,), torch.int8, dev)
    if M == 0 or k == 0:  # no neighbours, no pairs (and no empty-tensor pointers handed to the kernel)
        return out.zero_().to(torch.bool)
    flags_kernel[(M,)](pos, rows, nbr, adj, rt, slot_mask(dev), out, k, float(trigger), PRO=PRO, CYS=CYS,
                       NSLOT=NUM_SLOTS, NB=CLASH_NB, BLOCK_S=16, **LAUNCH)
    return out.to(torch.bool)


@triton.jit
def score_kernel(cand_ptr, pos_ptr, rows_ptr, nbr_ptr, adj_ptr, rt_ptr, exists_ptr, out_ptr, M, k, contact,
                 PRO: tl.constexpr, CYS: tl.constexpr, NSLOT: tl.constexpr, NB: tl.constexpr,
                 BLOCK_S: tl.constexpr):
    m = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64)
    r = tl.load(rows_ptr + m)
    ax, ay, az, ok_i, a_slot, rt_i = _own_atoms(cand_ptr + (c * M + m) * (NSLOT * 3), rt_ptr, exists_ptr, r,
                                                NSLOT, BLOCK_S)
    acc = tl.zeros([BLOCK_S, NB * BLOCK_S], tl.float32)
    for j0 in range(0, k, NB):
        d, ok = _pair_chunk(pos_ptr, nbr_ptr, adj_ptr, rt_ptr, exists_ptr, r, rt_i, k, j0, ax, ay, az, ok_i,
                            a_slot, PRO, CYS, NSLOT, NB, BLOCK_S)
        v = tl.maximum(contact - d, 0.0)
        acc = acc + tl.where(ok, v * v, 0.0)
    tl.store(out_ptr + c * M + m, tl.sum(tl.sum(acc, axis=1), axis=0))


def clash_score(cand: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor, nbr: torch.Tensor, adjacent: torch.Tensor,
                restype: torch.Tensor, contact: float) -> torch.Tensor:
    """cand [C, M, 14, 3] Å candidate atoms of rows [M]; pos [R, 14, 3] Å current atoms; nbr [R, k]; adjacent
    [R, k] bool; restype [R] → [C, M] float32: Σ relu(contact − d)² over the counted pairs."""
    dev, pos, rows, nbr, adj, rt = _clash_inputs(pos, rows, nbr, adjacent, restype)
    cand = f32(cand)
    M, k = rows.shape[0], nbr.shape[1]
    if cand.dim() != 4 or cand.shape[1:] != (M, NUM_SLOTS, 3):
        raise ValueError(f"clash_score: cand {tuple(cand.shape)} for {M} rows")
    C = cand.shape[0]
    out = common.alloc((C, M), torch.float32, dev)
    if C * M == 0 or k == 0:
        return out.zero_()
    score_kernel[(M, C)](cand, pos, rows, nbr, adj, rt, slot_mask(dev), out, M, k, float(contact), PRO=PRO,
                         CYS=CYS, NSLOT=NUM_SLOTS, NB=CLASH_NB, BLOCK_S=16, **LAUNCH)
    return out
