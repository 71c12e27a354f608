"""Backbone settling's non-local rules: contacts between a peptide unit and the units and residues of distant parts
of the chain (or of other segments), which no local rule sees (batched torch; Å).

Two sampled peptide rotations can put the carbonyls of distant strands on top of each other, and a carbonyl O can
land on the CB of a residue across a tight contact (the CB is fixed by that residue's N, CA and C, so no side-chain
move clears it). :func:`far_contacts` says which units to settle; :func:`far_cost` scores a unit's candidate
rotations against the non-local units with the nearest CAs. The CB used here is the one an alanine would have on
the current backbone (:func:`unit_cbs`): every residue type but glycine puts its CB there.
"""

from __future__ import annotations

import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.ideal_geometry import ideal_geometry
from ldb_hpc.geometry.builder import nerf

FAR_LINKS = 3  # units at least this many links apart (or in other segments) are "non-local" to each other
FAR_NEAREST = 8  # the non-local units a settling candidate is scored against: those with the nearest CAs
O_O_MIN, O_N_MIN = 2.7, 2.6  # Å: settling keeps non-local O–O and O–N pairs at least this far apart
# Non-local O–CB: flagged below 2.2 Å, kept ≥ 2.4 Å (the closest in the 24 CASP12 structures is 2.39 Å; a glycine's
# would-be CB, where its HA sits, comes within 1.7 Å of a carbonyl, so glycines take no part).
O_CB_FLAG, O_CB_MIN = 2.2, 2.4


def cb_geometry() -> tuple[float, float, float]:
    """(bond, angle, torsion) of an alanine's CB from C, N, CA (the ideal geometry's)."""
    geo = ideal_geometry()
    ala = rc.RESTYPE_INDEX["ALA"]
    return float(geo.bond[ala, 4]), float(geo.angle[ala, 4]), float(geo.offset[ala, 4])


