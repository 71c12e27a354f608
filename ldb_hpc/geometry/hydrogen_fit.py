"""Rotatable hydrogens turned to their least-crowded place (batched torch, on the input's device; Å).

The ideal placement (ldb_hpc.geometry.hydrogens) puts every methyl, NH3+ and OH/SH hydrogen at a fixed torsion
without looking at the neighbours, so a hydrogen can land on a neighbour (issue 20: CASP12 outputs had hydrogens
0.4–0.9 Å from other atoms). Here every rotor group of ldb_hpc.chem.hydrogens (the hydrogens on one parent c, turned
together about the bond b→c) tries its turns from the ideal place and keeps the one of lowest score. The turns:
methyl and NH3+ −60°..50° in 10° steps (their three staggered rotations are one and the same set of places, so
only turning off the staggered place can help); OH and SH the three staggered places; TYR HH 0 and 180° (in the
ring plane). The score (Å²):

    Σ over its hydrogens h and the atoms x around them of  s² + (STEEP·s)⁴,  s = relu(r0 − |h − x|),
    + METHYL_COST (1 − cos 3θ) / 2 for a methyl or NH3+ turned by θ from staggered,

r0 = ``R0_HEAVY`` against a heavy atom, ``R0_H`` against a hydrogen. The quartic term makes one deep overlap cost
more than several grazes, as amber's r⁻¹² does. The atoms x: of the ``NEIGHBOURS`` residues nearest c (by centre
distance less the residue's radius), the ``NEAREST`` atoms closest to c, leaving out the atoms within three bonds
of the group's hydrogens. They are found once; the steps then score against them as they are:

1. every group against the heavy atoms and the hydrogens that do not turn (the other rotors left out);
2. the groups in ``COLOURS`` sets (a fixed hash of residue and group), one set after the other, against
   everything as it is, rotors included; a move stands only if it still beats staying once the others of its set
   have moved (two touching rotors that jumped into each other's new place both go back).

Rows (frames, samples) never interact. Groups are taken ``CHUNK`` at a time, so the working memory is bounded
whatever the batch; what is kept between steps is [groups, NEAREST] int32 atom indices. Scores are compared in
steps of ``STEP`` Å², so float rounding (CPU against GPU, another batch) does not flip a near-tie; a tie goes to the
smaller turn, and staying wins a tie with moving. No step reads a value back to the host.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch

from ldb_hpc.chem import hydrogens as ch
from ldb_hpc.chem.residues import NUM_SLOTS, SLOT_MASK

R0_HEAVY = 2.3  # Å: soft-repulsion radius of a hydrogen against a heavy atom
R0_H = 2.0  # Å: … against another hydrogen
STEEP = 2.0  # 1/Å: an overlap s costs s² + (STEEP·s)⁴ Å² (0.5 Å: 0.25 + 1)
METHYL_COST = 0.05  # Å²: eclipsing a methyl (amber's ~12 kJ/mol barrier) has to buy off more than a graze
NEIGHBOURS = 12  # residues whose atoms a group may be scored against
NEAREST = 24  # of their atoms, the ones nearest the group's parent that are
COLOURS = 4  # sets of groups in step 2
CHUNK = 4096  # groups at a time
STEP = 1e-3  # Å²: score resolution
TURNS = 12


def _turn_grid() -> tuple[np.ndarray, np.ndarray]:
    """[3 kinds, TURNS] turns (rad) from the ideal place, the turn 0 first, and which are candidates."""
    third = 2 * np.pi / 3
    turns = np.stack([np.deg2rad(np.r_[0:60:10, -60:0:10]), np.r_[0.0, third, -third, np.zeros(TURNS - 3)],
                      np.r_[0.0, np.pi, np.zeros(TURNS - 2)]])
    allowed = np.ones_like(turns, dtype=bool)
    allowed[ch.HYDROXYL, 3:] = allowed[ch.RING_OH, 2:] = False
    return turns, allowed


class _Tables(NamedTuple):
    kind: torch.Tensor  # [21, G] long, −1: no group
    axis: torch.Tensor  # [21, G, 2] slots (b, c)
    h_slots: torch.Tensor  # [21, G, 3]
    h_real: torch.Tensor  # [21, G, 3] bool
    near: torch.Tensor  # [21, G, A] bool: not scored against the group
    slot_group: torch.Tensor  # [21, A] long
    heavy: torch.Tensor  # [21, NUM_SLOTS] bool
    is_h: torch.Tensor  # [21, A] bool
    turns: torch.Tensor  # [3, TURNS] rad
    allowed: torch.Tensor  # [3, TURNS] bool


_CACHE: dict[tuple, _Tables] = {}


def _tables(device: torch.device, dtype: torch.dtype) -> _Tables:
    """The rotor tables on ``device`` (built once per device and dtype)."""
    key = (str(device), dtype)
    if key not in _CACHE:
        turns, allowed = _turn_grid()

        def t(a, dt=None):
            return torch.as_tensor(a, dtype=dt, device=device)

        _CACHE[key] = _Tables(t(ch.ROTOR_KIND), t(ch.ROTOR_AXIS), t(ch.ROTOR_H), t(ch.ROTOR_H_REAL),
                              t(ch.ROTOR_NEAR), t(ch.SLOT_ROTOR), t(SLOT_MASK), t(ch.SLOT_IS_H), t(turns, dtype),
                              t(allowed))
    return _CACHE[key]


def _spokes(p: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """p − c split for turning about the axis b→c (Rodrigues): (v, w, z) = (p − c, u × v, u (u·v)), u the unit
    axis; p turned by θ is c + z + (v − z) cos θ + w sin θ. p, b, c [..., 3] (broadcast)."""
    u = c - b
    u = u / torch.sqrt(torch.clamp((u * u).sum(-1, keepdim=True), min=1e-24))
    v = p - c
    u = u.expand_as(v)
    return v, torch.linalg.cross(u, v, dim=-1), u * (u * v).sum(-1, keepdim=True)


def _mix(x: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random uint64 of each uint64 (splitmix64's finaliser)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _Groups(NamedTuple):
    """Rotor groups, [Q] each: row b (frame × sample), residue res, group g; kind; the spokes of their hydrogens
    [Q, 3h, 3] (:func:`_spokes`, c at the origin); parent c [Q, 3]."""

    b: torch.Tensor
    res: torch.Tensor
    g: torch.Tensor
    kind: torch.Tensor
    spokes: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    c: torch.Tensor


def _groups(ideal: torch.Tensor, b: torch.Tensor, res: torch.Tensor, g: torch.Tensor, rt: torch.Tensor,
            tab: _Tables) -> _Groups:
    rt_q = rt[res]
    axis = tab.axis[rt_q, g]  # [Q, 2]
    pos_b, pos_c = ideal[b, res, axis[:, 0]], ideal[b, res, axis[:, 1]]  # [Q, 3]
    h = ideal[b[:, None], res[:, None], tab.h_slots[rt_q, g]]  # [Q, 3h, 3]
    return _Groups(b, res, g, tab.kind[rt_q, g], _spokes(h, pos_b[:, None], pos_c[:, None]), pos_c)


def _surroundings(now: torch.Tensor, q: _Groups, reach: tuple[torch.Tensor, torch.Tensor], rt: torch.Tensor,
                  exists: torch.Tensor, tab: _Tables) -> torch.Tensor:
    """[Q, m] int32: the atoms each group is scored against, as flat indices into now [B·L·A] (−1: none).

    now [B, L, A, 3]; reach: residue centres [B, L, 3] and radii [B, L]; exists [L, A] the slots a residue has."""
    dev, dt = now.device, now.dtype
    L, A = now.shape[1], now.shape[2]
    Q = q.b.shape[0]
    centres, radii = reach
    gap = (centres[q.b] - q.c[:, None]).norm(dim=-1) - radii[q.b]  # [Q, L]: how near c a residue can come
    k = min(NEIGHBOURS, L)
    nb = gap.topk(k, dim=-1, largest=False).indices  # [Q, k]
    rel = now[q.b[:, None], nb] - q.c[:, None, None]  # [Q, k, A, 3]
    ok = exists[nb] & ~((nb == q.res[:, None])[..., None] & tab.near[rt[q.res], q.g][:, None])  # [Q, k, A]
    d2 = torch.where(ok, (rel * rel).sum(-1), torch.full((), float("inf"), dtype=dt, device=dev)).reshape(Q, k * A)
    near_d2, near = d2.topk(min(NEAREST, k * A), dim=-1, largest=False)  # [Q, m]
    flat = ((q.b[:, None] * L + nb) * A)[..., None] + torch.arange(A, device=dev)  # [Q, k, A]
    idx = flat.reshape(Q, k * A).gather(1, near)
    return torch.where(torch.isfinite(near_d2), idx, torch.full((), -1, dtype=idx.dtype, device=dev)).to(torch.int32)


def _scores(now: torch.Tensor, q: _Groups, around: torch.Tensor, r0_atom: torch.Tensor, turns: torch.Tensor,
            rt: torch.Tensor, tab: _Tables) -> torch.Tensor:
    """[Q, T] score (Å²) of each group turned by turns [Q, T] (rad) from its ideal place, against the atoms
    ``around`` it (:func:`_surroundings`) as they are in now [B, L, A, 3]; r0_atom [L·A]: each slot's r0 (0: not
    scored in this step)."""
    Q, T = turns.shape
    L, A = now.shape[1], now.shape[2]
    idx = around.long().clamp(min=0)
    x = now.reshape(-1, 3)[idx] - q.c[:, None]  # [Q, m, 3], c at the origin
    r0 = torch.where(around >= 0, r0_atom[idx % (L * A)], torch.zeros((), dtype=now.dtype, device=now.device))
    v, w, z = q.spokes
    cos, sin = torch.cos(turns)[..., None, None], torch.sin(turns)[..., None, None]  # [Q, T, 1, 1]
    cand = (z[:, None] + (v - z)[:, None] * cos + w[:, None] * sin).reshape(Q, T * 3, 3)  # [Q, T·3h, 3]
    d2 = torch.baddbmm((x * x).sum(-1)[:, None], cand, x.transpose(1, 2), alpha=-2)  # [Q, T·3h, m] squared
    d2.add_((cand * cand).sum(-1)[..., None])
    s = torch.sqrt(d2.clamp_(min=0)).neg_().add_(r0[:, None]).relu_()  # [Q, T·3h, m]: overlaps, Å
    s2 = s.mul_(s)
    clash = (s2 * STEEP**4).add_(1).mul_(s2).sum(-1).reshape(Q, T, 3)
    torsion = (q.kind == ch.METHYL)[:, None] * (METHYL_COST / 2) * (1 - torch.cos(3 * turns))
    return (clash * tab.h_real[rt[q.res], q.g][:, None]).sum(-1) + torsion


def _pick(score: torch.Tensor) -> torch.Tensor:
    """[Q] index of the lowest score [Q, T], compared in steps of STEP Å² (the first of equals)."""
    return torch.round(score / STEP).argmin(dim=-1)


class _Layout(NamedTuple):
    """What a residue layout (types and present slots) fixes, on one device: the n rotor groups (residue, group
    [n]); the ids of step 1 (all) and of each set of step 2, with their host sizes; the hydrogens that turn (residue,
    slot, group id [t]) and the slots that turn and that exist [L, A]; restype [L]."""

    res: torch.Tensor
    g: torch.Tensor
    sets: tuple[tuple[torch.Tensor, int], ...]
    h: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    turning: torch.Tensor
    exists: torch.Tensor
    rt: torch.Tensor


@functools.lru_cache(maxsize=16)
def _layout(device: str, restype: bytes, present: bytes) -> _Layout | None:
    """The layout of restype (int64 bytes) and present (bool bytes, [L, NUM_EXTRA]) on ``device``, or None when no
    residue has a rotor group (cached: the batches of a run share it, and nothing is copied to the device again)."""
    rt_np = np.frombuffer(restype, dtype=np.int64).copy()
    L = len(rt_np)
    exists_np = np.concatenate([SLOT_MASK[rt_np], np.frombuffer(present, dtype=bool).reshape(L, -1)], axis=-1)
    h_np, real_np = ch.ROTOR_H[rt_np], ch.ROTOR_H_REAL[rt_np]  # [L, G, 3]
    group_np = (ch.ROTOR_KIND[rt_np] >= 0) & (np.take_along_axis(exists_np[:, None], h_np, -1) | ~real_np).all(-1)
    res_np, g_np = np.nonzero(group_np)  # a group exists when all its real hydrogens do
    if len(res_np) == 0:
        return None
    gid, k = np.nonzero(real_np[res_np, g_np])  # the real hydrogens of each group (padding repeats a slot)
    h_res, h_slot = res_np[gid], h_np[res_np[gid], g_np[gid], k]
    turning_np = np.zeros(exists_np.shape, dtype=bool)
    turning_np[h_res, h_slot] = True
    colour = _mix((res_np * ch.NUM_ROTORS + g_np).astype(np.uint64)) % np.uint64(COLOURS)
    ids = [np.arange(len(res_np))] + [np.nonzero(colour == c)[0] for c in range(COLOURS)]

    def t(a):
        return torch.as_tensor(a, device=device)

    return _Layout(t(res_np), t(g_np), tuple((t(i), len(i)) for i in ids), (t(h_res), t(h_slot), t(gid)),
                   t(turning_np), t(exists_np), t(rt_np))


def turn_rotors(full: torch.Tensor, restype: np.ndarray, present: np.ndarray) -> torch.Tensor:
    """Rotatable hydrogens of ``full`` [..., L, A, 3] Å (place_extra's ideal rows, A = 14 + NUM_EXTRA) turned to
    their least-crowded place. restype [L]; present [L, NUM_EXTRA] bool: the extra slots each residue has
    (ldb_hpc.chem.hydrogens.extra_mask). Returns a tensor of the same shape, device and dtype: every slot that is
    not a rotor hydrogen as given, bit for bit."""
    dev, dt = full.device, full.dtype
    L, A = full.shape[-3], full.shape[-2]
    lay = _layout(str(dev), np.ascontiguousarray(restype, dtype=np.int64).tobytes(),
                  np.ascontiguousarray(present, dtype=bool).tobytes())
    if full.numel() == 0 or lay is None:
        return full
    tab = _tables(dev, dt)
    rt, turning = lay.rt, lay.turning
    ideal = full.reshape(-1, L, A, 3)
    B, n = ideal.shape[0], lay.res.shape[0]
    r0_all = torch.where(tab.is_h[rt], torch.full((), R0_H, dtype=dt, device=dev),
                         torch.full((), R0_HEAVY, dtype=dt, device=dev)).reshape(L * A)
    r0_fixed = torch.where(turning.reshape(L * A), torch.zeros((), dtype=dt, device=dev), r0_all)
    # The hydrogens that turn, by their group's turn (every other slot as given): spokes about the group's axis.
    h_res, h_slot, h_group = lay.h
    axis = tab.axis[rt[h_res], lay.g[h_group]]  # [t, 2]
    v, w, z = _spokes(ideal[:, h_res, h_slot], ideal[:, h_res, axis[:, 0]], ideal[:, h_res, axis[:, 1]])  # [B, t, 3]
    base, swing = ideal[:, h_res, h_slot] - v + z, v - z

    def place(turn: torch.Tensor) -> torch.Tensor:  # the rows with every group turned by turn [B·n] (rad)
        theta = turn.reshape(B, n)[:, h_group, None]  # [B, t, 1]
        out = ideal.clone()
        out[:, h_res, h_slot] = base + swing * torch.cos(theta) + w * torch.sin(theta)
        return out

    def chunks(ids: torch.Tensor, m: int):  # the groups ids [m] of every row, CHUNK at a time: (flat ids, groups)
        for s in range(0, B * m, CHUNK):
            j = torch.arange(s, min(s + CHUNK, B * m), device=dev)
            b, i = j // m, ids[j % m]
            yield b * n + i, _groups(ideal, b, lay.res[i], lay.g[i], rt, tab)

    def best(q: _Groups, around: torch.Tensor, r0_atom: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
        turns = tab.turns[q.kind]  # [Q, T]
        score = torch.where(tab.allowed[q.kind], _scores(now, q, around, r0_atom, turns, rt, tab),
                            torch.full((), float("inf"), dtype=dt, device=dev))
        return turns.gather(1, _pick(score)[:, None])[:, 0]

    heavy = tab.heavy[rt].to(dt)  # [L, 14]
    centres = (ideal[:, :, :NUM_SLOTS] * heavy[..., None]).sum(-2) / heavy.sum(-1)[:, None]  # [B, L, 3]
    radii = ((ideal[:, :, :NUM_SLOTS] - centres[:, :, None]).norm(dim=-1) * heavy).amax(-1)  # [B, L]
    around = torch.empty(B * n, min(NEAREST, min(NEIGHBOURS, L) * A), dtype=torch.int32, device=dev)
    turn = torch.zeros(B * n, dtype=dt, device=dev)  # of each group, row-major
    # Step 1: every group against what does not turn.
    for j, q in chunks(*lay.sets[0]):
        around[j] = _surroundings(ideal, q, (centres, radii), rt, lay.exists, tab)
        turn[j] = best(q, around[j], r0_fixed, ideal)
    now = place(turn)
    # Step 2: the sets one after the other against everything as it is; a move stands if it beats staying.
    for ids, m in lay.sets[1:]:
        proposed = turn.clone()
        for j, q in chunks(ids, m):
            proposed[j] = best(q, around[j], r0_all, now)
        moved = place(proposed)
        for j, q in chunks(ids, m):
            both = torch.stack([turn[j], proposed[j]], dim=1)  # staying first: it wins a tie
            turn[j] = both.gather(1, _pick(_scores(moved, q, around[j], r0_all, both, rt, tab))[:, None])[:, 0]
        now = place(turn)
    return now.reshape(full.shape)
