"""benchmarks/simulation_ready.py (issue 20) on a structure built here: 36 residues of the bundled example in two
pieces (a chain break), backmapped with hydrogens ("ours") and without (made into a "reference" with one side-chain
atom removed and no TER at the break). The minimisation converges below its start, forced failures are counted,
the RMSD moved is over heavy atoms only, the reference is split and completed, and the rows render."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
pytest.importorskip("openmm")
pytest.importorskip("pdbfixer")

import simulation_ready as sr  # noqa: E402

EXAMPLE = REPO / "examples" / "example.cg.h5"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(ours: PDB with hydrogens, reference: heavy-atom PDB without TRP 61 CH2 and without a TER at the break)."""
    import mdtraj as md
    from hydrogens import _cli

    tmp = tmp_path_factory.mktemp("simready")
    md.load(str(EXAMPLE))[0].atom_slice(list(range(20)) + list(range(60, 76))).save_pdb(str(tmp / "ca.pdb"))
    common = ["--threads", 1, "--no-progress", "--overwrite"]
    _cli(["backmap", tmp / "ca.pdb", "-o", tmp / "ours.pdb", "--hydrogens", *common])
    _cli(["backmap", tmp / "ca.pdb", "-o", tmp / "heavy.pdb", *common])
    lines = [ln for ln in (tmp / "heavy.pdb").read_text().splitlines()
             if not (ln.startswith("ATOM") and ln[12:16].strip() == "CH2" and ln[17:26] == "TRP A  61")]
    assert len(lines) == len((tmp / "heavy.pdb").read_text().splitlines()) - 1
    assert sum(ln.startswith("TER") for ln in lines) == 1  # only at the end: the break is not marked
    (tmp / "ref.pdb").write_text("\n".join(lines) + "\n")
    return tmp / "ours.pdb", tmp / "ref.pdb"


@pytest.fixture(scope="module")
def ff():
    return sr.forcefield()


@pytest.fixture(scope="module")
def ours(built):
    import openmm.app as app

    return app.PDBFile(str(built[0]))


def test_minimisation_converges_below_its_start(ours, ff):
    m = sr.minimise(ours.topology, ours.positions, ff)
    assert m.converged and m.failure == "" and m.error == "", m
    assert math.isfinite(m.e0) and math.isfinite(m.e1) and m.e1 < m.e0
    assert m.rms_force <= sr.TOLERANCE and 0 < m.iterations <= sr.MAX_ITERATIONS
    assert m.residues == 36 and m.atoms == ours.topology.getNumAtoms() and m.cyx == 0
    assert 0 < m.rmsd_moved < 5 and m.worst_start_atom
    assert m.e0_nonbonded <= m.e0 or not math.isfinite(m.e0)  # nonbonded is a part of the total here


def test_forced_failures_are_counted(ours, ff):
    import openmm.unit as unit

    capped = sr.minimise(ours.topology, ours.positions, ff, tolerance=1e-3, max_iterations=1)
    assert not capped.converged and capped.failure.startswith("not converged") and capped.iterations <= 1
    xyz = np.array(ours.positions.value_in_unit(unit.nanometer))
    atoms = list(ours.topology.atoms())
    i = next(a.index for a in atoms if a.residue.index == 2 and a.name == "CA")
    j = next(a.index for a in atoms if a.residue.index == 30 and a.name == "CA")
    xyz[j] = xyz[i]  # two atoms of distant residues on one point: an impossible overlap
    overlap = sr.minimise(ours.topology, xyz, ff)
    assert not overlap.converged and overlap.failure, overlap
    ok = sr.minimise(ours.topology, ours.positions, ff)
    results = [{"target": name, "gmx": None, sr.OURS: m, sr.REFERENCE: ok}
               for name, m in (("capped", capped), ("overlap", overlap), ("fine", ok))]
    s = sr.summarise(results, sr.OURS)
    assert s["structures"] == 3 and s["failed"] == 2 and s["exceptions"] + s["not_converged"] == 2
    assert sr.summarise(results, sr.REFERENCE)["failed"] == 0
    labels = {sr.OURS: "ours", sr.REFERENCE: "ref"}
    rows = sr.csv_rows(results, "tiny", "amber14 vacuum|tol=10", labels)
    failed = {r[1].split("|")[1]: r[3] for r in rows if r[0] == "simulation_ready_structure" and r[2] == "failed"
              and "|ours|" in r[1]}
    assert failed == {"capped": 1, "overlap": 1, "fine": 0}
    assert ("simulation_ready", "tiny|ours|amber14 vacuum|tol=10", "failed", 2, "structures") in rows


