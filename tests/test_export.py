"""Output formats by extension (``backmap -o out.xtc`` …), ``ldb-hpc export``, ``verify`` of converted files.

Every written format is read back with mdtraj and with MDAnalysis and compared with the ``.h5`` output of the
same run (coordinates within the format's precision, atom and residue names). Killed runs (``kill -9``) and
their temporary files: tests/test_temporaries.py.
"""

from __future__ import annotations

import json
import os
import warnings

import MDAnalysis as mda
import mdtraj as md
import numpy as np
import pytest
from conftest import assert_one_line_error
from test_mpi import MPIEXEC, run_mpi
from test_runtime import make_cg

from ldb_hpc.io.export import FORMATS, RowBlocks, export

# The learned model, an ensemble: rows are frame-major (f·S + s), so row order is checked too.
OPTS = ("--samples", "2", "--seed", "5", "--batch-frames", "5", "--no-progress")
TOPOLOGY_FREE = [ext[1:] for ext, f in FORMATS.items() if not f.topology]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """(CG input, its .h5 output with OPTS, that output loaded by mdtraj)."""
    from ldb_hpc.cli.main import main

    d = tmp_path_factory.mktemp("ref")
    cg = make_cg(d / "in.cg.h5", n_frames=11, n_res=16)
    assert main(["backmap", str(cg), "-o", str(d / "ref.h5"), *OPTS]) == 0
    return cg, d / "ref.h5", md.load(str(d / "ref.h5"))


def atoms(topology) -> list[tuple]:
    """(chain index, residue name, residue number, atom name, element) of every atom, in order."""
    return [(a.residue.chain.index, a.residue.name, a.residue.resSeq, a.name, a.element.symbol)
            for a in topology.atoms]


def universe(*files) -> mda.Universe:
    with warnings.catch_warnings():  # missing elements, DCD's deprecation note, mmCIF's placeholder cell
        warnings.simplefilter("ignore")
        return mda.Universe(*map(str, files))


