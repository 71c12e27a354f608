"""Disulfide bonds: which Cys pairs are bonded, and their SG atoms built at the bond's geometry (batched torch).

Only SG moves: a Cys's SG turns about its CA–CB axis (χ1), keeping the CB–SG length and CA–CB–SG angle the
builder gave it. Everything runs on the device of the positions ``pos [R, L, 14, 3]`` (R rows = frames × samples;
atom14 slots, Å).

* **Decided from the backbone the model builds from the beads** (:func:`decide`): a pair of Cys is bonded when
  some pair of χ1 puts its SG atoms at the disulfide's geometry — SG–SG 2.04 Å, CB–SG–SG 104° at both ends,
  |χ3| (CB–SG–SG–CB) 90° — at a cost (squared deviations over 0.1 Å, 10°, 10°, 30°, on a 5° χ1 grid) of at most
  :data:`COST_MAX`; each Cys bonds at most once, the lowest cost first. Fitted on ``train/`` (5,711 Cys pairs
  with CA–CA < 9.5 Å, 2,811 of them bonded: SG–SG ≤ 2.3 Å), see docs/MODEL.md "Disulfides".
* **Built** (:func:`build`): each bonded pair gets the χ1 pair (5° grid, then 1°) that minimises the same cost
  plus the SG atoms' overlap with their neighbours (relu(3.0 Å − d)² over the heavy atoms of the 16 residues with
  the nearest CAs, their own and partner residue excluded), so the bond lies at 1.95–2.15 Å wherever the
  backbone allows it.
* **Kept apart**: the SG of a Cys outside every bond that comes within :data:`APART` of another Cys's SG is
  turned to the χ1 that clears it (and its neighbours) best: no unbonded SG–SG pair is left where a force field's
  set-up tool would bond it (OpenMM bonds SG pairs under 3 Å without HG, pdb2gmx within 2.2 Å).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ldb_hpc.chem.residues import NUM_SLOTS, RESTYPE_INDEX, SLOT_MASK
from ldb_hpc.geometry import resident
from ldb_hpc.geometry.resident import on_device
from ldb_hpc.geometry.vectors import bond_angle, dihedral, safe_norm

CYS = RESTYPE_INDEX["CYS"]
_N, _CA, _CB, _SG = 0, 1, 4, 5

SS_LENGTH = 2.04  # Å, SG–SG
CB_SG_SG = math.radians(104.0)
CHI3 = math.radians(90.0)  # |CB–SG–SG–CB|
SIGMA = (0.1, math.radians(10.0), math.radians(30.0))  # length, angle, χ3
COST_MAX = 1.25  # decide(): a pair whose best χ1 pair costs more is not bonded (train: precision 95 %, recall 87 %)
BONDED_RANGE = (1.9, 2.2)  # Å: an SG–SG bond of the output counts as a bond only at this length
CA_REACH = 7.8  # Å: SG lies within 2.8 Å of its CA, so CA–CA > 2·2.8 + 2.2 cannot bond
SITE_CA = 9.5  # Å: the four Cys of a metal site lie within this of each other (CA–CA)
SITE_COST = 2.0  # a metal site's SG tetrahedron (3.8 ± 0.4 Å edges) fits at most this cost
APART = 3.0  # Å: unbonded SG–SG closer than this are turned apart
CONTACT = 3.0  # Å: SG against other heavy atoms
ENV_K = 16  # residues with the nearest CAs searched for SG contacts
_GRID = torch.arange(-180.0, 180.0, 5.0)
_FINE = torch.arange(-4.0, 5.0, 1.0)


def cys_index(restype) -> torch.Tensor:
    """Indices of the Cys residues of ``restype`` [L] (int64 tensor on restype's device)."""
    rt = torch.as_tensor(restype)
    return torch.nonzero(rt == CYS).flatten()


@functools.lru_cache(maxsize=64)
def _host_tables(restype: bytes, bonded: tuple, device: torch.device):
    """The Cys index tables of one residue list (``restype`` as int64 bytes) and one bond list, decided on the
    host and uploaded once per device: (cys [C], pairs [P, 2], free [F] — the Cys in no bond —, open [Q, 2] —
    the pairs of free Cys, i < j —, and {free Cys: ([it] , the other Cys [C − 1])})."""
    rt = np.frombuffer(restype, dtype=np.int64)
    cys = np.nonzero(rt == CYS)[0]
    pairs = np.asarray(bonded, dtype=np.int64).reshape(-1, 2)
    free = cys[~np.isin(cys, pairs.reshape(-1))]
    i, j = np.triu_indices(len(free), 1)
    up = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)  # noqa: E731
    apart = {int(f): (up([f]), up(cys[cys != f])) for f in free}
    return up(cys), up(pairs), up(free), up(np.stack([free[i], free[j]], 1).reshape(-1, 2)), apart


