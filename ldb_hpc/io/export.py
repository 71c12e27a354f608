"""Other trajectory formats: an all-atom MDTraj-HDF5 file converted, streamed, through mdtraj's writers.

``-o`` chooses the format by extension: ``.h5``/``.hdf5`` is the native MDTraj-HDF5 layout (ldb_hpc.io.aa);
``.xtc``, ``.trr``, ``.dcd``, ``.nc``, ``.pdb`` and ``.cif`` are written here from a finished all-atom HDF5
file, one block of rows at a time (memory stays bounded whatever the length). Beside ``out.EXT``:

- ``out.top.pdb`` for formats without a topology (xtc, trr, dcd, nc): the first row as a PDB file,
  whose atoms are the trajectory's, in order (``mdtraj.load("out.xtc", top="out.top.pdb")``), with its disulfides
  (SSBOND, CONECT) and the first row's cell (CRYST1);
- ``out.EXT.manifest.json``: what the file holds (rows, atoms, frames × samples, time and cell kept or
  not, precision), the provenance of ``/ldb`` the format cannot carry, and the sha256 of every file
  written, so :func:`check_export` can tell a complete file from a truncated or altered one.

Every file is written under a temporary name (ldb_hpc.io.files) and renamed when all are complete:
topology and manifest first, the trajectory last, so ``out.EXT`` under its own name means complete.
Units: nm, ps and degrees as in the HDF5 file; converted to each writer's units with mdtraj. PDB files (``.pdb``
and the topology PDB) are written by ldb_hpc.io.pdb from the file's topology (SSBOND and CONECT for its SG–SG bonds,
CRYST1 where the file has a cell); the cell goes into every format that holds one (xtc, trr, dcd, nc, pdb, cif).
Nothing here knows about ranks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.io.aa import missing_virtual_source
from ldb_hpc.io.files import check_readable, read_json_document, replaced_when_done, temp_name
from ldb_hpc.io.mdtraj_hdf5 import NM
from ldb_hpc.io.pdb import PDBLayout, PDBStream

NATIVE = (".h5", ".hdf5")
MANIFEST_FORMAT = "ldb-hpc export 1"
BLOCK_BYTES = 64 << 20  # coordinates per block read from the HDF5 file


@dataclass(frozen=True)
class Format:
    """A trajectory format written through mdtraj.

    name: the extension without dot; writer: the mdtraj.formats class; topology: the file carries the
    atoms' names and residues (else a ``.top.pdb`` goes beside it); time: it keeps per-row times;
    precision_nm: the largest coordinate change of a write + read round trip; needs: a module mdtraj
    must find to write it streamed.
    """

    name: str
    writer: str
    topology: bool
    time: bool
    precision_nm: float
    needs: str | None = None


FORMATS = {
    ".xtc": Format("xtc", "XTCTrajectoryFile", False, True, 1e-3),  # 3 decimals in nm
    ".trr": Format("trr", "TRRTrajectoryFile", False, True, 1e-5),  # float32 nm
    ".dcd": Format("dcd", "DCDTrajectoryFile", False, False, 1e-5),  # float32 Å
    # mdtraj falls back to scipy without netCDF4, which holds the whole file in memory until closed.
    ".nc": Format("nc", "NetCDFTrajectoryFile", False, True, 1e-5, needs="netCDF4"),  # float32 Å
    ".pdb": Format("pdb", "PDBTrajectoryFile", True, False, 1e-4),  # 3 decimals in Å
    ".cif": Format("cif", "PDBxTrajectoryFile", True, False, 1e-5),  # 4 decimals in Å
}


def output_format(path: str, writing: bool = True) -> Format | None:
    """The :class:`Format` ``path``'s extension asks for; None for MDTraj-HDF5 (``.h5``, ``.hdf5``).

    InputError for any other extension, or (``writing``) when the format's writer needs a missing module.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext in NATIVE:
        return None
    if ext not in FORMATS:
        known = " ".join(NATIVE + tuple(FORMATS))
        raise InputError(f"cannot write {os.path.basename(path)}: unknown output format "
                         f"{ext or '(no extension)'}; use one of {known}")
    fmt = FORMATS[ext]
    if writing and fmt.needs and importlib.util.find_spec(fmt.needs) is None:
        raise InputError(f"writing .{fmt.name} streamed needs the {fmt.needs} package (pip install {fmt.needs}); "
                         f"without it mdtraj would hold the whole trajectory in memory")
    return fmt


