"""Side chains fitted to the beads (Martini 3's SC1…SC5, or a residue's centre of mass): the χ angles of every
residue moved so that the beads of the built atoms (the same mapping, ldb_hpc.chem.cg_mappings) lie where the
input's beads are.

The LDB model builds from the C-alpha trace; a mapping with side-chain beads says far more about side chains than
the trace does. The fit keeps the backbone and searches χ1…χ4 in coordinate sweeps (:func:`fit_side_chains`),
every candidate built by the fused atom builder (ldb_hpc.ops), and hands the result to the clash repair
(ldb_hpc.model.packing, ldb_hpc.model.rescue) so the guarantee of no pair < 1.2 Å holds as on the C-alpha path.
"""

from __future__ import annotations

import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.cg_mappings import mapping
from ldb_hpc.geometry.builder import measure_torsions
from ldb_hpc.geometry.vectors import dihedral

QUANTUM = 1e-3  # Å²: scores are compared in these steps, so that float rounding (which differs with the batch a
# frame is computed in) does not flip a choice between candidates that fit equally well


def _misfit(pos, target, sc_mask, w, w_sum):
    """Per-residue squared distance of the side-chain beads of atoms ``pos`` [..., L, 14, 3] to ``target``
    [..., L, NB, 3] → [..., L]."""
    built = torch.einsum("lbs,...lsx->...lbx", w, pos) / w_sum
    return (((built - target) ** 2).sum(-1) * sc_mask).sum(-1)


def _steps(score: torch.Tensor) -> torch.Tensor:
    return torch.round(score / QUANTUM)


# χ between two sp3 atoms: three staggered wells (60°, 180°, 300°); every χ1 (proline's ring is not fitted), χ2 of
# Arg, Gln, Glu, Ile, Leu, Lys, Met, χ3 of Arg, Lys, Met, χ4 of Lys.
_STAGGERED = {"ARG": (0, 1, 2), "GLN": (0, 1), "GLU": (0, 1), "ILE": (0, 1), "LEU": (0, 1), "LYS": (0, 1, 2, 3),
              "MET": (0, 1, 2)}
STAGGERED = torch.zeros(len(rc.RESTYPES_3), 4, dtype=torch.bool)
for _t, _res in enumerate(rc.RESTYPES_3):
    STAGGERED[_t, list(_STAGGERED.get(_res, (0,) if rc.CHI_MASK[_t][0] else ()))] = True
WELL_WEIGHT = 0.015  # Å² at an eclipsed angle: the beads decide, the wells break their ties
GOOD_FIT = 0.05  # Å²: side-chain beads this near their targets in every sample are left as the model built them
MODEL_WEIGHT = 0.01  # Å² at the opposite angle: among fits the beads cannot tell apart, the model's χ


def _prior(chi, chi0, staggered):
    """[..., L] the χ prior: eclipsed sp3 torsions and distance from the model's χ."""
    wells = ((1 - torch.cos(3 * chi)) / 2 * staggered).sum(-1)
    return WELL_WEIGHT * wells + MODEL_WEIGHT * ((1 - torch.cos(chi - chi0)) / 2).sum(-1)


# Coordinate sweeps over χ1…χ4: the whole circle every 30° (χ1, χ2, χ3, χ4 in turn), then finer steps around
# the best (±16° by 4°, ±3° by 1.5°).
_COARSE = torch.arange(-180.0, 180.0, 30.0)
_PLAN = ([(k, _COARSE, True) for k in (0, 1, 2, 3)] + [(k, torch.arange(-16.0, 16.1, 4.0), False)
                                                              for k in range(4)]
         + [(k, torch.arange(-3.0, 3.1, 1.5), False) for k in range(4)])


