"""``--io mpio`` with an output in another format: the collective file is the HDF5 working copy that rank 0
converts after the last row (run with the parallel-h5py .venv-mpio, like tests/test_mpio.py)."""

from __future__ import annotations

import os

import h5py
import mdtraj as md
import numpy as np
import pytest
from test_mpi import MPIEXEC, run_mpi, serial, verify
from test_runtime import make_cg

pytestmark = pytest.mark.skipif(not h5py.get_config().mpi or not MPIEXEC.exists(),
                                reason="needs h5py built with MPI (h5py.get_config().mpi) and mpiexec")


def test_mpio_two_ranks_to_xtc_equals_serial(tmp_path):
    cg = make_cg(tmp_path / "in.cg.h5", n_frames=13)
    ref = serial(cg, tmp_path / "one.h5")
    out, top = tmp_path / "mpio.xtc", tmp_path / "mpio.top.pdb"
    p = run_mpi(2, cg, "-o", out, "--io", "mpio", "--batch-frames", 4)
    assert p.returncode == 0, p.stderr
    assert f"+ topology {top}" in p.stdout
    assert not os.path.exists(str(out) + ".d")
    np.testing.assert_allclose(md.load(str(out), top=str(top)).xyz, ref, rtol=0, atol=1e-3)
    assert verify(out).returncode == 0
