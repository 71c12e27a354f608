"""Hydrogens and OXT placed on built heavy atoms with ideal geometry (batched torch, on the input's device; Å).

The tables (names, reference atoms, bond lengths, angles, torsions, which residues have which atom) are
``ldb_hpc.chem.hydrogens``; this module only does the arithmetic, vectorised over frames, samples, residues and
extra slots: every extra slot of every residue is computed by its kind (BISECT, TETRA1, TETRA2, ZMAT) from its
reference atoms, then the slots a residue does not have are zeroed. Finite for degenerate input.
"""

from __future__ import annotations

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
from ldb_hpc.chem.residues import RESTYPE_INDEX, SLOT_INDEX
from ldb_hpc.geometry.builder import nerf
from ldb_hpc.geometry.vectors import safe_norm

DISULFIDE_MAX = 2.5  # Å: SG–SG at most this far apart are bonded
_C = SLOT_INDEX[("GLY", "C")]
_SG = SLOT_INDEX[("CYS", "SG")]


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / safe_norm(v, keepdim=True)


def place_extra(positions: torch.Tensor, restype, segment, protonation: Protonation) -> torch.Tensor:
    """Heavy atoms + OXT + hydrogens: positions [..., L, 14, 3] Å (atom14, e.g. a backmap's [n, S, L, 14, 3]);
    restype [L], segment [L] (ldb_hpc.chem.protein.Residues); protonation: the disulfides.

    Returns [..., L, 14 + NUM_EXTRA, 3] on the device and in the dtype of ``positions``: the heavy slots as given,
    then the extra slots of ldb_hpc.chem.hydrogens (zero where a residue has no such atom). The amide H of a
    residue is placed from the previous residue's C, so residue i−1 must be residue i's peptide partner whenever
    they share a segment.
    """
    device, dtype = positions.device, positions.dtype
    restype_np = np.asarray(restype, dtype=np.int64)
    first, _ = termini(segment)
    rt = torch.as_tensor(restype_np, device=device)
    # The previous residue's C beside each residue's own slots (zero at segment starts, where it is unused).
    prev_c = torch.zeros_like(positions[..., _C, :])
    prev_c[..., 1:, :] = positions[..., :-1, _C, :]
    prev_c = torch.where(torch.as_tensor(first, device=device).unsqueeze(-1), torch.zeros((), dtype=dtype,
                                                                                            device=device), prev_c)
    aug = torch.cat([positions, prev_c.unsqueeze(-2)], dim=-2)  # [..., L, 15, 3]
    lead = aug.shape[:-2]
    refs = torch.as_tensor(EXTRA_REFS, device=device)[rt]  # [L, E, 4]
    idx = refs.reshape(refs.shape[0], NUM_EXTRA * 4, 1).expand(*lead, NUM_EXTRA * 4, 3)
    c, r1, r2, r3 = aug.gather(-2, idx).reshape(*lead, NUM_EXTRA, 4, 3).unbind(-2)

    def table(a):
        return torch.as_tensor(a, dtype=dtype, device=device)[rt]  # [L, E]

    kind = torch.as_tensor(EXTRA_KIND, device=device)[rt]
    bond, angle, torsion = table(EXTRA_BOND), table(EXTRA_ANGLE), table(EXTRA_TORSION)
    u1, u2, u3 = _unit(r1 - c), _unit(r2 - c), _unit(r3 - c)
    bisect = c + bond.unsqueeze(-1) * _unit(-(u1 + u2))
    tetra1 = c + bond.unsqueeze(-1) * _unit(-(u1 + u2 + u3))
    half = np.deg2rad(TETRAHEDRAL) / 2
    perp = _unit(torch.linalg.cross(u1, u2, dim=-1))
    tetra2 = c + bond.unsqueeze(-1) * (np.cos(half) * _unit(-(u1 + u2)) + np.sin(half) * torsion.unsqueeze(-1) * perp)
    zmat = nerf(r2, r1, c, bond, angle, torsion)
    k = kind.unsqueeze(-1)
    extra = torch.where(k == BISECT, bisect, torch.where(k == TETRA1, tetra1, torch.where(k == TETRA2, tetra2, zmat)))
    present = torch.as_tensor(extra_mask(restype_np, segment, protonation), device=device).unsqueeze(-1)
    extra = torch.where(present, extra, torch.zeros((), dtype=dtype, device=device))
    return torch.cat([positions, extra], dim=-2)


def disulfide_pairs(positions, restype, max_distance: float = DISULFIDE_MAX) -> list[tuple[int, int]]:
    """Disulfides of one structure: pairs (i, j), i < j, of CYS whose SG atoms are at most ``max_distance`` Å
    apart; closest pairs first, each SG in one pair at most. positions [L, 14, 3] Å (numpy or torch); restype [L]."""
    pos = positions.detach().cpu().numpy() if torch.is_tensor(positions) else np.asarray(positions)
    cys = np.nonzero(np.asarray(restype) == RESTYPE_INDEX["CYS"])[0]
    if cys.size < 2:
        return []
    sg = pos[cys, _SG].astype(np.float64)
    d = np.linalg.norm(sg[:, None] - sg[None], axis=-1)
    a, b = np.triu_indices(len(cys), 1)
    order = np.argsort(d[a, b], kind="stable")
    used, pairs = set(), []
    for k in order:
        i, j = int(a[k]), int(b[k])
        if d[i, j] > max_distance:
            break
        if i not in used and j not in used:
            used.update((i, j))
            pairs.append((int(cys[i]), int(cys[j])))
    return sorted(pairs)
