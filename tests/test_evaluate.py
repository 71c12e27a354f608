"""``ldb-hpc evaluate`` end to end, in process."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_metrics import random_protein

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.protein import Protein, Residues
from ldb_hpc.cli import evaluate as ev
from ldb_hpc.errors import InputError


@pytest.fixture
def run_eval(run_cli):
    return lambda *argv: run_cli("evaluate", *argv)


def write_pdb(path, models, restype, names=None):
    """PDB with one MODEL per [L, 14, 3] array (all slots of each residue type present)."""
    from ldb_hpc.io.pdb import protein_to_pdb_string

    L = len(restype)
    res = Residues(restype, names or [rc.RESTYPES_3[r] for r in restype], ["A"] * L, np.arange(1, L + 1),
                   [""] * L, np.zeros(L, int))
    prots = [Protein(res, m.astype(np.float32), rc.SLOT_MASK[restype]) for m in models]
    path.write_text(protein_to_pdb_string(prots if len(prots) > 1 else prots[0]))
    return path


@pytest.fixture
def protein():
    x, restype = random_protein(L=12, seed=11, compact=3.8)
    return np.round(x, 3), restype


def test_self_and_shifted_copy(tmp_path, run_eval, protein):
    x, restype = protein
    ref = write_pdb(tmp_path / "ref.pdb", [x], restype)
    code, out, err = run_eval(ref, "--ref", ref, "--json", tmp_path / "self.json")
    assert code == 0, err
    doc = json.loads((tmp_path / "self.json").read_text())
    s = doc["summary"]
    assert s["rmsd"] == 0.0 and s["rmsd_backbone"] == 0.0
    assert s["chi1_accuracy"] == 1.0 and s["chi12_accuracy"] == 1.0
    assert "RMSD heavy atoms" in out and "χ1 within 40°" in out
    assert doc["rows"] == 1 and doc["per_row"]["rmsd"] == [0.0]

    shifted = write_pdb(tmp_path / "pred.pdb", [x + np.array([0.3, 0.4, 0.0])], restype)
    code, out, err = run_eval(shifted, "--ref", ref, "--json", tmp_path / "shift.json")
    assert code == 0, err
    s = json.loads((tmp_path / "shift.json").read_text())["summary"]
    assert s["rmsd"] == pytest.approx(0.5, abs=2e-3) and s["rmsd_backbone"] == pytest.approx(0.5, abs=2e-3)
    assert s["chi1_accuracy"] == 1.0  # a rigid shift keeps every χ, bond and contact
    for key in ("bond_outliers", "clash_2.0", "graph_valid"):
        assert s[key] == pytest.approx(doc["summary"][key])
    line = next(ln for ln in out.splitlines() if ln.startswith("RMSD heavy atoms"))
    assert float(line.split()[3]) == pytest.approx(0.5, abs=2e-3)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


def test_samples_map_rows_to_reference_frames(tmp_path, run_eval, protein):
    x, restype = protein
    y = x + np.array([1.0, 0.0, 0.0])
    ref = write_pdb(tmp_path / "ref.pdb", [x, y], restype)
    pred = write_pdb(tmp_path / "pred.pdb", [x, x, y, y], restype)
    code, out, err = run_eval(pred, "--ref", ref, "--samples", "2", "--json", tmp_path / "m.json")
    assert code == 0, err
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["frames"] == 2 and doc["samples"] == 2
    np.testing.assert_allclose(doc["per_row"]["rmsd"], 0.0, atol=1e-3)
    np.testing.assert_allclose(doc["per_frame"]["rmsd_gen"], 0.0, atol=1e-3)
    # Without --samples, rows / reference frames is used; one reference frame serves every row.
    code, _, err = run_eval(pred, "--ref", ref, "--json", tmp_path / "m2.json")
    assert code == 0, err
    assert json.loads((tmp_path / "m2.json").read_text())["samples"] == 2
    single = write_pdb(tmp_path / "one.pdb", [x], restype)
    code, _, err = run_eval(pred, "--ref", single, "--json", tmp_path / "m3.json")
    assert code == 0, err
    np.testing.assert_allclose(json.loads((tmp_path / "m3.json").read_text())["per_row"]["rmsd"], [0, 0, 1, 1],
                               atol=1e-3)


def test_errors_exit_2_with_one_line(tmp_path, run_eval, protein):
    x, restype = protein
    ref = write_pdb(tmp_path / "ref.pdb", [x], restype)
    cases = []
    cases.append(((tmp_path / "missing.pdb", "--ref", ref), "not found"))
    short = write_pdb(tmp_path / "short.pdb", [x[:-1]], restype[:-1])
    cases.append(((short, "--ref", ref), "residues"))
    other = restype.copy()
    other[3] = rc.RESTYPE_INDEX["GLY"]
    mutated = x.copy()
    mutated[3, 4:] = 0.0
    mut = write_pdb(tmp_path / "mut.pdb", [mutated], other)
    cases.append(((mut, "--ref", ref), "sequence mismatch at residue 4"))
    three = write_pdb(tmp_path / "three.pdb", [x, x, x], restype)
    two = write_pdb(tmp_path / "two.pdb", [x, x], restype)
    cases.append(((three, "--ref", two), "samples"))
    cases.append(((three, "--ref", ref, "--samples", "2"), "multiple of 2"))
    (tmp_path / "exists.json").write_text("{}")
    cases.append(((ref, "--ref", ref, "--json", tmp_path / "exists.json"), "--overwrite"))
    for argv, needle in cases:
        code, out, err = run_eval(*argv)
        assert code == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (argv, err)
    assert (tmp_path / "exists.json").read_text() == "{}"


def test_resolve_samples_rules():
    assert ev.resolve_samples(10, 1, None) == 1
    assert ev.resolve_samples(10, 1, None, from_file=5) == 5
    assert ev.resolve_samples(10, 5, None) == 2
    assert ev.resolve_samples(10, 1, 10) == 10
    for args in ((10, 3, None), (10, 5, 3), (10, 2, 1), (10, 1, 0)):
        with pytest.raises(InputError):
            ev.resolve_samples(*args)


@pytest.mark.data
def test_casp12_against_itself(tmp_path, run_eval, shared_data):
    path = shared_data / "test" / "casp12" / "T0860.pdb"
    code, out, err = run_eval(path, "--ref", path, "--json", tmp_path / "m.json")
    assert code == 0, err
    s = json.loads((tmp_path / "m.json").read_text())["summary"]
    assert s["rmsd"] == 0.0 and s["clash_1.2"] == 0.0 and s["clash_2.0"] == 0.0
    assert s["chi1_accuracy"] == 1.0 and s["chi12_accuracy"] == 1.0 and s["graph_valid"] == 1.0
    assert not math.isnan(s["bond_outliers"]) and s["bond_outliers"] < 0.01
