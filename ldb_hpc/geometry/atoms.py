"""Every heavy atom of a residue from its placed backbone and side-chain torsions (batched torch reference; Å, rad).

N, CA and C stay where a backbone model put them; O, CB and every side-chain atom get ideal internal geometry
from the Z-matrix builder (:func:`ldb_hpc.geometry.builder.build_atoms`) with the N–CA–C–O torsion and χ1..χ4;
proline rings are then closed by a small grid search (:func:`close_proline_rings`). This is the oracle of the fused
``build_atoms`` kernels (:mod:`ldb_hpc.ops`), which read the ring-closure constants below.
"""

from __future__ import annotations

import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.ideal_geometry import ideal_geometry
from ldb_hpc.geometry.builder import build_atoms, nerf
from ldb_hpc.geometry.frames import frames_from_backbone

PRO = rc.RESTYPE_INDEX["PRO"]
# Index of the Pro CD–N bond in BOND_SLOTS / ideal bond_length.
PRO_CD_N_BOND = [k for k in range(rc.BOND_SLOTS.shape[1]) if rc.BOND_MASK[PRO, k]
                 and set(rc.BOND_SLOTS[PRO, k].tolist()) == {0, 6}][0]
# Proline ring closure grid (torch.arange arguments, degrees) and the weight that breaks ties towards the given χ1.
PRO_CHI1_DELTA_DEG = (-40.0, 41.0, 4.0)
PRO_CHI2_DEG = (-50.0, 51.0, 2.0)
PRO_TIE_WEIGHT = 1e-3


def atoms_from_backbone(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor, o_torsion: torch.Tensor,
                        chi: torch.Tensor, restype: torch.Tensor) -> torch.Tensor:
    """All heavy atoms from a placed backbone and side-chain torsions (pure torch, differentiable).

    n, ca, c: [..., L, 3] Å; o_torsion: [..., L] rad (N–CA–C–O); chi: [..., L, 4] rad (χ1..χ4; unused channels
    ignored); restype: [L] long. N, CA, C stay where they are (to float32 rounding); every other atom gets ideal
    geometry. Returns [..., L, 14, 3] Å, absent slots zero.
    """
    R, t = frames_from_backbone(n, ca, c)
    # The frame keeps the placed N and C exactly: their local coordinates are passed per residue.
    frame_local = torch.einsum("...ji,...kj->...ki", R, torch.stack([n, ca, c], dim=-2) - t[..., None, :])
    torsions = torch.cat([o_torsion[..., None], chi], dim=-1)
    pos = build_atoms(R, t, torsions, restype.expand(ca.shape[:-1]), frame_local=frame_local)
    return close_proline_rings(pos, restype, chi)


def close_proline_rings(pos: torch.Tensor, restype: torch.Tensor, chi: torch.Tensor) -> torch.Tensor:
    """Close every proline ring: its CD must bond to its own N, which χ1/χ2 from a network or a table need not
    ensure. A grid of χ1 (±40° around the given value, 4° steps) × χ2 (−50°..50°, 2° steps) is searched for the
    pair whose CD–N distance is nearest the ideal length (ties broken towards the given χ1); CG and CD move there.
    pos [..., L, 14, 3] Å; restype [L]; chi [..., L, 4] rad. Returns the new positions (others unchanged)."""
    pro = (restype == PRO).nonzero().flatten()
    if pro.numel() == 0:
        return pos
    geo = ideal_geometry()
    dt, dev = pos.dtype, pos.device
    p = pos[..., pro, :, :]  # [..., P, 14, 3]
    n, ca, cb = p[..., 0, :], p[..., 1, :], p[..., 4, :]
    c1 = chi[..., pro, 0, None] + torch.deg2rad(torch.arange(*PRO_CHI1_DELTA_DEG, dtype=dt, device=dev))  # [..., P, 21]
    cg = nerf(n[..., None, :], ca[..., None, :], cb[..., None, :], float(geo.bond[PRO, 5]),
              float(geo.angle[PRO, 5]), float(geo.offset[PRO, 5]) + c1)  # [..., P, 21, 3]
    c2 = torch.deg2rad(torch.arange(*PRO_CHI2_DEG, dtype=dt, device=dev))  # [51]
    cd = nerf(ca[..., None, None, :], cb[..., None, None, :], cg[..., None, :], float(geo.bond[PRO, 6]),
              float(geo.angle[PRO, 6]), float(geo.offset[PRO, 6]) + c2)  # [..., P, 21, 51, 3]
    err = ((cd - n[..., None, None, :]).norm(dim=-1) - float(geo.bond_length[PRO, PRO_CD_N_BOND])).abs()
    err = err + PRO_TIE_WEIGHT * (c1 - chi[..., pro, 0, None]).abs()[..., None]
    best = err.flatten(-2).argmin(-1)  # [..., P]
    i1 = (best // c2.numel())[..., None, None].expand(*best.shape, 1, 3)
    new_cg = cg.gather(-2, i1).squeeze(-2)
    new_cd = cd.flatten(-3, -2).gather(-2, best[..., None, None].expand(*best.shape, 1, 3)).squeeze(-2)
    pos = pos.clone()
    pos[..., pro, 5, :] = new_cg
    pos[..., pro, 6, :] = new_cd
    return pos
