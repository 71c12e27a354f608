"""Chunked all-atom output without ranks: shard files, the virtual-dataset master, the collective file.

Layout of an output ``OUT.h5`` written by the runtime (``--io shards``, the default)::

    OUT.h5                 master: /topology, root attributes, /ldb attributes, and virtual datasets
                           /coordinates, /time, [/cell_lengths, /cell_angles], /ldb/cg_frame, /ldb/sample
                           mapping row ranges onto the shard files (source paths relative: "OUT.h5.d/…")
    OUT.h5.d/run.json      run identity and chunk plan (ldb_hpc.runtime.resume)
    OUT.h5.d/shard-00003.h5   rows of the frames of shard 3 (itself a loadable MDTraj-HDF5 file)
    OUT.h5.d/shard-00003.log  one JSON line per finished chunk (resume record)

With ``--io mpio`` every rank writes its rows into one file ``OUT.h5.d/data.h5`` opened collectively,
which is renamed to ``OUT.h5`` when complete. Datasets are contiguous and allocated when created, so
writing a chunk never changes HDF5 metadata: a process killed mid-write leaves a file that reopens.
Units as in ldb_hpc.io.aa: Å in memory, nm/ps/degrees in the file; rows frame-major (f·S + s).
"""

from __future__ import annotations

import os

import numpy as np

from ldb_hpc import __version__
from ldb_hpc.chem.protein import Residues
from ldb_hpc.chem.residues import NUM_SLOTS
from ldb_hpc.errors import OutputError
from ldb_hpc.io.aa import write_frame_rows
from ldb_hpc.io.cg import write_root_attrs, write_topology
from ldb_hpc.io.topology import aa_topology

TITLE = "ldb-hpc backmapped trajectory"
RUN_FILE = "run.json"
MPIO_FILE = "data.h5"


def run_dir(output: str) -> str:
    """The folder of shard files and resume records beside ``output`` (``OUT.h5`` → ``OUT.h5.d``)."""
    return os.path.abspath(output) + ".d"


def shard_path(folder: str, shard: int) -> str:
    return os.path.join(folder, f"shard-{shard:05d}.h5")


def shard_log_path(folder: str, shard: int) -> str:
    return os.path.join(folder, f"shard-{shard:05d}.log")


def _field_specs(n_rows: int, n_atoms: int, has_cell: bool) -> dict:
    """name → (shape, dtype, units or None, fill value)."""
    specs = {
        "coordinates": ((n_rows, n_atoms, 3), "f4", "nanometers", np.nan),
        "time": ((n_rows,), "f4", "picoseconds", np.nan),
        "ldb/cg_frame": ((n_rows,), "i8", None, -1),
        "ldb/sample": ((n_rows,), "i4", None, -1),
    }
    if has_cell:
        specs["cell_lengths"] = ((n_rows, 3), "f4", "nanometers", np.nan)
        specs["cell_angles"] = ((n_rows, 3), "f4", "degrees", np.nan)
    return specs


def _contiguous_dataset(f, name: str, shape, dtype):
    """A contiguous dataset allocated now (writes then never touch metadata), without fill writes."""
    import h5py

    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    group_name, _, leaf = name.rpartition("/")
    group = f.require_group(group_name) if group_name else f
    space = h5py.h5s.create_simple(tuple(shape))
    dsid = h5py.h5d.create(group.id, leaf.encode(), h5py.h5t.py_create(np.dtype(dtype)), space, dcpl=dcpl)
    return h5py.Dataset(dsid)


def _write_ldb_attrs(f, provenance: dict, samples: int, n_frames: int) -> None:
    g = f.require_group("ldb")
    meta = {"ldb_hpc_version": __version__, "samples": int(samples), "n_frames": int(n_frames)}
    meta.update(provenance or {})
    for key, value in meta.items():
        g.attrs[key] = "" if value is None else value


def create_row_file(f, residues: Residues, frame_start: int, frame_stop: int, samples: int, has_cell: bool,
                    provenance: dict, n_frames_total: int, extra_attrs: dict | None = None) -> None:
    """Lay out an open, empty h5py file ``f`` for the rows of frames ``[frame_start, frame_stop)``.

    Writes root attributes, /topology, /ldb attributes (provenance, samples, n_frames of the whole
    output) and preallocated row datasets. Collective-safe: every rank of an mpio file calls it alike.
    """
    topology, _, n_atoms = aa_topology(residues)
    write_root_attrs(f, TITLE)
    write_topology(f, topology)
    for key, value in (extra_attrs or {}).items():
        f.attrs[key] = value
    n_rows = (frame_stop - frame_start) * samples
    for name, (shape, dtype, units, _) in _field_specs(n_rows, n_atoms, has_cell).items():
        ds = _contiguous_dataset(f, name, shape, dtype)
        if units:
            ds.attrs["units"] = units
    _write_ldb_attrs(f, provenance, samples, n_frames_total)
    f["ldb"].attrs["frame_start"] = int(frame_start)
    f["ldb"].attrs["frame_stop"] = int(frame_stop)


