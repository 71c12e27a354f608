"""``ldb-hpc backmap`` end to end (in-process) with the bundled example and the CASP12 CA traces."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import mdtraj as md
import numpy as np
import pytest
from conftest import assert_one_line_error

from ldb_hpc.chem.residues import RESTYPE_INDEX, SLOT_MASK
from ldb_hpc.io.cg import CGTrajectory


@pytest.fixture
def example(tmp_path, repo_root):
    path = tmp_path / "example.cg.h5"
    shutil.copy(repo_root / "examples" / "example.cg.h5", path)
    return path


def test_backmap_example_default_name_and_mdtraj_load(example, run_cli):
    code, out, err = run_cli("backmap", example, "--no-progress")
    assert code == 0, err
    result = example.with_name("example.cg.aa.h5")
    assert result.exists() and "backmapped 40 frames" in out
    with CGTrajectory(str(example)) as cg:
        residues, ca = cg.residues, cg.read(0, cg.n_frames).ca
    traj = md.load(str(result))
    assert traj.n_frames == 40
    assert traj.n_residues == len(residues)
    assert traj.n_atoms == int(SLOT_MASK[residues.restype].sum())  # every heavy atom of every residue
    assert [r.name for r in traj.topology.residues] == residues.standard_names
    # CA positions are the input's (nm in the file, Å in memory).
    ca_idx = traj.topology.select("name CA")
    np.testing.assert_allclose(traj.xyz[:, ca_idx] * 10.0, ca, atol=1e-3)
    with h5py.File(result, "r") as f:
        assert f["ldb"].attrs["model"] == "ldb-default"  # the shipped learned model is the default
        np.testing.assert_array_equal(f["ldb/cg_frame"][:], np.arange(40))


def test_batch_size_does_not_change_the_output(example, tmp_path, run_cli):
    outs = []
    for b in (7, 64):
        out = tmp_path / f"b{b}.h5"
        code, _, err = run_cli("backmap", example, "-o", out, "--batch-frames", b, "--no-progress")
        assert code == 0, err
        outs.append(md.load(str(out)).xyz)
    # Vectorised maths may round differently at another batch size: equal to float32 rounding (1e-5 nm).
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-5)


def test_samples_rows_are_frame_major(example, tmp_path, run_cli):
    out = tmp_path / "s.h5"
    code, _, err = run_cli("backmap", example, "-o", out, "--samples", 2, "--no-progress")
    assert code == 0, err
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["ldb/cg_frame"][:], np.repeat(np.arange(40), 2))
        np.testing.assert_array_equal(f["ldb/sample"][:], np.tile([0, 1], 40))


def test_existing_output_is_left_untouched(example, tmp_path, run_cli):
    out = tmp_path / "exists.h5"
    out.write_bytes(b"precious")
    code, _, err = run_cli("backmap", example, "-o", out)
    assert_one_line_error(code, err, "--overwrite")
    assert out.read_bytes() == b"precious"
    code, _, err = run_cli("backmap", example, "-o", out, "--overwrite", "--no-progress")
    assert code == 0, err
    assert md.load(str(out)).n_frames == 40


@pytest.mark.parametrize("args, message", [
    (["--model", "no/such/model"], "model not found"),
    (["--batch-frames", "0"], "--batch-frames"),
    (["--samples", "0"], "--samples"),
    (["-o", "/no/such/dir/out.h5"], "does not exist"),
])
def test_bad_options(example, tmp_path, run_cli, args, message):
    code, _, err = run_cli("backmap", example, *args)
    assert_one_line_error(code, err, message)
    assert not os.path.exists(example.with_name("example.cg.aa.h5"))


def test_output_equal_to_input_is_refused(example, run_cli):
    code, _, err = run_cli("backmap", example, "-o", example, "--overwrite")
    assert_one_line_error(code, err, "overwrite the input")


def _reference_disulfides(prot) -> set[tuple[int, int]]:
    """Cys pairs of a reference structure whose SG atoms lie within 2.3 Å."""
    cys = [i for i in range(len(prot)) if prot.residues.restype[i] == RESTYPE_INDEX["CYS"] and prot.mask[i, 5]]
    return {(i, j) for i in cys for j in cys
            if i < j and np.linalg.norm(prot.positions[i, 5] - prot.positions[j, 5]) <= 2.3}


@pytest.mark.data
def test_casp12_every_heavy_atom_rebuilt(shared_data, tmp_path, run_cli):
    """CA traces of all 24 CASP12 targets → all-atom files with every heavy atom, termini and breaks included, and
    their disulfides built and bonded."""
    from ldb_hpc.io.structure import read_structure

    rmsd, found = [], 0
    for path in sorted((shared_data / "test" / "casp12").glob("*.pdb")):
        prot = read_structure(str(path))[0]
        cg, out, js = (tmp_path / f"{path.stem}{s}" for s in (".cg.h5", ".aa.h5", ".json"))
        for argv in (("coarsen", path, "-o", cg), ("backmap", cg, "-o", out, "--no-progress"),
                     ("evaluate", out, "--ref", path, "--json", js)):
            code, _, err = run_cli(*argv)
            assert code == 0, f"{argv[0]} {path.name}: {err}"
        traj = md.load(str(out))
        assert traj.n_residues == len(prot)
        assert traj.n_atoms == int(SLOT_MASK[prot.residues.restype].sum())
        assert np.isfinite(traj.xyz).all()
        # Peptide bonds exist inside segments only: one bond fewer per chain break.
        n_links = int(prot.residues.peptide_links().sum())
        inter = [(a, b) for a, b in traj.topology.bonds if a.residue.index != b.residue.index]
        ss = {tuple(sorted((a.residue.index, b.residue.index))) for a, b in inter if a.name == b.name == "SG"}
        assert len(inter) - len(ss) == n_links
        # Disulfides (issue 20): the output bonds exactly the reference's (SG–SG <= 2.3 Å there), each at
        # 1.95–2.15 Å, and no other Cys SG pair comes closer than 1.9 Å.
        ref_ss = _reference_disulfides(prot)
        assert ss == ref_ss, f"{path.name}: bonded {sorted(ss)}, reference {sorted(ref_ss)}"
        found += len(ss)
        sg = {r.index: traj.xyz[0, r.atom("SG").index] * 10 for r in traj.topology.residues if r.name == "CYS"}
        for i, j in ((i, j) for i in sg for j in sg if i < j):
            d = float(np.linalg.norm(sg[i] - sg[j]))
            assert (1.95 <= d <= 2.15) if (i, j) in ss else d >= 1.9, f"{path.name} SG {i}-{j}: {d:.2f} Å"
        summary = json.loads(js.read_text())["summary"]
        assert summary["bond_outliers"] < 0.01
        rmsd.append(summary["rmsd"])
    assert len(rmsd) == 24 and np.mean(rmsd) < 1.75
    assert found == 4  # T0892, T0897, T0941, T0947; T0898's metal-site Cys stay unbonded