def topology_path(path: str) -> str:
    """The topology PDB beside a trajectory without topology: ``out.xtc`` → ``out.top.pdb``."""
    return os.path.splitext(path)[0] + ".top.pdb"


def manifest_path(path: str) -> str:
    return path + ".manifest.json"


def companions(path: str) -> list[str]:
    """The files written beside ``path`` with it (topology PDB where needed, manifest); [] for HDF5."""
    fmt = output_format(path, writing=False)
    if fmt is None:
        return []
    return ([] if fmt.topology else [topology_path(path)]) + [manifest_path(path)]


class RowBlocks:
    """Reads an all-atom MDTraj-HDF5 file (an ldb-hpc output or master of virtual datasets) in row blocks.

    Attributes: topology (mdtraj.Topology), n_rows, n_atoms, has_cell, provenance (the /ldb attributes).
    Refuses a master whose shard files are missing (they would read as NaN) and rows that are not finite.
    """

    def __init__(self, path: str):
        import h5py
        import mdtraj as md

        check_readable(path, "all-atom")
        self.path = os.path.abspath(path)
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(f"cannot read {path}: HDF5 file is corrupt or truncated") from exc
        f = self._f
        if "coordinates" not in f or "topology" not in f:
            self.close()
            raise InputError(f"{path}: not an MDTraj-HDF5 trajectory (no /coordinates or /topology)")
        missing = missing_virtual_source(f, self.path)
        if missing:
            self.close()
            raise InputError(f"{path}: /{missing[0]} refers to a missing shard file {missing[1]} (move the output "
                             "together with its .d folder)")
        try:
            self.topology = md.load_topology(self.path)
        except Exception as exc:  # noqa: BLE001 - mdtraj raises many kinds for a bad topology
            self.close()
            raise InputError(f"{path}: topology unreadable ({' '.join(str(exc).split())[:200]})") from exc
        self.n_rows, self.n_atoms = int(f["coordinates"].shape[0]), int(f["coordinates"].shape[1])
        if self.n_atoms != self.topology.n_atoms or self.n_rows == 0:
            self.close()
            raise InputError(f"{path}: /coordinates has shape {f['coordinates'].shape}, expected (rows > 0, "
                             f"{self.topology.n_atoms}, 3)")
        self.has_cell = "cell_lengths" in f and "cell_angles" in f
        self.has_time = "time" in f
        self.provenance = {k: _plain(v) for k, v in f["ldb"].attrs.items()} if "ldb" in f else {}

    def blocks(self, block_bytes: int = BLOCK_BYTES):
        """Yield (start row, xyz [n, A, 3] nm float32, time [n] ps or None, cell_lengths [n, 3] nm or None,
        cell_angles [n, 3] degrees or None), about ``block_bytes`` of coordinates at a time."""
        f, step = self._f, max(1, block_bytes // max(1, self.n_atoms * 12))
        for a in range(0, self.n_rows, step):
            b = min(a + step, self.n_rows)
            try:
                xyz = np.asarray(f["coordinates"][a:b], dtype=np.float32)
                time = np.asarray(f["time"][a:b], dtype=np.float32) if self.has_time else None
                lengths = np.asarray(f["cell_lengths"][a:b], np.float32) if self.has_cell else None
                angles = np.asarray(f["cell_angles"][a:b], np.float32) if self.has_cell else None
            except OSError as exc:
                raise InputError(f"cannot read rows {a}..{b - 1} of {self.path}: file corrupt or truncated") from exc
            bad = ~np.isfinite(xyz)
            if bad.any():
                raise InputError(f"{self.path}: row {a + int(np.argwhere(bad)[0][0])} has non-finite coordinates "
                                 "(an unfinished or damaged output; check it with 'ldb-hpc verify')")
            yield a, xyz, time, lengths, angles

    def close(self) -> None:
        f, self._f = getattr(self, "_f", None), None
        if f is not None:
            f.close()

    def __enter__(self) -> RowBlocks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _plain(value):
    """An HDF5 attribute as a JSON value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _box(lengths, angles):
    """Box vectors [n, 3, 3] from cell lengths [n, 3] and angles [n, 3] degrees (as mdtraj computes them)."""
    from mdtraj.utils import lengths_and_angles_to_box_vectors

    v1, v2, v3 = lengths_and_angles_to_box_vectors(*lengths.T, *angles.T)
    return np.swapaxes(np.dstack((v1, v2, v3)), 1, 2)


def _write_block(fmt: Format, f, topology, xyz, time, lengths, angles) -> None:
    """Append rows (nm, ps, degrees) to the open mdtraj file ``f`` of format ``fmt`` (any but pdb)."""
    from mdtraj.utils import in_units_of

    unit = f.distance_unit
    pos = in_units_of(xyz, "nanometers", unit)
    cell = in_units_of(lengths, "nanometers", unit) if lengths is not None else None
    if fmt.name in ("xtc", "trr"):
        f.write(pos, time=time, box=None if cell is None else _box(cell, angles))
    elif fmt.name == "dcd":
        f.write(pos, cell_lengths=cell, cell_angles=angles)
    elif fmt.name == "nc":
        f.write(pos, time=time, cell_lengths=cell, cell_angles=angles)
    else:  # mmCIF, one model per row: the input's chain ids and residue numbers, not new ones
        for i in range(pos.shape[0]):
            kw = {"unitcell_lengths": cell[i], "unitcell_angles": angles[i]} if cell is not None else {}
            f.write(pos[i], topology, keepIds=True, **kw)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _writer(fmt: Format, path: str):
    import mdtraj.formats as mf

    return getattr(mf, fmt.writer)(path, "w", force_overwrite=True)


def _pdb_cell(lengths, angles):
    """The cell of :meth:`RowBlocks.blocks` (nm, degrees) as ldb_hpc.io.pdb takes it (Å, degrees), or None."""
    return None if lengths is None else (np.asarray(lengths, np.float64) * NM, angles)


def _write_pdb(path: str, src: RowBlocks, block_bytes: int) -> None:
    """Write every row of ``src`` to the PDB file ``path`` (ldb_hpc.io.pdb), streamed."""
    with open(path, "w") as fh:
        stream = PDBStream(fh, PDBLayout.from_topology(src.topology), src.n_rows)
        for _, xyz, _, lengths, angles in src.blocks(block_bytes):
            stream.write(xyz * np.float32(NM), _pdb_cell(lengths, angles))
        stream.close()


def export(source: str, dest: str, run: dict | None = None, block_bytes: int = BLOCK_BYTES) -> dict:
    """Convert the all-atom MDTraj-HDF5 file ``source`` to ``dest`` (format by extension), streamed.

    Writes ``dest``, its topology PDB where the format has none, and its manifest (temporary names, renamed
    when all are complete, ``dest`` last); existing files of those names are replaced. run: the run record
    to keep in the manifest (a backmap), or None. Returns the manifest. InputError for a bad ``source`` or
    extension, OutputError when a file cannot be written (then none of them is created).
    """
    dest = os.path.abspath(dest)
    fmt = output_format(dest)
    if fmt is None:
        raise InputError(f"{os.path.basename(dest)} is MDTraj-HDF5 already; export writes "
                         f"{' '.join(FORMATS)}")
    top_path = None if fmt.topology else topology_path(dest)
    tmps = [temp_name(dest)] + ([temp_name(top_path)] if top_path else [])
    try:
        with RowBlocks(source) as src:
            if fmt.name == "pdb":
                _write_pdb(tmps[0], src, block_bytes)
            else:
                with _writer(fmt, tmps[0]) as f:
                    first = first_cell = None
                    for _, xyz, time, lengths, angles in src.blocks(block_bytes):
                        if first is None:
                            first = xyz[0].copy()
                            first_cell = None if lengths is None else (lengths[:1], angles[:1])
                        _write_block(fmt, f, src.topology, xyz, time if fmt.time else None, lengths, angles)
            if top_path:  # the first row with its cell, disulfides and atoms: the trajectory's topology
                text = PDBLayout.from_topology(src.topology).text(first[None] * np.float32(NM),
                                                                  _pdb_cell(*(first_cell or (None, None))))
                with open(tmps[1], "w") as fh:
                    fh.write(text)
            samples = int(src.provenance.get("samples", 1) or 1)
            manifest = {
                "format": MANIFEST_FORMAT, "trajectory": os.path.basename(dest), "kind": fmt.name,
                "topology": os.path.basename(top_path) if top_path else None,
                "rows": src.n_rows, "atoms": src.n_atoms, "samples": samples,
                "frames": int(src.provenance.get("n_frames", src.n_rows // samples)),
                "row_order": "row r = CG frame r // samples, sample r % samples",
                "time": "kept" if fmt.time and src.has_time else f"not kept ({fmt.name} has no time field)",
                "cell": src.has_cell, "precision_nm": fmt.precision_nm,
                "source": None if run else os.path.basename(src.path), "provenance": src.provenance, "run": run,
                "sha256": {os.path.basename(dest): sha256_file(tmps[0]),
                           **({os.path.basename(top_path): sha256_file(tmps[1])} if top_path else {})},
            }
        if top_path:
            os.replace(tmps[1], top_path)
        with replaced_when_done(manifest_path(dest), "manifest ") as tmp:
            with open(tmp, "w") as fh:
                json.dump(manifest, fh, indent=1)
        os.replace(tmps[0], dest)
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {' '.join(str(exc).split())}") from exc
    except ValueError as exc:  # mdtraj's writers refuse values their format cannot hold
        raise OutputError(f"cannot write {dest}: {' '.join(str(exc).split())}") from exc
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)
    return manifest


def read_manifest(path: str) -> dict | None:
    """The manifest of the exported file ``path``; None when it has none; InputError when unreadable."""
    mpath = manifest_path(os.path.abspath(path))
    try:
        return read_json_document(mpath, MANIFEST_FORMAT)
    except (OSError, ValueError) as exc:
        raise InputError(f"{mpath} is not a readable ldb-hpc manifest ({exc})") from exc


@contextmanager
def _quiet_stdout():
    """Silence file descriptor 1 (mdtraj's DCD plugin prints notes there when it opens a file)."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def check_export(path: str, block_bytes: int = BLOCK_BYTES) -> tuple[str, str, dict]:
    """Check an exported file against its manifest: (state "complete" | "invalid", one-line message, info).

    Complete: the manifest is there; every file it lists has its recorded sha256 (nothing truncated or
    changed since it was written); mdtraj reads the trajectory back (streamed, except pdb/cif, which mdtraj
    reads whole; xtc/trr/dcd/nc with the topology PDB) with exactly the recorded rows and atoms and finite
    coordinates.
    """
    import mdtraj as md

    path = os.path.abspath(path)
    fmt = output_format(path, writing=False)
    manifest = read_manifest(path)
    if manifest is None:
        return "invalid", f"no manifest {os.path.basename(manifest_path(path))}: not written by ldb-hpc, or moved " \
                          "without it", {}
    folder = os.path.dirname(path)
    for name, digest in manifest["sha256"].items():
        file = os.path.join(folder, name)
        if not os.path.exists(file):
            return "invalid", f"{name} is missing (listed in the manifest)", {}
        if sha256_file(file) != digest:
            return "invalid", f"{name} differs from what was written (sha256): truncated or changed", {}
    top = os.path.join(folder, manifest["topology"]) if manifest["topology"] else None
    rows, atoms = int(manifest["rows"]), int(manifest["atoms"])
    try:
        with _quiet_stdout():
            n = 0
            # mdtraj reads PDB and mmCIF files whole (and cannot iterload mmCIF); the others streamed.
            chunks = ([md.load(path)] if fmt.topology else
                      md.iterload(path, chunk=max(1, block_bytes // max(1, atoms * 12)), top=top))
            for chunk in chunks:
                if chunk.n_atoms != atoms:
                    return "invalid", f"{chunk.n_atoms} atoms per frame, the manifest says {atoms}", {}
                if not np.isfinite(chunk.xyz).all():
                    return "invalid", f"non-finite coordinates in rows {n}..{n + chunk.n_frames - 1}", {}
                n += chunk.n_frames
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not usable
        return "invalid", f"mdtraj cannot read it back ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})", {}
    if n != rows:
        return "invalid", f"{n} frames read back, the manifest says {rows} rows", {}
    info = {"rows": rows, "atoms": atoms, "frames": manifest["frames"], "samples": manifest["samples"],
            "format": fmt.name, "topology": manifest["topology"]}
    return "complete", (f"{manifest['frames']} frames x {manifest['samples']} sample(s) = {rows} rows, {atoms} atoms "
                        f"({fmt.name}{', topology ' + manifest['topology'] if top else ''}), every file as written "
                        "(sha256), read back by mdtraj, finite coordinates"), info
