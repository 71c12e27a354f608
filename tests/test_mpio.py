"""``--io mpio``: one output file written collectively by 2 ranks (parallel h5py, e.g. the .venv-mpio of CI).

Skipped unless the interpreter running the tests has h5py built with MPI and an mpiexec beside it.
"""

from __future__ import annotations

import os

import h5py
import mdtraj as md
import numpy as np
import pytest
from test_mpi import MPIEXEC, kill_midway, mpi_cmd, run_mpi, serial, verify
from test_runtime import make_cg

pytestmark = pytest.mark.skipif(not h5py.get_config().mpi or not MPIEXEC.exists(),
                                reason="needs h5py built with MPI (h5py.get_config().mpi) and mpiexec")


def test_mpio_two_ranks_one_file_equals_serial(tmp_path):
    cg = make_cg(tmp_path / "in.cg.h5", n_frames=21)
    ref = serial(cg, tmp_path / "one.h5")
    out = tmp_path / "mpio.h5"
    p = run_mpi(2, cg, "-o", out, "--io", "mpio", "--batch-frames", 4)
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(str(out) + ".d")  # one self-contained file
    with h5py.File(out, "r") as f:
        assert not f["coordinates"].is_virtual
        np.testing.assert_array_equal(f["ldb/cg_frame"][:], np.arange(21))
    np.testing.assert_allclose(md.load(str(out)).xyz, ref, atol=1e-4)
    assert verify(out).returncode == 0


def test_mpio_kill_then_resume(tmp_path):
    cg = make_cg(tmp_path / "in.cg.h5", n_frames=16)
    ref = serial(cg, tmp_path / "one.h5")
    out = tmp_path / "mpio.h5"
    args = (cg, "-o", out, "--io", "mpio", "--batch-frames", 2)
    logs = [tmp_path / "mpio.h5.d" / f"shard-0000{i}.log" for i in range(2)]
    kill_midway(mpi_cmd(2, *args), logs)
    assert not out.exists()
    assert verify(out).returncode == 1
    p = run_mpi(2, *args, "--resume")
    assert p.returncode == 0, p.stderr
    np.testing.assert_allclose(md.load(str(out)).xyz, ref, atol=1e-4)
    assert verify(out).returncode == 0
