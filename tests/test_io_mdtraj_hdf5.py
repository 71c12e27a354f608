"""The MDTraj-HDF5 format's shared pieces (ldb_hpc.io.mdtraj_hdf5), used by the CG and all-atom files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ldb_hpc.errors import InputError
from ldb_hpc.io import mdtraj_hdf5 as mh


def test_topology_round_trip_and_root_attrs(tmp_path):
    topo = {"chains": [{"index": 0, "chain_id": "A", "residues": [
        {"index": 0, "name": "GLY", "resSeq": 5, "segmentID": "", "atoms": [{"index": 0, "name": "CA",
                                                                              "element": "C"}]}]}], "bonds": []}
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        mh.write_root_attrs(f, "a title")
        mh.write_topology(f, topo)
    assert mh.is_hdf5(str(path))
    with h5py.File(path, "r") as f:
        assert f["topology"].shape == (1,) and f.attrs["title"] == "a title" and f.attrs["conventions"] == "Pande"
        parsed = mh.read_topology(f, "t.h5")
    assert list(parsed.resname) == ["GLY"] and list(parsed.resseq) == [5]
    with h5py.File(path, "a") as f:  # a scalar string is read too
        del f["topology"]
        f["topology"] = b'{"chains": "nonsense"}'
    with h5py.File(path, "r") as f, pytest.raises(InputError, match="t.h5: /topology is not an mdtraj topology"):
        mh.read_topology(f, "t.h5")


def test_not_hdf5(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all")
    assert not mh.is_hdf5(str(tmp_path / "x.h5"))


def test_units_and_cell_conversions(tmp_path):
    with h5py.File(tmp_path / "u.h5", "w") as f:
        ds = f.create_dataset("coordinates", data=np.zeros((1, 1, 3), np.float32))
        assert mh.length_scale(ds, "u") == np.float32(10.0)
        ds.attrs["units"] = "angstroms"
        assert mh.length_scale(ds, "u") == np.float32(1.0)
        ds.attrs["units"] = "furlongs"
        with pytest.raises(InputError, match="u: /coordinates units 'furlongs' not understood"):
            mh.length_scale(ds, "u")
        assert list(mh.read_time(f, 2, 4)) == [2.0, 3.0]  # no /time: frame indices
        f["time"] = np.array([0.5, 1.5, 2.5], np.float32)
        assert mh.read_time(f, 1, 3).dtype == np.float64 and list(mh.read_time(f, 1, 3)) == [1.5, 2.5]
    lengths, angles = np.array([[30.0, 40.0, 50.0]]), np.deg2rad([[90.0, 90.0, 120.0]])
    nm, deg = mh.cell_to_file(lengths, angles, 1)
    assert nm.dtype == np.float32 and deg.dtype == np.float64
    assert np.allclose(nm, [[3, 4, 5]]) and np.allclose(deg, [[90, 90, 120]])
    back_l, back_a = mh.cell_from_file(nm, deg)
    assert back_l.dtype == back_a.dtype == np.float32
    assert np.allclose(back_l, lengths) and np.allclose(back_a, angles)


def test_frames_per_chunk():
    assert mh.frames_per_chunk(12) == 4096 and mh.frames_per_chunk(1 << 30) == 1 and mh.frames_per_chunk(1 << 18) == 4