def test_rmsd_moved_is_over_heavy_atoms(ours):
    import openmm.unit as unit

    xyz = np.array(ours.positions.value_in_unit(unit.nanometer))
    atoms = list(ours.topology.atoms())
    heavy = [a.index for a in atoms if a.element.symbol != "H"]
    moved = xyz.copy()
    moved[[a.index for a in atoms if a.element.symbol == "H"]] += 1.0  # every hydrogen 17 Å away
    assert sr.heavy_rmsd(ours.topology, xyz, moved) == 0.0
    moved = xyz.copy()
    moved[heavy[0], 0] += 0.1  # one heavy atom by 1 Å
    assert sr.heavy_rmsd(ours.topology, xyz, moved) == pytest.approx(math.sqrt(1 / len(heavy)), rel=1e-9)


def test_reference_is_split_completed_protonated_and_minimised(built, ff):
    top, pos, notes = sr.prepare_reference(built[1], ff)
    assert notes == {"heavy_atoms_added": 3, "chains": 2}  # TRP 61 CH2 and an OXT at each chain end
    atoms = list(top.atoms())
    assert any(a.residue.name == "TRP" and a.residue.id == "61" and a.name == "CH2" for a in atoms)
    assert sum(a.element.symbol == "H" for a in atoms) > 0.9 * sum(a.element.symbol != "H" for a in atoms)
    m = sr.minimise(top, pos, ff)
    assert m.converged and m.e1 < m.e0, m
    assert m.per_residue(m.e0) < 1e3  # no bond across the break: a stretched one would add ~1e5 kJ/mol


def test_pdb2gmx_linking_lines_are_parsed():
    """Lines as GROMACS 2022 `gmx pdb2gmx -ignh` prints them on an ldb-hpc output (CASP12 T0892)."""
    text = ("Special Atom Distance matrix:\n          CYS111\n           SG859\n  CYS123   SG965   0.203\n"
            "Linking CYS-111 SG-859 and CYS-123 SG-965...\nLinking CYS-48 SG-64 and CYS-214 SG-1405...\n")
    assert sr.parse_pdb2gmx_links(text) == [("CYS", 111, "CYS", 123), ("CYS", 48, "CYS", 214)]
    assert sr.parse_pdb2gmx_links("Now there are 161 residues with 2701 atoms\n") == []


def test_rows_render_as_a_readme_section(ours, ff, tmp_path):
    from report import read_latest
    from results_csv import append_rows

    m = sr.minimise(ours.topology, ours.positions, ff)
    results = [{"target": "small", "gmx": {"links": [("CYS", 1, "CYS", 9)], "rc": 0}, sr.OURS: m,
                sr.REFERENCE: sr.Minimisation(error="preparing the reference: boom")}]
    csv = tmp_path / "results.csv"
    append_rows(sr.csv_rows(results, "tiny", "amber14 vacuum|tol=10", {sr.OURS: "ours", sr.REFERENCE: "ref"}), csv)
    lines = sr.readme_section(*read_latest(csv))
    text = "\n".join(lines)
    assert lines[0].startswith("## Readiness for simulation") and "tiny" in text
    summary = {ln.split(" | ")[0]: ln for ln in lines if ln.startswith(("| ours |", "| ref |"))}
    assert set(summary) == {"| ours", "| ref"}
    assert summary["| ref"].split(" | ")[2] == "1"  # structures 1, failed 1
    small = [ln for ln in lines if ln.startswith("| small |")]
    assert len(small) == 2 and small[0].split(" | ")[4] == "1" and small[0].endswith("| 0 |")  # pdb2gmx SS; ok
    assert small[1].endswith("| 1 |")  # the reference failed
