"""`srun ldb-hpc backmap` on the local one-node SLURM cluster that `make test` starts (scripts/ci/slurm.sh).

Skipped, with the reason, when `srun` is absent or the cluster is not up (LDB_HPC_SLURM=up and SLURM_CONF are
set by scripts/ci/test.sh after `slurm.sh start`). Ranks: 2 once the MPI runtime (ldb_hpc.runtime.comm and
the sharded backmap with --io) is there, else 1 (two serial backmaps would write the same file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import mdtraj as md
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LDB_HPC = BIN / "ldb-hpc"


def _slurm_reason() -> str | None:
    if shutil.which("srun") is None:
        return "srun not found (install slurm-wlm; `make test` does)"
    if os.environ.get("LDB_HPC_SLURM") != "up" or not os.environ.get("SLURM_CONF"):
        return "local SLURM cluster not started (run through `make test`, or `scripts/ci/slurm.sh start` and " \
               "export LDB_HPC_SLURM=up plus the SLURM_CONF it prints with `slurm.sh env`)"
    return None


pytestmark = pytest.mark.skipif(_slurm_reason() is not None, reason=_slurm_reason() or "")


def _run(cmd, cwd, timeout=300):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 90-frame synthetic CG trajectory around the bundled example (135 residues)."""
    d = tmp_path_factory.mktemp("slurm")
    path = d / "big.h5"
    _run([LDB_HPC, "synth", "--frames", 90, "--from", REPO / "examples" / "example.cg.h5", "-o", path,
          "--steps", 5, "--seed", 3], d)
    return path


def test_srun_without_the_mpi_plugin_stops_every_task_before_the_output(big, tmp_path):
    """`srun --mpi=none -n 2` starts two tasks whose MPI worlds have one rank each (the site-mismatch case): every
    task exits non-zero with one error line naming the cause and the fix; no output, no shard folder."""
    out = tmp_path / "out.h5"
    proc = subprocess.run(["srun", "--mpi=none", "-n", "2", "--time=5", str(LDB_HPC), "backmap", str(big), "-o",
                           str(out), "--model", "ideal", "--no-progress"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 2 and all("the launcher started 2 tasks" in line and "--mpi=pmi2" in line for line in ours), \
        proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "out.h5.d").exists()


def test_srun_backmap_rows_equal_frames_and_match_serial(big, tmp_path):
    out = tmp_path / "out.h5"
    extra = ["--batch-frames", 16, "--io", "shards"]
    proc = _run(["srun", "--mpi=pmi2", "-n", 2, "--time=10", LDB_HPC, "backmap", big, "-o", out,
                 "--model", "ideal", "--no-progress", *extra], tmp_path)
    traj = md.load(str(out))
    assert traj.n_frames == 90, proc.stdout + proc.stderr  # one row per frame: none lost, none twice
    # The same command outside SLURM, one process: the same rows.
    ref = tmp_path / "ref.h5"
    _run([LDB_HPC, "backmap", big, "-o", ref, "--model", "ideal", "--no-progress"], tmp_path)
    expected = md.load(str(ref))
    assert traj.n_atoms == expected.n_atoms
    close = np.abs(traj.xyz - expected.xyz).max(-1) * 10.0 < 1e-3  # Å
    assert close.mean() >= 0.999, f"{(~close).sum()} atoms differ by more than 1e-3 Å"
    np.testing.assert_allclose(traj.time, expected.time)


def test_srun_runs_ranks_under_pmi2(tmp_path):
    """The launcher side: srun starts 2 tasks that see each other through PMI-2 (mpi4py of this venv)."""
    code = ("from mpi4py import MPI; c = MPI.COMM_WORLD; "
            "print(c.rank, c.size, c.allreduce(c.rank + 1))")
    proc = _run(["srun", "--mpi=pmi2", "-n", 2, "--time=5", sys.executable, "-c", code], tmp_path, timeout=120)
    rows = sorted(line.split() for line in proc.stdout.strip().splitlines())
    assert rows == [["0", "2", "3"], ["1", "2", "3"]], proc.stdout


def test_sbatch_rendered_backmap_job(big, tmp_path):
    """slurm/backmap.sbatch rendered for this machine and run with `sbatch --wait`: the output verifies."""
    out = tmp_path / "job.aa.h5"
    job = tmp_path / "job.sbatch"
    _run([sys.executable, REPO / "scripts" / "render_slurm.py", REPO / "slurm" / "backmap.sbatch",
          f"INPUT={big}", f"OUTPUT={out}", f"LDB_HPC={LDB_HPC}", "TASKS_PER_NODE=2", "TIME=00:10:00",
          f"LOG={tmp_path}/job-%j.out", "-o", job], tmp_path)
    proc = subprocess.run(["sbatch", "--wait", str(job)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=400)
    logs = "".join(p.read_text() for p in tmp_path.glob("job-*.out"))
    assert proc.returncode == 0, proc.stderr + logs
    assert md.load(str(out)).n_frames == 90
    with h5py.File(out, "r") as f:  # the template's defaults run the learned model shipped in the package
        assert f["ldb"].attrs["model"] == "ldb-default", dict(f["ldb"].attrs)
