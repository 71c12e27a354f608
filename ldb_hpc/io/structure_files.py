"""Many structure files in, one structure file out each: ``ldb-hpc backmap a.pdb b.cif 'snap/*.pdb' -o out/``.

- :func:`expand_inputs`: the command line's inputs as files, in order: a quoted glob is expanded here (sorted;
  ``**`` recurses), a folder stands for its PDB/mmCIF files, ``-`` is standard input; a glob or folder that
  names no file, and a file named twice, are reported, never dropped silently.
- :func:`read_ca_frames` / :func:`read_ca_stream`: the CA trace of every MODEL of a PDB or mmCIF file (plain or
  gzipped; CA-only or all-atom, then reduced to CA), models as frames, through ``ldb_hpc.io.structure`` (gemmi).
  Every residue needs a CA atom and every model the same residues; water and ligands are skipped and counted.
- :func:`output_path`, :func:`write_rows`: the all-atom rows of one input as a PDB file (one MODEL per row, the
  input's chain IDs, residue numbers and insertion codes: ``ldb_hpc.io.pdb.pdb_text``, importable from here too) or
  an MDTraj-HDF5 file (``ldb_hpc.io.aa``), written under a temporary name and renamed when complete.

Positions are Å. Nothing here knows about ranks or models; the runtime (``ldb_hpc.runtime.batch``) batches the
frames and hands the rows back.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from ldb_hpc.chem.hydrogens import Protonation
from ldb_hpc.chem.protein import Residues
from ldb_hpc.errors import InputError
from ldb_hpc.io.cg import check_coordinates
from ldb_hpc.io.files import check_output_location, replaced_when_done
from ldb_hpc.io.paths import STRUCTURE_EXTENSIONS, Expanded, expand_one, extension
from ldb_hpc.io.pdb import PDBLayout, pdb_text
from ldb_hpc.io.structure import SKIP_NO_CA, read_structure_with_report

STDIN = "-"
OUTPUT_FORMATS = ("pdb", "h5")  # --format of the many-files mode; h5 converts further with `ldb-hpc export`


@dataclass
class InputFile:
    """One input of the command line: ``path`` (a file, or ``-``); ``problem`` says why there is no file to read
    (a failure), ``note`` why it is not read although nothing failed (a file named twice)."""

    path: str
    problem: str | None = None
    note: str | None = None


def expand_inputs(args: list[str]) -> list[InputFile]:
    """The files that ``args`` name, in command-line order.

    A glob (``*``, ``?``, ``[``; ``**`` recurses) is expanded in sorted order to the files it matches (hidden
    files only when the pattern says so, as the shell does); a folder stands for the PDB/mmCIF files directly
    in it (by extension: .pdb .ent .cif .mmcif, optionally .gz); ``-`` is standard input. A glob or folder
    that gives no file becomes an :class:`InputFile` with a ``problem``; a file named a second time (by its
    real path) one with a ``note``. Files are not opened here (ldb_hpc.io.paths.expand, ``recursive=False``).
    """
    out: list[InputFile] = []
    seen: dict[str, str] = {}
    for arg in args:
        item = Expanded(arg, "stdin", [arg]) if arg == STDIN else expand_one(arg, recursive=False)
        if item.kind == "folder" and not item.paths:
            out.append(InputFile(arg, f"no PDB/mmCIF file ({', '.join(STRUCTURE_EXTENSIONS)}) in folder {arg}"))
        elif item.kind == "glob" and not item.paths:
            out.append(InputFile(arg, f"no file matches {arg!r}"))
        for path in item.paths:
            key = path if path == STDIN else os.path.realpath(path)
            if key in seen:
                out.append(InputFile(path, note=f"named twice (also as {seen[key]}); backmapped once"))
                continue
            seen[key] = path
            out.append(InputFile(path))
    return out


def output_path(path: str, outdir: str, fmt: str) -> str:
    """``outdir/STEM.aa.FMT`` for input ``path`` (``x.pdb``, ``x.cif.gz`` → STEM ``x``)."""
    base = os.path.basename(path)
    ext = extension(base)
    stem = base[: len(base) - len(ext)] if ext and len(ext) < len(base) else base
    return os.path.join(outdir, f"{stem}.aa.{fmt}")


@dataclass
class CAFrames:
    """The CA trace of one structure file.

    path: the file as named (``-`` for standard input); residues: the L residues (segments from model 1);
    ca: [F, L, 3] float32 Å, one frame per MODEL in file order; note: what was skipped ("" when nothing);
    cell: the file's unit cell per frame (lengths [F, 3] Å, angles [F, 3] degrees; CRYST1 or ``_cell``), or None.
    """

    path: str
    residues: Residues
    ca: np.ndarray
    note: str = ""
    cell: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def n_frames(self) -> int:
        return int(self.ca.shape[0])


def _same_residues(a: Residues, b: Residues) -> bool:
    return (len(a) == len(b) and np.array_equal(a.restype, b.restype) and np.array_equal(a.resseq, b.resseq)
            and list(a.chain_id) == list(b.chain_id) and list(a.icode) == list(b.icode))


def read_ca_frames(path: str, residue_map: dict[str, str] | None = None, name: str | None = None) -> CAFrames:
    """Read the CA trace of every model of the PDB/mmCIF file ``path`` (see the module docstring).

    residue_map: {OLD: NEW} residue renames (``--map-residue``); name: how messages name the file (default
    ``path``). Returns :class:`CAFrames`. Raises InputError naming the file when it cannot be read or parsed,
    holds no protein, has a residue without CA, models with different residues, or absurd coordinates.
    """
    name = name or path
    proteins, report = read_structure_with_report(path, models="all", residue_map=residue_map)
    no_ca = report.residues_skipped.get(SKIP_NO_CA, 0)
    if no_ca:
        raise InputError(f"{name}: {no_ca} residue(s) without a CA atom; a CA trace needs one CA per residue")
    if len(proteins) != report.models_read:
        raise InputError(f"{name}: {report.models_read - len(proteins)} of its {report.models_read} models hold no "
                         "protein residues")
    first = proteins[0].residues
    for k, p in enumerate(proteins[1:], start=2):
        if not _same_residues(first, p.residues):
            raise InputError(f"{name}: model {k} has other residues than model 1 ({len(p)} vs {len(first)}); "
                             "every model of a file is a frame of the same protein")
    ca = np.ascontiguousarray(np.stack([p.positions[:, 1] for p in proteins]), dtype=np.float32)
    check_coordinates(ca, 0, name)
    skipped = report.residues_ignored
    note = ""
    if skipped:
        note = f"{sum(skipped.values())} non-protein residue(s) skipped (" + ", ".join(
            f"{k}×{v}" for k, v in skipped.most_common()) + ")"
    cell = None
    if report.cell is not None:
        cell = (np.tile(np.asarray(report.cell[:3], np.float64), (len(ca), 1)),
                np.tile(np.asarray(report.cell[3:], np.float64), (len(ca), 1)))
    return CAFrames(path, first, ca, note, cell)


def read_ca_stream(data: bytes, residue_map: dict[str, str] | None = None, name: str = STDIN) -> CAFrames:
    """:func:`read_ca_frames` of PDB or mmCIF text (e.g. standard input), named ``name`` in messages."""
    if not data.strip():
        raise InputError(f"{name}: no input (standard input is empty)")
    with tempfile.TemporaryDirectory(prefix="ldb-hpc-stdin-") as tmp:
        path = os.path.join(tmp, "stdin.cif" if data.lstrip()[:5].lower() == b"data_" else "stdin.pdb")
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            frames = read_ca_frames(path, residue_map, name=name)
        except InputError as exc:
            raise InputError(str(exc).replace(path, "standard input")) from None
    frames.path = name
    return frames


def write_rows(path: str, fmt: str, residues: Residues, positions: np.ndarray, provenance: dict | None = None,
               overwrite: bool = False, protonation: Protonation | None = None, cell=None) -> None:
    """Write the rows of one input, ``positions`` [F, S, L, 14, 3] Å, to ``path`` as ``fmt`` ("pdb" or "h5");
    with a ``protonation`` (``--hydrogens``) positions have 14 + NUM_EXTRA slots and OXT and hydrogens are written.
    Disulfides: ``residues.disulfides`` (or the protonation's) as bonds. cell: the input's per frame (lengths [F, 3]
    Å, angles [F, 3] degrees, as :class:`CAFrames` has it), or None for none.

    pdb: one MODEL per row (see :func:`pdb_text`; CRYST1 from ``cell``); h5: an all-atom MDTraj-HDF5 file with
    ``/ldb`` provenance (``provenance`` attributes, ``cg_frame``, ``sample``), the cell per row, time = frame index.
    Written under a temporary name
    and renamed when complete. OutputError when ``path`` exists without ``overwrite`` or cannot be written;
    InputError when a field does not fit the format (e.g. a chain ID of 3 characters in PDB).
    """
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    check_output_location(path, overwrite)
    if fmt == "pdb":
        text = pdb_text(residues, positions, protonation, cell)
        with replaced_when_done(os.path.abspath(path)) as tmp:
            with open(tmp, "w") as fh:
                fh.write(text)
        return
    from ldb_hpc.io.aa import AllAtomWriter

    n_frames, samples = positions.shape[:2]
    lengths, angles = (None, None) if cell is None else cell
    with AllAtomWriter(path, residues, n_frames, samples, provenance, has_cell=cell is not None, overwrite=overwrite,
                       protonation=protonation) as writer:
        writer.write(0, positions, np.arange(n_frames, dtype=np.float64), lengths,
                     None if angles is None else np.deg2rad(np.asarray(angles, np.float64)))


__all__ = ["CAFrames", "InputFile", "OUTPUT_FORMATS", "PDBLayout", "STDIN", "expand_inputs", "output_path",
           "pdb_text", "read_ca_frames", "read_ca_stream", "write_rows"]