class RowWriter:
    """Writes whole CG frames (all samples) into an open row file whose first row is frame ``frame_start``.

    f: h5py.File laid out by :func:`create_row_file`; residues: the L residues; samples: S.
    """

    def __init__(self, f, residues: Residues, frame_start: int, samples: int, has_cell: bool):
        _, atom_index, self.n_atoms = aa_topology(residues)
        self._gather = np.nonzero(atom_index.ravel() >= 0)[0]
        self.f, self.frame_start, self.samples, self.has_cell = f, int(frame_start), int(samples), has_cell
        self.n_res = len(residues)

    def write(self, frame_start: int, positions: np.ndarray, time: np.ndarray,
              cell_lengths: np.ndarray | None = None, cell_angles: np.ndarray | None = None) -> None:
        """Frames ``frame_start ..`` (global indices). positions: [n, S, L, 14, 3] Å; time: [n] ps;
        cell_lengths: [n, 3] Å; cell_angles: [n, 3] radians (required when the file has a cell)."""
        S, L = self.samples, self.n_res
        positions = np.asarray(positions)
        if positions.ndim != 5 or positions.shape[1:] != (S, L, NUM_SLOTS, 3):
            raise ValueError(f"positions has shape {positions.shape}, expected (n, {S}, {L}, 14, 3)")
        a = int(frame_start) - self.frame_start
        write_frame_rows(self.f, a * S, int(frame_start), positions, self._gather, time, cell_lengths, cell_angles,
                         self.has_cell)

    def sync(self, durable: bool = True) -> None:
        """Push written rows to the file (and to disk with ``durable``) before they are recorded as done."""
        self.f.flush()
        if durable:
            os.fsync(self.f.id.get_vfd_handle())


def create_shard(path: str, residues: Residues, frame_start: int, frame_stop: int, samples: int,
                 has_cell: bool, provenance: dict, n_frames_total: int, run_id: str) -> None:
    """Create the shard file ``path`` (temporary name, then rename) with preallocated, unwritten rows."""
    import h5py

    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            create_row_file(f, residues, frame_start, frame_stop, samples, has_cell, provenance, n_frames_total,
                            {"ldb_run_id": run_id})
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OutputError(f"cannot write shard file {path}: {exc}")


def open_shard(path: str):
    """Open an existing shard file for writing (h5py.File, mode r+)."""
    import h5py

    return h5py.File(path, "r+")


def write_master(output: str, folder: str, frame_ranges: dict[int, tuple[int, int]], samples: int) -> None:
    """Write the master file ``output`` of virtual datasets over the shard files of ``folder``.

    frame_ranges: shard → (frame_start, frame_stop) of every non-empty shard (all shard files exist and
    are complete). Topology, root and /ldb attributes are copied from the first shard. Source paths are
    relative to the master's folder, so master and folder may be moved together. Written under a
    temporary name and renamed: the master appears only complete.
    """
    import h5py

    output = os.path.abspath(output)
    rel = os.path.relpath(os.path.abspath(folder), os.path.dirname(output))
    shards = sorted(frame_ranges)
    n_frames = max(b for a, b in frame_ranges.values())
    n_rows = n_frames * samples
    tmp = os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.tmp.{os.getpid()}")
    try:
        with h5py.File(shard_path(folder, shards[0]), "r") as first, h5py.File(tmp, "w") as f:
            for key, value in first.attrs.items():
                if key != "ldb_run_id":
                    f.attrs[key] = value
            f.create_dataset("topology", data=first["topology"][()])
            has_cell = "cell_lengths" in first
            n_atoms = first["coordinates"].shape[1]
            for name, (shape, dtype, units, fill) in _field_specs(n_rows, n_atoms, has_cell).items():
                layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
                for s in shards:
                    a, b = frame_ranges[s]
                    src_shape = ((b - a) * samples,) + tuple(shape[1:])
                    src = h5py.VirtualSource(f"{rel}/{os.path.basename(shard_path(folder, s))}", name,
                                             shape=src_shape)
                    layout[a * samples: b * samples] = src
                ds = f.create_virtual_dataset(name, layout, fillvalue=fill)
                if units:
                    ds.attrs["units"] = units
            g = f.require_group("ldb")
            for key, value in first["ldb"].attrs.items():
                if key not in ("frame_start", "frame_stop"):
                    g.attrs[key] = value
        os.replace(tmp, output)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OutputError(f"cannot write {output}: {exc}")
