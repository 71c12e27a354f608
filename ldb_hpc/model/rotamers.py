"""χ1 at inference: the regressed χ1 moved into its rotamer well, the distal χ re-fitted behind it.

The decoder's χ1 is trained toward the mean (squared atom error), so where it is unsure between two wells it falls
between them, which is never within 40° of either. At inference:
- :data:`STAGGERED_CHI1` types (one or two atoms beyond CB) get the centre of their nearest well (g+ 60°, t 180°,
  g− −60°);
- :data:`NEAR_WELL_CHI1` types get χ1 clamped to within :data:`NEAR_WELL_DEG` of that centre, and then each
  distal χ (χ2, χ3, χ4 in turn) is set so that its fourth atom lands as near as the new upstream atoms allow to
  where the regression's own build put it: the atom lies on a circle about the χ bond, and the nearest point of
  that circle to a target is the one at the target's own dihedral. The side chain keeps the mean position the
  network chose beyond its first atoms; only the χ1 that the accuracy metric reads moves.
Chosen on valid/pfam40 (docs/MODEL.md): per type, a clamp paid in χ1 without costing RMSD for these six; the
aromatics lost RMSD (their rings swing with χ1) and the rest gained no χ1.
"""

from __future__ import annotations

import math

import torch

from ldb_hpc import ops
from ldb_hpc.chem import residues as rc
from ldb_hpc.geometry import resident
from ldb_hpc.geometry.resident import on_device
from ldb_hpc.geometry.vectors import dihedral

# χ1 rotamer wells (g+, t, g−), rad: the classes of the χ1 mode head; a χ1 belongs to the nearest.
CHI1_WELLS = torch.deg2rad(torch.tensor([60.0, 180.0, -60.0]))
# Residue types whose χ1 is built at the centre of its nearest well at inference.
STAGGERED_CHI1 = ("SER", "CYS", "THR", "VAL")
# Residue types whose χ1 is clamped to within NEAR_WELL_DEG of that centre, the distal χ re-fitted.
NEAR_WELL_CHI1 = ("ARG", "ASP", "GLN", "GLU", "LEU", "LYS")
NEAR_WELL_DEG = 25.0

# Per residue type the largest distance (rad) its χ1 may keep from the nearest well centre: 0 for STAGGERED_CHI1,
# NEAR_WELL_DEG for NEAR_WELL_CHI1, π (no move) otherwise. A host table, moved to the input's device where used.
_HALF_WIDTH = torch.full((rc.NUM_RESTYPES,), math.pi, dtype=torch.float64)
_HALF_WIDTH[[rc.RESTYPE_INDEX[t] for t in STAGGERED_CHI1]] = 0.0
_HALF_WIDTH[[rc.RESTYPE_INDEX[t] for t in NEAR_WELL_CHI1]] = math.radians(NEAR_WELL_DEG)
_CHI_SLOTS = torch.as_tensor(rc.CHI_SLOTS)  # [21, 4, 4]
_CHI_MASK = torch.as_tensor(rc.CHI_MASK)  # [21, 4]


def chi1_well(chi1: torch.Tensor) -> torch.Tensor:
    """Index (0 g+, 1 t, 2 g−) of the χ1 well nearest to each angle chi1 [...] rad."""
    wells = on_device(CHI1_WELLS, chi1.device, chi1.dtype)
    return (1 - torch.cos(chi1[..., None] - wells)).argmin(-1)


def staggered_chi1(chi: torch.Tensor, restype: torch.Tensor) -> torch.Tensor:
    """χ [..., L, 4] rad with χ1 moved into its nearest well (restype [L]): to the centre for STAGGERED_CHI1, to
    within NEAR_WELL_DEG of it for NEAR_WELL_CHI1; other types and χ2..χ4 keep their values exactly."""
    chi1 = chi[..., 0]
    centre = on_device(CHI1_WELLS, chi.device, chi.dtype)[chi1_well(chi1)]
    off = torch.remainder(chi1 - centre + math.pi, 2 * math.pi) - math.pi
    w = on_device(_HALF_WIDTH, restype.device, chi.dtype)[restype]
    moved = off.abs() > w
    chi1 = torch.where(moved, centre + torch.where(off > 0, w, -w), chi1)
    return torch.cat([chi1[..., None], chi[..., 1:]], dim=-1)


def settle_chi1(pos: torch.Tensor, backbone: tuple, chi: torch.Tensor,
                restype: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The side chains of ``pos`` [..., L, 14, 3] Å (built from ``backbone`` = (ca, n, c, o_torsion) and
    ``chi`` [..., L, 4] rad; restype [L]) with χ1 moved by :func:`staggered_chi1` and, behind it, χ2..χ4 re-fitted
    so that each χ's fourth atom lies as near to its place in ``pos`` as the atoms before it allow. Only the
    residues whose χ1 moved are rebuilt (the builder is per residue); the others keep their atoms and angles
    exactly. Returns (positions, chi)."""
    new = staggered_chi1(chi, restype)
    moved = resident.current().select("chi1", new[..., 0] != chi[..., 0])
    if moved.surely_empty:
        return pos, new
    lead = chi.shape[:-1]
    rows = moved.idx
    take = lambda x, k: x.expand(*lead, *k).reshape(-1, *k)[rows]  # noqa: E731
    ca, n, c, o_t = (take(x, k) for x, k in zip(backbone, ((3,), (3,), (3,), ())))
    rt = take(restype, ())
    target = pos.reshape(-1, *pos.shape[-2:])[rows]
    sub = new.reshape(-1, 4)[rows]
    sub_pos = ops.atoms_from_backbone(n, ca, c, o_t, sub, rt)
    mask = on_device(_CHI_MASK, rt.device)[rt]  # [M, 4]
    slots = on_device(_CHI_SLOTS, rt.device)[rt]  # [M, 4, 4]
    m = torch.arange(rt.shape[0], device=rt.device)
    for k in range(1, 4):  # χ2..χ4 (a residue without χk keeps its angle: the rebuild changes none of its atoms)
        a, b, d, e = (x[m, slots[:, k, j]] for x, j in ((sub_pos, 0), (sub_pos, 1), (sub_pos, 2), (target, 3)))
        sub = torch.cat([sub[:, :k], torch.where(mask[:, k], dihedral(a, b, d, e), sub[:, k])[:, None],
                         sub[:, k + 1:]], dim=-1)
        sub_pos = ops.atoms_from_backbone(n, ca, c, o_t, sub, rt)
    flat_pos, flat_new = pos.reshape(-1, *pos.shape[-2:]).clone(), new.reshape(-1, 4).clone()
    moved.put(flat_pos, sub_pos)
    moved.put(flat_new, sub)
    return flat_pos.reshape(pos.shape), flat_new.reshape(new.shape)


def chi_from_modes(chi: torch.Tensor, logits: torch.Tensor, p_min: float) -> torch.Tensor:
    """χ [..., 4] rad with χ1 moved to the centre of the mode head's well wherever the head gives that well a
    probability ≥ p_min and the regressed χ1 lies in another well (the regression, trained toward the mean,
    falls between wells when unsure; the mode wins χ accuracy where the head is sure)."""
    prob, well = logits.softmax(-1).max(-1)
    move = (prob >= p_min) & (well != chi1_well(chi[..., 0]))
    chi1 = torch.where(move, CHI1_WELLS.to(chi.device, chi.dtype)[well], chi[..., 0])
    return torch.cat([chi1[..., None], chi[..., 1:]], dim=-1)