def unit_cbs(ca: torch.Tensor, units, linked: torch.Tensor, has_cb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The CB of the residue after every unit: unit k joins residues k and k+1, and residue k+1 takes its N from
    unit k and its C from unit k+1. has_cb: [L] bool, the residues that have a CB (all but glycine). Returns cb
    [..., L-1, 3] and valid [L-1] (a CB, and both units there; the last unit's residue has no C from a unit)."""
    c_next = torch.cat([units.c[..., 1:, :], units.c[..., -1:, :]], -2)
    cb = nerf(c_next, units.n, ca[..., 1:, :], *cb_geometry())
    valid = torch.cat([linked[:-1] & linked[1:] & has_cb[1:-1], torch.zeros_like(linked[:1])])
    return cb, valid


def far_contacts(units, linked: torch.Tensor, ca: torch.Tensor, has_cb: torch.Tensor | None = None,
                 cutoff: float = 2.3, block: int = 512, unit_cb: tuple | None = None) -> torch.Tensor:
    """[..., L-1] bool: the unit's O lies closer than ``cutoff`` Å to the O or N of a non-local unit of the same
    frame (:data:`FAR_LINKS`), or its N to such a unit's O, or its O closer than :data:`O_CB_FLAG` to the CB of the
    residue after such a unit (:func:`unit_cbs`; only with ``has_cb``). Both sides are flagged: for an O–CB pair
    the O's unit and the two units that place the CB. Row blocks bound memory. unit_cb: :func:`unit_cbs` of
    ``units`` when the caller has it (with ``has_cb``)."""
    o = units.o
    L1 = o.shape[-2]
    idx = torch.arange(L1, device=o.device)
    has_cb = torch.zeros(ca.shape[-2], dtype=torch.bool, device=o.device) if has_cb is None else has_cb
    cb, cb_valid = unit_cb if unit_cb is not None else unit_cbs(ca, units, linked, has_cb)
    targets = torch.cat([o, units.n, cb], dim=-2)  # [..., 3·(L-1), 3]: every O, then every N, then every CB
    radius = torch.cat([torch.full((2 * L1,), cutoff), torch.full((L1,), O_CB_FLAG)]).to(o)
    out = torch.zeros(o.shape[:-1], dtype=torch.bool, device=o.device)
    cb_hit = torch.zeros_like(out)
    for s in range(0, L1, block):
        e = min(s + block, L1)
        far = ((idx[s:e, None] - idx[None, :]).abs() >= FAR_LINKS) & linked[s:e, None] & linked[None, :]
        hit = (torch.cdist(o[..., s:e, :], targets) < radius) & torch.cat([far, far, far & cb_valid[None]], -1)
        out[..., s:e] |= hit.any(-1)  # the O side (O–O pairs are symmetric: the partner's own row flags it)
        out |= hit[..., L1:2 * L1].any(-2)  # O–N: the N side
        cb_hit |= hit[..., 2 * L1:].any(-2)  # O–CB: the CB side
    out[..., :-1] |= cb_hit[..., :-1]  # the unit that gives the CB's residue its N ...
    out[..., 1:] |= cb_hit[..., :-1]  # ... and the one that gives it its C
    return out


def far_cost(ca: torch.Tensor, idx: tuple, linked: torch.Tensor, units, o_c: torch.Tensor, n_c: torch.Tensor,
             has_cb: torch.Tensor | None = None, cb_c: tuple = (), unit_cb: tuple | None = None) -> torch.Tensor:
    """[P, G] settling cost of candidate O and N positions o_c, n_c [P, G, 3] of the units idx (batch indices...,
    link j) against the non-local units with the nearest CAs: O–O ≥ 2.7 Å, O–N and N–O ≥ 2.6 Å; with ``has_cb``
    ([L] bool) also O–CB ≥ 2.4 Å, and cb_c: (candidate CB [P, G, 3], valid [P]) pairs of the residues the unit's
    rotation moves, kept ≥ 2.4 Å from those units' O. unit_cb: :func:`unit_cbs` of ``units`` when the caller
    has it."""
    j = idx[-1]
    L1 = units.o.shape[-2]
    if L1 <= FAR_LINKS:
        return torch.zeros(o_c.shape[:2], dtype=o_c.dtype, device=o_c.device)
    take = lambda x: x[idx[:-1]] if len(idx) > 1 else x.expand(len(j), *x.shape)  # noqa: E731  [P, L1, ...]
    ca_u = take(ca[..., :-1, :])
    d_ca = (ca_u - ca_u[torch.arange(len(j), device=j.device), j][:, None]).norm(dim=-1)  # [P, L1]
    k_idx = torch.arange(L1, device=j.device)
    far = ((k_idx[None] - j[:, None]).abs() >= FAR_LINKS) & linked[None] & linked[j][:, None]
    d_ca = torch.where(far, d_ca, torch.full_like(d_ca, float("inf")))
    near = d_ca.topk(min(FAR_NEAREST, L1), dim=-1, largest=False).indices  # [P, K]
    ok = far.gather(1, near)[:, None]  # [P, 1, K]
    pick = lambda x: take(x).gather(1, near[..., None].expand(-1, -1, 3))  # noqa: E731  [P, K, 3]
    o_k, n_k = pick(units.o), pick(units.n)
    cost = (torch.relu(O_O_MIN - torch.cdist(o_c, o_k)) ** 2 + torch.relu(O_N_MIN - torch.cdist(o_c, n_k)) ** 2
            + torch.relu(O_N_MIN - torch.cdist(n_c, o_k)) ** 2) * ok
    if has_cb is None:
        return cost.sum(-1)
    cb, cb_valid = unit_cb if unit_cb is not None else unit_cbs(ca, units, linked, has_cb)
    cost = cost + torch.relu(O_CB_MIN - torch.cdist(o_c, pick(cb))) ** 2 * (ok & cb_valid[near][:, None])
    for cand, valid in cb_c:
        cost = cost + torch.relu(O_CB_MIN - torch.cdist(cand, o_k)) ** 2 * (ok & valid[:, None, None])
    return cost.sum(-1)
