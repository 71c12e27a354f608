"""Temporary files of killed runs: a real ``kill -9`` mid-write, then the next run of the same command removes
what the dead process left, or names in its error what it cannot judge (a live writer, another host)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mdtraj as md
import numpy as np
import pytest
from conftest import REPO, assert_one_line_error
from test_runtime import make_cg

from ldb_hpc.io.files import host_name, parse_temporary, temp_name, temporaries


def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_", "SLURM_", "LDB_HPC_TEST_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ldb_hpc", *map(str, args)], env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)


def kill_when_written(args, pattern: str, folder) -> list:
    """Start ``ldb-hpc ARGS``, SIGKILL it (its whole process group) as soon as a file matching ``pattern``
    appears in ``folder`` (a temporary being written), and return the files that matched."""
    proc = subprocess.Popen([sys.executable, "-m", "ldb_hpc", *map(str, args)], env=cli_env(),
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            found = list(folder.glob(pattern))
            if found:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            assert proc.poll() is None, f"finished before it could be killed: {proc.communicate()}"
            time.sleep(0.005)
        else:
            pytest.fail(f"no {pattern} appeared")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)  # reaps it: its PID is no longer alive
    return found


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A CG input whose PDB conversion takes long enough to be killed midway, and its .h5 output."""
    d = tmp_path_factory.mktemp("big")
    cg = make_cg(d / "in.cg.h5", n_frames=120, n_res=135)
    p = cli("backmap", cg, "-o", d / "ref.h5", "--model", "ideal", "--no-progress")
    assert p.returncode == 0, p.stderr
    return cg, d / "ref.h5"


def test_backmap_killed_during_its_conversion_then_resume(big, tmp_path):
    cg, ref_h5 = big
    out = tmp_path / "out.pdb"
    args = ("backmap", cg, "-o", out, "--model", "ideal", "--no-progress")
    left = kill_when_written(args, ".out.pdb.tmp.*", tmp_path)
    assert left and all(p.exists() for p in left)  # the dead writer's temporary stayed behind
    assert not out.exists() and (tmp_path / "out.pdb.d" / "master.h5").exists()
    p = cli("verify", out)
    assert p.returncode == 1 and p.stdout.startswith("incomplete:"), p.stdout
    # The next run of the same command removes it, even when it then refuses to start without --resume.
    p = cli(*args)
    assert_one_line_error(p.returncode, p.stderr, "--resume")
    assert not any(p.exists() for p in left)
    p = cli(*args, "--resume")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["out.pdb", "out.pdb.manifest.json", "out.pdb.summary.json"]
    np.testing.assert_allclose(md.load(str(out)).xyz, md.load(str(ref_h5)).xyz, rtol=0, atol=1e-4)
    assert cli("verify", out).returncode == 0


def test_export_killed_mid_write_then_rerun(big, tmp_path):
    _, ref_h5 = big
    out = tmp_path / "e.cif"
    left = kill_when_written(("export", ref_h5, "-o", out), ".e.cif.tmp.*", tmp_path)
    assert left and not out.exists()
    p = cli("export", ref_h5, "-o", out)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["e.cif", "e.cif.manifest.json"]
    assert cli("verify", out).returncode == 0


def test_coarsen_killed_mid_write_then_rerun(big, tmp_path):
    """Any subcommand: coarsen writes its CG file under a temporary name too."""
    xtc, top = tmp_path / "aa.xtc", tmp_path / "aa.pdb"
    t = md.load(str(big[1]))
    md.join([t] * 10).save_xtc(str(xtc))
    t[0].save_pdb(str(top))
    args = ("coarsen", xtc, "--top", top, "-o", tmp_path / "cg.h5", "--chunk", "4")
    left = kill_when_written(args, ".cg.h5.tmp.*", tmp_path)
    assert left and all(p.exists() for p in left)
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    assert not any(p.exists() for p in left) and (tmp_path / "cg.h5").exists()


def test_live_or_foreign_temporaries_are_named_not_removed(tmp_path, run_cli):
    cg = make_cg(tmp_path / "in.cg.h5", n_frames=4, n_res=12)
    out = tmp_path / "out.xtc"
    args = ("backmap", cg, "-o", out, "--model", "ideal", "--no-progress")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = tmp_path / f".out.xtc.tmp.{host_name()}.{sleeper.pid}"
        live.write_bytes(b"half")
        code, _, err = run_cli(*args)
        assert_one_line_error(code, err, str(live))
        assert "still running" in err and live.exists()
        assert sorted(os.listdir(tmp_path)) == [live.name, "in.cg.h5"]  # nothing else touched
    finally:
        sleeper.kill()
        sleeper.wait()
    foreign = tmp_path / ".out.top.pdb.tmp.node17.4242"
    foreign.write_bytes(b"half")
    code, _, err = run_cli(*args)
    assert_one_line_error(code, err, "on host node17")
    assert not live.exists()  # its writer is dead now: removed
    foreign.unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    old = tmp_path / f"out.xtc.summary.json.tmp.{int(dead.stdout)}"  # an old-style name, without a host
    old.write_bytes(b"{")
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert not old.exists()
    assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]


def test_temp_name_removes_only_dead_writers(tmp_path):
    target = tmp_path / "x.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".x.h5.tmp.{host_name()}.{int(dead.stdout)}"
    alive = tmp_path / f".x.h5.tmp.{host_name()}.{os.getppid()}"
    elsewhere = tmp_path / ".x.h5.tmp.othernode.1"
    unrelated = tmp_path / ".y.h5.tmp.1"
    for p in (stale, alive, elsewhere, unrelated):
        p.write_bytes(b"")
    name = temp_name(str(target))
    assert name == str(tmp_path / f".x.h5.tmp.{host_name()}.{os.getpid()}")
    assert not stale.exists() and alive.exists() and elsewhere.exists() and unrelated.exists()
    assert sorted(t.path for t in temporaries(str(target))) == sorted(map(str, (alive, elsewhere)))
    t = parse_temporary(str(tmp_path), "run.json.tmp.123")
    assert (t.target, t.host, t.pid, t.local) == ("run.json", None, 123, True)
    assert parse_temporary(str(tmp_path), "notes.tmp.txt") is None
