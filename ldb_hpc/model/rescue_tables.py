"""The tables of the last-resort repair (:mod:`ldb_hpc.model.rescue`): the rotamer grids it tries, the small
χ1/χ2 turns of its last sweep, and a residue's own atom pairs at least four bonds apart (with the overlap score on
them). Each is made once per process (and device, dtype) through :func:`ldb_hpc.geometry.resident.table_cache`
and read only."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.geometry import resident
from ldb_hpc.geometry.resident import on_device

_STAGGERED = (-60.0, 60.0, 180.0)
_PLANAR = (-90.0, 0.0, 90.0)


@resident.table_cache(maxsize=8)
def rotamer_grids(dev, dtype) -> dict:
    """Rotamer grids in radians, [G, 4] (unused channels 0): per number of χ angles n (1..4), χ1 staggered and
    χ2..χ4 staggered or eclipsed-planar (aromatic and amide χ2 sit near ±90° / 0°); key "pro": χ1 from −40°
    to 40° across both ring puckers (the ring closure sets χ2). Made once per device and dtype (read only)."""
    out = {}
    for n in range(1, 5):
        values = [_STAGGERED] + [_STAGGERED + _PLANAR] * (n - 1)
        g = torch.zeros(math.prod(len(v) for v in values), 4, dtype=dtype, device=dev)
        g[:, :n] = torch.tensor(list(itertools.product(*values)), dtype=dtype, device=dev)
        out[n] = g * (math.pi / 180.0)
    pro = torch.zeros(5, 4, dtype=dtype, device=dev)
    pro[:, 0] = torch.tensor([-40.0, -20.0, 0.0, 20.0, 40.0], device=dev) * (math.pi / 180.0)
    out["pro"] = pro
    return out


@resident.table_cache(maxsize=1)
def self_pairs() -> torch.Tensor:
    """[21, 14, 14] bool: atom pairs of one residue that are at least four bonds apart (1–5 and beyond) with one
    atom beyond CB — the intra-residue pairs a side chain can fold onto (e.g. its own carbonyl O, or an Arg
    guanidinium onto its CB). Bond graphs from ldb_hpc.chem.residues (BOND_SLOTS)."""
    out = torch.zeros(rc.NUM_RESTYPES, rc.NUM_SLOTS, rc.NUM_SLOTS, dtype=torch.bool)
    for r in range(rc.NUM_RESTYPES):
        far = np.full((rc.NUM_SLOTS, rc.NUM_SLOTS), 99)
        np.fill_diagonal(far, 0)
        for k in np.nonzero(rc.BOND_MASK[r])[0]:
            a, b = rc.BOND_SLOTS[r, k]
            far[a, b] = far[b, a] = 1
        for m in range(rc.NUM_SLOTS):  # Floyd–Warshall on 14 nodes
            far = np.minimum(far, far[:, m:m + 1] + far[m:m + 1, :])
        ex = rc.SLOT_MASK[r]
        deep = np.arange(rc.NUM_SLOTS) >= 5
        ok = (far >= 4) & (far < 99) & ex[:, None] & ex[None, :] & (deep[:, None] | deep[None, :])
        out[r] = torch.from_numpy(np.triu(ok, 1))
    return out


def self_overlap(atoms: torch.Tensor, restype: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Σ relu(cutoff − d)² over a residue's own atom pairs at least four bonds apart with one atom beyond CB
    (:func:`self_pairs`). atoms [..., M, 14, 3] Å; restype [M] → [..., M]."""
    pairs = on_device(self_pairs(), atoms.device)[restype]  # [M, 14, 14]
    d = (atoms[..., :, None, :] - atoms[..., None, :, :]).norm(dim=-1)  # [..., M, 14, 14]
    return (torch.relu(cutoff - d) ** 2 * pairs).sum((-1, -2))


@resident.table_cache(maxsize=8)
def local_turns(dev, dt) -> torch.Tensor:
    """[25, 4] rad: χ1, χ2 turns of −30..30° in 15° steps (χ3, χ4 kept)."""
    steps = torch.deg2rad(torch.tensor([-30.0, -15.0, 0.0, 15.0, 30.0], dtype=dt, device=dev))
    local = torch.zeros(25, 4, dtype=dt, device=dev)
    local[:, 0], local[:, 1] = steps.repeat_interleave(5), steps.repeat(5)
    return local
