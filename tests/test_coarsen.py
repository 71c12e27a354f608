"""``ldb-hpc coarsen`` end to end (in-process), and one-line errors for bad CG inputs."""

from __future__ import annotations

import json
import os

import h5py
import mdtraj as md
import numpy as np
import pytest
from conftest import assert_one_line_error
from test_io_trajectory import heavy, sample_spec, write_cg, write_pdb

from ldb_hpc.io.aa import AllAtomWriter
from ldb_hpc.io.cg import CGTrajectory
from ldb_hpc.io.topology import cg_topology


def test_coarsen_multimodel_pdb(tmp_path, run_cli):
    pdb = tmp_path / "ens.pdb"
    coords = write_pdb(pdb, sample_spec(), n_models=3, cryst=(40.0, 41.0, 42.0))
    out = tmp_path / "ens.cg.h5"
    rc, stdout, err = run_cli("coarsen", pdb, "-o", out)
    assert rc == 0, err
    assert "3 frame(s), 8 residues (2 chain(s)" in stdout and "HOH×1" in stdout and "CA×1" in stdout
    t = md.load(str(out))
    assert t.n_frames == 3 and t.n_atoms == 8
    assert [a.name for a in t.topology.atoms] == ["CA"] * 8
    assert [r.name for r in t.topology.residues] == ["ALA", "HIS", "ILE", "MET", "CYS", "GLY", "TRP", "LYS"]
    assert [r.resSeq for r in t.topology.residues] == [1, 2, 3, 4, 5, 6, 10, 11]
    assert [c.chain_id for c in t.topology.chains] == ["A", "B"]
    keys = [("A", 1), ("A", 2), ("A", 3), ("A", 4), ("A", 5), ("A", 6), ("B", 10), ("B", 11)]
    expected = np.stack([coords[(c, r, "CA")] for c, r in keys], axis=1)  # [3, 8, 3] Å
    np.testing.assert_allclose(t.xyz * 10, expected, atol=2e-3)
    np.testing.assert_allclose(t.unitcell_lengths * 10, [[40.0, 41.0, 42.0]] * 3, atol=1e-3)
    with CGTrajectory(str(out)) as cg:
        assert cg.n_frames == 3 and cg.residues.segment[5] != cg.residues.segment[6]
    assert sorted(os.listdir(tmp_path)) == ["ens.cg.h5", "ens.pdb"]  # no temp file left


def test_coarsen_streams_xtc_in_chunks(tmp_path, run_cli):
    rng = np.random.default_rng(4)
    spec = [("A", i + 1, r, heavy(r), False) for i, r in enumerate(["ALA", "GLY", "SER", "LEU", "VAL", "PRO"])]
    pdb = str(tmp_path / "top.pdb")
    write_pdb(pdb, spec)
    top = md.load(pdb)
    n = 17
    xyz = top.xyz + 0.03 * rng.normal(size=(n, top.n_atoms, 3)).astype(np.float32)
    traj = md.Trajectory(xyz, top.topology, time=np.arange(n) * 20.0, unitcell_lengths=np.full((n, 3), 4.0),
                         unitcell_angles=np.full((n, 3), 90.0))
    traj.save_xtc(str(tmp_path / "run.xtc"))
    out = tmp_path / "run.cg.h5"
    rc, stdout, err = run_cli("coarsen", tmp_path / "run.xtc", "--top", pdb, "-o", out, "--chunk", 4)
    assert rc == 0, err
    t = md.load(str(out))
    ca = top.topology.select("name CA")
    assert t.n_frames == n and t.n_atoms == 6
    np.testing.assert_allclose(t.xyz, xyz[:, ca], atol=2e-3)
    np.testing.assert_allclose(t.time, np.arange(n) * 20.0)
    np.testing.assert_allclose(t.unitcell_lengths, 4.0, rtol=1e-5)
    # Without --top the xtc cannot be read.
    rc, _, err = run_cli("coarsen", tmp_path / "run.xtc", "-o", tmp_path / "x.h5")
    assert_one_line_error(rc, err, "--top")
    # A topology of another system is refused instead of silently picking wrong atoms.
    write_pdb(tmp_path / "small.pdb", spec[:3])
    rc, _, err = run_cli("coarsen", tmp_path / "run.xtc", "--top", tmp_path / "small.pdb", "-o", tmp_path / "x.h5")
    assert_one_line_error(rc, err, f"has {top.n_atoms} atoms per frame but the topology")
    assert not (tmp_path / "x.h5").exists()


