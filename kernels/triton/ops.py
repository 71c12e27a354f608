"""Triton kernels of the fused ops; the contract (names, signatures, shapes, numerics) is
:mod:`ldb_hpc.ops.reference`.

Installed as ``ldb_hpc._triton.ops``. On a CUDA device the kernels are compiled by Triton; with
``TRITON_INTERPRET=1`` in the environment *before this module is imported* they run on CPU tensors in
Triton's interpreter (how the tests check them without a GPU).

Numerics, chosen so that the three implementations agree:

* every launch passes ``enable_fp_fusion=False``: the reference rounds each product before adding it, so an
  FMA would change the last bit of a distance (and could flip a VQ index);
* divisions and square roots of float32 values use the IEEE round-to-nearest forms (``div_rn``, ``sqrt_rn``)
  and, on the GPU, sin / cos / log come from libdevice (Triton's default ``tl.sin`` / ``tl.cos`` / ``tl.log``
  lower to fast approximations on NVIDIA); in the interpreter they are numpy's. The one exception is the exp of
  message_mean's SiLU, which is ``tl.exp`` (ex2.approx on NVIDIA, a few ulps): it shapes network activations,
  not coordinates or indices, and keeps the kernel free of libdevice's fused multiply-adds;
* the noise hash is uint32 arithmetic (wrapping multiply, logical shifts) and Box–Muller runs in float64;
  2π is loaded from a float64 tensor because a Python float literal inside a kernel is a float32 constant.

Layout of every launch: one program per block of rows (vq_nearest, gaussian_noise, diffusion_step,
build_atoms, message_mean), one program per residue row for the proline ring search, one program per (row, candidate)
for clash_score and per row for clash_flags, with the neighbours walked in blocks of ``CLASH_NB``.
Tables (Z-matrix, ideal geometry, slot masks) are tensors built once per device from
:mod:`ldb_hpc.chem.residues` and :func:`ldb_hpc.chem.ideal.ideal_geometry`; no geometry number is typed here.
The proline search grids come from ldb_hpc.geometry.atoms; its tie weight (1e-3, a compile-time constant here)
and the degeneracy thresholds of the frame construction (1e-6, 1e-3, 1e-24) repeat literals of
ldb_hpc.geometry.atoms and ldb_hpc.geometry.frames / vectors.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch

import triton
import triton.language as tl
from ldb_hpc.chem import residues as rc

# Triton picks interpreter or compiler when each @triton.jit is defined, from this same knob.
INTERPRET = bool(triton.knobs.runtime.interpret) if hasattr(triton, "knobs") else \
    os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")

# Block sizes (rows per program, codebook entries per inner step, ...). Tests read them to pick shapes
# that are not multiples of a block.
VQ_BLOCK_N = 64
VQ_BLOCK_K = 64
NOISE_BLOCK = 1024
BUILD_BLOCK_M = 32
CLASH_NB = 8  # neighbours per inner step of the clash kernels (8 × 16 atom columns)
MESSAGE_BLOCK_R = 16  # residue rows per program of message_mean

_NUM_SLOTS = rc.NUM_SLOTS
_PRO = rc.RESTYPE_INDEX["PRO"]
_CYS = rc.RESTYPE_INDEX["CYS"]
_M32 = 0xFFFFFFFF
# Per-part additive constants of ldb_hpc.ops.noise.hash_key (part i adds 0x9E3779B9·(i+1) mod 2^32).
_H0 = tl.constexpr((0x9E3779B9 * 1) & _M32)
_H1 = tl.constexpr((0x9E3779B9 * 2) & _M32)
_H2 = tl.constexpr((0x9E3779B9 * 3) & _M32)
_H3 = tl.constexpr((0x9E3779B9 * 4) & _M32)
_H4 = tl.constexpr((0x9E3779B9 * 5) & _M32)
_H5 = tl.constexpr((0x9E3779B9 * 6) & _M32)

_LAUNCH = dict(enable_fp_fusion=False)


# ----------------------------------------------------------------------------------------------------
# Precise elementary functions (libdevice on the GPU, numpy in the interpreter)

if INTERPRET:
    @triton.jit
    def _sin(x):
        return tl.sin(x)

    @triton.jit
    def _cos(x):
        return tl.cos(x)

    @triton.jit
    def _log(x):
        return tl.log(x)
else:  # pragma: no cover - needs a GPU
    from triton.language.extra import libdevice

    @triton.jit
    def _sin(x):
        return libdevice.sin(x)

    @triton.jit
    def _cos(x):
        return libdevice.cos(x)

    @triton.jit
    def _log(x):
        return libdevice.log(x)


# ----------------------------------------------------------------------------------------------------
# vq_nearest


@triton.jit
def _vq_kernel(z_ptr, cb_ptr, idx_ptr, q_ptr, N, K, D: tl.constexpr, BLOCK_D: tl.constexpr,
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


# ----------------------------------------------------------------------------------------------------
# Counter-based noise (ldb_hpc.ops.noise, bit for bit)


@triton.jit
def _mix32(x):
    """lowbias32 on uint32: xor-shifts are logical, products wrap mod 2^32."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    x = x ^ (x >> 16)
    return x


