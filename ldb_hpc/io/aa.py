"""The all-atom output: an MDTraj-HDF5 file of heavy atoms, written with h5py (``mdtraj.load`` reads it).

With a :class:`~ldb_hpc.chem.hydrogens.Protonation` (``backmap --hydrogens``) every layout below also carries OXT and
the hydrogens (ldb_hpc.io.topology.hydrogen_topology); without one the heavy-atom layout is unchanged.

This module owns the layout of every all-atom file ldb-hpc writes (DESIGN.md "All-atom output"):
``/topology`` heavy-atom topology with standard and peptide bonds; ``/coordinates`` (rows, n_atoms, 3)
float32 nm; ``/time`` ps per row; ``/cell_lengths`` nm and ``/cell_angles`` degrees per row when the
input had a cell; provenance under ``/ldb/`` (``cg_frame``, ``sample`` per row, run metadata as
attributes). Rows are frame-major: frame f, sample s → row f·S + s. Units: Å, ps and radians in memory.

The same layout comes in four files:

- :class:`AllAtomWriter`: one serial file, chunked (chunks hold whole frames), renamed into place once
  every row is written.
- shard files (:func:`create_shard`): the rows of frames ``[frame_start, frame_stop)`` of a larger
  output, datasets contiguous and allocated when created, so writing rows never changes HDF5 metadata
  (a process killed mid-write leaves a file that reopens); ``/ldb`` records the frame range and the root
  the run id the shard belongs to. Each is itself a loadable MDTraj-HDF5 file.
- the master (:func:`write_master`): the same datasets as HDF5 virtual datasets over shard files
  (source paths relative to the master's folder; default libver, which PyTables can open).
- the collective file (:func:`create_collective`): one file, laid out like a shard of every frame,
  created and written by every process of an MPI communicator through h5py's ``driver="mpio"``.

Nothing here knows about ranks: callers hand in frame ranges, paths and (for mpio) a communicator.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ldb_hpc.chem.hydrogens import Protonation
from ldb_hpc.chem.protein import Residues
from ldb_hpc.chem.residues import NUM_SLOTS
from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.io.files import TempFileWriter, prepare_output, replaced_when_done
from ldb_hpc.io.mdtraj_hdf5 import (
    NM,
    UNITS,
    cell_to_file,
    frames_per_chunk,
    read_topology,
    write_root_attrs,
    write_topology,
)
from ldb_hpc.io.topology import aa_residues, output_topology
from ldb_hpc.version import __version__

TITLE = "ldb-hpc backmapped trajectory"
RUN_ID_ATTR = "ldb_run_id"  # root attribute of a shard file: the run it belongs to
RANGE_ATTRS = ("frame_start", "frame_stop")  # /ldb attributes of a shard file: its frames


@dataclass(frozen=True)
class Field:
    """One per-row dataset: shape (rows first), dtype, units attribute (or None), fill value of the master."""

    shape: tuple
    dtype: str
    units: str | None
    fill: float | int


def row_fields(n_rows: int, n_atoms: int, has_cell: bool) -> dict[str, Field]:
    """The per-row datasets of an all-atom file of ``n_rows`` rows: name → :class:`Field`."""
    fields = {
        "coordinates": Field((n_rows, n_atoms, 3), "f4", UNITS["coordinates"], np.nan),
        "time": Field((n_rows,), "f4", UNITS["time"], np.nan),
        "ldb/cg_frame": Field((n_rows,), "i8", None, -1),
        "ldb/sample": Field((n_rows,), "i4", None, -1),
    }
    if has_cell:
        fields["cell_lengths"] = Field((n_rows, 3), "f4", UNITS["cell_lengths"], np.nan)
        fields["cell_angles"] = Field((n_rows, 3), "f4", UNITS["cell_angles"], np.nan)
    return fields


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


def _chunked_dataset(f, name: str, shape, dtype, chunk_frames: int, samples: int):
    """A dataset chunked in whole frames (``chunk_frames`` frames of ``samples`` rows, at most all rows)."""
    rows = min(chunk_frames, shape[0] // samples) * samples
    return f.create_dataset(name, shape=shape, chunks=(rows,) + tuple(shape[1:]), dtype=dtype)


def _lay_out(f, residues: Residues, samples: int, has_cell: bool, provenance: dict | None, n_frames: int,
             frames: tuple[int, int] | None = None, title: str = TITLE, run_id: str | None = None,
             protonation: Protonation | None = None) -> None:
    """Lay out an open, empty h5py file ``f`` for the rows of ``frames`` (frame_start, frame_stop).

    frames None: every frame of an output of ``n_frames`` frames, chunked datasets (a serial file);
    otherwise contiguous, preallocated datasets and the frame range in /ldb (a shard or the collective
    file). Collective-safe: every process of an mpio file calls it alike. protonation: None for heavy atoms,
    else the topology carries OXT and hydrogens (ldb_hpc.io.topology.hydrogen_topology).
    """
    topology, _, n_atoms = output_topology(residues, protonation)
    write_root_attrs(f, title)
    write_topology(f, topology)
    if run_id is not None:
        f.attrs[RUN_ID_ATTR] = run_id
    frame_start, frame_stop = frames if frames is not None else (0, n_frames)
    k = frames_per_chunk(samples * n_atoms * 12)  # about 1 MiB of coordinates; the small datasets ≥ 1024 frames
    for name, field in row_fields((frame_stop - frame_start) * samples, n_atoms, has_cell).items():
        if frames is None:
            ds = _chunked_dataset(f, name, field.shape, field.dtype, k if name == "coordinates" else max(k, 1024),
                                  samples)
        else:
            ds = _contiguous_dataset(f, name, field.shape, field.dtype)
        if field.units:
            ds.attrs["units"] = field.units
    g = f.require_group("ldb")
    meta = {"ldb_hpc_version": __version__, "samples": int(samples), "n_frames": int(n_frames)}
    meta.update(provenance or {})
    for key, value in meta.items():
        g.attrs[key] = "" if value is None else value
    if frames is not None:
        for key, value in zip(RANGE_ATTRS, frames):
            g.attrs[key] = int(value)


def create_shard(path: str, residues: Residues, frame_start: int, frame_stop: int, samples: int,
                 has_cell: bool, provenance: dict, n_frames_total: int, run_id: str,
                 protonation: Protonation | None = None) -> None:
    """Create the shard file ``path`` for frames ``[frame_start, frame_stop)`` of an output of
    ``n_frames_total`` frames, rows preallocated and unwritten (temporary name, then rename); with
    ``protonation``, its atoms include OXT and hydrogens."""
    import h5py

    with replaced_when_done(path, "shard file ") as tmp:
        with h5py.File(tmp, "w") as f:
            _lay_out(f, residues, samples, has_cell, provenance, n_frames_total, (frame_start, frame_stop),
                     run_id=run_id, protonation=protonation)


def create_collective(path: str, comm, residues: Residues, samples: int, has_cell: bool, provenance: dict,
                      n_frames: int, protonation: Protonation | None = None):
    """Create ``path`` collectively (every process of the MPI communicator ``comm`` calls this alike) for all
    ``n_frames`` frames; returns the open h5py.File (driver "mpio"), its layout already on disk."""
    import h5py

    f = h5py.File(path, "w", driver="mpio", comm=comm)
    _lay_out(f, residues, samples, has_cell, provenance, n_frames, (0, n_frames), protonation=protonation)
    f.flush()  # collective: the layout is on disk before any process writes rows
    return f


def open_rows(path: str, comm=None):
    """Open an existing shard or collective file for writing rows (h5py.File, mode r+; driver "mpio" over
    the MPI communicator ``comm`` when given)."""
    import h5py

    if comm is None:
        return h5py.File(path, "r+")
    return h5py.File(path, "r+", driver="mpio", comm=comm)


def read_run_id(path: str) -> str | None:
    """The run id a shard file was created for (None if it has none); OSError if it does not open."""
    import h5py

    with h5py.File(path, "r") as f:
        rid = f.attrs.get(RUN_ID_ATTR)
    return rid.decode() if isinstance(rid, bytes) else rid


class RowWriter:
    """Writes whole CG frames (all samples) into an open all-atom file whose first row is frame ``frame_start``.

    f: h5py.File laid out by this module (a shard, the collective file, an :class:`AllAtomWriter`'s);
    residues: the L residues; samples: S; has_cell: the file has cell datasets; protonation: as the file was laid
    out with (None: heavy atoms, K = 14 slots per residue; else K = 14 + NUM_EXTRA, ldb_hpc.chem.hydrogens).
    """

    def __init__(self, f, residues: Residues, frame_start: int, samples: int, has_cell: bool,
                 protonation: Protonation | None = None):
        _, self.atom_index, self.n_atoms = output_topology(residues, protonation)
        # Flat gather index over (L·14) for the slots that exist, in atom order.
        self._gather = np.nonzero(self.atom_index.ravel() >= 0)[0]
        assert np.array_equal(self.atom_index.ravel()[self._gather], np.arange(self.n_atoms))
        self.f, self.samples, self.has_cell = f, int(samples), bool(has_cell)
        self.frame_start = int(frame_start)
        self.frame_stop = self.frame_start + f["coordinates"].shape[0] // self.samples
        self.n_res = len(residues)

    def write(self, frame_start: int, positions: np.ndarray, time: np.ndarray,
              cell_lengths: np.ndarray | None = None, cell_angles: np.ndarray | None = None) -> None:
        """Write CG frames ``frame_start .. frame_start+n-1`` (global indices; all their samples).

        positions: [n, S, L, K, 3] Å (K slots per residue, see the class; absent slots ignored); time: [n] ps;
        cell_lengths: [n, 3] Å; cell_angles: [n, 3] radians (both required when the file has a cell).
        """
        S, L, K = self.samples, self.n_res, self.atom_index.shape[1]
        positions = np.asarray(positions)
        if positions.ndim != 5 or positions.shape[1:] != (S, L, K, 3):
            raise ValueError(f"positions has shape {positions.shape}, expected (n, {S}, {L}, {K}, 3)")
        n = positions.shape[0]
        a, b = int(frame_start), int(frame_start) + n
        if a < self.frame_start or b > self.frame_stop:
            raise ValueError(f"frames {a}..{b - 1} outside {self.frame_start}..{self.frame_stop - 1}")
        if self.has_cell and (cell_lengths is None or cell_angles is None):
            raise ValueError("this writer has a cell: pass cell_lengths and cell_angles")
        f = self.f
        rows = slice((a - self.frame_start) * S, (b - self.frame_start) * S)
        atoms = positions.reshape(n * S, -1, 3)[:, self._gather]
        f["coordinates"][rows] = (atoms / np.float32(NM)).astype(np.float32)
        f["time"][rows] = np.repeat(np.asarray(time, dtype=np.float64).reshape(n), S)
        if self.has_cell:
            lengths, angles = cell_to_file(cell_lengths, cell_angles, n)
            f["cell_lengths"][rows] = np.repeat(lengths, S, axis=0)
            f["cell_angles"][rows] = np.repeat(angles, S, axis=0)
        f["ldb/cg_frame"][rows] = np.repeat(np.arange(a, b, dtype=np.int64), S)
        f["ldb/sample"][rows] = np.tile(np.arange(S, dtype=np.int32), n)

    def sync(self, durable: bool = True) -> None:
        """Push written rows to the file (and to disk with ``durable``) before they are recorded as done."""
        self.f.flush()
        if durable:
            os.fsync(self.f.id.get_vfd_handle())


def missing_virtual_source(f, path: str) -> tuple[str, str] | None:
    """(dataset, source file) of the first virtual dataset of the open file ``f`` (at ``path``) whose source
    file does not exist, else None. HDF5 reads a missing source as fill values without a word."""
    base = os.path.dirname(os.path.abspath(path))
    for name in ("coordinates", "time", "ldb/cg_frame", "ldb/sample", "cell_lengths", "cell_angles"):
        if name in f and f[name].is_virtual:
            for src in f[name].virtual_sources():
                src_path = src.file_name if os.path.isabs(src.file_name) else os.path.join(base, src.file_name)
                if src.file_name != "." and not os.path.exists(src_path):
                    return name, src.file_name
    return None


def write_master(output: str, parts: list[tuple[str, int, int]], samples: int) -> None:
    """Write the master file ``output`` of virtual datasets over complete shard files.

    parts: (shard file path, frame_start, frame_stop) of every non-empty shard, in frame order. Topology,
    root and /ldb attributes are copied from the first shard (without its run id and frame range). Source
    paths are relative to the master's folder, so master and shards may be moved together. Written under
    a temporary name and renamed: the master appears only complete.
    """
    import h5py

    output = os.path.abspath(output)
    n_rows = max(b for _, _, b in parts) * samples
    with replaced_when_done(output) as tmp:
        with h5py.File(parts[0][0], "r") as first, h5py.File(tmp, "w") as f:
            for key, value in first.attrs.items():
                if key != RUN_ID_ATTR:
                    f.attrs[key] = value
            f.create_dataset("topology", data=first["topology"][()])
            n_atoms = first["coordinates"].shape[1]
            for name, field in row_fields(n_rows, n_atoms, "cell_lengths" in first).items():
                layout = h5py.VirtualLayout(shape=field.shape, dtype=field.dtype)
                for path, a, b in parts:
                    rel = os.path.relpath(os.path.dirname(os.path.abspath(path)), os.path.dirname(output))
                    src = h5py.VirtualSource(f"{rel}/{os.path.basename(path)}", name,
                                             shape=((b - a) * samples,) + tuple(field.shape[1:]))
                    layout[a * samples: b * samples] = src
                ds = f.create_virtual_dataset(name, layout, fillvalue=field.fill)
                if field.units:
                    ds.attrs["units"] = field.units
            g = f.require_group("ldb")
            for key, value in first["ldb"].attrs.items():
                if key not in RANGE_ATTRS:
                    g.attrs[key] = value


class AllAtomWriter(TempFileWriter):
    """Writes backmapped frames into a preallocated, chunked MDTraj-HDF5 file (context manager).

    path: final file name; residues: the L residues; n_frames: CG frames F that will be written;
    samples: S samples per frame (rows = F·S); provenance: run metadata stored as attributes of
    ``/ldb`` (e.g. model, model_hash, seed, steps, samples, input; None values are stored as "");
    has_cell: write per-row cell datasets; overwrite: replace an existing output; protonation: write OXT and
    hydrogens too (positions then have 14 + NUM_EXTRA slots per residue, see :class:`RowWriter`).
    """

    def __init__(self, path: str, residues: Residues, n_frames: int, samples: int = 1,
                 provenance: dict | None = None, has_cell: bool = False, overwrite: bool = False,
                 title: str = TITLE, protonation: Protonation | None = None):
        import h5py

        if n_frames < 1 or samples < 1:
            raise InputError(f"nothing to write: {n_frames} frames × {samples} samples")
        self.path = os.path.abspath(path)
        self.residues = residues
        self.n_frames, self.samples, self.has_cell = int(n_frames), int(samples), bool(has_cell)
        self.n_rows = self.n_frames * self.samples
        self._written = np.zeros(self.n_frames, dtype=bool)
        self._f = None
        self._tmp = prepare_output(self.path, overwrite)
        try:
            self._f = h5py.File(self._tmp, "w")
            _lay_out(self._f, residues, self.samples, self.has_cell, provenance, self.n_frames, title=title,
                     protonation=protonation)
            self._rows = RowWriter(self._f, residues, 0, self.samples, self.has_cell, protonation)
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write {self._tmp}: {exc}") from exc
        except BaseException:
            self.abort()
            raise
        self.atom_index, self.n_atoms = self._rows.atom_index, self._rows.n_atoms

    def write(self, frame_start: int, positions: np.ndarray, time: np.ndarray,
              cell_lengths: np.ndarray | None = None, cell_angles: np.ndarray | None = None) -> None:
        """Write CG frames ``frame_start .. frame_start+n-1`` (all their samples); see :meth:`RowWriter.write`."""
        self._rows.write(frame_start, positions, time, cell_lengths, cell_angles)
        self._written[int(frame_start): int(frame_start) + np.shape(positions)[0]] = True

    @property
    def complete(self) -> bool:
        return bool(self._written.all())

    def close(self) -> None:
        """Rename the finished file to its final name; if frames are missing, delete it and raise InputError."""
        if self._f is None:
            return
        if not self.complete:
            missing = np.nonzero(~self._written)[0]
            self.abort()
            raise InputError(f"{self.path} not written: {missing.size} of {self.n_frames} frames missing "
                             f"(first {missing[0]})")
        self._f.close()
        self._f = None
        os.replace(self._tmp, self.path)


def read_aa(path: str, start: int = 0, stop: int | None = None):
    """Read an all-atom MDTraj-HDF5 file (an ldb-hpc output, or any heavy-atom protein file) into atom14.

    Rows ``start .. stop-1``. Returns (residues, positions [rows, L, 14, 3] float32 Å (zeros where
    absent), mask [L, 14] bool, cg_frame [rows] int64, sample [rows] int32). Without ``/ldb`` (not an
    ldb-hpc file) cg_frame is the row index and sample is 0.
    """
    import h5py

    if not os.path.exists(path):
        raise InputError(f"all-atom file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            if "coordinates" not in f or "topology" not in f:
                raise InputError(f"{path}: not an MDTraj-HDF5 trajectory (no /coordinates or /topology)")
            topo = read_topology(f, path)
            coords = f["coordinates"]
            if coords.ndim != 3 or coords.shape[1:] != (topo.n_atoms, 3):
                raise InputError(f"{path}: /coordinates has shape {coords.shape}, expected (rows, {topo.n_atoms}, 3)")
            stop = coords.shape[0] if stop is None else min(stop, coords.shape[0])
            xyz = np.asarray(coords[start:stop], dtype=np.float32) * np.float32(NM)
            if "ldb" in f:
                cg_frame = np.asarray(f["ldb/cg_frame"][start:stop], dtype=np.int64)
                sample = np.asarray(f["ldb/sample"][start:stop], dtype=np.int32)
            else:
                cg_frame = np.arange(start, stop, dtype=np.int64)
                sample = np.zeros(stop - start, dtype=np.int32)
    except OSError as exc:
        raise InputError(f"cannot read {path}: HDF5 file is corrupt or truncated ({exc})") from exc
    residues, atom_slot, mask = aa_residues(topo)
    ok = atom_slot >= 0
    positions = np.zeros((xyz.shape[0], len(residues), NUM_SLOTS, 3), dtype=np.float32)
    positions[:, topo.atom_residue[ok], atom_slot[ok]] = xyz[:, ok]
    return residues, positions, mask, cg_frame, sample
