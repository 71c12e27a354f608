"""CG (one CA bead per residue) trajectories: the streaming reader and the MDTraj-HDF5 writer.

Reading an MDTraj-HDF5 CG file goes through h5py directly, one frame range at a time (nothing is
loaded up front but the topology and frame 0). Any other mdtraj-readable trajectory (+ ``top``) is
reduced to its CA atoms and read with mdtraj in ranges. Units: Å, ps and radians in memory; nm and
degrees only in the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ldb_hpc.chem.protein import Residues
from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.io import mdtraj_bridge as mb
from ldb_hpc.io.files import TempFileWriter, prepare_output
from ldb_hpc.io.mdtraj_hdf5 import (
    HDF5_EXTENSIONS,
    NM,
    UNITS,
    cell_from_file,
    cell_to_file,
    frames_per_chunk,
    is_hdf5,
    length_scale,
    read_time,
    read_topology,
    write_root_attrs,
    write_topology,
)
from ldb_hpc.io.topology import cg_residues, cg_topology

MAX_ABS_COORD = 1.0e4  # Å; anything larger is garbage (or wrong units)


@dataclass
class CGFrames:
    """A range of CG frames.

    start: global index of the first frame; ca: [n, L, 3] float32 CA positions in Å; time: [n] float64 ps;
    cell_lengths: [n, 3] float32 Å or None; cell_angles: [n, 3] float32 radians or None.
    """

    start: int
    ca: np.ndarray
    time: np.ndarray
    cell_lengths: np.ndarray | None = None
    cell_angles: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ca.shape[0])

    @property
    def stop(self) -> int:
        return self.start + len(self)


def check_coordinates(ca: np.ndarray, start: int, source: str) -> None:
    """InputError naming the first frame (global index) with non-finite or absurd (> 1e4 Å) coordinates.

    ca: [n, L, 3] Å; start: global index of ca[0].
    """
    bad = ~np.isfinite(ca) | (np.abs(ca) > MAX_ABS_COORD)
    if bad.any():
        frame, res = (int(x) for x in np.argwhere(bad)[0][:2])
        value = ca[frame, res][bad[frame, res]][0]
        what = "non-finite" if not np.isfinite(value) else f"absurd (|x| > {MAX_ABS_COORD:g} Å)"
        raise InputError(f"{source}: frame {start + frame} has {what} coordinates (residue {res}: {value}); "
                         "the file is corrupt or not in nm")


class CGTrajectory:
    """A CG trajectory opened for streaming reads (context manager).

    path: MDTraj-HDF5 CG file, or any mdtraj-readable trajectory (with ``top`` when the format needs
    one; all-atom inputs are reduced to their CA atoms). residue_map: {OLD: NEW} residue renames;
    keep_unknown: unknown residue names become UNK instead of an error.

    Attributes: residues (Residues, segments from frame 0), n_frames, n_residues, has_cell.
    ``read(start, stop)`` → :class:`CGFrames` (validated: finite, |x| ≤ 1e4 Å).
    """

    def __init__(self, path: str, top: str | None = None, residue_map: dict[str, str] | None = None,
                 keep_unknown: bool = False):
        self.path = str(path)
        self.top = top
        self._h5 = None
        self._cached = None  # whole trajectory for text structure formats
        mb.check_readable(self.path, "CG input")
        if is_hdf5(self.path):
            if top is not None:
                raise InputError(f"{self.path} is an HDF5 file with its own topology; drop --top")
            self._open_h5(residue_map, keep_unknown)
        elif mb.extension(self.path) in HDF5_EXTENSIONS:
            raise InputError(f"{self.path} is not an HDF5 file (wrong format, corrupt or truncated)")
        else:
            self._open_mdtraj(residue_map, keep_unknown)

    # --- MDTraj-HDF5 through h5py -------------------------------------------------------------

    def _open_h5(self, residue_map, keep_unknown):
        import h5py

        src = self.path
        try:
            self._h5 = h5py.File(src, "r")
        except OSError as exc:
            raise InputError(f"cannot open {src}: HDF5 file is corrupt or truncated ({mb.short_message(exc)})") from exc
        try:
            f = self._h5
            if "coordinates" not in f or not isinstance(f["coordinates"], h5py.Dataset):
                raise InputError(f"{src}: no /coordinates dataset; not an MDTraj-HDF5 trajectory")
            if "topology" not in f:
                raise InputError(f"{src}: no /topology; not an MDTraj-HDF5 trajectory")
            coords = f["coordinates"]
            if coords.ndim != 3 or coords.shape[2] != 3:
                raise InputError(f"{src}: /coordinates has shape {coords.shape}, expected (frames, residues, 3)")
            topo = read_topology(f, src)
            n_frames, n_atoms = int(coords.shape[0]), int(coords.shape[1])
            if n_atoms != topo.n_atoms:
                raise InputError(f"{src}: /coordinates has {n_atoms} atoms per frame but /topology has "
                                 f"{topo.n_atoms} atoms")
            if n_frames == 0:
                raise InputError(f"{src}: the trajectory has zero frames")
            self._scale = length_scale(coords, src)
            for name in ("time", "cell_lengths", "cell_angles"):
                if name in f and f[name].shape[:1] != (n_frames,):
                    raise InputError(f"{src}: /{name} has shape {f[name].shape}, expected {n_frames} frames")
            self.has_cell = "cell_lengths" in f and "cell_angles" in f
            self._n_frames = n_frames
            self._topo = topo
            # Residue checks first (cheap), then frame 0 for the segments.
            cg_residues(topo, None, residue_map, keep_unknown, src)
            ca0 = self._read_h5(0, 1).ca[0]
            self.residues = cg_residues(topo, ca0, residue_map, keep_unknown, src)
        except BaseException:
            self.close()
            raise

    def _read_h5(self, start: int, stop: int) -> CGFrames:
        f = self._h5
        try:
            ca = np.asarray(f["coordinates"][start:stop], dtype=np.float32) * self._scale
            time = read_time(f, start, stop)
            cl = ca_ = None
            if self.has_cell:
                cl, ca_ = cell_from_file(f["cell_lengths"][start:stop], f["cell_angles"][start:stop])
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"cannot read frames {start}..{stop - 1} of {self.path}: file corrupt or truncated "
                             f"({mb.short_message(exc)})") from exc
        check_coordinates(ca, start, self.path)
        return CGFrames(start, ca, time, cl, ca_)

    # --- anything mdtraj reads -----------------------------------------------------------------

    def _open_mdtraj(self, residue_map, keep_unknown):
        src = self.path
        topology = mb.load_topology(src, self.top)
        sel = mb.select_protein(topology, residue_map, keep_unknown, src)
        missing = np.nonzero(sel.ca_atom < 0)[0]
        if missing.size:
            lab = sel.labels()[missing[0]]
            raise InputError(f"{src}: residue {sel.resname[missing[0]]} {lab} has no CA atom "
                             f"({missing.size} such residues); every residue needs a CA bead")
        self._ca_atoms = sel.ca_atom
        n = mb.count_frames(src)
        if n is None:
            self._cached = mb.load_any(src, self.top, atom_indices=self._ca_atoms)
            n = self._cached.n_frames
        if n == 0:
            raise InputError(f"{src}: the trajectory has zero frames")
        self._n_frames = n
        first = self._read_mdtraj(0, 1)
        self.has_cell = first.cell_lengths is not None
        self.residues = sel.residues(first.ca[0])

    def _read_mdtraj(self, start: int, stop: int) -> CGFrames:
        if self._cached is not None:
            traj = self._cached[start:stop]
        else:
            traj = mb.read_range(self.path, self.top, start, stop, self._ca_atoms)
        return self._from_traj(traj, start)

    def _from_traj(self, traj, start: int) -> CGFrames:
        ca = traj.xyz.astype(np.float32) * np.float32(NM)
        check_coordinates(ca, start, self.path)
        cl = ca_ = None
        if traj.unitcell_lengths is not None and traj.unitcell_angles is not None:
            cl, ca_ = cell_from_file(traj.unitcell_lengths, traj.unitcell_angles)
        return CGFrames(start, ca, np.asarray(traj.time, dtype=np.float64), cl, ca_)

    # --- public API ------------------------------------------------------------------------

    @property
    def n_frames(self) -> int:
        return self._n_frames

    @property
    def n_residues(self) -> int:
        return len(self.residues)

    def __len__(self) -> int:
        return self._n_frames

    def read(self, start: int = 0, stop: int | None = None) -> CGFrames:
        """Frames ``start`` ≤ f < ``stop`` (clipped to the trajectory) as :class:`CGFrames` (Å, ps, radians)."""
        stop = self._n_frames if stop is None else min(int(stop), self._n_frames)
        start = int(start)
        if not 0 <= start < stop:
            raise InputError(f"{self.path}: frame range {start}..{stop} is empty or outside 0..{self._n_frames}")
        if self._h5 is not None:
            return self._read_h5(start, stop)
        return self._read_mdtraj(start, stop)

    def iter_chunks(self, chunk: int = 1000, start: int = 0, stop: int | None = None):
        """Yield consecutive :class:`CGFrames` of at most ``chunk`` frames covering [start, stop)."""
        stop = self._n_frames if stop is None else min(int(stop), self._n_frames)
        if self._h5 is None and self._cached is None:
            # Sequential streaming: one pass through the file instead of a seek per chunk.
            pos = start
            for traj in mb.iterload_any(self.path, self.top, chunk=chunk, atom_indices=self._ca_atoms, skip=start):
                traj = traj[: stop - pos]
                if traj.n_frames == 0:
                    break
                yield self._from_traj(traj, pos)
                pos += traj.n_frames
                if pos >= stop:
                    break
            if pos < stop:
                raise InputError(f"{self.path}: expected {stop} frames but the file ended after {pos}")
            return
        for a in range(start, stop, chunk):
            yield self.read(a, min(a + chunk, stop))

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> "CGTrajectory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# writing


class CGWriter(TempFileWriter):
    """Writes a CG MDTraj-HDF5 file frame chunk by frame chunk (context manager).

    path: final file name (written as a hidden temp file, renamed on successful close); residues: the L
    residues (one CA each); has_cell: write /cell_lengths and /cell_angles; title: root title attribute;
    expected_frames: a hint for the HDF5 chunk size (small files stay small).
    """

    def __init__(self, path: str, residues: Residues, has_cell: bool = False, overwrite: bool = False,
                 title: str = "ldb-hpc CG trajectory", expected_frames: int | None = None):
        import h5py

        self.path = os.path.abspath(path)
        self.residues = residues
        self.has_cell = has_cell
        self.n_frames = 0
        self._tmp = prepare_output(self.path, overwrite)
        n = len(residues)
        k = frames_per_chunk(n * 12, 1 << 18)
        if expected_frames:
            k = max(1, min(k, int(expected_frames)))
        try:
            self._f = h5py.File(self._tmp, "w")
            write_root_attrs(self._f, title)
            write_topology(self._f, cg_topology(residues))
            f = self._f
            f.create_dataset("coordinates", shape=(0, n, 3), maxshape=(None, n, 3), chunks=(k, n, 3), dtype="f4")
            f["coordinates"].attrs["units"] = UNITS["coordinates"]
            f.create_dataset("time", shape=(0,), maxshape=(None,), chunks=(k,), dtype="f4")
            f["time"].attrs["units"] = UNITS["time"]
            for name in ("cell_lengths", "cell_angles") if has_cell else ():
                f.create_dataset(name, shape=(0, 3), maxshape=(None, 3), chunks=(k, 3), dtype="f4")
                f[name].attrs["units"] = UNITS[name]
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write {self._tmp}: {exc}") from exc

    def append(self, ca: np.ndarray, time: np.ndarray, cell_lengths: np.ndarray | None = None,
               cell_angles: np.ndarray | None = None) -> None:
        """Append frames. ca: [n, L, 3] Å; time: [n] ps; cell_lengths: [n, 3] Å; cell_angles: [n, 3] radians."""
        n_res = len(self.residues)
        ca = np.asarray(ca, dtype=np.float32)
        if ca.ndim != 3 or ca.shape[1:] != (n_res, 3):
            raise ValueError(f"ca has shape {ca.shape}, expected (n, {n_res}, 3)")
        n = ca.shape[0]
        time = np.asarray(time, dtype=np.float64).reshape(n)
        if self.has_cell and (cell_lengths is None or cell_angles is None):
            raise ValueError("this writer has a cell: pass cell_lengths and cell_angles")
        a, b = self.n_frames, self.n_frames + n
        f = self._f
        for name in ("coordinates", "time") + (("cell_lengths", "cell_angles") if self.has_cell else ()):
            f[name].resize(b, axis=0)
        f["coordinates"][a:b] = ca / np.float32(NM)
        f["time"][a:b] = time
        if self.has_cell:
            f["cell_lengths"][a:b], f["cell_angles"][a:b] = cell_to_file(cell_lengths, cell_angles, n)
        self.n_frames = b

    def close(self) -> None:
        """Finish the file and rename it to its final name; InputError (and no file) when no frame was written."""
        if self._f is None:
            return
        if self.n_frames == 0:
            self.abort()
            raise InputError(f"no frames to write to {self.path}")
        self._f.close()
        self._f = None
        os.replace(self._tmp, self.path)
