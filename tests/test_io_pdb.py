"""The one PDB writer (ldb_hpc.io.pdb): layouts laid out once agree with the text written directly."""

from __future__ import annotations

import numpy as np
import pytest

from ldb_hpc.chem.hydrogens import Protonation, extra_mask
from ldb_hpc.chem.protein import Protein, Residues
from ldb_hpc.chem.residues import RESTYPE_INDEX, SLOT_MASK
from ldb_hpc.errors import FormatLimitError, InputError
from ldb_hpc.io import pdb
from ldb_hpc.io import structure_files as sf


def residues(names=("MET", "CYS", "GLY", "CYS", "TRP"), chains="AA%BB", segment=(0, 1, 2, 3, 3)):
    n = len(names)
    return Residues(restype=np.array([RESTYPE_INDEX[r] for r in names]), resname=np.array(names, dtype=object),
                    chain_id=np.array(list(chains), dtype=object), resseq=np.array([-999, 5, 5, 9999, 12])[:n],
                    icode=np.array(["", "A", "", "", ""], dtype=object)[:n], segment=np.array(segment))


def test_layout_is_the_direct_text():
    res = residues()
    rng = np.random.default_rng(1)
    rows = (rng.normal(size=(3, len(res), 14, 3)) * 40).astype(np.float32)
    rows[0, 0, 0] = (12345.678, -999.5, 0.0)  # wider than the 8.3f columns: still the same text
    layout = pdb.PDBLayout(res)
    mask = SLOT_MASK[res.restype]
    assert layout.text(rows[:1]) == pdb.protein_to_pdb_string(Protein(res, rows[0], mask))
    assert layout.text(rows) == pdb.protein_to_pdb_string([Protein(res, r, mask) for r in rows])
    text = layout.text(rows[:1])
    assert "%" in text and " TER " not in text and text.count("TER") == 3  # chains A, %, B
    assert text.endswith("END\n") and text.splitlines()[0][30:55] == "12345.678-999.500   0.000"


def test_hydrogen_layout_is_the_direct_text():
    res = residues()
    prot = Protonation.from_pairs([(1, 3)])
    mask = np.concatenate([SLOT_MASK[res.restype], extra_mask(res.restype, res.segment, prot)], axis=1)
    rows = np.random.default_rng(2).normal(size=(2, len(res), mask.shape[1], 3)).astype(np.float32) * 20
    layout = pdb.PDBLayout(res, prot)
    one = pdb.hydrogen_pdb_string(res, rows[0], mask, prot.disulfides)
    assert layout.text(rows[:1]) == one
    assert one.count("CONECT") == 2 and one.count("TER") == 4  # TER at the chain break in A too
    many = layout.text(rows)
    assert many.count("MODEL") == 2 and many.count("CONECT") == 2 and many.endswith("END\n")


def test_pdb_text_same_with_and_without_the_cache():
    res = residues()
    rows = np.random.default_rng(3).normal(size=(1, 1, len(res), 14, 3)).astype(np.float32)
    first = sf.pdb_text(res, rows)  # direct text the first time, the cached layout after
    assert sf.pdb_text(res, rows) == first and sf.pdb_text is pdb.pdb_text and sf.PDBLayout is pdb.PDBLayout


def test_fields_that_do_not_fit():
    res = residues()
    res.resseq[0] = 10000
    with pytest.raises(FormatLimitError, match="residue numbers outside -999..9999"):
        pdb.PDBLayout(res)
    res = residues(chains="AAXYZ")
    res.chain_id[4] = "ABC"
    with pytest.raises(InputError, match="chain IDs longer than 2 characters do not fit a PDB file: ABC"):
        pdb.protein_to_pdb_string(Protein(res, np.zeros((5, 14, 3), np.float32), SLOT_MASK[res.restype]))
