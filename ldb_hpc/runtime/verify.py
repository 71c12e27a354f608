"""Completeness check of a backmap output (``ldb-hpc verify``): complete, incomplete or invalid.

MDTraj-HDF5 (``OUT.h5``): complete means the file opens; /topology parses; /coordinates is (F·S, n_atoms,
3) with n_atoms of the topology; /ldb carries the provenance (model, model_hash, seed, samples, n_frames);
every virtual dataset's source files exist; /ldb/cg_frame and /ldb/sample list every (frame, sample) row
exactly once in frame-major order; coordinates and times are finite and coordinates not absurd (|x| ≤ 1e4
Å). Another format (``OUT.xtc`` …, ldb_hpc.io.export): complete means its manifest is there, every file it
lists (trajectory, topology PDB) has the sha256 recorded when it was written, and mdtraj reads back exactly
the recorded rows of the recorded atoms, finite. A run folder without its output (interrupted run, a
conversion not finished, or ``--shard`` tasks before ``merge``) is incomplete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ldb_hpc.errors import InputError
from ldb_hpc.io import export
from ldb_hpc.io.aa import missing_virtual_source
from ldb_hpc.io.cg import MAX_ABS_COORD
from ldb_hpc.io.mdtraj_hdf5 import NM, read_topology
from ldb_hpc.runtime import output as out_mod
from ldb_hpc.runtime import resume

PROVENANCE = ("model", "model_hash", "seed", "samples", "n_frames")


@dataclass
class Report:
    """state: "complete", "incomplete" or "invalid"; message: one line; info: counts that were checked."""

    path: str
    state: str
    message: str
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "complete"


def verify(path: str, block_bytes: int = 64 << 20) -> Report:
    """Check the output ``path`` (``OUT.h5``) or its run folder (``OUT.h5.d``); never raises for bad content.

    block_bytes: coordinates are read in row blocks of about this size (memory stays bounded).
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        folder, output = path, path[:-2] if path.endswith(".d") else None
    else:
        folder, output = out_mod.run_dir(path), path
    if output is None or not os.path.exists(output):
        if not os.path.isdir(folder):
            raise InputError(f"not found: {path} (neither an output file nor a run folder)")
        try:
            status = resume.run_status(folder)
        except InputError as exc:
            return Report(path, "invalid", str(exc))
        if status.complete:
            name = output or folder[:-2]
            what = ("every chunk is recorded but the output was not published (master file or conversion); "
                    f"run 'ldb-hpc merge {name}'" if status.record.io.value == "shards" else
                    "every chunk is recorded but the file was not published; rerun with --resume")
        else:
            what = f"interrupted run: {status.describe_missing()}; finish it with --resume"
        return Report(path, "incomplete", what, {"frames_done": status.frames_done,
                                                  "n_frames": status.plan.n_frames})
    if export.output_format(output, writing=False) is None:
        return _verify_file(output, block_bytes)
    state, message, info = export.check_export(output, block_bytes)
    return Report(output, state, message, info)


def _verify_file(path: str, block_bytes: int) -> Report:
    import h5py

    def bad(msg: str, state: str = "invalid") -> Report:
        return Report(path, state, msg)

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        return bad(f"cannot open: HDF5 file is corrupt or truncated ({' '.join(str(exc).split())})")
    with f:
        for name in ("topology", "coordinates", "ldb/cg_frame", "ldb/sample", "time"):
            if name not in f:
                return bad(f"no /{name}; not a complete ldb-hpc output")
        missing = [k for k in PROVENANCE if k not in f["ldb"].attrs]
        if missing:
            return bad(f"provenance missing in /ldb: {', '.join(missing)}")
        try:
            topo = read_topology(f, path)
        except (InputError, OSError, ValueError) as exc:
            return bad(f"topology unreadable ({exc})")
        S, F = int(f["ldb"].attrs["samples"]), int(f["ldb"].attrs["n_frames"])
        n_rows, A = F * S, topo.n_atoms
        coords = f["coordinates"]
        if coords.shape != (n_rows, A, 3):
            return bad(f"/coordinates has shape {coords.shape}, expected ({n_rows}, {A}, 3) for {F} frames x "
                       f"{S} samples and {A} atoms")
        for name in ("time", "ldb/cg_frame", "ldb/sample", "cell_lengths", "cell_angles"):
            if name in f and f[name].shape[0] != n_rows:
                return bad(f"/{name} has {f[name].shape[0]} rows, expected {n_rows}")
        # Virtual datasets read missing sources as fill values silently: check the files themselves.
        missing = missing_virtual_source(f, path)
        if missing:
            return bad(f"/{missing[0]} refers to a missing shard file {missing[1]} (move the output together "
                       "with its .d folder)")
        rows_per_block = max(S, (block_bytes // max(1, A * 12)) // S * S)
        try:
            for a in range(0, n_rows, rows_per_block):
                b = min(a + rows_per_block, n_rows)
                frames = np.arange(a, b) // S
                if not np.array_equal(f["ldb/cg_frame"][a:b], frames):
                    row = a + int(np.nonzero(f["ldb/cg_frame"][a:b] != frames)[0][0])
                    return bad(f"row {row}: /ldb/cg_frame is {int(f['ldb/cg_frame'][row])}, expected {row // S} "
                               "(a row is missing, duplicated or out of order)", "incomplete")
                if not np.array_equal(f["ldb/sample"][a:b], np.arange(a, b) % S):
                    row = a + int(np.nonzero(f["ldb/sample"][a:b] != np.arange(a, b) % S)[0][0])
                    return bad(f"row {row}: /ldb/sample is {int(f['ldb/sample'][row])}, expected {row % S}",
                               "incomplete")
                xyz = coords[a:b]
                bad_xyz = ~np.isfinite(xyz) | (np.abs(xyz) * NM > MAX_ABS_COORD)
                if bad_xyz.any():
                    row = a + int(np.argwhere(bad_xyz)[0][0])
                    return bad(f"row {row} (frame {row // S}) has non-finite or absurd coordinates")
                if not np.isfinite(f["time"][a:b]).all():
                    return bad(f"rows {a}..{b - 1}: non-finite /time")
        except OSError as exc:
            return bad(f"cannot read rows: file corrupt or truncated ({' '.join(str(exc).split())})")
        info = {"frames": F, "samples": S, "rows": n_rows, "atoms": A,
                "virtual": bool(coords.is_virtual), "model": str(f["ldb"].attrs["model"])}
    return Report(path, "complete", f"{F} frames x {S} sample(s) = {n_rows} rows, {A} atoms, every row once and "
                                    f"in order, finite coordinates, provenance present", info)