def _tables(restype, bonded, device):
    rt = np.ascontiguousarray(np.asarray(restype.cpu() if torch.is_tensor(restype) else restype, dtype=np.int64))
    return _host_tables(rt.tobytes(), tuple(tuple(int(x) for x in p) for p in bonded), torch.device(device))


def _turn(pos: torch.Tensor, res: torch.Tensor, chi1: torch.Tensor) -> torch.Tensor:
    """SG of residues ``res`` [C] turned to χ1 ``chi1`` [R, C, G] rad (about CA–CB): [R, C, G, 3]."""
    n, ca, cb, sg = (pos[:, res, s] for s in (_N, _CA, _CB, _SG))  # [R, C, 3]
    now = dihedral(n, ca, cb, sg)  # [R, C]
    axis = cb - ca
    axis = axis / safe_norm(axis, keepdim=True)
    delta = chi1 - now[..., None]  # [R, C, G]
    v = (sg - cb)[:, :, None]  # [R, C, 1, 3]
    k = axis[:, :, None].expand_as(v)
    cos, sin = torch.cos(delta)[..., None], torch.sin(delta)[..., None]
    rot = v * cos + torch.linalg.cross(k, v, dim=-1) * sin + k * (k * v).sum(-1, keepdim=True) * (1 - cos)
    return cb[:, :, None] + rot


