"""``mpiexec -n 2 ldb-hpc backmap``: equal to one rank, kill -9 + --resume, a failing rank.

Each test launches mpiexec from the interpreter's environment through subprocess (with a timeout), so
one pytest summary line comes back. Skipped when mpiexec or mpi4py is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import mdtraj as md
import numpy as np
import pytest
from conftest import REPO
from test_runtime import make_cg

MPIEXEC = Path(sys.executable).parent / "mpiexec"
pytestmark = pytest.mark.skipif(
    not MPIEXEC.exists() or subprocess.run([sys.executable, "-c", "import mpi4py"]).returncode != 0,
    reason="needs mpiexec and mpi4py in the interpreter's environment")


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_", "SLURM_", "LDB_HPC_TEST_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def mpi_cmd(n, *args):
    return [str(MPIEXEC), "-n", str(n), sys.executable, "-m", "ldb_hpc", "backmap", *map(str, args), "--no-progress"]


def run_mpi(n, *args, timeout=120, **env):
    return subprocess.run(mpi_cmd(n, *args), env=_env(**env), capture_output=True, text=True, timeout=timeout)


def serial(cg, out, *args):
    from ldb_hpc.cli.main import main

    assert main(["backmap", str(cg), "-o", str(out), "--no-progress", *map(str, args)]) == 0
    return md.load(str(out)).xyz


def verify(path):
    return subprocess.run([sys.executable, "-m", "ldb_hpc", "verify", str(path)], env=_env(), capture_output=True,
                          text=True, timeout=60)


def test_two_ranks_equal_one_rank_for_any_batch(tmp_path):
    cg = make_cg(tmp_path / "in.cg.h5", n_frames=23)
    # The default (learned, stochastic) model: noise is keyed by global frame, so layout cannot matter.
    ref = serial(cg, tmp_path / "one.h5", "--samples", 2)
    p = run_mpi(2, cg, "-o", tmp_path / "two.h5", "--batch-frames", 3, "--samples", 2)
    assert p.returncode == 0, p.stderr
    assert "on 2 rank(s)" in p.stdout
    two = md.load(str(tmp_path / "two.h5")).xyz
    close = np.abs(two - ref).max(-1) < 1e-4  # nm: 1e-3 Å
    assert close.mean() >= 0.999, close.mean()
    assert np.abs(two[::2] - two[1::2]).max() > 0.01  # two samples per frame, really different
    with h5py.File(tmp_path / "two.h5", "r") as f:
        np.testing.assert_array_equal(f["ldb/cg_frame"][:], np.repeat(np.arange(23), 2))
        assert len({s.file_name for s in f["coordinates"].virtual_sources()}) == 2  # one shard per rank
    summary = json.loads((tmp_path / "two.h5.summary.json").read_text())
    assert summary["ranks"] == 2 and sorted(r["rank"] for r in summary["per_rank"]) == [0, 1]
    assert sum(r["frames"] for r in summary["per_rank"]) == 23
    assert verify(tmp_path / "two.h5").returncode == 0


@pytest.mark.parametrize("cg", ["com", "martini3"])
def test_two_ranks_equal_one_rank_for_the_other_mappings(cg, tmp_path):
    """The shipped COM and Martini 3 models under two ranks: the rows of one rank, whatever the batch, up to the
    bead fit's sweeps. Those pick χ angles on a grid by the least bead error, and the batch's float rounding can
    move a near tie to the next grid step: on an AVX-512 CPU two residues of 18 rows end 0.03–0.14 Å apart at
    their side-chain tips (5 of 2,736 atoms). Any real layout error (a row, frame or sample out of place) moves
    whole residues by Å, far past 0.5 Å."""
    serial(make_cg(tmp_path / "ca.h5", n_frames=9), tmp_path / "aa.h5")  # all atoms to coarsen from
    cg_file = tmp_path / ("in.gro" if cg == "martini3" else "in.com.h5")
    from ldb_hpc.cli.main import main

    assert main(["coarsen", str(tmp_path / "aa.h5"), "--cg", cg, "-o", str(cg_file)]) == 0
    ref = serial(cg_file, tmp_path / "one.h5", "--samples", 2, "--cg", cg)
    p = run_mpi(2, cg_file, "-o", tmp_path / "two.h5", "--batch-frames", 2, "--samples", 2, "--cg", cg)
    assert p.returncode == 0, p.stderr
    two = md.load(str(tmp_path / "two.h5")).xyz
    d = np.abs(two - ref).max(-1)  # nm
    assert two.shape == ref.shape and (d < 1e-4).mean() >= 0.995 and d.max() < 0.05, (d >= 1e-4).sum()


def kill_midway(cmd, logs, delay: float = 0.4) -> None:
    """Run an MPI job slowed to ``delay`` s per chunk and SIGKILL it (mpiexec and every rank) once each rank has
    recorded at least one chunk in its log and before the end."""
    proc = subprocess.Popen(cmd, env=_env(LDB_HPC_TEST_CHUNK_DELAY=delay), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            if all(p.exists() and p.read_text().count("\n") >= 1 for p in logs):
                break
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)  # also closes the pipes


def test_kill_minus_9_then_resume_equals_uninterrupted_run(tmp_path):
    cg = make_cg(tmp_path / "in.cg.h5", n_frames=24)
    ref = serial(cg, tmp_path / "one.h5")
    out = tmp_path / "out.h5"
    args = (cg, "-o", out, "--batch-frames", 2)
    # 12 chunks, 6 per rank, 0.4 s each: kill the whole job (mpiexec and both ranks) once each rank has
    # recorded at least one chunk and before the end.
    logs = [tmp_path / "out.h5.d" / f"shard-0000{i}.log" for i in range(2)]
    kill_midway(mpi_cmd(2, *args), logs)
    done = sum(p.read_text().count("\n") for p in logs)
    assert 2 <= done < 12
    assert not out.exists()
    v = verify(out)
    assert v.returncode == 1 and v.stdout.startswith("incomplete:"), v.stdout
    p = run_mpi(2, *args, "--resume")
    assert p.returncode == 0, p.stderr
    summary = json.loads((tmp_path / "out.h5.summary.json").read_text())
    assert summary["frames_this_run"] <= 24 - 2 * done  # recorded chunks were not recomputed
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["ldb/cg_frame"][:], np.arange(24))
    np.testing.assert_allclose(md.load(str(out)).xyz, ref, atol=1e-4)
    assert verify(out).returncode == 0


def test_a_failing_rank_ends_the_job_without_master(tmp_path):
    cg = make_cg(tmp_path / "in.cg.h5", n_frames=12)
    out = tmp_path / "out.h5"
    p = run_mpi(2, cg, "-o", out, "--batch-frames", 2, timeout=60, LDB_HPC_TEST_FAIL_RANK=1)
    assert p.returncode != 0
    assert "error: rank 1:" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()
    v = verify(out)
    assert v.returncode == 1 and "incomplete" in v.stdout


def test_bad_input_under_mpi_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    p = run_mpi(2, bad, "-o", tmp_path / "out.h5", timeout=60)
    assert p.returncode == 2
    # Only rank 0 reports (the launcher may add its own note about the exit status).
    ours = [x for x in p.stderr.splitlines() if x.startswith("error")]
    assert len(ours) == 1 and "corrupt" in ours[0] and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "out.h5.d").exists()


@pytest.mark.parametrize("launcher", [
    {"SLURM_STEP_NUM_TASKS": 2, "SLURM_PROCID": 1},  # srun whose MPI plugin the library does not speak
    {"OMPI_COMM_WORLD_SIZE": 3, "OMPI_COMM_WORLD_RANK": 0},  # Open MPI's mpirun starting an MPICH-built mpi4py
])
def test_launcher_and_mpi_disagree_is_one_error_line_and_nothing_written(tmp_path, launcher):
    """A task that the launcher counts as one of N but whose MPI world is 1 stops before touching the output,
    naming the cause and the fix (instead of running alone as rank 0 of 1 and racing the others)."""
    cg = make_cg(tmp_path / "in.h5", n_frames=6)
    out = tmp_path / "out.h5"
    p = subprocess.run([sys.executable, "-m", "ldb_hpc", "backmap", str(cg), "-o", str(out), "--no-progress",
                        "--model", "ideal"], env=_env(**launcher), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the launcher started"), p.stderr
    assert "MPI sees a world of 1" in lines[0] and "--mpi=pmi2" in lines[0] and "--no-binary=mpi4py" in lines[0]
    assert not out.exists() and not (tmp_path / "out.h5.d").exists()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["in.h5"]