@triton.jit
def _normal(seed, frame, sample, step, residue, channel, two_pi):
    """One standard normal per element from uint32 key parts; Box–Muller in float64, rounded to float32."""
    h = _mix32(_mix32(seed + _H0))  # h = 0 before the first part, and 0 ^ y = y
    h = _mix32(h ^ _mix32(frame + _H1))
    h = _mix32(h ^ _mix32(sample + _H2))
    h = _mix32(h ^ _mix32(step + _H3))
    h = _mix32(h ^ _mix32(residue + _H4))
    h = _mix32(h ^ _mix32(channel + _H5))
    u1 = (_mix32(h ^ 0x68E31DA4).to(tl.float64) + 0.5) / 4294967296.0
    u2 = (_mix32(h ^ 0xB5297A4D).to(tl.float64) + 0.5) / 4294967296.0
    z = tl.sqrt(-2.0 * _log(u1)) * _cos(two_pi * u2)
    return z.to(tl.float32)


@triton.jit
def _noise_at(offs, mask, frames_ptr, const_ptr, seed, step, S, L, D):
    """Noise of the flat [B, S, L, D] positions ``offs`` (int64)."""
    c = offs % D
    t = offs // D
    r = t % L
    t = t // L
    s = t % S
    b = t // S
    f = tl.load(frames_ptr + b, mask=mask, other=0)
    two_pi = tl.load(const_ptr)
    # tl.cast, not .to: an int argument equal to 1 arrives as a constexpr
    return _normal(tl.cast(seed, tl.uint32), f.to(tl.uint32), s.to(tl.uint32), tl.cast(step, tl.uint32),
                   r.to(tl.uint32), c.to(tl.uint32), two_pi)