def _chi1(pos: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
    return dihedral(*(pos[:, res, s] for s in (_N, _CA, _CB, _SG)))  # [R, C]


def _geometry_cost(sg_i, sg_j, cb_i, cb_j) -> torch.Tensor:
    """Cost of SG pairs at the disulfide geometry: sg_i [..., Gi, 1, 3], sg_j [..., 1, Gj, 3], cb [..., 1, 1, 3]."""
    d = safe_norm(sg_i - sg_j)
    a_i = bond_angle(cb_i, sg_i, sg_j)
    a_j = bond_angle(cb_j, sg_j, sg_i)
    chi3 = dihedral(cb_i, sg_i, sg_j, cb_j).abs()
    s_d, s_a, s_x = SIGMA
    return (((d - SS_LENGTH) / s_d) ** 2 + ((a_i - CB_SG_SG) / s_a) ** 2 + ((a_j - CB_SG_SG) / s_a) ** 2
            + ((chi3 - CHI3) / s_x) ** 2)


def pair_costs(pos: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Best geometric cost over the 5° χ1 grid of Cys pairs ``pairs`` [P, 2] in every row: [R, P]."""
    R = pos.shape[0]
    if len(pairs) == 0:
        return pos.new_zeros(R, 0)
    grid = torch.deg2rad(on_device(_GRID, pos.device, pos.dtype))
    chi = grid.expand(R, len(pairs), -1)
    sg_i, sg_j = _turn(pos, pairs[:, 0], chi), _turn(pos, pairs[:, 1], chi)  # [R, P, G, 3]
    cb_i, cb_j = pos[:, pairs[:, 0], _CB], pos[:, pairs[:, 1], _CB]
    cost = _geometry_cost(sg_i[:, :, :, None], sg_j[:, :, None, :], cb_i[:, :, None, None], cb_j[:, :, None, None])
    return cost.flatten(2).amin(-1)


def candidate_pairs(ca: torch.Tensor, restype) -> torch.Tensor:
    """Cys pairs (i < j) whose CAs lie within :data:`CA_REACH` in any row of ``ca`` [R, L, 3]: [P, 2] int64."""
    cys = cys_index(restype).to(ca.device)
    if len(cys) < 2:
        return torch.zeros(0, 2, dtype=torch.long, device=ca.device)
    i, j = torch.triu_indices(len(cys), len(cys), 1, device=ca.device)
    d = (ca[:, cys[i]] - ca[:, cys[j]]).norm(dim=-1)  # [R, P]
    near = (d <= CA_REACH).any(0)
    return torch.stack([cys[i][near], cys[j][near]], 1)


def _metal_sites(pos: torch.Tensor, restype, cost: dict) -> set[int]:
    """Cys of metal sites in ``pos`` [L, 14, 3]: four Cys, all CA–CA ≤ :data:`SITE_CA` Å, whose SG atoms can sit
    pairwise at a tetrahedral metal site's 3.8 Å (cost ≤ :data:`SITE_COST` on a 10° χ1 grid) and which cannot be
    split into two disulfides (no two disjoint pairs both at most :data:`COST_MAX`), while one of their pairs could
    bond. ``cost``: {(i, j): best geometric cost} of the pairs within reach."""
    import itertools

    cys = cys_index(restype).tolist()
    if len(cys) < 4:
        return set()
    ca = pos[cys, _CA]
    near = (torch.cdist(ca, ca) <= SITE_CA).cpu()
    grid = torch.deg2rad(torch.arange(-180.0, 180.0, 10.0, device=pos.device, dtype=pos.dtype))
    out: set[int] = set()
    for q in itertools.combinations(range(len(cys)), 4):
        if not all(near[a, b] for a, b in itertools.combinations(q, 2)):
            continue
        res = [cys[k] for k in q]
        c = {pair: cost.get(pair, math.inf) for pair in itertools.combinations(res, 2)}
        if min(c.values()) > COST_MAX:
            continue
        a, b, e, f = res
        split = min(max(c[(a, b)], c[(e, f)]), max(c[(a, e)], c[(b, f)]), max(c[(a, f)], c[(b, e)]))
        if split <= COST_MAX:
            continue
        sg = _turn(pos[None], torch.as_tensor(res, device=pos.device), grid.expand(1, 4, -1))[0]  # [4, G, 3]
        e = {(u, v): ((torch.cdist(sg[u], sg[v]) - 3.8) / 0.4) ** 2 for u, v in itertools.combinations(range(4), 2)}
        site = (e[0, 1][:, :, None, None] + e[0, 2][:, None, :, None] + e[0, 3][:, None, None, :]
                + e[1, 2][None, :, :, None] + e[1, 3][None, :, None, :] + e[2, 3][None, None, :, :])
        if float(site.min()) <= SITE_COST:
            out.update(res)
    return out


def decide(pos: torch.Tensor, restype) -> list[tuple[int, int]]:
    """The disulfides of one structure ``pos`` [L, 14, 3] (heavy atoms; its N, CA, CB decide): greedy matching of
    the Cys pairs whose best geometric cost is at most :data:`COST_MAX`, lowest cost first, leaving out the Cys of
    metal sites (:func:`_metal_sites`). Residue index pairs."""
    pos = pos.float()
    pairs = candidate_pairs(pos[None, :, _CA], restype)
    if len(pairs) == 0:
        return []
    cost = pair_costs(pos[None], pairs)[0].cpu()
    pair_list = [tuple(int(v) for v in p) for p in pairs.cpu()]
    metal = _metal_sites(pos, restype, dict(zip(pair_list, cost.tolist())))
    taken: set[int] = set(metal)
    out = []
    for k in torch.argsort(cost).tolist():
        i, j = pair_list[k]
        if cost[k] <= COST_MAX and i not in taken and j not in taken:
            out.append((i, j))
            taken.update((i, j))
    return sorted(out)


def _environment(pos: torch.Tensor, restype: torch.Tensor, res: torch.Tensor, skip: torch.Tensor):
    """Heavy atoms near residues ``res`` [C]: positions [R, C, K·14, 3] and a mask [R, C, K·14] that leaves out
    absent slots, the residue itself and ``skip`` [C] (a partner residue, or −1)."""
    R, L = pos.shape[:2]
    k = min(ENV_K + 1, L)
    d = torch.cdist(pos[:, res, _CA], pos[:, :, _CA])  # [R, C, L]
    nbr = d.topk(k, dim=-1, largest=False).indices  # [R, C, k]
    atoms = torch.gather(pos[:, None].expand(R, len(res), L, NUM_SLOTS, 3), 2,
                         nbr[..., None, None].expand(R, len(res), k, NUM_SLOTS, 3))
    exists = on_device(SLOT_MASK, pos.device)[restype][nbr]  # [R, C, k, 14]
    keep = exists & (nbr != res[None, :, None])[..., None] & (nbr != skip[None, :, None])[..., None]
    return atoms.flatten(2, 3), keep.flatten(2)


def _overlap(sg: torch.Tensor, env: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Σ relu(CONTACT − d)² of SG candidates sg [R, C, G, 3] against env [R, C, A, 3] (mask keep): [R, C, G]."""
    d = torch.cdist(sg, env)
    return (torch.relu(CONTACT - d) ** 2 * keep[:, :, None]).sum(-1)


_ENV_WEIGHT = 10.0


def _build_pairs(pos: torch.Tensor, restype: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    R = pos.shape[0]
    P = len(pairs)
    res = torch.cat([pairs[:, 0], pairs[:, 1]])
    env, keep = _environment(pos, restype, res, torch.cat([pairs[:, 1], pairs[:, 0]]))
    cb_i, cb_j = pos[:, pairs[:, 0], _CB][:, :, None, None], pos[:, pairs[:, 1], _CB][:, :, None, None]

    def best(chi_i, chi_j):  # χ1 candidates [R, P, G] each → chosen (χ1_i, χ1_j) [R, P]
        sg = _turn(pos, res, torch.cat([chi_i, chi_j], 1))  # [R, 2P, G, 3]
        over = _ENV_WEIGHT * _overlap(sg, env, keep)
        cost = _geometry_cost(sg[:, :P, :, None], sg[:, P:, None, :], cb_i, cb_j)
        cost = cost + over[:, :P, :, None] + over[:, P:, None, :]
        G = chi_i.shape[-1]
        k = cost.flatten(2).argmin(-1)  # [R, P]
        return (torch.gather(chi_i, 2, (k // G)[..., None])[..., 0], torch.gather(chi_j, 2, (k % G)[..., None])[..., 0])

    grid = torch.deg2rad(on_device(_GRID, pos.device, pos.dtype)).expand(R, P, -1)
    ci, cj = best(grid, grid)
    fine = torch.deg2rad(on_device(_FINE, pos.device, pos.dtype))
    ci, cj = best(ci[..., None] + fine, cj[..., None] + fine)
    out = pos.clone()
    out[:, res, _SG] = _turn(pos, res, torch.cat([ci, cj], 1)[..., None])[:, :, 0]
    return out


def _keep_apart(pos: torch.Tensor, restype: torch.Tensor, free: torch.Tensor, cys: torch.Tensor,
                apart: dict) -> torch.Tensor:
    """Turn the SG of each unbonded Cys of ``free`` [F] that lies within APART of another Cys SG (any of ``cys``)
    to the χ1 of the 5° grid that clears Cys SG and neighbours best, nearest its own χ1 on ties; rows without such
    a contact keep their SG. apart: the index tensors of each free Cys (:func:`_host_tables`)."""
    R = pos.shape[0]
    if not resident.current().static:  # on the CPU: only the Cys with a close SG in some row (one host read)
        sg = pos[:, cys, _SG]  # [R, C, 3]
        close = (torch.cdist(sg, sg) < APART) & ~torch.eye(len(cys), dtype=torch.bool, device=pos.device)
        touched = cys[close.any(-1).any(0)]
        free = free[torch.isin(free, touched)]
        if len(free) == 0:  # the usual case: nothing to turn, no neighbour search
            return pos
        free_list = free.tolist()
    else:  # on a GPU every free Cys is looked at: a Cys whose SG is clear in every row keeps it, as ``near`` says
        free_list = list(apart)
    grid = torch.deg2rad(on_device(_GRID, pos.device, pos.dtype))
    env, keep = _environment(pos, restype, free, torch.full_like(free, -1))
    for c, f in enumerate(free_list):
        r, others = apart[f]
        sg_o = pos[:, others, _SG]  # [R, O, 3]
        near = ((pos[:, r, _SG] - sg_o).norm(dim=-1) < APART).any(-1)  # [R]
        cand = _turn(pos, r, grid.expand(R, 1, -1))  # [R, 1, G, 3]
        d = torch.cdist(cand[:, 0], sg_o)  # [R, G, O]
        score = (_ENV_WEIGHT * _overlap(cand, env[:, c:c + 1], keep[:, c:c + 1])[:, 0]
                 + 100.0 * (torch.relu(APART + 0.3 - d) ** 2).sum(-1))
        score = score + 1e-3 * (1 - torch.cos(grid[None] - _chi1(pos, r)))  # the nearest χ1 wins ties
        pick = cand[torch.arange(R, device=pos.device), 0, score.argmin(-1)]  # [R, 3]
        pos = pos.clone()
        pos[:, f, _SG] = torch.where(near[:, None], pick, pos[:, f, _SG])
    return pos


def build(pos: torch.Tensor, restype, bonded) -> torch.Tensor:
    """Rows ``pos`` [..., L, 14, 3] with the SG of every Cys placed: the pairs ``bonded`` (residue index pairs) at
    the disulfide geometry, the SG of every other Cys kept :data:`APART` from all Cys SG. Other atoms unchanged."""
    cys, pairs, free, _, apart = _tables(restype, bonded, pos.device)
    if len(cys) == 0:
        return pos
    rt = on_device(restype, pos.device) if not torch.is_tensor(restype) else restype.to(pos.device)
    shape = pos.shape
    flat = pos.reshape(-1, *shape[-3:])
    if len(pairs):
        flat = _build_pairs(flat, rt, pairs)
    if len(free) and len(cys) > 1:
        flat = _keep_apart(flat, rt, free, cys, apart)
    return flat.reshape(shape)


def disagreements(pos: torch.Tensor, restype, bonded) -> torch.Tensor:
    """Which rows ``pos`` [R, L, 14, 3] (as the model built them, before :func:`build`) disagree with the topology
    ``bonded``: a bonded pair whose geometry costs more than :data:`COST_MAX`, or a pair of unbonded Cys within
    reach that costs at most that. [R] bool."""
    _, pairs, _, open_pairs, _ = _tables(restype, bonded, pos.device)
    R = pos.shape[0]
    out = torch.zeros(R, dtype=torch.bool, device=pos.device)
    if len(pairs):
        out |= (pair_costs(pos, pairs) > COST_MAX).any(-1)
    if len(open_pairs):  # the pairs of unbonded Cys whose CAs come within reach in some row
        ca = pos[:, :, _CA]
        reach = ((ca[:, open_pairs[:, 0]] - ca[:, open_pairs[:, 1]]).norm(dim=-1) <= CA_REACH).any(0)  # [Q]
        cand = resident.current().select("disulfide_reach", reach)
        if not cand.surely_empty:
            ok = pair_costs(pos, open_pairs[cand.idx]) <= COST_MAX  # [R, slots]
            out |= (ok if cand.valid is None else ok & cand.valid).any(-1)
    return out