def mda_positions(u) -> np.ndarray:
    """Every frame of an MDAnalysis universe, in nm."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([ts.positions.copy() for ts in u.trajectory]) / 10.0


def only_outputs(folder) -> list[str]:
    """Names in ``folder`` that a finished run leaves (no temporaries, no working folder)."""
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("ext", ["xtc", "trr", "dcd", "nc", "pdb", "cif"])
def test_backmap_to_each_format_reads_back_with_mdtraj_and_mdanalysis(ref, tmp_path, run_cli, ext):
    cg, _, want = ref
    fmt, out, top = FORMATS[f".{ext}"], tmp_path / f"out.{ext}", tmp_path / "out.top.pdb"
    code, stdout, err = run_cli("backmap", cg, "-o", out, *OPTS)
    assert code == 0, err
    # The files of the format and nothing else: no HDF5 working folder, no temporary file.
    expected = [f"out.{ext}", f"out.{ext}.manifest.json", f"out.{ext}.summary.json"]
    assert only_outputs(tmp_path) == sorted(expected + ([] if fmt.topology else ["out.top.pdb"]))
    summary = json.loads((tmp_path / f"out.{ext}.summary.json").read_text())
    assert summary["output_format"] == ext and summary["rows"] == want.n_frames == 22
    assert summary["topology_pdb"] == (None if fmt.topology else str(top))
    assert (f"+ topology {top}" in stdout) != fmt.topology

    got = md.load(str(out)) if fmt.topology else md.load(str(out), top=str(top))
    assert got.n_frames == want.n_frames
    np.testing.assert_allclose(got.xyz, want.xyz, rtol=0, atol=fmt.precision_nm)
    assert atoms(got.topology) == atoms(want.topology)
    if fmt.time:
        np.testing.assert_allclose(got.time, want.time, atol=1e-3)

    u = universe(out) if fmt.topology else universe(top, out)
    pos = mda_positions(u)
    n = 1 if ext == "cif" else want.n_frames  # MDAnalysis reads the first model of an mmCIF file only
    assert pos.shape == (n, want.n_atoms, 3)
    np.testing.assert_allclose(pos, want.xyz[:n], rtol=0, atol=fmt.precision_nm)
    assert list(u.atoms.names) == [a.name for a in want.topology.atoms]
    assert list(u.atoms.resnames) == [a.residue.name for a in want.topology.atoms]
    assert list(u.atoms.resids) == [a.residue.resSeq for a in want.topology.atoms]

    code, stdout, _ = run_cli("verify", out)
    assert code == 0 and stdout.startswith(f"complete: {out}"), stdout


def test_two_mpi_ranks_write_the_same_xtc(ref, tmp_path):
    if not MPIEXEC.exists():
        pytest.skip("needs mpiexec beside the interpreter")
    cg, _, want = ref
    out, top = tmp_path / "two.xtc", tmp_path / "two.top.pdb"
    p = run_mpi(2, cg, "-o", out, "--samples", "2", "--seed", "5", "--batch-frames", "3")
    assert p.returncode == 0, p.stderr
    assert "on 2 rank(s)" in p.stdout and f"+ topology {top}" in p.stdout
    assert not (tmp_path / "two.xtc.d").exists()
    # Layout cannot matter (noise keyed by global frame): equal to the serial .h5 within XTC precision.
    np.testing.assert_allclose(md.load(str(out), top=str(top)).xyz, want.xyz, rtol=0, atol=1e-3)
    np.testing.assert_allclose(mda_positions(universe(top, out)), want.xyz, rtol=0, atol=1e-3)
    from ldb_hpc.runtime.verify import verify

    assert verify(str(out)).ok


def test_export_of_an_existing_output_equals_the_direct_conversion(ref, tmp_path, run_cli):
    cg, ref_h5, want = ref
    code, _, err = run_cli("backmap", cg, "-o", tmp_path / "direct.dcd", *OPTS)
    assert code == 0, err
    code, stdout, err = run_cli("export", ref_h5, "-o", tmp_path / "later.dcd")
    assert code == 0, err
    assert stdout.startswith(f"exported {want.n_frames} rows x {want.n_atoms} atoms (dcd)")
    assert f"+ topology {tmp_path / 'later.top.pdb'}" in stdout
    a = md.load(str(tmp_path / "direct.dcd"), top=str(tmp_path / "direct.top.pdb"))
    b = md.load(str(tmp_path / "later.dcd"), top=str(tmp_path / "later.top.pdb"))
    np.testing.assert_array_equal(a.xyz, b.xyz)
    manifest = json.loads((tmp_path / "later.dcd.manifest.json").read_text())
    assert manifest["provenance"]["model"] == "ldb-default" and manifest["provenance"]["seed"] == 5
    assert manifest["samples"] == 2 and manifest["rows"] == 22 and manifest["source"] == "ref.h5"
    assert manifest["time"].startswith("not kept")  # DCD has no time field: said, not silently dropped
    code, stdout, _ = run_cli("verify", tmp_path / "later.dcd")
    assert code == 0, stdout
    # An existing output is not replaced without --overwrite.
    code, _, err = run_cli("export", ref_h5, "-o", tmp_path / "later.dcd")
    assert_one_line_error(code, err, "--overwrite")
    code, _, err = run_cli("export", ref_h5, "-o", tmp_path / "later.dcd", "--overwrite")
    assert code == 0, err


def test_conversion_is_streamed_in_row_blocks(ref, tmp_path):
    _, ref_h5, want = ref
    three_rows = 3 * want.n_atoms * 12
    with RowBlocks(str(ref_h5)) as src:
        sizes = [xyz.shape[0] for _, xyz, *_ in src.blocks(three_rows)]
    assert sizes == [3] * 7 + [1]
    for ext in ("xtc", "nc", "pdb"):
        export(str(ref_h5), str(tmp_path / f"small.{ext}"), block_bytes=three_rows)
        export(str(ref_h5), str(tmp_path / f"whole.{ext}"))
        top = {} if ext == "pdb" else {"top": str(ref_h5)}
        np.testing.assert_array_equal(md.load(str(tmp_path / f"small.{ext}"), **top).xyz,
                                      md.load(str(tmp_path / f"whole.{ext}"), **top).xyz)


@pytest.mark.parametrize("name", ["out.xyz", "out", "out.gro", "out.xtc.gz"])
def test_unknown_output_format_is_one_error_line_and_nothing_written(ref, tmp_path, run_cli, name):
    cg, ref_h5, _ = ref
    code, _, err = run_cli("backmap", cg, "-o", tmp_path / name, "--model", "ideal")
    assert_one_line_error(code, err, "unknown output format")
    code, _, err = run_cli("export", ref_h5, "-o", tmp_path / name)
    assert_one_line_error(code, err, "unknown output format")
    code, _, err = run_cli("export", ref_h5, "-o", tmp_path / "copy.h5")
    assert_one_line_error(code, err, "is MDTraj-HDF5")
    assert os.listdir(tmp_path) == []


def test_resume_overwrite_and_companions_of_a_converted_output(ref, tmp_path, run_cli):
    cg = ref[0]
    out = tmp_path / "out.xtc"
    args = ("backmap", cg, "-o", out, "--model", "ideal", "--no-progress")
    assert run_cli(*args)[0] == 0
    code, _, err = run_cli(*args)
    assert_one_line_error(code, err, "output exists")
    # The run record lives on in the manifest: --resume knows the output is complete, or of another run.
    code, stdout, err = run_cli(*args, "--resume")
    assert code == 0 and "already complete" in stdout, err
    code, _, err = run_cli(*args, "--resume", "--seed", "9")
    assert_one_line_error(code, err, "differs")
    assert run_cli(*args, "--overwrite")[0] == 0
    # A topology PDB of that name that this output does not own is not replaced silently.
    out.unlink()
    code, _, err = run_cli(*args)
    assert_one_line_error(code, err, "out.top.pdb")
    assert run_cli(*args, "--overwrite")[0] == 0
    assert run_cli("verify", out)[0] == 0


def test_verify_tells_a_damaged_conversion(ref, tmp_path, run_cli):
    cg = ref[0]
    out, top = tmp_path / "out.trr", tmp_path / "out.top.pdb"
    assert run_cli("backmap", cg, "-o", out, "--model", "ideal", "--no-progress")[0] == 0
    good_traj, good_top = out.read_bytes(), top.read_bytes()
    out.write_bytes(good_traj[:-200])  # truncated
    code, stdout, _ = run_cli("verify", out)
    assert code == 1 and stdout.startswith("invalid:") and "sha256" in stdout, stdout
    out.write_bytes(good_traj)
    top.write_bytes(good_top.replace(b" CA ", b" CX ", 1))  # a changed atom name
    code, stdout, _ = run_cli("verify", out)
    assert code == 1 and "out.top.pdb differs" in stdout, stdout
    top.write_bytes(good_top)
    assert run_cli("verify", out)[0] == 0
    (tmp_path / "out.trr.manifest.json").unlink()
    code, stdout, _ = run_cli("verify", out)
    assert code == 1 and "no manifest" in stdout, stdout


def test_shard_tasks_then_merge_convert_once_complete(ref, tmp_path, run_cli):
    cg, ref_h5, want = ref
    out = tmp_path / "arr.pdb"
    for i in range(2):
        code, _, err = run_cli("backmap", cg, "-o", out, "--shard", f"{i}/2", *OPTS)
        assert code == 0, err
        assert not out.exists()
    code, stdout, _ = run_cli("verify", out)
    assert code == 1 and "merge" in stdout, stdout
    code, stdout, err = run_cli("merge", out)
    assert code == 0 and str(out) in stdout, err
    assert not (tmp_path / "arr.pdb.d").exists()
    np.testing.assert_allclose(md.load(str(out)).xyz, want.xyz, rtol=0, atol=FORMATS[".pdb"].precision_nm)
    assert run_cli("verify", out)[0] == 0
