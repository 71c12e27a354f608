"""The all-atom output: an MDTraj-HDF5 file of heavy atoms, written with h5py (``mdtraj.load`` reads it).

Layout (DESIGN.md "All-atom output"): ``/topology`` heavy-atom topology with standard and peptide
bonds; ``/coordinates`` (rows, n_atoms, 3) float32 nm; ``/time`` ps per row; ``/cell_lengths`` nm and
``/cell_angles`` degrees per row when the input had a cell; provenance under ``/ldb/`` (``cg_frame``,
``sample`` per row, run metadata as attributes). Rows are frame-major: frame f, sample s → row f·S + s.
HDF5 chunks hold whole frames (all S samples). The file is written under a temporary name and renamed
only once every row has been written.
"""

from __future__ import annotations

import os

import numpy as np

from ldb_hpc import __version__
from ldb_hpc.chem.protein import Residues
from ldb_hpc.chem.residues import NUM_SLOTS
from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.io.files import TempFileWriter
from ldb_hpc.io.cg import NM, frames_per_chunk, prepare_output, write_root_attrs, write_topology
from ldb_hpc.io.topology import aa_residues, aa_topology, parse_topology


def write_frame_rows(f, row_start: int, frame_start: int, positions: np.ndarray, gather: np.ndarray, time,
                     cell_lengths=None, cell_angles=None, has_cell: bool = False) -> None:
    """Write frames ``frame_start ..`` (global indices) as rows ``row_start ..`` of an open all-atom file ``f``.

    positions [n, S, L, 14, 3] Å (frame-major rows); gather: flat atom14 → file atom index map; time [n] ps;
    cell_lengths [n, 3] Å and cell_angles [n, 3] rad (required when ``has_cell``). Converts to nm / degrees.
    """
    n, S = positions.shape[:2]
    rows = slice(row_start, row_start + n * S)
    atoms = positions.reshape(n * S, -1, 3)[:, gather]
    f["coordinates"][rows] = (atoms / np.float32(NM)).astype(np.float32)
    f["time"][rows] = np.repeat(np.asarray(time, dtype=np.float64).reshape(n), S)
    if has_cell:
        f["cell_lengths"][rows] = np.repeat(np.asarray(cell_lengths, np.float32).reshape(n, 3) / np.float32(NM),
                                            S, axis=0)
        f["cell_angles"][rows] = np.repeat(np.rad2deg(np.asarray(cell_angles, np.float64).reshape(n, 3)), S, axis=0)
    f["ldb/cg_frame"][rows] = np.repeat(np.arange(frame_start, frame_start + n, dtype=np.int64), S)
    f["ldb/sample"][rows] = np.tile(np.arange(S, dtype=np.int32), n)


class AllAtomWriter(TempFileWriter):
    """Writes backmapped frames into a preallocated MDTraj-HDF5 file (context manager).

    path: final file name; residues: the L residues; n_frames: CG frames F that will be written;
    samples: S samples per frame (rows = F·S); provenance: run metadata stored as attributes of
    ``/ldb`` (e.g. model, model_hash, seed, steps, samples, input; None values are stored as "");
    has_cell: write per-row cell datasets; overwrite: replace an existing output.
    """

    def __init__(self, path: str, residues: Residues, n_frames: int, samples: int = 1,
                 provenance: dict | None = None, has_cell: bool = False, overwrite: bool = False,
                 title: str = "ldb-hpc backmapped trajectory"):
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
        topology, self.atom_index, self.n_atoms = aa_topology(residues)
        # Flat gather index over (L·14) for the slots that exist, in atom order.
        self._gather = np.nonzero(self.atom_index.ravel() >= 0)[0]
        assert np.array_equal(self.atom_index.ravel()[self._gather], np.arange(self.n_atoms))
        S, A = self.samples, self.n_atoms
        k = frames_per_chunk(S * A * 12)
        try:
            self._f = f = h5py.File(self._tmp, "w")
            write_root_attrs(f, title)
            write_topology(f, topology)
            f.create_dataset("coordinates", shape=(self.n_rows, A, 3), chunks=(min(k, self.n_frames) * S, A, 3),
                             dtype="f4")
            f["coordinates"].attrs["units"] = "nanometers"
            row_chunk = (min(max(k, 1024), self.n_frames) * S,)
            f.create_dataset("time", shape=(self.n_rows,), chunks=row_chunk, dtype="f4")
            f["time"].attrs["units"] = "picoseconds"
            if self.has_cell:
                for name, units in (("cell_lengths", "nanometers"), ("cell_angles", "degrees")):
                    f.create_dataset(name, shape=(self.n_rows, 3), chunks=row_chunk + (3,), dtype="f4")
                    f[name].attrs["units"] = units
            g = f.create_group("ldb")
            g.create_dataset("cg_frame", shape=(self.n_rows,), chunks=row_chunk, dtype="i8")
            g.create_dataset("sample", shape=(self.n_rows,), chunks=row_chunk, dtype="i4")
            meta = {"ldb_hpc_version": __version__, "samples": self.samples, "n_frames": self.n_frames}
            meta.update(provenance or {})
            for key, value in meta.items():
                g.attrs[key] = "" if value is None else value
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write {self._tmp}: {exc}")

    def write(self, frame_start: int, positions: np.ndarray, time: np.ndarray,
              cell_lengths: np.ndarray | None = None, cell_angles: np.ndarray | None = None) -> None:
        """Write CG frames ``frame_start .. frame_start+n-1`` (all their samples).

        positions: [n, S, L, 14, 3] Å (absent slots ignored); time: [n] ps; cell_lengths: [n, 3] Å;
        cell_angles: [n, 3] radians (both required when the writer has a cell).
        """
        S, L = self.samples, len(self.residues)
        positions = np.asarray(positions)
        if positions.ndim != 5 or positions.shape[1:] != (S, L, NUM_SLOTS, 3):
            raise ValueError(f"positions has shape {positions.shape}, expected (n, {S}, {L}, 14, 3)")
        n = positions.shape[0]
        a, b = int(frame_start), int(frame_start) + n
        if a < 0 or b > self.n_frames:
            raise ValueError(f"frames {a}..{b - 1} outside 0..{self.n_frames - 1}")
        if self.has_cell and (cell_lengths is None or cell_angles is None):
            raise ValueError("this writer has a cell: pass cell_lengths and cell_angles")
        write_frame_rows(self._f, a * S, a, positions, self._gather, time, cell_lengths, cell_angles,
                         self.has_cell)
        self._written[a:b] = True

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
            raw = f["topology"][()]
            topo = parse_topology(raw.reshape(-1)[0] if isinstance(raw, np.ndarray) else raw, path)
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
        raise InputError(f"cannot read {path}: HDF5 file is corrupt or truncated ({exc})")
    residues, atom_slot, mask = aa_residues(topo)
    ok = atom_slot >= 0
    positions = np.zeros((xyz.shape[0], len(residues), NUM_SLOTS, 3), dtype=np.float32)
    positions[:, topo.atom_residue[ok], atom_slot[ok]] = xyz[:, ok]
    return residues, positions, mask, cg_frame, sample
