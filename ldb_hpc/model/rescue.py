"""Last-resort repair of severe side-chain overlaps that the local clash repair (:mod:`ldb_hpc.model.packing`)
leaves behind.

The local repair moves two χ angles at a time by fixed steps from the decoded rotamer. Two long side chains that
interpenetrate (Lys/Glu/Arg tips), or a side chain lying on its own carbonyl O, can need a different rotamer
altogether. Every residue that still has a counted pair closer than ``severe`` Å — to one of its k nearest
residues (the pair rule of :func:`ldb_hpc.ops.reference.pair_counts`) or between its side chain (beyond CB) and
its own atoms four or more bonds away — gets a full rotamer grid (χ1 ∈ {−60°, 60°, 180°}, χ2..χ4 also ±90° and
0°; prolines χ1 across both ring puckers), turns of χ1/χ2 by up to ±30° around its current side chain, and the
current side chain itself, scored like the local repair against its neighbours' current atoms plus a penalty on its
own 1–5+ pairs; the lowest score wins. Two Gauss–Seidel sweeps over each frame's flagged residues (vectorised across
frames). A last sweep gives every residue that still has a pair below ``near`` (2.2 Å: where the hydrogens of
``--hydrogens`` would land on each other) only small turns and proline puckers. Frames without such a pair cost one
check each.
"""

from __future__ import annotations

import torch

from ldb_hpc import ops
from ldb_hpc.chem import residues as rc
from ldb_hpc.geometry import resident
from ldb_hpc.geometry.builder import measure_torsions
from ldb_hpc.geometry.resident import on_device
from ldb_hpc.model.packing import clash_graph
from ldb_hpc.model.rescue_tables import local_turns, rotamer_grids, self_overlap

_CONTACT = 3.0  # Å, as the local repair
_SEVERE_CONTACT, _STEEP = 2.0, 25.0  # Å, weight: overlaps below 2 Å dominate the score
_SELF_CONTACT = 2.6  # Å: a residue's own 1–5+ pairs (≥ 2.7 Å in real rotamers)
_MARGIN = 0.01  # Å²: the score a small turn of the last sweep must gain over the current side chain
NEAR = 2.2  # Å: residues with a pair below this get a last sweep of small turns (hydrogens would collide there)
_HARD_CONTACT, _HARD = 1.3, 1000.0  # Å, weight: a pair below the 1.2 Å clash bar (with a margin) outweighs any
# number of softer contacts, so a rotamer without one wins wherever one exists