@triton.jit
def _noise_kernel(frames_ptr, const_ptr, out_ptr, seed, step, total, S, L, D, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    z = _noise_at(offs, mask, frames_ptr, const_ptr, seed, step, S, L, D)
    tl.store(out_ptr + offs, z, mask=mask)


@triton.jit
def _diffusion_kernel(x_ptr, eps_ptr, out_ptr, frames_ptr, const_ptr, c_ab, c_1mab, c_abp, c_dir, c_noise,
                      seed, step, total, S, L, D, HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    e = tl.load(eps_ptr + offs, mask=mask, other=0.0)
    # the reference's op order, one rounding per op: x0 = (x − c·ε)/a; out = b·x0 + d·ε (+ σ·z)
    x0 = tl.div_rn(x - c_1mab * e, c_ab)
    out = c_abp * x0 + c_dir * e
    if HAS_NOISE:
        z = _noise_at(offs, mask, frames_ptr, const_ptr, seed, step, S, L, D)
        out = out + c_noise * z
    tl.store(out_ptr + offs, out, mask=mask)


# ----------------------------------------------------------------------------------------------------
# build_atoms


@triton.jit
def _norm3(x, y, z):
    """ldb_hpc.geometry.vectors.safe_norm: sqrt(max(|v|², 1e-24))."""
    return tl.sqrt_rn(tl.maximum(x * x + y * y + z * z, 1e-24))


@triton.jit
def _basis(vx, vy, vz, hx, hy, hz):
    """ldb_hpc.geometry.frames.basis_from_two_vectors with its fallbacks → (ex, ey, ez), 3 components each."""
    xn = _norm3(vx, vy, vz)
    okx = xn > 1e-6
    ex_x = tl.where(okx, tl.div_rn(vx, xn), 1.0)
    ex_y = tl.where(okx, tl.div_rn(vy, xn), 0.0)
    ex_z = tl.where(okx, tl.div_rn(vz, xn), 0.0)
    dot = hx * ex_x + hy * ex_y + hz * ex_z
    yx = hx - dot * ex_x
    yy = hy - dot * ex_y
    yz = hz - dot * ex_z
    yn = _norm3(yx, yy, yz)
    hn = _norm3(hx, hy, hz)
    # the global axis least aligned with ex (first of equal |components|), made orthogonal to ex
    ax, ay, az = tl.abs(ex_x), tl.abs(ex_y), tl.abs(ex_z)
    k0 = (ax <= ay) & (ax <= az)
    k1 = (~k0) & (ay <= az)
    k2 = (~k0) & (~k1)
    fx = k0.to(tl.float32)
    fy = k1.to(tl.float32)
    fz = k2.to(tl.float32)
    fd = fx * ex_x + fy * ex_y + fz * ex_z
    bad = (yn <= 1e-3 * hn) | (hn < 1e-6)
    yx = tl.where(bad, fx - fd * ex_x, yx)
    yy = tl.where(bad, fy - fd * ex_y, yy)
    yz = tl.where(bad, fz - fd * ex_z, yz)
    n2 = _norm3(yx, yy, yz)
    ey_x = tl.div_rn(yx, n2)
    ey_y = tl.div_rn(yy, n2)
    ey_z = tl.div_rn(yz, n2)
    ez_x = ex_y * ey_z - ex_z * ey_y
    ez_y = ex_z * ey_x - ex_x * ey_z
    ez_z = ex_x * ey_y - ex_y * ey_x
    return ex_x, ex_y, ex_z, ey_x, ey_y, ey_z, ez_x, ez_y, ez_z


@triton.jit
def _nerf(ax, ay, az, bx, by, bz, cx, cy, cz, bond, cos_angle, sin_angle, torsion):
    """ldb_hpc.geometry.builder.nerf: x with |x − c| = bond, angle(b, c, x) (given by its cosine and sine, which
    come from the tables), dihedral(a, b, c, x) = torsion (broadcast)."""
    ex_x, ex_y, ex_z, ey_x, ey_y, ey_z, ez_x, ez_y, ez_z = _basis(cx - bx, cy - by, cz - bz, ax - bx, ay - by,
                                                                  az - bz)
    l0 = -bond * cos_angle
    l1 = bond * sin_angle * _cos(torsion)
    l2 = bond * sin_angle * _sin(torsion)
    px = cx + (ex_x * l0 + ey_x * l1 + ez_x * l2)
    py = cy + (ex_y * l0 + ey_y * l1 + ez_y * l2)
    pz = cz + (ex_z * l0 + ey_z * l1 + ez_z * l2)
    return px, py, pz


@triton.jit
def _pick(X, cols, slot):
    """Row-wise X[m, slot[m]] of a [BM, 16] tile (exact: one term, zeros elsewhere)."""
    return tl.sum(tl.where(cols[None, :] == slot[:, None], X, 0.0), axis=1)


@triton.jit
def _put_atom(X, Y, Z, cols, slot, src_ptr, rows, rmask):
    """Write the [BM, 3] atoms at src_ptr into column ``slot`` of the coordinate tiles."""
    px = tl.load(src_ptr + rows * 3 + 0, mask=rmask, other=0.0)
    py = tl.load(src_ptr + rows * 3 + 1, mask=rmask, other=0.0)
    pz = tl.load(src_ptr + rows * 3 + 2, mask=rmask, other=0.0)
    sel = cols[None, :] == slot
    return tl.where(sel, px[:, None], X), tl.where(sel, py[:, None], Y), tl.where(sel, pz[:, None], Z)


@triton.jit
def _build_kernel(n_ptr, ca_ptr, c_ptr, otor_ptr, chi_ptr, rt_ptr, out_ptr,
                  refs_ptr, chan_ptr, keep_ptr, bond_ptr, cos_ptr, sin_ptr, offset_ptr, M,
                  NSLOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_S: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    rt = tl.load(rt_ptr + rows, mask=rmask, other=0).to(tl.int32)
    cols = tl.arange(0, BLOCK_S)
    # frame atoms: N, CA, C copied as given
    X = tl.zeros([BLOCK_M, BLOCK_S], tl.float32)
    Y = tl.zeros([BLOCK_M, BLOCK_S], tl.float32)
    Z = tl.zeros([BLOCK_M, BLOCK_S], tl.float32)
    X, Y, Z = _put_atom(X, Y, Z, cols, 0, n_ptr, rows, rmask)
    X, Y, Z = _put_atom(X, Y, Z, cols, 1, ca_ptr, rows, rmask)
    X, Y, Z = _put_atom(X, Y, Z, cols, 2, c_ptr, rows, rmask)
    t0 = tl.load(otor_ptr + rows, mask=rmask, other=0.0)
    t1 = tl.load(chi_ptr + rows * 4 + 0, mask=rmask, other=0.0)
    t2 = tl.load(chi_ptr + rows * 4 + 1, mask=rmask, other=0.0)
    t3 = tl.load(chi_ptr + rows * 4 + 2, mask=rmask, other=0.0)
    t4 = tl.load(chi_ptr + rows * 4 + 3, mask=rmask, other=0.0)
    # Z-matrix slots in slot order (every reference of slot s is a slot < s); a loop, not unrolled: 11 inlined
    # copies of the libdevice sin/cos made a 1.7 MB kernel that took most of a minute to compile
    for s in range(3, NSLOT):
        tab = rt * NSLOT + s
        ra = tl.load(refs_ptr + tab * 3 + 0)
        rb = tl.load(refs_ptr + tab * 3 + 1)
        rcs = tl.load(refs_ptr + tab * 3 + 2)
        ch = tl.load(chan_ptr + tab)
        bond = tl.load(bond_ptr + tab)
        cos_a = tl.load(cos_ptr + tab)
        sin_a = tl.load(sin_ptr + tab)
        off = tl.load(offset_ptr + tab)
        tor = tl.where(ch == 0, t0, tl.where(ch == 1, t1, tl.where(ch == 2, t2, tl.where(ch == 3, t3, t4))))
        dih = off + tl.where(ch >= 0, tor, 0.0)
        px, py, pz = _nerf(_pick(X, cols, ra), _pick(Y, cols, ra), _pick(Z, cols, ra),
                           _pick(X, cols, rb), _pick(Y, cols, rb), _pick(Z, cols, rb),
                           _pick(X, cols, rcs), _pick(Y, cols, rcs), _pick(Z, cols, rcs), bond, cos_a, sin_a, dih)
        X = tl.where(cols[None, :] == s, px[:, None], X)
        Y = tl.where(cols[None, :] == s, py[:, None], Y)
        Z = tl.where(cols[None, :] == s, pz[:, None], Z)
    smask = cols[None, :] < NSLOT
    keep = tl.load(keep_ptr + rt[:, None] * NSLOT + cols[None, :], mask=smask, other=0) != 0
    X = tl.where(keep, X, 0.0)
    Y = tl.where(keep, Y, 0.0)
    Z = tl.where(keep, Z, 0.0)
    m2 = rmask[:, None] & smask
    base = out_ptr + rows[:, None] * (NSLOT * 3) + cols[None, :] * 3
    tl.store(base + 0, X, mask=m2)
    tl.store(base + 1, Y, mask=m2)
    tl.store(base + 2, Z, mask=m2)


@triton.jit
def _proline_kernel(chi_ptr, rt_ptr, out_ptr, par_ptr, g1_ptr, g2_ptr, PRO: tl.constexpr, NSLOT: tl.constexpr,
                    N1: tl.constexpr, N2: tl.constexpr, B1: tl.constexpr, B2: tl.constexpr):
    """ldb_hpc.geometry.atoms.close_proline_rings for row program_id(0) if it is a proline: grid χ1 × χ2 for the CD
    nearest the ideal CD–N bond (ties towards the given χ1, then the first grid point); CG and CD rewritten."""
    m = tl.program_id(0).to(tl.int64)
    rt = tl.load(rt_ptr + m)
    if rt == PRO:
        base = out_ptr + m * (NSLOT * 3)
        i1 = tl.arange(0, B1)
        m1 = i1 < N1
        at = base + i1 * 0  # atoms broadcast over the χ1 grid (vectors keep every op elementwise)
        nx = tl.load(at + 0)
        ny = tl.load(at + 1)
        nz = tl.load(at + 2)
        cax = tl.load(at + 3)
        cay = tl.load(at + 4)
        caz = tl.load(at + 5)
        cbx = tl.load(at + 12)
        cby = tl.load(at + 13)
        cbz = tl.load(at + 14)
        chi1 = tl.load(chi_ptr + m * 4 + i1 * 0)
        bond_g = tl.load(par_ptr + 0)
        cos_g = tl.load(par_ptr + 1)
        sin_g = tl.load(par_ptr + 2)
        off_g = tl.load(par_ptr + 3)
        bond_d = tl.load(par_ptr + 4)
        cos_d = tl.load(par_ptr + 5)
        sin_d = tl.load(par_ptr + 6)
        off_d = tl.load(par_ptr + 7)
        ideal = tl.load(par_ptr + 8)
        c1 = chi1 + tl.load(g1_ptr + i1, mask=m1, other=0.0)  # [B1]
        cgx, cgy, cgz = _nerf(nx, ny, nz, cax, cay, caz, cbx, cby, cbz, bond_g, cos_g, sin_g, off_g + c1)
        i2 = tl.arange(0, B2)
        m2 = i2 < N2
        c2 = tl.load(g2_ptr + i2, mask=m2, other=0.0)  # [B2]
        cdx, cdy, cdz = _nerf(cax[:, None], cay[:, None], caz[:, None], cbx[:, None], cby[:, None], cbz[:, None],
                              cgx[:, None], cgy[:, None], cgz[:, None], bond_d, cos_d, sin_d,
                              off_d + c2[None, :])
        dx = cdx - nx[:, None]  # [B1, B2]
        dy = cdy - ny[:, None]
        dz = cdz - nz[:, None]
        dist = tl.sqrt_rn(dx * dx + dy * dy + dz * dz)
        err = tl.abs(dist - ideal) + (1e-3 * tl.abs(c1 - chi1))[:, None]
        valid = m1[:, None] & m2[None, :]
        err = tl.where(valid, err, float("inf"))
        flat = i1[:, None] * N2 + i2[None, :]
        emin = tl.min(tl.min(err, axis=1), axis=0)
        best = tl.min(tl.min(tl.where(valid & (err == emin), flat, N1 * N2), axis=1), axis=0)
        best = tl.where(best >= N1 * N2, 0, best)  # all-NaN errors: the reference's argmin gives 0 too
        b1 = best // N2
        sel1 = i1 == b1
        sel = sel1[:, None] & (i2 == best - b1 * N2)[None, :]  # not flat == best: padded columns alias it
        tl.store(base + 15, tl.sum(tl.where(sel1, cgx, 0.0), axis=0))
        tl.store(base + 16, tl.sum(tl.where(sel1, cgy, 0.0), axis=0))
        tl.store(base + 17, tl.sum(tl.where(sel1, cgz, 0.0), axis=0))
        tl.store(base + 18, tl.sum(tl.sum(tl.where(sel, cdx, 0.0), axis=1), axis=0))
        tl.store(base + 19, tl.sum(tl.sum(tl.where(sel, cdy, 0.0), axis=1), axis=0))
        tl.store(base + 20, tl.sum(tl.sum(tl.where(sel, cdz, 0.0), axis=1), axis=0))


# ----------------------------------------------------------------------------------------------------
# clash_flags / clash_score


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


@triton.jit
def _flags_kernel(pos_ptr, rows_ptr, nbr_ptr, adj_ptr, rt_ptr, exists_ptr, out_ptr, k, trigger,
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


@triton.jit
def _score_kernel(cand_ptr, pos_ptr, rows_ptr, nbr_ptr, adj_ptr, rt_ptr, exists_ptr, out_ptr, M, k, contact,
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


# ----------------------------------------------------------------------------------------------------
# message_mean: mean over the k neighbours of silu(node_j[nbr] + node_i + edge), a block of rows per program


@triton.jit
def _message_kernel(nj_ptr, ni_ptr, e_ptr, nbr_ptr, out_ptr, R, L, k, kf, D: tl.constexpr, BLOCK_D: tl.constexpr,
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


# ----------------------------------------------------------------------------------------------------
# Host side: tables, allocation, launchers


def _alloc(shape, dtype, device) -> torch.Tensor:
    """Every output buffer comes from here (tests replace it to poison outputs)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _check_device(*tensors: torch.Tensor) -> torch.device:
    dev = tensors[0].device
    for t in tensors:
        if t.device != dev:
            raise ValueError(f"all tensors must be on one device, got {dev} and {t.device}")
    if dev.type != "cuda" and not INTERPRET:
        raise RuntimeError("ldb_hpc._triton kernels need CUDA tensors (or TRITON_INTERPRET=1 set before import)")
    return dev


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).contiguous()


def _i64(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.int64).contiguous()


@functools.lru_cache(maxsize=8)
def _two_pi(device: torch.device) -> torch.Tensor:
    return torch.tensor([2.0 * math.pi], dtype=torch.float64, device=device)  # the reference's 2.0 * math.pi


@functools.lru_cache(maxsize=8)
def _tables(device: torch.device) -> dict:
    """Z-matrix and ideal-geometry tables as device tensors (float32 like the reference's float32 builds)."""
    from ldb_hpc.chem.ideal_geometry import ideal_geometry
    from ldb_hpc.geometry.atoms import PRO_CD_N_BOND, PRO_CHI1_DELTA_DEG, PRO_CHI2_DEG

    geo = ideal_geometry()
    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device).contiguous()  # noqa: E731
    i32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int32, device=device).contiguous()  # noqa: E731
    slot = np.arange(rc.NUM_SLOTS)
    keep = rc.SLOT_MASK & (rc.ZM_MASK | (slot < 3))  # frame atoms, and Z-matrix atoms of the type
    # the reference takes sin / cos of the float32 angle; done once here, in torch, the same way
    angle = torch.as_tensor(np.asarray(geo.angle), dtype=torch.float32)
    cos_a, sin_a = torch.cos(angle), torch.sin(angle)
    pro_par = [geo.bond[_PRO, 5], cos_a[_PRO, 5], sin_a[_PRO, 5], geo.offset[_PRO, 5],
               geo.bond[_PRO, 6], cos_a[_PRO, 6], sin_a[_PRO, 6], geo.offset[_PRO, 6],
               geo.bond_length[_PRO, PRO_CD_N_BOND]]
    return dict(
        refs=i32(rc.ZM_REFS), chan=i32(rc.ZM_TORSION), keep=i32(keep), exists=i32(rc.SLOT_MASK),
        bond=f32(geo.bond), cos_angle=cos_a.to(device), sin_angle=sin_a.to(device), offset=f32(geo.offset),
        pro_par=f32([float(v) for v in pro_par]),
        # the reference's grids: float32 arange → deg2rad in float32
        pro_g1=torch.deg2rad(torch.arange(*PRO_CHI1_DELTA_DEG)).to(device).contiguous(),
        pro_g2=torch.deg2rad(torch.arange(*PRO_CHI2_DEG)).to(device).contiguous(),
    )


def vq_nearest(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z [N, d], codebook [K, d] float32 → (index [N] int64, quantized [N, d] = codebook[index]).

    Nearest code by Σ_c (z_c − e_c)² in float32, channel order; ties to the lowest index. Never forms N×K."""
    dev = _check_device(z, codebook)
    z, codebook = _f32(z), _f32(codebook)
    N, D = z.shape
    K = codebook.shape[0]
    if codebook.shape[1] != D:
        raise ValueError(f"z has {D} channels, codebook {codebook.shape[1]}")
    idx = _alloc((N,), torch.int64, dev)
    q = _alloc((N, D), torch.float32, dev)
    if N == 0:
        return idx, q
    if K == 0:
        raise ValueError("empty codebook")
    _vq_kernel[(triton.cdiv(N, VQ_BLOCK_N),)](z, codebook, idx, q, N, K, D=D, BLOCK_D=triton.next_power_of_2(D),
                                              BLOCK_N=VQ_BLOCK_N, BLOCK_K=VQ_BLOCK_K, **_LAUNCH)
    return idx, q


def gaussian_noise(seed: int, frame_ids: torch.Tensor, samples: int, step: int, n_res: int, dim: int) -> torch.Tensor:
    """Standard normals [B, S, L, D] float32 keyed by (seed, frame_ids[b], s, step, l, c), bit-identical to
    :func:`ldb_hpc.ops.noise.latent_noise`. frame_ids [B] int64 (global frame indices)."""
    dev = _check_device(frame_ids)
    frames = _i64(frame_ids)
    shape = (frames.shape[0], int(samples), int(n_res), int(dim))
    out = _alloc(shape, torch.float32, dev)
    total = out.numel()
    if total == 0:
        return out
    _noise_kernel[(triton.cdiv(total, NOISE_BLOCK),)](frames, _two_pi(dev), out, int(seed) & _M32,
                                                     int(step) & _M32, total, shape[1], shape[2], shape[3],
                                                     BLOCK=NOISE_BLOCK, **_LAUNCH)
    return out


def diffusion_step(x_t: torch.Tensor, eps: torch.Tensor, coef: tuple, seed: int, step: int,
                   frame_ids: torch.Tensor) -> torch.Tensor:
    """x_t, eps [B, S, L, D] float32 → x_prev [B, S, L, D] (one DDIM update, noise drawn in the kernel).

    coef = (sqrt_ab, sqrt_1mab, sqrt_ab_prev, dir, noise_coef) host floats (reference.step_coefficients);
    frame_ids [B] int64. Noise only when noise_coef ≠ 0."""
    dev = _check_device(x_t, eps, frame_ids)
    x_t, eps, frames = _f32(x_t), _f32(eps), _i64(frame_ids)
    if eps.shape != x_t.shape or x_t.dim() != 4 or frames.shape != (x_t.shape[0],):
        raise ValueError(f"diffusion_step: x_t {tuple(x_t.shape)}, eps {tuple(eps.shape)}, "
                         f"frame_ids {tuple(frames.shape)} do not match")
    sqrt_ab, sqrt_1mab, sqrt_ab_prev, dir_coef, noise_coef = (float(v) for v in coef)
    out = _alloc(x_t.shape, torch.float32, dev)
    total = out.numel()
    if total == 0:
        return out
    B, S, L, D = x_t.shape
    _diffusion_kernel[(triton.cdiv(total, NOISE_BLOCK),)](
        x_t, eps, out, frames, _two_pi(dev), sqrt_ab, sqrt_1mab, sqrt_ab_prev, dir_coef, noise_coef,
        int(seed) & _M32, int(step) & _M32, total, S, L, D, HAS_NOISE=noise_coef != 0.0, BLOCK=NOISE_BLOCK,
        **_LAUNCH)
    return out


def build_atoms(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor, o_torsion: torch.Tensor, chi: torch.Tensor,
                restype: torch.Tensor) -> torch.Tensor:
    """n, ca, c [M, 3] Å; o_torsion [M] rad; chi [M, 4] rad; restype [M] int64 → atom14 [M, 14, 3] Å.

    Ideal geometry from the Z-matrix tables; N, CA, C copied; proline rings closed by the reference's grid
    search (a second kernel, one program per row, work only on prolines); absent slots zero."""
    dev = _check_device(n, ca, c, o_torsion, chi, restype)
    n, ca, c, o_torsion, chi, rt = _f32(n), _f32(ca), _f32(c), _f32(o_torsion), _f32(chi), _i64(restype)
    M = ca.shape[0]
    if not (n.shape == ca.shape == c.shape == (M, 3) and o_torsion.shape == (M,) and chi.shape == (M, 4)
            and rt.shape == (M,)):
        raise ValueError(f"build_atoms: shapes n {tuple(n.shape)}, ca {tuple(ca.shape)}, c {tuple(c.shape)}, "
                         f"o_torsion {tuple(o_torsion.shape)}, chi {tuple(chi.shape)}, restype {tuple(rt.shape)}")
    out = _alloc((M, _NUM_SLOTS, 3), torch.float32, dev)
    if M == 0:
        return out
    tb = _tables(dev)
    _build_kernel[(triton.cdiv(M, BUILD_BLOCK_M),)](
        n, ca, c, o_torsion, chi, rt, out, tb["refs"], tb["chan"], tb["keep"], tb["bond"], tb["cos_angle"],
        tb["sin_angle"], tb["offset"], M, NSLOT=_NUM_SLOTS, BLOCK_M=BUILD_BLOCK_M, BLOCK_S=16, **_LAUNCH)
    n1, n2 = tb["pro_g1"].numel(), tb["pro_g2"].numel()
    _proline_kernel[(M,)](chi, rt, out, tb["pro_par"], tb["pro_g1"], tb["pro_g2"], PRO=_PRO, NSLOT=_NUM_SLOTS,
                          N1=n1, N2=n2, B1=triton.next_power_of_2(n1), B2=triton.next_power_of_2(n2), **_LAUNCH)
    return out


def _clash_inputs(pos, rows, nbr, adjacent, restype):
    dev = _check_device(pos, rows, nbr, adjacent, restype)
    pos, rows, nbr, rt = _f32(pos), _i64(rows), _i64(nbr), _i64(restype)
    R = pos.shape[0]
    if pos.shape != (R, _NUM_SLOTS, 3) or nbr.dim() != 2 or nbr.shape[0] != R or adjacent.shape != nbr.shape \
            or rt.shape != (R,) or rows.dim() != 1:
        raise ValueError(f"clash: shapes pos {tuple(pos.shape)}, rows {tuple(rows.shape)}, nbr {tuple(nbr.shape)}, "
                         f"adjacent {tuple(adjacent.shape)}, restype {tuple(rt.shape)}")
    adj = adjacent.to(torch.bool).contiguous().view(torch.uint8)
    return dev, pos, rows, nbr, adj, rt


def clash_flags(pos: torch.Tensor, rows: torch.Tensor, nbr: torch.Tensor, adjacent: torch.Tensor,
                restype: torch.Tensor, trigger: float) -> torch.Tensor:
    """pos [R, 14, 3] Å; rows [M] int64; nbr [R, k] int64 neighbour rows; adjacent [R, k] bool; restype [R] int64
    → [M] bool: row rows[m] has a counted pair (reference.pair_counts) closer than ``trigger`` Å."""
    dev, pos, rows, nbr, adj, rt = _clash_inputs(pos, rows, nbr, adjacent, restype)
    M, k = rows.shape[0], nbr.shape[1]
    out = _alloc((M,), torch.int8, dev)
    if M == 0 or k == 0:  # no neighbours, no pairs (and no empty-tensor pointers handed to the kernel)
        return out.zero_().to(torch.bool)
    _flags_kernel[(M,)](pos, rows, nbr, adj, rt, _tables(dev)["exists"], out, k, float(trigger), PRO=_PRO, CYS=_CYS,
                        NSLOT=_NUM_SLOTS, NB=CLASH_NB, BLOCK_S=16, **_LAUNCH)
    return out.to(torch.bool)


def clash_score(cand: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor, nbr: torch.Tensor, adjacent: torch.Tensor,
                restype: torch.Tensor, contact: float) -> torch.Tensor:
    """cand [C, M, 14, 3] Å candidate atoms of rows [M]; pos [R, 14, 3] Å current atoms; nbr [R, k]; adjacent
    [R, k] bool; restype [R] → [C, M] float32: Σ relu(contact − d)² over the counted pairs."""
    dev, pos, rows, nbr, adj, rt = _clash_inputs(pos, rows, nbr, adjacent, restype)
    cand = _f32(cand)
    M, k = rows.shape[0], nbr.shape[1]
    if cand.dim() != 4 or cand.shape[1:] != (M, _NUM_SLOTS, 3):
        raise ValueError(f"clash_score: cand {tuple(cand.shape)} for {M} rows")
    C = cand.shape[0]
    out = _alloc((C, M), torch.float32, dev)
    if C * M == 0 or k == 0:
        return out.zero_()
    _score_kernel[(M, C)](cand, pos, rows, nbr, adj, rt, _tables(dev)["exists"], out, M, k, float(contact), PRO=_PRO,
                          CYS=_CYS, NSLOT=_NUM_SLOTS, NB=CLASH_NB, BLOCK_S=16, **_LAUNCH)
    return out


def message_mean(node_j: torch.Tensor, node_i: torch.Tensor, edge: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """node_j, node_i [B, L, D]; edge [B, L, k, D] float32; nbr [B, L, k] int64 within the frame (not checked on
    the device: the CA graph makes them) → [B, L, D] float32, mean over k of silu(node_j[b, nbr] + node_i + edge)."""
    dev = _check_device(node_j, node_i, edge, nbr)
    nj, ni, e, nb = _f32(node_j), _f32(node_i), _f32(edge), _i64(nbr)
    if nj.dim() != 3 or ni.shape != nj.shape or nb.dim() != 3 or nb.shape[:2] != nj.shape[:2] \
            or e.shape != (*nb.shape, nj.shape[2]):
        raise ValueError(f"message_mean: shapes node_j {tuple(nj.shape)}, node_i {tuple(ni.shape)}, "
                         f"edge {tuple(e.shape)}, nbr {tuple(nb.shape)}")
    B, L, D = nj.shape
    k = nb.shape[2]
    out = _alloc((B, L, D), torch.float32, dev)
    if B * L * D == 0:
        return out
    if k == 0:  # the mean of nothing, as torch has it
        return out.fill_(float("nan"))
    _message_kernel[(triton.cdiv(B * L, MESSAGE_BLOCK_R),)](nj, ni, e, nb, out, B * L, L, k, float(k), D=D,
                                                            BLOCK_D=triton.next_power_of_2(D),
                                                            BLOCK_R=MESSAGE_BLOCK_R, **_LAUNCH)
    return out
