"""Shared pieces of the hydrogen tests (tests/test_hydrogens.py, tests/test_hydrogen_fit.py): residue lists and
per-residue atom lookups (the ``built`` fixture is in conftest.py)."""

from __future__ import annotations

import numpy as np
from conftest import REPO

from ldb_hpc.chem import hydrogens as ch
from ldb_hpc.chem.protein import Residues
from ldb_hpc.chem.residues import ATOM14, RESTYPE_INDEX, RESTYPES_3

EXAMPLE = REPO / "examples" / "example.cg.h5"


def residues_of(names, segment, chain=None):
    n = len(names)
    return Residues([RESTYPE_INDEX[x] for x in names], names, chain or ["A"] * n, np.arange(1, n + 1), [""] * n,
                    segment)



def atoms_of(residues, full, i):
    """name → position of residue i (heavy and extra slots that exist)."""
    res = RESTYPES_3[residues.restype[i]]
    mask = ch.extra_mask(residues.restype, residues.segment, ch.Protonation())[i]
    out = {a: full[i, s] for s, a in enumerate(ATOM14[res])}
    out.update({a: full[i, 14 + k] for k, a in enumerate(ch.EXTRA_NAMES[res]) if mask[k]})
    return out


