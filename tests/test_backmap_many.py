"""``ldb-hpc backmap`` of many structure files in one process (issue 13, item 2), and ``-`` (stdin → stdout).

Inputs are real PDB/mmCIF files made from the bundled example (mdtraj writes the CA PDBs, gemmi the mmCIF, an
ldb-hpc backmap the all-atom one); outputs are read back with mdtraj and gemmi.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gemmi
import mdtraj as md
import numpy as np
import pytest
from conftest import REPO, assert_one_line_error

from ldb_hpc.chem.residues import SLOT_MASK, restype_index
from ldb_hpc.cli.backmap import many_structures

EXAMPLE = REPO / "examples" / "example.cg.h5"
N_RES = 135


@pytest.fixture(scope="module")
def example():
    return md.load(str(EXAMPLE))


def ca_pdb(example, path, frames=(0,), residues=None):
    """A CA-only PDB of example frames ``frames`` (one MODEL each when several); returns the path."""
    t = example[list(frames)]
    if residues is not None:
        t = t.atom_slice(np.arange(residues))
    t.save_pdb(str(path))
    return Path(path)


def assert_one_error(code, err, pattern):
    """Exit 2 and exactly one ``error:`` line on stderr, containing ``pattern``; no traceback. (The ideal model
    leaves close contacts in the example, so a ``warning:`` line may come too.)"""
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and pattern in errors[0], err
    assert "Traceback" not in err and all(line.startswith(("error: ", "warning: ", "note: "))
                                          for line in err.strip().splitlines()), err


def heavy_atoms(traj) -> int:
    return int(SLOT_MASK[[restype_index(r.name) for r in traj.topology.residues]].sum())


@pytest.fixture
def inputs(tmp_path, example, run_cli):
    """A single-model CA PDB, a 3-model CA PDB, an mmCIF CA file and an all-atom PDB (4 frames in all)."""
    src = tmp_path / "in"
    src.mkdir()
    ca_pdb(example, src / "one.pdb", [5])
    ca_pdb(example, src / "three.pdb", [0, 1, 2])
    st = gemmi.read_structure(str(ca_pdb(example, tmp_path / "cif-src.pdb", [7])))
    st.setup_entities()
    st.make_mmcif_document().write_file(str(src / "four.cif"))
    # An all-atom PDB: frame 9 backmapped with the ideal model, then used as an input.
    aa_dir = tmp_path / "aa"
    aa_dir.mkdir()
    code, _, err = run_cli("backmap", ca_pdb(example, tmp_path / "nine.pdb", [9]), "-o", f"{aa_dir}/",
                           "--model", "ideal")
    assert code == 0, err
    shutil.copy(aa_dir / "nine.aa.pdb", src / "allatom.pdb")
    return src


def test_routing():
    assert not many_structures(["traj.h5"], None) and not many_structures(["x.pdb"], "x.aa.h5")
    assert many_structures(["a.pdb", "b.pdb"], None) and many_structures(["-"], None)
    assert many_structures(["snap/*.pdb"], None) and many_structures(["x.pdb"], "out/")


def test_several_inputs_one_output_each(inputs, tmp_path, example, run_cli):
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run_cli("backmap", inputs / "one.pdb", inputs / "three.pdb", inputs / "four.cif",
                                inputs / "allatom.pdb", "-o", f"{out}/", "--model", "ideal")
    assert code == 0, err
    assert "backmapped 4 of 4 structure file(s): 6 frame(s)" in stdout
    expected = {"one": [5], "three": [0, 1, 2], "four": [7], "allatom": [9]}
    for stem, frames in expected.items():
        traj = md.load(str(out / f"{stem}.aa.pdb"))
        assert traj.n_frames == len(frames) and traj.n_residues == N_RES
        assert traj.n_atoms == heavy_atoms(traj)  # every heavy atom of every residue
        ca = traj.topology.select("name CA")
        np.testing.assert_allclose(traj.xyz[:, ca], example.xyz[frames], atol=2e-4)  # nm; PDB keeps 1e-3 Å
        assert [r.resSeq for r in traj.topology.residues] == [r.resSeq for r in example.topology.residues]
    summary = json.loads((out / "backmap.summary.json").read_text())
    assert summary["written"] == 4 and summary["failed"] == 0 and summary["frames"] == 6
    assert [f["input"] for f in summary["files"]] == [str(inputs / n) for n in
                                                       ("one.pdb", "three.pdb", "four.cif", "allatom.pdb")]
    assert sorted(os.listdir(out)) == sorted([f"{s}.aa.pdb" for s in expected] + ["backmap.summary.json"])


def test_batched_files_equal_their_single_runs(tmp_path, example, run_cli):
    """Files of one protein share model calls (batch of 4 frames over 3 files); each still equals the trajectory
    path's result for that file alone (default, stochastic model: noise is keyed by the file's own frames)."""
    src = tmp_path / "in"
    src.mkdir()
    files = [ca_pdb(example, src / "a.pdb", [0, 1, 2]), ca_pdb(example, src / "b.pdb", [3]),
             ca_pdb(example, src / "c.pdb", [4, 5])]
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_cli("backmap", *files, "-o", out, "--format", "h5", "--batch-frames", 4, "--samples", 2)
    assert code == 0, err
    for f in files:
        single = tmp_path / f"{f.stem}.single.h5"
        code, _, err = run_cli("backmap", f, "-o", single, "--samples", 2, "--no-progress")
        assert code == 0, err
        many = md.load(str(out / f"{f.stem}.aa.h5"))
        ref = md.load(str(single))
        assert many.n_frames == ref.n_frames and many.n_atoms == ref.n_atoms
        assert np.abs(many.xyz - ref.xyz).max() < 1e-4  # nm: 1e-3 Å


def test_corrupt_file_among_good_ones(inputs, tmp_path, run_cli):
    (inputs / "bad.pdb").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    (inputs / "cut.pdb").write_text((inputs / "one.pdb").read_text()[:700])  # cut inside a coordinate field
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run_cli("backmap", inputs / "one.pdb", inputs / "bad.pdb", inputs / "three.pdb",
                                "-o", out, "--model", "ideal")
    assert_one_error(code, err, f"error: {inputs / 'bad.pdb'}: ")
    assert "2 of 3 structure file(s)" in stdout and "1 failed" in stdout
    for stem, n_frames in (("one", 1), ("three", 3)):  # the good ones: written and complete
        traj = md.load(str(out / f"{stem}.aa.pdb"))
        assert traj.n_frames == n_frames and traj.n_atoms == heavy_atoms(traj)
    assert not (out / "bad.aa.pdb").exists()
    assert not [n for n in os.listdir(out) if ".tmp." in n]  # no temporaries left
    summary = json.loads((out / "backmap.summary.json").read_text())
    assert [f["status"] for f in summary["files"]] == ["written", "failed", "written"]
    # A file cut inside an ATOM record is refused too, naming it.
    code, _, err = run_cli("backmap", inputs / "cut.pdb", "-o", out, "--model", "ideal")
    assert_one_error(code, err, f"error: {inputs / 'cut.pdb'}: ")


def test_glob_expanded_by_ldb_hpc(inputs, tmp_path, run_cli):
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run_cli("backmap", f"{inputs}/*.pdb", f"{inputs}/nothing-*.cif", "-o", out, "--model",
                                "ideal")
    # The glob that matches nothing is a failure, named; the matched files are written.
    assert_one_error(code, err, "no file matches")
    assert sorted(os.listdir(out)) == ["allatom.aa.pdb", "backmap.summary.json", "one.aa.pdb", "three.aa.pdb"]
    # A folder stands for its structure files.
    out2 = tmp_path / "out2"
    out2.mkdir()
    code, stdout, err = run_cli("backmap", inputs, "-o", out2, "--model", "ideal")
    assert code == 0, err
    assert "4 of 4" in stdout and (out2 / "four.aa.pdb").exists()


def test_multi_model_file_with_different_models_is_refused(tmp_path, example, run_cli):
    a = ca_pdb(example, tmp_path / "a.pdb", [0], residues=20).read_text().replace("END\n", "")
    b = ca_pdb(example, tmp_path / "b.pdb", [0], residues=21).read_text().replace("END\n", "")
    bad = tmp_path / "models.pdb"
    bad.write_text("MODEL        1\n" + a.split("MODEL")[-1] + "ENDMDL\nMODEL        2\n" + b.split("MODEL")[-1]
                   + "ENDMDL\nEND\n")
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_cli("backmap", bad, "-o", out, "--model", "ideal")
    assert_one_error(code, err, "model 2 has other residues than model 1")


def test_existing_outputs_overwrite_resume_and_name_clashes(inputs, tmp_path, run_cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "one.aa.pdb").write_text("kept\n")
    code, _, err = run_cli("backmap", inputs / "one.pdb", inputs / "three.pdb", "-o", out, "--model", "ideal")
    assert_one_error(code, err, "output exists")
    assert (out / "one.aa.pdb").read_text() == "kept\n" and (out / "three.aa.pdb").exists()
    code, stdout, err = run_cli("backmap", inputs / "one.pdb", inputs / "three.pdb", "-o", out, "--model", "ideal",
                                "--resume")
    assert code == 0 and "0 of 2" in stdout and "2 already written (--resume)" in stdout and err == "", err
    code, _, err = run_cli("backmap", inputs / "one.pdb", "-o", out, "--model", "ideal", "--overwrite")
    assert code == 0, err
    assert md.load(str(out / "one.aa.pdb")).n_residues == N_RES
    # Two inputs with one stem in different folders would write one file: the second is refused.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(inputs / "three.pdb", other / "one.pdb")
    out2 = tmp_path / "out2"
    out2.mkdir()
    code, _, err = run_cli("backmap", inputs / "one.pdb", other / "one.pdb", "-o", out2, "--model", "ideal")
    assert_one_error(code, err, f"error: {other / 'one.pdb'}: its output")
    assert md.load(str(out2 / "one.aa.pdb")).n_frames == 1  # the first one's


def test_usage_errors_are_one_line(inputs, tmp_path, run_cli):
    code, _, err = run_cli("backmap", inputs / "one.pdb", "-o", f"{tmp_path}/missing/", "--model", "ideal")
    assert_one_line_error(code, err, "output folder does not exist")
    code, _, err = run_cli("backmap", inputs / "one.pdb", inputs / "three.pdb", "--model", "ideal")
    assert_one_line_error(code, err, "pass -o DIR/")
    code, _, err = run_cli("backmap", inputs / "one.pdb", inputs / "three.pdb", "-o", tmp_path, "--top", "x.pdb")
    assert_one_line_error(code, err, "--top is for one trajectory input")
    code, _, err = run_cli("backmap", inputs / "one.pdb", "-", "-o", tmp_path)
    assert_one_line_error(code, err, "must be the only input")
    code, _, err = run_cli("backmap", inputs / "one.pdb", "-o", f"{tmp_path}/", "--format", "xyz")
    assert_one_line_error(code, err, "--format must be one of pdb, h5")


def _ldb(*args, stdin: bytes = b""):
    return subprocess.run([sys.executable, "-m", "ldb_hpc", *map(str, args)], input=stdin, capture_output=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_stdin_to_stdout(tmp_path, example):
    src = ca_pdb(example, tmp_path / "ca.pdb", [3])
    p = _ldb("backmap", "-", "--model", "ideal", stdin=src.read_bytes())
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    assert all(line[:6] in ("ATOM  ", "TER   ", "END") for line in text.splitlines()), text[:500]
    assert b"backmapped 1 of 1" in p.stderr and b"standard output" in p.stderr
    (tmp_path / "aa.pdb").write_text(text)
    traj = md.load(str(tmp_path / "aa.pdb"))
    assert traj.n_residues == N_RES and traj.n_atoms == heavy_atoms(traj)
    np.testing.assert_allclose(traj.xyz[0, traj.topology.select("name CA")], example.xyz[3], atol=2e-4)
    st = gemmi.read_pdb_string(text)
    assert st[0].count_atom_sites() == traj.n_atoms and st[0][0].name == "A"
    # Bad input: one error line, nothing on stdout.
    p = _ldb("backmap", "-", "--model", "ideal", stdin=b"not a structure\n")
    assert p.returncode == 2 and p.stdout == b""
    err = p.stderr.decode().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: -: "), err


MPIEXEC = Path(sys.executable).parent / "mpiexec"


@pytest.mark.skipif(not MPIEXEC.exists(), reason="needs mpiexec in the interpreter's environment")
def test_two_ranks_share_the_files(inputs, tmp_path, run_cli):
    serial, two = tmp_path / "serial", tmp_path / "two"
    serial.mkdir()
    two.mkdir()
    code, _, err = run_cli("backmap", f"{inputs}/*", "-o", serial, "--format", "h5")
    assert code == 0, err
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_", "SLURM_"))}
    p = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-m", "ldb_hpc", "backmap", f"{inputs}/*", "-o", two,
                        "--format", "h5", "--threads", "1"], capture_output=True, text=True, timeout=300,
                       env={**env, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr
    summary = json.loads((two / "backmap.summary.json").read_text())
    assert summary["ranks"] == 2 and sorted(r["files"] for r in summary["per_rank"]) == [2, 2]
    for name in ("one", "three", "four", "allatom"):
        a, b = md.load(str(serial / f"{name}.aa.h5")), md.load(str(two / f"{name}.aa.h5"))
        assert np.abs(a.xyz - b.xyz).max() < 1e-4


def test_pdb_layout_writes_what_the_pdb_writer_writes(example):
    """The fast PDB text of many rows (one rendered layout, coordinates filled per row) is byte for byte the text
    of ldb_hpc.io.pdb, for one row and for MODEL blocks, chain breaks, negative and wide coordinates included."""
    from ldb_hpc.chem.protein import Protein, Residues
    from ldb_hpc.io.pdb import protein_to_pdb_string
    from ldb_hpc.io.structure_files import pdb_text

    n = 30
    res = Residues(restype=np.arange(n) % 20, resname=["ALA"] * n, chain_id=["A"] * 12 + ["B"] * 18,
                   resseq=np.arange(n) - 5, icode=[""] * 10 + ["X"] + [""] * 19, segment=[0] * 12 + [1] * 9 + [2] * 9)
    mask = SLOT_MASK[res.restype]
    pos = (np.random.default_rng(0).normal(size=(2, 3, n, 14, 3)) * 400).astype(np.float32)
    rows = pos.reshape(-1, n, 14, 3)
    for _ in range(2):  # a topology met again goes through the cached layout
        assert pdb_text(res, pos) == protein_to_pdb_string([Protein(res, r, mask) for r in rows])
        assert pdb_text(res, pos[:1, :1]) == protein_to_pdb_string(Protein(res, rows[0], mask))
