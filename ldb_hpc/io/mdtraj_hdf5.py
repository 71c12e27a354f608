"""The MDTraj-HDF5 format's shared pieces, for every file of that format ldb-hpc reads or writes.

The CG reader/writer (ldb_hpc.io.cg) and the all-atom files (ldb_hpc.io.aa) differ in their atoms and datasets'
shapes; what the format itself fixes lives here: the HDF5 signature and extensions, the root attributes, the
``/topology`` dataset (one ASCII JSON string, ldb_hpc.io.topology builds and parses the JSON), the units of
``/coordinates``, ``/time``, ``/cell_lengths`` and ``/cell_angles`` (nm, ps, nm, degrees in the file; Å, ps and
radians in memory) and the size of a chunk of frames.
"""

from __future__ import annotations

import numpy as np

from ldb_hpc.errors import InputError
from ldb_hpc.io.topology import ParsedTopology, parse_topology, topology_json
from ldb_hpc.version import __version__

NM = 10.0  # Å per nm
HDF5_EXTENSIONS = (".h5", ".hdf5", ".lh5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# The units attribute of each per-frame dataset, as mdtraj writes them.
UNITS = {"coordinates": "nanometers", "time": "picoseconds", "cell_lengths": "nanometers", "cell_angles": "degrees"}
_LENGTH_UNITS = {"nanometers": 10.0, "nanometer": 10.0, "nm": 10.0, "angstroms": 1.0, "angstrom": 1.0}


def is_hdf5(path: str) -> bool:
    """True when the file ``path`` starts with the HDF5 signature (whatever its name)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    return head == HDF5_SIGNATURE


def write_root_attrs(f, title: str) -> None:
    """Root attributes as mdtraj writes them (strings)."""
    f.attrs["conventions"] = "Pande"
    f.attrs["conventionVersion"] = "1.1"
    f.attrs["program"] = "ldb-hpc"
    f.attrs["programVersion"] = __version__
    f.attrs["application"] = "ldb-hpc"
    f.attrs["title"] = title


def write_topology(f, topology: dict) -> None:
    """``/topology`` as mdtraj stores it: a 1-element array of one ASCII JSON string."""
    data = topology_json(topology)
    f.create_dataset("topology", data=np.array([data], dtype=f"S{len(data)}"))


def read_topology(f, source: str) -> ParsedTopology:
    """The parsed ``/topology`` of the open file ``f`` (a scalar string or mdtraj's 1-element array);
    InputError naming ``source`` when it is not an mdtraj topology JSON."""
    raw = f["topology"][()]
    return parse_topology(raw.reshape(-1)[0] if isinstance(raw, np.ndarray) else raw, source)


def length_scale(coordinates, source: str) -> np.float32:
    """Å per unit of the ``/coordinates`` dataset (its ``units`` attribute, nanometers when absent)."""
    units = coordinates.attrs.get("units", b"nanometers")
    units = units.decode() if isinstance(units, bytes) else str(units)
    if units.lower() not in _LENGTH_UNITS:
        raise InputError(f"{source}: /coordinates units {units!r} not understood (expected nanometers)")
    return np.float32(_LENGTH_UNITS[units.lower()])


def read_time(f, start: int, stop: int) -> np.ndarray:
    """``/time`` of frames ``start .. stop-1`` as float64 ps; the frame indices when the file has none."""
    if "time" in f:
        return np.asarray(f["time"][start:stop], dtype=np.float64)
    return np.arange(start, stop, dtype=np.float64)


def cell_from_file(lengths, angles) -> tuple[np.ndarray, np.ndarray]:
    """Cell lengths [n, 3] nm and angles [n, 3] degrees (as stored, or as mdtraj holds them) → float32 Å and
    float32 radians."""
    return (np.asarray(lengths, dtype=np.float32) * np.float32(NM),
            np.deg2rad(np.asarray(angles, dtype=np.float64)).astype(np.float32))


def cell_to_file(lengths, angles, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell lengths [n, 3] Å and angles [n, 3] radians → float32 nm and float64 degrees, as written."""
    return (np.asarray(lengths, dtype=np.float32).reshape(n, 3) / np.float32(NM),
            np.rad2deg(np.asarray(angles, dtype=np.float64).reshape(n, 3)))


def frames_per_chunk(bytes_per_frame: int, target: int = 1 << 20) -> int:
    """Whole frames per HDF5 chunk so that a chunk holds about ``target`` bytes (at least 1 frame)."""
    return int(max(1, min(4096, target // max(1, bytes_per_frame))))
