"""Hydrogens and OXT placed on built heavy atoms with ideal geometry (batched torch, on the input's device; Å).

The tables (names, reference atoms, bond lengths, angles, torsions, which residues have which atom) are
``ldb_hpc.chem.hydrogens``; this module only does the arithmetic, vectorised over frames, samples, residues and
extra slots: every extra slot of every residue is computed by its kind (BISECT, TETRA1, TETRA2, ZMAT) from its
reference atoms, then the slots a residue does not have are zeroed. Finite for degenerate input.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch

from ldb_hpc.chem.hydrogens import (
    BISECT,
    EXTRA_ANGLE,
    EXTRA_BOND,
    EXTRA_KIND,
    EXTRA_REFS,
    EXTRA_TORSION,
    NUM_EXTRA,
    TETRA1,
    TETRA2,
    TETRAHEDRAL,
    Protonation,
    extra_mask,
    termini,
)
from ldb_hpc.chem.residues import SLOT_INDEX
from ldb_hpc.geometry.builder import nerf
from ldb_hpc.geometry.hydrogen_fit import turn_rotors
from ldb_hpc.geometry.vectors import safe_norm

_C = SLOT_INDEX[("GLY", "C")]


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / safe_norm(v, keepdim=True)


class _Placement(NamedTuple):
    """Per residue [L, NUM_EXTRA(, …)], on one device: parent + 3 reference slots, kind, bond (Å), angle (rad),
    torsion (rad) or TETRA2 sign, which extra slots exist; first [L, 1]: segment starts."""

    refs: torch.Tensor
    kind: torch.Tensor
    bond: torch.Tensor
    angle: torch.Tensor
    torsion: torch.Tensor
    present: torch.Tensor
    first: torch.Tensor


@functools.lru_cache(maxsize=16)
def _placement(device: str, dtype: torch.dtype, restype: bytes, present: bytes, first: bytes) -> _Placement:
    """The tables of one residue layout on ``device`` (cached: the batches of a run share them, and nothing is
    copied to the device again)."""
    rt = np.frombuffer(restype, dtype=np.int64)
    L = len(rt)

    def t(a, dt=None):
        return torch.tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # a copy: the buffers are read-only

    return _Placement(t(EXTRA_REFS[rt]), t(EXTRA_KIND[rt]), t(EXTRA_BOND[rt], dtype), t(EXTRA_ANGLE[rt], dtype),
                      t(EXTRA_TORSION[rt], dtype), t(np.frombuffer(present, dtype=bool).reshape(L, NUM_EXTRA, 1)),
                      t(np.frombuffer(first, dtype=bool).reshape(L, 1)))


def place_extra(positions: torch.Tensor, restype, segment, protonation: Protonation, turn: bool = True) -> torch.Tensor:
    """Heavy atoms + OXT + hydrogens: positions [..., L, 14, 3] Å (atom14, e.g. a backmap's [n, S, L, 14, 3]);
    restype [L], segment [L] (ldb_hpc.chem.protein.Residues); protonation: the disulfides; turn: rotatable
    hydrogens turned to their least-crowded place (ldb_hpc.geometry.hydrogen_fit), else all at the ideal torsions.

    Returns [..., L, 14 + NUM_EXTRA, 3] on the device and in the dtype of ``positions``: the heavy slots as given,
    then the extra slots of ldb_hpc.chem.hydrogens (zero where a residue has no such atom). The amide H of a
    residue is placed from the previous residue's C, so residue i−1 must be residue i's peptide partner whenever
    they share a segment.
    """
    device, dtype = positions.device, positions.dtype
    restype_np = np.ascontiguousarray(restype, dtype=np.int64)
    present_np = extra_mask(restype_np, segment, protonation)
    tab = _placement(str(device), dtype, restype_np.tobytes(), present_np.tobytes(), termini(segment)[0].tobytes())
    # The previous residue's C beside each residue's own slots (zero at segment starts, where it is unused).
    prev_c = torch.zeros_like(positions[..., _C, :])
    prev_c[..., 1:, :] = positions[..., :-1, _C, :]
    prev_c = torch.where(tab.first, torch.zeros((), dtype=dtype, device=device), prev_c)
    aug = torch.cat([positions, prev_c.unsqueeze(-2)], dim=-2)  # [..., L, 15, 3]
    lead = aug.shape[:-2]
    idx = tab.refs.reshape(tab.refs.shape[0], NUM_EXTRA * 4, 1).expand(*lead, NUM_EXTRA * 4, 3)
    c, r1, r2, r3 = aug.gather(-2, idx).reshape(*lead, NUM_EXTRA, 4, 3).unbind(-2)
    bond, angle, torsion = tab.bond, tab.angle, tab.torsion
    u1, u2, u3 = _unit(r1 - c), _unit(r2 - c), _unit(r3 - c)
    bisect = c + bond.unsqueeze(-1) * _unit(-(u1 + u2))
    tetra1 = c + bond.unsqueeze(-1) * _unit(-(u1 + u2 + u3))
    half = np.deg2rad(TETRAHEDRAL) / 2
    perp = _unit(torch.linalg.cross(u1, u2, dim=-1))
    tetra2 = c + bond.unsqueeze(-1) * (np.cos(half) * _unit(-(u1 + u2)) + np.sin(half) * torsion.unsqueeze(-1) * perp)
    zmat = nerf(r2, r1, c, bond, angle, torsion)
    k = tab.kind.unsqueeze(-1)
    extra = torch.where(k == BISECT, bisect, torch.where(k == TETRA1, tetra1, torch.where(k == TETRA2, tetra2, zmat)))
    extra = torch.where(tab.present, extra, torch.zeros((), dtype=dtype, device=device))
    full = torch.cat([positions, extra], dim=-2)
    return turn_rotors(full, restype_np, present_np) if turn else full
