"""The runtime in one process: sharding arithmetic, the pipeline, shard files + master, resume, merge, verify.

Multi-rank runs (mpiexec) are in test_mpi.py; they reuse ``make_cg`` from here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import mdtraj as md
import numpy as np
import pytest
from conftest import REPO, assert_one_line_error

from ldb_hpc.engine.pipeline import run_pipeline
from ldb_hpc.errors import InputError
from ldb_hpc.runtime.comm import wait_until_read
from ldb_hpc.runtime.sharding import ChunkPlan, parse_shard_spec, shard_range


def make_cg(path, n_frames=24, n_res=20, nan_frame=None, offset=0.0):
    """A small CG trajectory from the bundled example (frames repeat with a drift); returns the path."""
    from ldb_hpc.io.cg import CGTrajectory, CGWriter

    with CGTrajectory(str(REPO / "examples" / "example.cg.h5")) as cg:
        res = cg.residues.select(np.arange(n_res))
        base = cg.read(0, cg.n_frames).ca[:, :n_res]
    ca = base[np.arange(n_frames) % len(base)] + (np.arange(n_frames)[:, None, None] * 0.01 + offset)
    ca = ca.astype(np.float32)
    if nan_frame is not None:
        ca[nan_frame, 3, 1] = np.nan
    with CGWriter(str(path), res, overwrite=True) as w:
        w.append(ca, np.arange(n_frames) * 5.0)
    return path


def rows(path):
    """(coordinates [rows, atoms, 3] nm, cg_frame, sample) as mdtraj / h5py read them."""
    traj = md.load(str(path))
    with h5py.File(path, "r") as f:
        return traj.xyz, f["ldb/cg_frame"][:], f["ldb/sample"][:]


@pytest.fixture
def cg(tmp_path):
    return make_cg(tmp_path / "in.cg.h5")


# ----------------------------------------------------------------------------------------------
# arithmetic


@pytest.mark.parametrize("n, size", [(10, 1), (10, 3), (7, 7), (3, 5), (0, 2), (1000, 64)])
def test_shard_range_covers_every_index_once_in_order(n, size):
    parts = [shard_range(n, r, size) for r in range(size)]
    covered = np.concatenate([np.arange(a, b) for a, b in parts])
    np.testing.assert_array_equal(covered, np.arange(n))
    lengths = [b - a for a, b in parts]
    assert max(lengths) - min(lengths) <= 1


def test_chunk_plan_shards_are_contiguous_whole_chunks():
    plan = ChunkPlan(n_frames=23, batch_frames=4, n_shards=3)
    assert plan.n_chunks == 6 and plan.chunk_frames(5) == (20, 23)
    frames = [plan.shard_frames(s) for s in range(3)]
    assert frames[0][0] == 0 and frames[-1][1] == 23
    assert all(frames[i][1] == frames[i + 1][0] for i in range(2))
    empty = ChunkPlan(n_frames=3, batch_frames=2, n_shards=4)  # more shards than chunks
    sizes = [empty.shard_frames(s)[1] - empty.shard_frames(s)[0] for s in range(4)]
    assert sum(sizes) == 3 and sizes.count(0) == 2
    assert list(ChunkPlan(10, 1, 4).rank_shards(0, 2)) == [0, 1]  # resumed on fewer ranks


@pytest.mark.parametrize("spec", ["2/2", "x/2", "1", "-1/3", "0/0"])
def test_bad_shard_spec(spec):
    with pytest.raises(InputError, match="--shard"):
        parse_shard_spec(spec)
    assert parse_shard_spec("1/3") == (1, 3)


# ----------------------------------------------------------------------------------------------
# pipeline


def test_pipeline_keeps_order_overlaps_and_bounds_memory():
    written, in_flight, peak = [], [0], [0]
    lock = threading.Lock()

    def read(t):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.01)
        return t * 10

    def write(t, data, result):
        time.sleep(0.01)
        written.append((t, data, result))
        with lock:
            in_flight[0] -= 1

    t0 = time.perf_counter()
    times = run_pipeline(range(20), read, lambda t, d: (time.sleep(0.01), d + 1)[1], write, depth=1)
    wall = time.perf_counter() - t0
    assert written == [(t, 10 * t, 10 * t + 1) for t in range(20)]
    assert times.chunks == 20
    assert peak[0] <= 4  # reading + read queue + computing + write queue (+ writing) never all 20
    # Serial would take 3 × 20 × 10 ms; overlapping stages take about a third of that.
    assert wall < 0.8 * (times.read_s + times.compute_s + times.write_s)


@pytest.mark.parametrize("stage", ["read", "compute", "write"])
def test_pipeline_reraises_the_first_error_of_any_stage(stage):
    def maybe(name, t):
        if name == stage and t == 3:
            raise ValueError(f"{name} failed")

    written = []
    with pytest.raises(ValueError, match=f"{stage} failed"):
        run_pipeline(range(10), lambda t: maybe("read", t) or t, lambda t, d: maybe("compute", t) or d,
                     lambda t, d, r: maybe("write", t) or written.append(t))
    assert written == sorted(written) and 3 not in written


# ----------------------------------------------------------------------------------------------
# output, verify, resume, merge (serial, in-process)


def test_abort_waits_until_the_launcher_has_read_the_error_line():
    # MPIComm.abort waits for its stdout/stderr pipes to be drained before MPI_Abort, or a launcher
    # that acts on the abort first drops the rank's last words ("error: rank R: ..." was lost that way).
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as stream, os.fdopen(read_fd, "rb", buffering=0) as reader:
        stream.write("error: rank 1: something broke\n")
        stream.flush()
        returned = threading.Event()
        seen = []

        def late_reader():
            time.sleep(0.3)
            seen.append(returned.is_set())  # had the wait already given up on the unread line?
            seen.append(reader.read(64))

        thread = threading.Thread(target=late_reader)
        thread.start()
        wait_until_read([stream], limit_s=60)
        returned.set()
        thread.join()
        assert seen == [False, b"error: rank 1: something broke\n"]
        stream.write("x")
        stream.flush()
        wait_until_read([stream], limit_s=0.05)  # nobody reads: gives up at the limit instead of hanging
    wait_until_read([sys.stdin, object()])  # not pipes or not streams: returns at once


def test_master_of_virtual_datasets_loads_in_order_with_summary(cg, tmp_path, run_cli):
    out = tmp_path / "out.h5"
    code, stdout, err = run_cli("backmap", cg, "-o", out, "--batch-frames", 5, "--samples", 2, "--no-progress")
    assert code == 0, err
    xyz, frame, sample = rows(out)
    np.testing.assert_array_equal(frame, np.repeat(np.arange(24), 2))
    np.testing.assert_array_equal(sample, np.tile([0, 1], 24))
    with h5py.File(out, "r") as f:
        assert f["coordinates"].is_virtual
        assert all(not os.path.isabs(s.file_name) for s in f["coordinates"].virtual_sources())
        assert f["ldb"].attrs["seed"] == 0 and f["ldb"].attrs["samples"] == 2
    # CA of every row is the input's CA of its frame.
    from ldb_hpc.io.cg import CGTrajectory

    with CGTrajectory(str(cg)) as t:
        ca = t.read(0, 24).ca
    traj = md.load(str(out))
    np.testing.assert_allclose(traj.xyz[:, traj.topology.select("name CA")] * 10, np.repeat(ca, 2, axis=0), atol=1e-3)
    summary = json.loads((tmp_path / "out.h5.summary.json").read_text())
    assert summary["frames"] == 24 and summary["rows"] == 48 and summary["ranks"] == 1
    rank = summary["per_rank"][0]
    assert rank["frames"] == 24 and rank["peak_rss_mb"] > 0 and rank["compute_s"] > 0
    assert summary["residue_frames_per_s"] > 0 and summary["model"]["name"] == "ldb-default"
    code, stdout, _ = run_cli("verify", out)
    assert code == 0 and stdout.startswith("complete:")


def test_master_and_folder_moved_together_still_load(cg, tmp_path, run_cli, monkeypatch):
    out = tmp_path / "a" / "out.h5"
    out.parent.mkdir()
    assert run_cli("backmap", cg, "-o", out, "--batch-frames", 7, "--no-progress")[0] == 0
    ref = md.load(str(out)).xyz
    moved = tmp_path / "b" / "c"
    moved.mkdir(parents=True)
    shutil.move(str(out), moved / "out.h5")
    shutil.move(str(out) + ".d", moved / "out.h5.d")
    monkeypatch.chdir(tmp_path)  # relative sources resolve against the master's folder, not the cwd
    np.testing.assert_array_equal(md.load(str(moved / "out.h5")).xyz, ref)
    assert run_cli("verify", moved / "out.h5")[0] == 0
    shutil.move(str(moved / "out.h5"), tmp_path / "alone.h5")  # master without its folder
    code, stdout, _ = run_cli("verify", tmp_path / "alone.h5")
    assert code == 1 and "missing shard file" in stdout


def test_shards_then_merge_equals_one_shot(cg, tmp_path, run_cli):
    one = tmp_path / "one.h5"
    assert run_cli("backmap", cg, "-o", one, "--batch-frames", 5, "--no-progress")[0] == 0
    out = tmp_path / "arr.h5"
    code, stdout, err = run_cli("backmap", cg, "-o", out, "--batch-frames", 5, "--shard", "1/2", "--no-progress")
    assert code == 0, err
    assert not out.exists() and "ldb-hpc merge" in stdout
    code, stdout, _ = run_cli("verify", out)
    assert code == 1 and stdout.startswith("incomplete:") and "shard(s) 0 of 2" in stdout
    code, _, err = run_cli("merge", out)
    assert_one_line_error(code, err, "shard(s) 0 of 2 not finished")
    assert run_cli("backmap", cg, "-o", out, "--batch-frames", 5, "--shard", "0/2", "--no-progress")[0] == 0
    code, stdout, _ = run_cli("verify", out)
    assert code == 1 and "ldb-hpc merge" in stdout
    code, stdout, err = run_cli("merge", out)
    assert code == 0, err
    a, b = rows(one), rows(out)
    np.testing.assert_allclose(a[0], b[0], atol=1e-4)  # 1e-3 Å in nm
    np.testing.assert_array_equal(a[1], b[1])
    assert run_cli("verify", out)[0] == 0


def test_resume_finishes_without_recomputing_and_refuses_other_runs(cg, tmp_path, run_cli, monkeypatch):
    one = tmp_path / "one.h5"
    assert run_cli("backmap", cg, "-o", one, "--batch-frames", 4, "--no-progress")[0] == 0
    out = tmp_path / "out.h5"
    # An interrupted 2-shard run: shard 1 was never done (as if its rank had been killed).
    assert run_cli("backmap", cg, "-o", out, "--batch-frames", 4, "--shard", "0/2", "--no-progress")[0] == 0
    code, _, err = run_cli("backmap", cg, "-o", out, "--batch-frames", 4)
    assert_one_line_error(code, err, "pass --resume to finish it or --overwrite")
    code, _, err = run_cli("backmap", cg, "-o", out, "--resume", "--seed", "3")
    assert_one_line_error(code, err, "seed (0 vs 3)")
    code, _, err = run_cli("backmap", cg, "-o", out, "--resume", "--samples", "2")
    assert_one_line_error(code, err, "samples (1 vs 2)")
    other = make_cg(tmp_path / "other.cg.h5", offset=0.5)
    code, _, err = run_cli("backmap", other, "-o", out, "--resume")
    assert_one_line_error(code, err, "input coordinates")
    shorter = make_cg(tmp_path / "short.cg.h5", n_frames=20)
    code, _, err = run_cli("backmap", shorter, "-o", out, "--resume")
    assert_one_line_error(code, err, "input frames (24 vs 20)")
    from ldb_hpc.model import backmappers

    real = backmappers.load_backmapper

    def other_model(spec=None, **kwargs):
        m = real(spec, **kwargs)
        m.hash = "sha256:0000000000000000"
        return m

    monkeypatch.setattr(backmappers, "load_backmapper", other_model)
    code, _, err = run_cli("backmap", cg, "-o", out, "--resume")
    assert_one_line_error(code, err, "model (ldb-default")
    monkeypatch.setattr(backmappers, "load_backmapper", real)
    code, _, err = run_cli("backmap", cg, "-o", out, "--resume", "--temperature", "0.5")
    assert_one_line_error(code, err, "sampling")
    # The right command resumes: the recorded chunk plan (batch 4) wins over a new --batch-frames.
    code, _, err = run_cli("backmap", cg, "-o", out, "--resume", "--batch-frames", "9", "--no-progress")
    assert code == 0, err
    summary = json.loads((tmp_path / "out.h5.summary.json").read_text())
    assert summary["frames_this_run"] == 12 and summary["batch_frames"] == 4
    a, b = rows(one), rows(out)
    np.testing.assert_allclose(a[0], b[0], atol=1e-4)
    np.testing.assert_array_equal(a[1], b[1])
    code, stdout, _ = run_cli("backmap", cg, "-o", out, "--resume", "--no-progress")
    assert code == 0 and "already complete" in stdout
    code, _, err = run_cli("backmap", cg, "-o", out)
    assert_one_line_error(code, err, "--overwrite")


def test_verify_finds_corruption(cg, tmp_path, run_cli):
    out = tmp_path / "out.h5"
    assert run_cli("backmap", cg, "-o", out, "--batch-frames", 6, "--no-progress")[0] == 0
    shard = tmp_path / "out.h5.d" / "shard-00000.h5"
    with h5py.File(shard, "r+") as f:
        f["coordinates"][5, 2, 1] = np.nan
    code, stdout, _ = run_cli("verify", out)
    assert code == 1 and "row 5" in stdout and "non-finite" in stdout
    with h5py.File(shard, "r+") as f:
        f["coordinates"][5, 2, 1] = 0.1
        f["ldb/cg_frame"][7] = 6  # a duplicated row
    code, stdout, _ = run_cli("verify", out)
    assert code == 1 and "row 7" in stdout
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])  # truncated shard
    code, stdout, _ = run_cli("verify", out)
    assert code == 1 and "invalid" in stdout
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    code, stdout, _ = run_cli("verify", tmp_path / "junk.h5")
    assert code == 1 and "corrupt" in stdout
    code, _, err = run_cli("verify", tmp_path / "none.h5")
    assert_one_line_error(code, err, "not found")


def test_bad_frame_mid_run_leaves_nothing_that_verifies(tmp_path, run_cli):
    bad = make_cg(tmp_path / "bad.cg.h5", nan_frame=17)
    out = tmp_path / "out.h5"
    code, _, err = run_cli("backmap", bad, "-o", out, "--batch-frames", 4, "--no-progress")
    assert_one_line_error(code, err, "frame 17 has non-finite")
    assert not out.exists()
    code, stdout, _ = run_cli("verify", out)
    assert code == 1 and stdout.startswith("incomplete:")


def _edit_topology(path, edit):
    with h5py.File(path, "r+") as f:
        topo = json.loads(f["topology"][0])
        edit(topo)
        del f["topology"]
        f.create_dataset("topology", data=np.array([json.dumps(topo).encode()]))


@pytest.mark.parametrize("case", ["truncated", "zero_frames", "unknown_residue", "ca_missing", "mpio", "dir"])
def test_bad_inputs_one_line_error_and_nothing_written(case, cg, tmp_path, run_cli):
    out = tmp_path / "out.h5"
    args, message = [], None
    src = cg
    if case == "truncated":
        src = tmp_path / "trunc.h5"
        src.write_bytes(cg.read_bytes()[:3000])
        message = "corrupt or truncated"
    elif case == "zero_frames":
        src = tmp_path / "zero.h5"
        shutil.copy(cg, src)
        with h5py.File(src, "r+") as f:
            del f["coordinates"], f["time"]
            f.create_dataset("coordinates", shape=(0, 20, 3), dtype="f4")
        message = "zero frames"
    elif case == "unknown_residue":
        src = tmp_path / "unk.h5"
        shutil.copy(cg, src)
        _edit_topology(src, lambda t: t["chains"][0]["residues"][2].update(name="XYZ"))
        message = "unknown residue"
    elif case == "ca_missing":
        src = tmp_path / "noca.h5"
        shutil.copy(cg, src)
        _edit_topology(src, lambda t: t["chains"][0]["residues"][2]["atoms"][0].update(name="CB"))
        message = "CA"
    elif case == "mpio":
        if h5py.get_config().mpi:
            pytest.skip("this h5py has MPI")
        args, message = ["--io", "mpio"], "h5py built with MPI"
    elif case == "dir":
        out = tmp_path / "no" / "out.h5"
        message = "does not exist"
    code, _, err = run_cli("backmap", src, "-o", out, *args, "--no-progress")
    assert_one_line_error(code, err, message)
    assert not out.exists() and not os.path.exists(str(out) + ".d")


def test_unwritable_output_location_even_for_root(cg, run_cli):
    """/sys is a read-only place even for root (CI runs as root, where chmod does not stop writes)."""
    code, _, err = run_cli("backmap", cg, "-o", "/sys/ldb-hpc-out.h5", "--no-progress")
    assert_one_line_error(code, err, "cannot create /sys/ldb-hpc-out.h5")
    assert not os.path.exists("/sys/ldb-hpc-out.h5.d")


def test_unwritable_output_location(cg, run_cli):
    """A folder without write permission. Root writes anywhere, so as root (CI) the command runs as `nobody`
    (setpriv, allowed to read and traverse but not to write) on a world-readable copy of the input; otherwise
    in-process."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        ro = Path(d) / "ro"
        ro.mkdir()
        src = Path(d) / "in.h5"
        shutil.copy(cg, src)
        os.chmod(src, 0o644)
        ro.chmod(0o555)
        if os.geteuid() == 0:
            ldb = Path(sys.executable).parent / "ldb-hpc"
            # nobody keeps CAP_DAC_READ_SEARCH (read and traverse anything, write nothing more): the checkout and
            # its .venv may sit below a folder only root may enter (e.g. mktemp -d).
            proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", str(ldb),
                                   "backmap", str(src), "-o", str(ro / "out.h5"), "--no-progress", "--model", "ideal"],
                                  capture_output=True, text=True, timeout=300, env={**os.environ, "HOME": d})
            code, err = proc.returncode, proc.stderr
        else:
            code, _, err = run_cli("backmap", src, "-o", ro / "out.h5", "--no-progress", "--model", "ideal")
        assert_one_line_error(code, err, "not writable")
        assert os.listdir(ro) == []