def fit_side_chains(pos: torch.Tensor, beads: torch.Tensor, bead_mask: torch.Tensor, restype: torch.Tensor,
                    segment: torch.Tensor, cg: str = "martini3") -> torch.Tensor:
    """pos [B, S, L, 14, 3] Å (every sample of B frames), beads [B, L, NB, 3] Å, bead_mask [L, NB] bool, restype,
    segment [L] → positions [B, S, L, 14, 3] Å with χ fitted to the side-chain beads, clashes repaired.

    Each χ in turn (the sweeps of ``_PLAN``) takes, per residue, the candidate value whose built side-chain beads
    lie nearest the targets (plus a small prior: staggered wells for sp3 torsions, the model's own χ), all
    candidates of a step built in one batched call of the atom builder over the residues that have that χ (no
    gradients)."""
    from ldb_hpc import ops

    B, S, L = pos.shape[:3]
    x = pos.reshape(B * S, L, rc.NUM_SLOTS, 3).float()
    dev = x.device
    target = beads.float().repeat_interleave(S, dim=0)  # [B·S, L, NB, 3]
    w_all = torch.as_tensor(mapping(cg).weights, dtype=x.dtype, device=dev)[restype]  # [L, NB, 14]
    sc_all = bead_mask.to(x.dtype).clone()
    if cg == "martini3":
        sc_all[:, 0] = 0.0  # the backbone bead BB: the backbone stays (a COM bead holds the side chain too)
    n, ca, c = x[..., 0, :], x[..., 1, :], x[..., 2, :]
    o_t = dihedral(n, ca, c, x[..., 3, :])
    tor, _ = measure_torsions(x, restype)
    chi0 = tor[..., 1:].clone()
    chi = chi0.clone()
    has = torch.as_tensor(rc.CHI_MASK, device=dev)[restype].bool()  # [L, 4]
    stag_all = STAGGERED.to(dev)[restype].to(x.dtype)
    movable = has[:, 0] & (restype != rc.RESTYPE_INDEX["PRO"]) & (sc_all.sum(-1) > 0)
    with torch.no_grad():
        # Residues whose beads the model's build already meets (within GOOD_FIT in every frame and sample) keep
        # their χ: the search is for the others.
        start = _misfit(x, target, sc_all, w_all, w_all.sum(-1).clamp_min(1e-9).unsqueeze(-1))  # [B·S, L]
        search = movable & (_steps(start) > round(GOOD_FIT / QUANTUM))  # per row: rows never depend on each other
    if not bool(search.any()):
        return _repaired(x, chi, n, ca, c, o_t, restype, segment).reshape(pos.shape).to(pos.dtype)
    with torch.no_grad():
        for k, grid, absolute in _PLAN:
            idx = torch.nonzero(has[:, k] & search.any(0)).flatten()  # the residues that have χk, searched
            if idx.numel() == 0:
                continue
            steps = torch.deg2rad(grid).to(dev, x.dtype).view(-1, 1, 1)
            C = steps.shape[0]
            sub = chi[:, idx]  # [B·S, l, 4]
            cand = sub.unsqueeze(0).repeat(C, 1, 1, 1)  # [C, B·S, l, 4]
            cand[..., k] = steps if absolute else cand[..., k] + steps
            parts = [t[:, idx].expand(C, *t[:, idx].shape) for t in (n, ca, c, o_t)]
            built = ops.atoms_from_backbone(*parts, cand, restype[idx])
            w = w_all[idx]
            err = _misfit(built, target[:, idx], sc_all[idx], w, w.sum(-1).clamp_min(1e-9).unsqueeze(-1))
            err = err + _prior(cand, chi0[:, idx], stag_all[idx])
            best = _steps(err).argmin(0)  # [B·S, l]: the first of equal candidates
            pick = cand.gather(0, best[None, ..., None].expand(1, *sub.shape))[0]
            chi[:, idx] = torch.where(search[:, idx].unsqueeze(-1), pick, sub)
        out = ops.atoms_from_backbone(n, ca, c, o_t, chi, restype)
        out = torch.where(search[..., None, None], out, x)
    return _repaired(out, chi, n, ca, c, o_t, restype, segment).reshape(pos.shape).to(pos.dtype)


def _repaired(x, chi, n, ca, c, o_t, restype, segment):
    """The clash repair of the C-alpha path (ldb_hpc.model.packing, then ldb_hpc.model.rescue) on atoms x."""
    from ldb_hpc.model.packing import repack
    from ldb_hpc.model.rescue import rescue

    with torch.no_grad():
        x = repack(x, ca, n, c, o_t, chi, restype, segment)
        return rescue(x, ca, n, c, o_t, restype, segment)
