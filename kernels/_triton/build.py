"""build_atoms in Triton: every heavy atom from a placed backbone and χ (contract:
``ldb_hpc.ops.reference.build_atoms``, the oracle ``ldb_hpc.geometry.atoms.atoms_from_backbone``).

Two kernels per call: :func:`build_kernel` (one program per block of ``BUILD_BLOCK_M`` rows: the residue frame
and the 14 Z-matrix placements) and :func:`proline_kernel` (one program per row, work only on prolines: the
ring-closure grid search). The Z-matrix and ideal-geometry tables are device tensors built once per device.
The proline search grids come from ldb_hpc.geometry.atoms; its tie weight (1e-3, a compile-time constant here)
and the degeneracy thresholds of the frame construction (1e-6, 1e-3, 1e-24) repeat literals of
ldb_hpc.geometry.atoms and ldb_hpc.geometry.frames / vectors. Numerics: :mod:`ldb_hpc._triton.common`.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl

from ldb_hpc._triton import common  # common.alloc: looked up per call (tests replace it)
from ldb_hpc._triton.common import LAUNCH, NUM_SLOTS, PRO, check_device, f32, i64, table
from ldb_hpc._triton.common import cos as _cos
from ldb_hpc._triton.common import sin as _sin
from ldb_hpc.chem import residues as rc

BUILD_BLOCK_M = 32  # residue rows per program of build_kernel


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
def build_kernel(n_ptr, ca_ptr, c_ptr, otor_ptr, chi_ptr, rt_ptr, out_ptr,
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
def proline_kernel(chi_ptr, rt_ptr, out_ptr, par_ptr, g1_ptr, g2_ptr, PRO: tl.constexpr, NSLOT: tl.constexpr,
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


@functools.lru_cache(maxsize=8)
def _tables(device: torch.device) -> dict:
    """Z-matrix and ideal-geometry tables as device tensors (float32 like the reference's float32 builds)."""
    from ldb_hpc.chem.ideal_geometry import ideal_geometry
    from ldb_hpc.geometry.atoms import PRO_CD_N_BOND, PRO_CHI1_DELTA_DEG, PRO_CHI2_DEG

    geo = ideal_geometry()
    as_f32 = lambda a: table(a, torch.float32, device)  # noqa: E731
    as_i32 = lambda a: table(a, torch.int32, device)  # noqa: E731
    slot = np.arange(rc.NUM_SLOTS)
    keep = rc.SLOT_MASK & (rc.ZM_MASK | (slot < 3))  # frame atoms, and Z-matrix atoms of the type
    # the reference takes sin / cos of the float32 angle; done once here, in torch, the same way
    angle = torch.as_tensor(np.asarray(geo.angle), dtype=torch.float32)
    cos_a, sin_a = torch.cos(angle), torch.sin(angle)
    pro_par = [geo.bond[PRO, 5], cos_a[PRO, 5], sin_a[PRO, 5], geo.offset[PRO, 5],
               geo.bond[PRO, 6], cos_a[PRO, 6], sin_a[PRO, 6], geo.offset[PRO, 6],
               geo.bond_length[PRO, PRO_CD_N_BOND]]
    return dict(
        refs=as_i32(rc.ZM_REFS), chan=as_i32(rc.ZM_TORSION), keep=as_i32(keep),
        bond=as_f32(geo.bond), cos_angle=cos_a.to(device), sin_angle=sin_a.to(device), offset=as_f32(geo.offset),
        pro_par=as_f32([float(v) for v in pro_par]),
        # the reference's grids: float32 arange → deg2rad in float32
        pro_g1=torch.deg2rad(torch.arange(*PRO_CHI1_DELTA_DEG)).to(device).contiguous(),
        pro_g2=torch.deg2rad(torch.arange(*PRO_CHI2_DEG)).to(device).contiguous(),
    )


def build_atoms(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor, o_torsion: torch.Tensor, chi: torch.Tensor,
                restype: torch.Tensor) -> torch.Tensor:
    """n, ca, c [M, 3] Å; o_torsion [M] rad; chi [M, 4] rad; restype [M] int64 → atom14 [M, 14, 3] Å.

    Ideal geometry from the Z-matrix tables; N, CA, C copied; proline rings closed by the reference's grid
    search (a second kernel, one program per row, work only on prolines); absent slots zero."""
    dev = check_device(n, ca, c, o_torsion, chi, restype)
    n, ca, c, o_torsion, chi, rt = f32(n), f32(ca), f32(c), f32(o_torsion), f32(chi), i64(restype)
    M = ca.shape[0]
    if not (n.shape == ca.shape == c.shape == (M, 3) and o_torsion.shape == (M,) and chi.shape == (M, 4)
            and rt.shape == (M,)):
        raise ValueError(f"build_atoms: shapes n {tuple(n.shape)}, ca {tuple(ca.shape)}, c {tuple(c.shape)}, "
                         f"o_torsion {tuple(o_torsion.shape)}, chi {tuple(chi.shape)}, restype {tuple(rt.shape)}")
    out = common.alloc((M, NUM_SLOTS, 3), torch.float32, dev)
    if M == 0:
        return out
    tb = _tables(dev)
    build_kernel[(triton.cdiv(M, BUILD_BLOCK_M),)](
        n, ca, c, o_torsion, chi, rt, out, tb["refs"], tb["chan"], tb["keep"], tb["bond"], tb["cos_angle"],
        tb["sin_angle"], tb["offset"], M, NSLOT=NUM_SLOTS, BLOCK_M=BUILD_BLOCK_M, BLOCK_S=16, **LAUNCH)
    n1, n2 = tb["pro_g1"].numel(), tb["pro_g2"].numel()
    proline_kernel[(M,)](chi, rt, out, tb["pro_par"], tb["pro_g1"], tb["pro_g2"], PRO=PRO, NSLOT=NUM_SLOTS,
                         N1=n1, N2=n2, B1=triton.next_power_of_2(n1), B2=triton.next_power_of_2(n2), **LAUNCH)
    return out
