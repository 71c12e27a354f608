"""Internal coordinates ↔ atom14 positions (batched torch reference; Å, radians).

Conventions:

* ``dihedral(a, b, c, d)`` follows IUPAC: looking along b→c, a positive angle is a clockwise rotation of the far
  bond c–d relative to the near bond b–a (right-hand rule about b→c); range (−π, π]; cis = 0, trans = ±π.
* ``bond_angle(a, b, c)`` is the angle at b, in [0, π].
* The Z-matrix of every residue type is ``ldb_hpc.chem.residues.ZM_REFS`` / ``ZM_TORSION`` / ``ZM_MASK``: slot s
  is placed from reference slots (a, b, c) with |c − x| = bond, angle(b, c, x) = angle and
  dihedral(a, b, c, x) = dihedral. Slots 0..2 (N, CA, C) are placed from the residue frame (see
  :mod:`ldb_hpc.geometry.frames`) using their local coordinates ``frame_local [..., 3 atoms, 3]``.
* Torsion channels of :func:`build_atoms`: 0 = the O torsion, dihedral N–CA–C–O (≈ ψ + 180°), 1..4 = χ1..χ4.
  The dihedral of slot s is ``offset[restype, s] + torsions[..., ZM_TORSION[restype, s]]`` (fixed slots,
  ZM_TORSION = −1: the offset alone).

Everything is finite for degenerate input (coincident or collinear atoms), gradients included.
"""

from __future__ import annotations

import numpy as np
import torch

from ldb_hpc.chem.residues import (
    CHI_MASK,
    CHI_SLOTS,
    NUM_SLOTS,
    NUM_TORSIONS,
    SLOT_MASK,
    ZM_MASK,
    ZM_REFS,
    ZM_TORSION,
)
from ldb_hpc.geometry.frames import apply_frames, basis_from_two_vectors, frames_from_backbone, invert_apply
from ldb_hpc.geometry.resident import on_device
from ldb_hpc.geometry.vectors import bond_angle, broadcast_shape, dihedral, safe_norm


def nerf(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, bond, angle, torsion) -> torch.Tensor:
    """Place x from three reference atoms (natural extension reference frame).

    a, b, c: [..., 3] Å; bond [...] Å, angle [...] rad, torsion [...] rad (tensors or floats, broadcast).
    Returns x [..., 3] with |x − c| = bond, bond_angle(b, c, x) = angle, dihedral(a, b, c, x) = torsion.
    Collinear a, b, c (dihedral undefined) place x with an arbitrary but fixed, finite orientation.
    """
    ref = c if torch.is_tensor(c) else torch.as_tensor(c)
    bond, angle, torsion = (torch.as_tensor(v, dtype=ref.dtype, device=ref.device) for v in (bond, angle, torsion))
    R = basis_from_two_vectors(c - b, a - b)  # ex = b→c, ey ⟂ ex towards a, ez = ex × ey
    sin_a = torch.sin(angle)
    local = torch.stack(
        torch.broadcast_tensors(-bond * torch.cos(angle), bond * sin_a * torch.cos(torsion),
                                bond * sin_a * torch.sin(torsion)), dim=-1)
    return c + torch.einsum("...ij,...j->...i", R, local)


def _table(array: np.ndarray, like: torch.Tensor, dtype=None) -> torch.Tensor:
    return on_device(array, like.device, dtype)  # uploaded once per device