def test_coarsen_bad_inputs(tmp_path, run_cli):
    out = tmp_path / "out.cg.h5"
    rc, _, err = run_cli("coarsen", tmp_path / "missing.pdb", "-o", out)
    assert_one_line_error(rc, err, "not found")
    (tmp_path / "junk.pdb").write_text("nothing to see here\n")
    rc, _, err = run_cli("coarsen", tmp_path / "junk.pdb", "-o", out)
    assert_one_line_error(rc, err)
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 200)
    rc, _, err = run_cli("coarsen", tmp_path / "junk.h5", "-o", out)
    assert_one_line_error(rc, err, "corrupt or truncated")
    # Unknown residue → the --map-residue hint; the mapping fixes it.
    spec = [("A", 1, "ALA", heavy("ALA"), False),
            ("A", 2, "LRT", [("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O")], True)]
    write_pdb(tmp_path / "lrt.pdb", spec)
    rc, _, err = run_cli("coarsen", tmp_path / "lrt.pdb", "-o", out)
    assert_one_line_error(rc, err, "--map-residue")
    assert "LRT" in err and not out.exists()
    rc, _, err = run_cli("coarsen", tmp_path / "lrt.pdb", "-o", out, "--map-residue", "LRT=LYS")
    assert rc == 0, err
    assert [r.name for r in md.load(str(out)).topology.residues] == ["ALA", "LYS"]
    # Existing output without --overwrite is left untouched.
    before = out.read_bytes()
    write_pdb(tmp_path / "other.pdb", [("A", 1, "GLY", heavy("GLY"), False)])
    rc, _, err = run_cli("coarsen", tmp_path / "other.pdb", "-o", out)
    assert_one_line_error(rc, err, "--overwrite")
    assert out.read_bytes() == before
    rc, _, err = run_cli("coarsen", tmp_path / "other.pdb", "-o", out, "--overwrite")
    assert rc == 0 and md.load(str(out)).n_atoms == 1
    # NaN coordinates in the input (an mdtraj HDF5 file) name the frame.
    t = md.load(str(tmp_path / "lrt.pdb"))
    xyz = np.repeat(t.xyz, 5, axis=0)
    xyz[3, 1, 0] = np.nan
    md.Trajectory(xyz, t.topology).save_hdf5(str(tmp_path / "nan.h5"))
    rc, _, err = run_cli("coarsen", tmp_path / "nan.h5", "-o", tmp_path / "nan.cg.h5", "--map-residue", "LRT=LYS")
    assert_one_line_error(rc, err, "frame 3 has non-finite")
    assert not (tmp_path / "nan.cg.h5").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def _bad_cg_files(tmp_path):
    """{case: (path, expected message part)} of CG inputs the reader must refuse."""
    good = str(tmp_path / "good.h5")
    res, ca, _ = write_cg(good, n_frames=40, n_res=6)
    topo = cg_topology(res)
    cases = {"missing": (tmp_path / "missing.h5", "not found")}

    def h5(name, coords=None, topology=topo):
        with h5py.File(tmp_path / name, "w") as f:
            if coords is not None:
                f["coordinates"] = coords
            if topology is not None:
                f["topology"] = np.array([json.dumps(topology).encode()])
        return tmp_path / name

    (tmp_path / "text.h5").write_text("not hdf5")
    cases["not_hdf5"] = (tmp_path / "text.h5", "not an HDF5 file")
    data = open(good, "rb").read()
    (tmp_path / "trunc.h5").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (tmp_path / "trunc.h5", "corrupt or truncated")
    cases["no_coordinates"] = (h5("nocoord.h5"), "no /coordinates")
    cases["wrong_shape"] = (h5("shape.h5", np.zeros((5, 6, 2), "f4")), "has shape (5, 6, 2)")
    cases["wrong_atoms"] = (h5("natoms.h5", np.zeros((5, 7, 3), "f4")), "7 atoms per frame")
    cases["zero_frames"] = (h5("zero.h5", np.zeros((0, 6, 3), "f4")), "zero frames")
    nan = ca / 10
    nan[0, 1, 2] = np.nan
    cases["nan"] = (h5("nan.h5", nan), "frame 0 has non-finite")
    absurd = ca / 10
    absurd[0, 0, 0] = -2e3
    cases["absurd"] = (h5("absurd.h5", absurd), "frame 0 has absurd")
    aa = tmp_path / "aa.h5"
    with AllAtomWriter(str(aa), res, n_frames=1) as w:
        w.write(0, np.zeros((1, 1, 6, 14, 3)), np.zeros(1))
    cases["non_ca_topology"] = (aa, "one CA atom per residue")
    unk = json.loads(json.dumps(topo))
    unk["chains"][1]["residues"][0]["name"] = "XYZ"
    cases["unknown_residue"] = (h5("unk.h5", ca / 10, unk), "--map-residue")
    return cases


@pytest.mark.parametrize("case", ["missing", "not_hdf5", "truncated", "no_coordinates", "wrong_shape",
                                  "wrong_atoms", "zero_frames", "nan", "absurd", "non_ca_topology",
                                  "unknown_residue"])
def test_bad_cg_input_one_line_error(tmp_path, run_cli, case):
    path, message = _bad_cg_files(tmp_path)[case]
    # The reader's own message ...
    from ldb_hpc.errors import InputError

    with pytest.raises(InputError) as info:
        CGTrajectory(str(path)).close()
    assert message in str(info.value) and "\n" not in str(info.value)
    # ... reaches the user as one `error:` line with exit code 2, and no output appears.
    out = tmp_path / "out.aa.h5"
    rc, _, err = run_cli("backmap", path, "-o", out, "--model", "ideal")
    assert_one_line_error(rc, err, message)
    assert not out.exists()


@pytest.mark.data
def test_coarsen_lysozyme_md(shared_data, tmp_path, run_cli):
    d = shared_data / "md" / "lysozyme_1am7"
    xtc, pdb = d / "1am7_corrected.xtc", d / "1am7_protein.pdb"
    out = tmp_path / "lyso.cg.h5"
    rc, stdout, err = run_cli("coarsen", xtc, "--top", pdb, "-o", out, "--chunk", 16)
    assert rc == 0, err
    ref = md.load(str(xtc), top=str(pdb))
    ca = ref.topology.select("name CA")
    t = md.load(str(out))
    assert t.n_frames == ref.n_frames == 51 and t.n_atoms == len(ca) == 158
    np.testing.assert_allclose(t.xyz, ref.xyz[:, ca], atol=1e-6)
    np.testing.assert_allclose(t.time, ref.time)
    np.testing.assert_allclose(t.unitcell_lengths, ref.unitcell_lengths, rtol=1e-6)
    assert [r.name for r in t.topology.residues] == [ref.topology.atom(i).residue.name for i in ca]
    with CGTrajectory(str(out)) as cg:
        assert cg.residues.segment.max() == 0  # one chain, no break
        np.testing.assert_allclose(cg.read(20, 30).ca, ref.xyz[20:30, ca] * 10, atol=1e-5)