def rescue(pos: torch.Tensor, ca, n, c, o_torsion, restype, segment, k: int = 28,
           severe: float = 1.6, near: float | None = None) -> torch.Tensor:
    """pos [B, L, 14, 3] Å after the local repair, on the backbone ca, n, c [B, L, 3], o_torsion [B, L];
    restype, segment [L]. Returns new positions; only side chains of residues with a pair below ``severe`` Å (the
    whole grid) or ``near`` Å (small turns; None: :data:`NEAR`) move."""
    near = NEAR if near is None else near
    B, L = pos.shape[:2]
    if L < 1:
        return pos
    dev, dt = pos.device, pos.dtype
    n_chi = on_device(rc.CHI_MASK, dev)[restype].sum(-1)  # [L]
    is_pro = restype == rc.RESTYPE_INDEX["PRO"]
    group = torch.where(is_pro, 0, n_chi)  # 0: proline (its pucker), 1..4: number of χ angles
    movable = n_chi > 0
    graph = clash_graph(pos, restype, segment, k)  # None for one-residue proteins
    if graph is not None:
        nbr_flat, adj_flat, _ = graph
    restype_flat = restype.repeat(B)
    flat = pos.reshape(B * L, rc.NUM_SLOTS, 3).clone()
    selector = resident.current()

    def flagged_at(rows: torch.Tensor, cut: float) -> torch.Tensor:
        """[len(rows)] bool: the flat rows ``rows`` that have a counted pair closer than ``cut`` Å."""
        bad = self_overlap(flat[rows], restype_flat[rows], cut) > 0
        if graph is not None:
            bad |= ops.clash_flags(flat, rows, nbr_flat, adj_flat, restype_flat, cut)
        return bad

    def score(atoms: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        s = 4.0 * self_overlap(atoms, restype_flat[sel], _SELF_CONTACT)
        if graph is not None:
            # The soft contact term ranks near misses; the steep term makes any overlap below 2 Å far worse
            # than touching many atoms at 2.5–3 Å (a tightly packed pocket must not keep a 0.7 Å overlap).
            s = s + ops.clash_score(atoms, flat, sel, nbr_flat, adj_flat, restype_flat, _CONTACT)
            s = s + _STEEP * ops.clash_score(atoms, flat, sel, nbr_flat, adj_flat, restype_flat, _SEVERE_CONTACT)
            s = s + _HARD * ops.clash_score(atoms, flat, sel, nbr_flat, adj_flat, restype_flat, _HARD_CONTACT)
        return s

    grids = rotamer_grids(dev, dt)
    local = local_turns(dev, dt)

    def sweep(rows: resident.Subset, full: bool, name: str) -> None:
        """Gauss–Seidel over each frame's flagged residues ``rows`` (sorted): the r-th flagged residue of every
        frame moves in step r, scored against the others' current atoms (two overlapping side chains never jump
        at once into each other's new place). Candidates: the current side chain, prolines' ring puckers, and for
        the others small turns of χ1/χ2 around the current side chain plus, when ``full``, the rotamer grid."""
        rank = _frame_rank(rows, L)
        if rows.valid is not None:  # static: invalid slots do not count
            rank = torch.where(rows.valid, rank, -1)
        # one step per flagged residue of the busiest frame
        for r in range(selector.steps(f"{name}.steps", rank.max() + 1)):
            for grp in range(5):  # one vectorised batch per grid: proline, then 1..4 χ angles
                sub = selector.within(f"{name}.group{grp}", rows, (rank == r) & (group[rows.idx % L] == grp))
                if sub.surely_empty:
                    continue
                sel = sub.idx
                if grp:  # small turns of χ1/χ2 around the current side chain (a near miss needs only those)
                    now = measure_torsions(flat[sel], restype_flat[sel])[0][:, 1:]  # [M, 4]
                    cand = now[None] + local[:, None, :]
                    if full:
                        cand = torch.cat([grids[grp][:, None, :].expand(-1, len(sel), -1), cand])
                else:
                    cand = grids["pro"][:, None, :].expand(-1, len(sel), -1)  # [G, M, 4]
                G = cand.shape[0]
                bb = lambda x, sel=sel, G=G: x.reshape(B * L, *x.shape[2:])[sel].expand(G, *[-1] * (x.dim() - 1))  # noqa: E731
                grid_atoms = ops.atoms_from_backbone(bb(n), bb(ca), bb(c), bb(o_torsion), cand, restype_flat[sel])
                current = flat[sel]
                atoms = torch.cat([current[None], grid_atoms])  # [1 + G, M, 14, 3]: the current side chain first
                total = score(atoms, sel)
                best = total.argmin(0)  # ties: the current side chain wins
                if not full:  # a small turn must win clearly: float noise (1e-5 Å) never flips a near tie
                    gain = total[0] - total[best, torch.arange(len(sel), device=dev)]
                    best = torch.where(gain > _MARGIN, best, torch.zeros_like(best))
                pick = torch.arange(len(sel), device=dev)
                new = current.clone()
                new[:, 5:] = atoms[best, pick][:, 5:]
                sub.put(flat, new)

    movable_rows = selector.select("rescue_movable", movable.repeat(B))  # flags are computed for these only
    rows = selector.within("severe", movable_rows, flagged_at(movable_rows.idx, severe))
    for k in range(2):  # two sweeps with the whole grid over residues with a severe pair
        if k:
            rows = selector.within("severe_again", rows, flagged_at(rows.idx, severe))
        if rows.surely_empty:
            break
        sweep(rows, full=True, name=f"sweep{k}")
    # Then one sweep of small turns (and proline puckers) over residues with a pair below ``near``: contacts
    # that do not break the 1.2 Å rule but put hydrogens onto each other (CASP12: pairs < 2.2 Å 58 → 37, RMSD
    # and χ1 unchanged within 0.001 Å / 0.1 point).
    if near > 0:
        rows = selector.within("near", movable_rows, flagged_at(movable_rows.idx, near))
        if not rows.surely_empty:
            sweep(rows, full=False, name="near_sweep")
    if graph is not None:
        _turn_chain_start_n(flat, restype_flat, segment, B, nbr_flat, severe, score, selector)
    return flat.reshape(pos.shape)


def _frame_rank(rows: "resident.Subset", L: int) -> torch.Tensor:
    """[len(rows)]: each slot's place among the valid slots of its frame (frame = row // L), the r-th flagged
    residue of a frame moving in step r. Slots are in non-decreasing row order; a repeated slot (a static
    selector's spare) gets the rank of the slot it repeats."""
    idx = rows.idx
    frame = idx // L
    if rows.valid is None:  # exact: every slot a distinct selected row
        return torch.arange(len(idx), device=idx.device) - torch.searchsorted(frame, frame, right=False)
    first_slot = torch.searchsorted(idx, idx, right=False)  # a repeat points at the slot it repeats
    real = rows.valid & (first_slot == torch.arange(len(idx), device=idx.device))
    before = torch.cumsum(real.long(), 0) - real.long()  # valid distinct slots before each slot
    frame_start = torch.searchsorted(frame, frame, right=False)
    return before[first_slot] - before[frame_start]


def _turn_chain_start_n(flat, restype_flat, segment, B: int, nbr_flat, severe: float, score,
                        selector: "resident.Selector") -> None:
    """The N of a segment's first residue hangs on the predicted chain-start ψ, which no side-chain move can
    fix: where it lies within ``severe`` Å of a neighbour's atom (e.g. on the ring of a following proline), turn
    it about the CA–C axis (15° grid; its side chain, built on N, is rebuilt with the same χ) to the position that
    scores best: the residue's side-chain score plus the steep and hard terms on N's own contacts; the current
    position first, so ties keep it. In place on flat [B·L, 14, 3]."""
    L = segment.shape[0]
    dev, dt = flat.device, flat.dtype
    start = torch.zeros(L, dtype=torch.bool, device=dev)
    start[:-1] = segment[1:] == segment[:-1]  # a first residue with a linked successor
    start[1:] &= segment[1:] != segment[:-1]
    exists = on_device(rc.SLOT_MASK, dev)

    def n_contacts(n_pos: torch.Tensor, sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = (n_pos[..., None, None, :] - flat[nbr_flat[sel]]).norm(dim=-1)  # [..., M, k, 14]
        d = torch.where(exists[restype_flat[nbr_flat[sel]]], d, torch.full_like(d, 99.0))
        return d.flatten(-2).amin(-1), (_STEEP * torch.relu(_SEVERE_CONTACT - d) ** 2
                                        + _HARD * torch.relu(_HARD_CONTACT - d) ** 2).flatten(-2).sum(-1)

    starts = selector.select("chain_start", start.repeat(B))
    if starts.surely_empty:
        return
    rows = selector.within("chain_start_near", starts, n_contacts(flat[starts.idx, 0], starts.idx)[0] < severe)
    if rows.surely_empty:
        return
    sel = rows.idx
    theta = torch.deg2rad(torch.arange(0.0, 360.0, 15.0, dtype=dt, device=dev))[:, None, None]  # [T, 1, 1]
    ca, c, n = flat[sel, 1], flat[sel, 2], flat[sel, 0]
    axis = (c - ca) / (c - ca).norm(dim=-1, keepdim=True)
    v = n - ca
    # Rodrigues: v turned by θ about the unit axis (θ = 0 first: the current N).
    turned = (v * torch.cos(theta) + torch.cross(axis.expand_as(v), v, dim=-1) * torch.sin(theta)
              + axis * (axis * v).sum(-1, keepdim=True) * (1 - torch.cos(theta)))
    n_new = ca + turned  # [T, M, 3]
    T = n_new.shape[0]
    chi = measure_torsions(flat[sel], restype_flat[sel])[0][:, 1:]
    o_t = torch.zeros(T, len(sel), dtype=dt, device=dev)  # O is restored below: the unit does not move
    atoms = ops.atoms_from_backbone(n_new, ca.expand(T, -1, -1), c.expand(T, -1, -1), o_t, chi.expand(T, -1, -1),
                                    restype_flat[sel])
    atoms[:, :, 1:4] = flat[sel][None, :, 1:4]
    total = score(atoms, sel) + n_contacts(n_new, sel)[1]
    best = total.argmin(0)
    rows.put(flat, atoms[best, torch.arange(len(sel), device=dev)])