def build_from_internal(R: torch.Tensor, t: torch.Tensor, restype: torch.Tensor, bond: torch.Tensor,
                        angle: torch.Tensor, dihedral_: torch.Tensor, frame_local: torch.Tensor) -> torch.Tensor:
    """Atom14 positions from residue frames and per-slot internal coordinates.

    R [..., L, 3, 3], t [..., L, 3] Å: residue frames; restype [..., L] long; bond [..., L, 14] Å,
    angle [..., L, 14] rad, dihedral_ [..., L, 14] rad: the Z-matrix values of each slot (entries of slots
    0..2 and of absent slots are ignored); frame_local [..., L, 3, 3]: local coordinates (Å) of N, CA, C (rows).
    Returns positions [..., L, 14, 3] Å; slots that do not exist for the residue type are exactly zero.
    One NeRF step per slot index (slot order is a valid placement order), vectorised over everything else.
    """
    restype = torch.as_tensor(restype, device=t.device).long()
    lead = broadcast_shape(R.shape[:-2], t.shape[:-1], restype.shape, bond.shape[:-1], angle.shape[:-1],
                                  dihedral_.shape[:-1], frame_local.shape[:-2])
    restype = restype.expand(lead)
    bond, angle, dihedral_ = (v.expand(*lead, NUM_SLOTS) for v in (bond, angle, dihedral_))
    refs = _table(ZM_REFS, t)[restype]  # [..., L, 14, 3]
    placed = _table(ZM_MASK, t)[restype]  # [..., L, 14]
    exists = _table(SLOT_MASK, t)[restype]

    frame_atoms = apply_frames(R, t, frame_local).expand(*lead, 3, 3)
    slots = list(frame_atoms.unbind(-2))
    zero = torch.zeros((), dtype=frame_atoms.dtype, device=t.device)
    for s in range(3, NUM_SLOTS):
        done = torch.stack(slots, dim=-2)  # [..., L, s, 3]
        idx = refs[..., s, :].unsqueeze(-1).expand(*lead, 3, 3)
        a, b, c = done.gather(-2, idx).unbind(-2)
        x = nerf(a, b, c, bond[..., s], angle[..., s], dihedral_[..., s])
        slots.append(torch.where(placed[..., s].unsqueeze(-1), x, zero))
    pos = torch.stack(slots, dim=-2)
    return torch.where(exists.unsqueeze(-1), pos, zero)


def _gather_slots(positions: torch.Tensor, slots: torch.Tensor, k_dims: int) -> torch.Tensor:
    """positions [..., L, 14, 3], slots [..., L, *k] long (k has k_dims dims) → [..., L, *k, 3]."""
    k = slots.shape[slots.dim() - k_dims:]
    lead = broadcast_shape(positions.shape[:-2], slots.shape[:slots.dim() - k_dims])
    positions = positions.expand(*lead, NUM_SLOTS, 3)
    flat = slots.expand(*lead, *k).reshape(*lead, -1, 1).expand(*lead, int(np.prod(k)), 3)
    return positions.gather(-2, flat).reshape(*lead, *k, 3)


