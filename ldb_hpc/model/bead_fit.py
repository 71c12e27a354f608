"""Side chains fitted to side-chain beads (Martini 3's SC1…SC5): the χ angles of every residue moved so that the
beads of the built atoms (the same mapping, ldb_hpc.chem.cg_mappings) lie where the input's beads are.

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


def _misfit(pos, target, sc_mask, w, w_sum):
    """Per-residue squared distance of the side-chain beads of atoms ``pos`` [..., L, 14, 3] to ``target``
    [..., L, NB, 3] → [..., L]."""
    built = torch.einsum("lbs,...lsx->...lbx", w, pos) / w_sum
    return (((built - target) ** 2).sum(-1) * sc_mask).sum(-1)


# Coordinate sweeps over χ1…χ4: a coarse grid over the whole circle, then two finer ones around the best.
_SWEEPS = (torch.arange(-180.0, 180.0, 15.0), torch.arange(-12.0, 12.1, 4.0), torch.arange(-3.0, 3.1, 1.5))


def fit_side_chains(pos: torch.Tensor, beads: torch.Tensor, bead_mask: torch.Tensor, restype: torch.Tensor,
                    segment: torch.Tensor, cg: str = "martini3") -> torch.Tensor:
    """pos [B, S, L, 14, 3] Å (every sample of B frames), beads [B, L, NB, 3] Å, bead_mask [L, NB] bool, restype,
    segment [L] → positions [B, S, L, 14, 3] Å with χ fitted to the side-chain beads, clashes repaired.

    Each χ in turn (χ1…χ4, three sweeps: every 15°, then ±12° by 4°, then ±3° by 1.5°) takes, per residue, the value
    of its candidates whose built side-chain beads lie nearest the targets, all candidates of a step built in one
    batched call of the atom builder (no gradients). The first sweep is absolute for χ1 only; χ2…χ4 start from the
    model's values and move by the finer sweeps, so the model's rotamer knowledge is kept where the beads are
    silent."""
    from ldb_hpc import ops
    from ldb_hpc.model.packing import repack
    from ldb_hpc.model.rescue import rescue

    B, S, L = pos.shape[:3]
    x = pos.reshape(B * S, L, rc.NUM_SLOTS, 3).float()
    dev = x.device
    target = beads.float().repeat_interleave(S, dim=0)  # [B·S, L, NB, 3]
    w = torch.as_tensor(mapping(cg).weights, dtype=x.dtype, device=dev)[restype]  # [L, NB, 14]
    w_sum = w.sum(-1).clamp_min(1e-9).unsqueeze(-1)
    sc_mask = bead_mask.to(x.dtype).clone()
    sc_mask[:, 0] = 0.0  # the backbone bead: the backbone stays
    n, ca, c = x[..., 0, :], x[..., 1, :], x[..., 2, :]
    o_t = dihedral(n, ca, c, x[..., 3, :])
    tor, _ = measure_torsions(x, restype)
    chi = tor[..., 1:].clone()
    has = torch.as_tensor(rc.CHI_MASK, device=dev)[restype].bool()  # [L, 4]
    movable = has[:, 0] & (restype != rc.RESTYPE_INDEX["PRO"]) & (sc_mask.sum(-1) > 0)
    if not bool(movable.any()):
        return pos
    with torch.no_grad():
        for sweep, grid in enumerate(_SWEEPS):
            for k in range(4):
                if not bool((has[:, k] & movable).any()) or (sweep == 0 and k > 0):
                    continue
                steps = torch.deg2rad(grid).to(dev, x.dtype)
                cand = chi.unsqueeze(0).repeat(len(steps), 1, 1, 1)  # [C, B·S, L, 4]
                cand[..., k] = (steps.view(-1, 1, 1) if sweep == 0 else cand[..., k] + steps.view(-1, 1, 1))
                C = len(steps)
                built = ops.atoms_from_backbone(n.expand(C, *n.shape), ca.expand(C, *ca.shape),
                                                c.expand(C, *c.shape), o_t.expand(C, *o_t.shape), cand, restype)
                err = _misfit(built, target, sc_mask, w, w_sum)  # [C, B·S, L]
                best = err.argmin(0)  # [B·S, L]
                pick = cand.gather(0, best[None, ..., None].expand(1, *chi.shape))[0]
                sel = (has[:, k] & movable)[:, None] & (torch.arange(4, device=dev) == k)  # [L, 4]
                chi = torch.where(sel, pick, chi)
        out = ops.atoms_from_backbone(n, ca, c, o_t, chi, restype)
        out = torch.where(movable[:, None, None], out, x)
        out = repack(out, ca, n, c, o_t, chi, restype, segment)
        out = rescue(out, ca, n, c, o_t, restype, segment)
    return out.reshape(B, S, L, rc.NUM_SLOTS, 3).to(pos.dtype)