def measure_internal(positions: torch.Tensor, restype: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Z-matrix internal coordinates of atom14 positions (the inverse of :func:`build_from_internal`).

    positions [..., L, 14, 3] Å; restype [..., L] long. Returns (bond Å, angle rad, dihedral rad), each
    [..., L, 14]; zero for slots 0..2 and for slots the residue type does not have.
    """
    restype = torch.as_tensor(restype, device=positions.device).long()
    refs = _table(ZM_REFS, positions)[restype]  # [..., L, 14, 3]
    abc = _gather_slots(positions, refs, 2)  # [..., L, 14, 3, 3]
    lead = abc.shape[:-2]  # [..., L, 14]
    x = positions.expand(*lead, 3)
    a, b, c = abc.unbind(-2)
    placed = _table(ZM_MASK, positions)[restype].expand(lead)
    zero = torch.zeros((), dtype=positions.dtype, device=positions.device)
    bond = torch.where(placed, safe_norm(x - c), zero)
    angle = torch.where(placed, bond_angle(b, c, x), zero)
    dih = torch.where(placed, dihedral(a, b, c, x), zero)
    return bond, angle, dih


def frame_local_of(positions: torch.Tensor) -> torch.Tensor:
    """Local coordinates of N, CA, C in their own residue frame.

    positions [..., L, 14, 3] Å → [..., L, 3, 3] Å (rows N, CA, C; CA = 0, C on +x, N in the x–y plane, y > 0).
    """
    R, t = frames_from_backbone(positions[..., 0, :], positions[..., 1, :], positions[..., 2, :])
    return invert_apply(R, t, positions[..., :3, :])


def _geometry_tables(geometry, like: torch.Tensor):
    if geometry is None:
        from ldb_hpc.chem.ideal_geometry import ideal_geometry

        geometry = ideal_geometry()
    return tuple(torch.as_tensor(np.asarray(getattr(geometry, k)), dtype=like.dtype, device=like.device)
                 for k in ("frame_local", "bond", "angle", "offset"))


def build_atoms(R: torch.Tensor, t: torch.Tensor, torsions: torch.Tensor, restype: torch.Tensor,
                geometry=None, frame_local: torch.Tensor | None = None) -> torch.Tensor:
    """Torsion-driven atom builder with ideal bond lengths, angles and dihedral offsets.

    R [..., L, 3, 3], t [..., L, 3] Å: residue frames; torsions [..., L, 5] rad (0 = N–CA–C–O, 1..4 = χ1..χ4;
    channels a residue type does not use are ignored); restype [..., L] long. ``geometry``: an object with
    numpy arrays frame_local [21, 3, 3] Å, bond [21, 14] Å, angle [21, 14] rad, offset [21, 14] rad
    (default: :func:`ldb_hpc.chem.ideal_geometry.ideal_geometry`). ``frame_local`` [..., L, 3, 3] Å overrides the
    ideal local N, CA, C of each residue (e.g. to keep N and C exactly where a backbone model put them).
    Returns positions [..., L, 14, 3] Å, absent slots zero.
    The slot whose Z-matrix dihedral is a channel's own definition (O for channel 0, the χ-defining atom for χk)
    must have offset 0, so that ``build_atoms(measure_torsions(x))`` reproduces the torsions of x.
    """
    ideal_local, bond, angle, offset = _geometry_tables(geometry, t)
    restype = torch.as_tensor(restype, device=t.device).long()
    channel = _table(ZM_TORSION, t)[restype]  # [..., L, 14], −1 = fixed
    lead = broadcast_shape(torsions.shape[:-1], channel.shape[:-1])
    tor = torsions.expand(*lead, NUM_TORSIONS).gather(-1, channel.clamp(min=0).expand(*lead, NUM_SLOTS))
    dih = offset[restype] + torch.where(channel >= 0, tor, torch.zeros((), dtype=t.dtype, device=t.device))
    if frame_local is None:
        frame_local = ideal_local[restype]
    return build_from_internal(R, t, restype, bond[restype], angle[restype], dih, frame_local)


# Atom slots of the five torsion channels per residue type, and whether the channel exists.
_TOR_SLOTS = np.concatenate([np.broadcast_to(np.array([[[0, 1, 2, 3]]]), (CHI_SLOTS.shape[0], 1, 4)), CHI_SLOTS],
                            axis=1)  # [21, 5, 4]
_TOR_EXISTS = np.concatenate([np.ones((CHI_MASK.shape[0], 1), dtype=bool), CHI_MASK], axis=1)  # [21, 5]


def measure_torsions(positions: torch.Tensor, restype: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The builder's torsion channels measured on atom14 positions.

    positions [..., L, 14, 3] Å; restype [..., L] long; mask [..., L, 14] bool atom present (None: all slots of
    the residue type). Returns (torsions [..., L, 5] rad, torsion_mask [..., L, 5] bool): channel 0 = dihedral
    N–CA–C–O, 1..4 = χ1..χ4 (IUPAC atoms, ldb_hpc.chem.residues.CHI_SLOTS); masked where the residue type has no
    such torsion or one of its four atoms is missing (torsion value 0 there).
    """
    restype = torch.as_tensor(restype, device=positions.device).long()
    slots = _table(_TOR_SLOTS, positions)[restype]  # [..., L, 5, 4]
    atoms = _gather_slots(positions, slots, 2)  # [..., L, 5, 4, 3]
    tor = dihedral(*atoms.unbind(-2))
    ok = _table(_TOR_EXISTS, positions)[restype]
    if mask is None:
        mask = _table(SLOT_MASK, positions)[restype]
    mask = torch.as_tensor(mask, device=positions.device).bool()
    lead = broadcast_shape(mask.shape[:-1], slots.shape[:-2])
    present = (mask.expand(*lead, NUM_SLOTS)
               .gather(-1, slots.expand(*lead, 5, 4).reshape(*lead, 20))
               .reshape(*lead, 5, 4))
    ok = ok & present.all(-1)
    lead = broadcast_shape(ok.shape, tor.shape)
    ok = ok.expand(lead)
    return torch.where(ok, tor.expand(lead), torch.zeros((), dtype=tor.dtype, device=tor.device)), ok
