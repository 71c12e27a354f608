"""Writing PDB text and files: every PDB record ldb-hpc writes itself is laid out here.

A :class:`ldb_hpc.chem.protein.Protein` (atom14 slots, Å) as text or a file; a model with OXT and hydrogens
(``--hydrogens``); the rows of one topology through a :class:`PDBLayout` laid out once (the many-files backmap).
Records are built without coordinates first (:func:`_records`) and filled per row, so no writer parses another's
text. Reading PDB/mmCIF is ldb_hpc.io.structure; a written file reads back to the same atoms to 1e-3 Å. (``ldb-hpc
export`` writes PDB through mdtraj's writer: ldb_hpc.io.export.)
"""

from __future__ import annotations

import gzip
import os
from collections import OrderedDict

import numpy as np

from ldb_hpc.chem.hydrogens import Protonation, extra_mask
from ldb_hpc.chem.protein import Protein, Residues
from ldb_hpc.chem.residues import ATOM14, NUM_SLOTS, RESTYPES_3, SLOT_MASK
from ldb_hpc.errors import FormatLimitError, OutputError
from ldb_hpc.io.files import temp_name


def _atom_field(name: str) -> str:
    # PDB convention: names shorter than 4 characters with a one-letter element start in column 14.
    return name if len(name) >= 4 else f" {name:<3}"


def protein_to_pdb_string(protein: Protein | list[Protein]) -> str:
    """PDB text of one Protein (or MODEL/ENDMDL blocks for a list); standard residue names.

    Only present atoms (mask True) are written, in atom14 slot order; positions in Å with 3 decimals;
    occupancy 1.00; B-factor from ``protein.bfactor`` when set; element from the atom name; a TER
    record after each chain. Raises InputError when a field does not fit the PDB columns
    (resseq outside -999..9999, chain ID longer than 2 characters).
    """
    proteins = protein if isinstance(protein, (list, tuple)) else [protein]
    lines: list[str] = []
    for m, prot in enumerate(proteins):
        if len(proteins) > 1:
            lines.append(f"MODEL     {m + 1:4d}")
        lines.extend(_atom_lines(prot))
        if len(proteins) > 1:
            lines.append("ENDMDL")
    lines.append("END")
    return "\n".join(lines) + "\n"


def hydrogen_pdb_string(residues, positions: np.ndarray, mask: np.ndarray, disulfides=()) -> str:
    """PDB text of one model with OXT and hydrogens (``--hydrogens``): positions [L, 14 + NUM_EXTRA, 3] Å and mask
    [L, 14 + NUM_EXTRA] in the slots of ldb_hpc.chem.hydrogens (heavy atoms, then the extra atoms), written per
    residue in slot order — the atom order of ldb_hpc.io.topology.hydrogen_topology — with TER at every chain break
    too (each segment is a chain with its own termini, as in that topology), and a CONECT record for each of the
    ``disulfides`` (residue index pairs, SG–SG)."""
    records, conect = _hydrogen_records(residues, mask, disulfides)
    return "\n".join(_fill(records, positions, mask) + conect + ["END"]) + "\n"


def _hydrogen_records(residues, mask: np.ndarray, disulfides) -> tuple[list, list[str]]:
    """:func:`_records` of a model with OXT and hydrogens, and its CONECT lines (disulfides)."""
    from ldb_hpc.chem.hydrogens import EXTRA_NAMES
    from ldb_hpc.chem.residues import SLOT_INDEX

    names = {res: tuple(ATOM14[res]) + ("",) * (NUM_SLOTS - len(ATOM14[res])) + tuple(EXTRA_NAMES[res])
             for res in RESTYPES_3}
    serials: dict = {}
    records = _records(residues, mask, np.zeros(mask.shape, np.float32), names, ter_at_breaks=True, serials=serials)
    sg = SLOT_INDEX[("CYS", "SG")]
    conect = []
    for i, j in disulfides:
        a, b = serials[(i, sg)], serials[(j, sg)]
        conect += [f"CONECT{a:5d}{b:5d}", f"CONECT{b:5d}{a:5d}"]
    return records, conect


def _atom_lines(prot: Protein) -> list[str]:
    bfac = prot.bfactor if prot.bfactor is not None else np.zeros(prot.mask.shape, np.float32)
    return _fill(_records(prot.residues, prot.mask, bfac, ATOM14), prot.positions, prot.mask)


def _records(res, mask: np.ndarray, bfac: np.ndarray, names: dict, ter_at_breaks: bool = False,
             serials: dict | None = None) -> list:
    """The records of the present slots (mask) of every residue, without coordinates: an ATOM record as its
    columns 1–30 and 55–80 (str, str), a TER record as its line. names[residue name][slot]; TER after each chain
    (and, with ter_at_breaks, after each segment); ``serials`` gets {(residue, slot): ATOM serial}."""
    if len(res) and (res.resseq.min() < -999 or res.resseq.max() > 9999):
        raise FormatLimitError("residue numbers outside -999..9999 do not fit a PDB file")
    bad = sorted({c for c in res.chain_id if len(c) > 2})
    if bad:
        raise FormatLimitError(f"chain IDs longer than 2 characters do not fit a PDB file: {', '.join(bad)}")
    records: list = []
    serial = 0
    n = len(res)
    for i in range(n):
        std = RESTYPES_3[res.restype[i]]
        chain = res.chain_id[i]
        cfield = f"{chain:>2}"
        head = f"{std:>3}{cfield}{res.resseq[i]:4d}{(res.icode[i] or ' ')[:1]}"
        for s in np.flatnonzero(mask[i]):
            atom = names[std][s]
            serial += 1
            if serials is not None:
                serials[(i, int(s))] = serial % 100000
            records.append((f"ATOM  {serial % 100000:5d} {_atom_field(atom)} {head}   ",
                            f"{1.0:6.2f}{float(bfac[i, s]):6.2f}          {atom[0]:>2}  "))
        if i == n - 1 or res.chain_id[i + 1] != chain or (ter_at_breaks and res.segment[i + 1] != res.segment[i]):
            serial += 1
            records.append(f"TER   {serial % 100000:5d}      {std:>3}{cfield}{res.resseq[i]:4d}"
                           f"{(res.icode[i] or ' ')[:1]}")
    return records


def _fill(records: list, positions: np.ndarray, mask: np.ndarray) -> list[str]:
    """The lines of :func:`_records` with the coordinates of the present slots, positions [L, K, 3] Å."""
    xyz = iter(positions[mask])
    lines = []
    for rec in records:
        if isinstance(rec, tuple):
            x, y, z = next(xyz)
            rec = f"{rec[0]}{x:8.3f}{y:8.3f}{z:8.3f}{rec[1]}"
        lines.append(rec)
    return lines


class PDBLayout:
    """The PDB text of rows of one topology, fast: the records (names, chain IDs, numbers, TER) are laid out
    once, then each row's coordinates fill them with one %-format (the same 8.3f fields).

    residues: the L residues; every heavy atom of every residue is written, in atom14 slot order; with a
    ``protonation`` (``--hydrogens``) also OXT and the hydrogens (rows then have 14 + NUM_EXTRA slots per residue).
    """

    def __init__(self, residues: Residues, protonation: Protonation | None = None):
        mask = SLOT_MASK[residues.restype]
        if protonation is None:
            records, conect = _records(residues, mask, np.zeros(mask.shape, np.float32), ATOM14), []
        else:
            mask = np.concatenate([mask, extra_mask(residues.restype, residues.segment, protonation)], axis=1)
            records, conect = _hydrogen_records(residues, mask, protonation.disulfides)
        body = [f"{r[0].replace('%', '%%')}%8.3f%8.3f%8.3f{r[1].replace('%', '%%')}" if isinstance(r, tuple)
                else r.replace("%", "%%") for r in records]
        self.template = "\n".join(body) + "\n"
        # CONECT records (disulfides) once, after the last model
        self.end = "".join(line + "\n" for line in conect) + "END\n"
        self.atoms = np.flatnonzero(mask.reshape(-1))  # flat atom14 index of each ATOM record, in order

    def text(self, rows: np.ndarray) -> str:
        """PDB text of ``rows`` [R, L, K, 3] Å (K slots per residue, as the layout's): the model alone when R == 1,
        else one MODEL per row."""
        flat = rows.reshape(rows.shape[0], -1, 3)[:, self.atoms]
        if len(flat) == 1:
            return self.template % tuple(flat[0].ravel().tolist()) + self.end
        parts = []
        for r, xyz in enumerate(flat):
            parts += [f"MODEL     {r + 1:4d}\n", self.template % tuple(xyz.ravel().tolist()), "ENDMDL\n"]
        return "".join(parts) + self.end


_LAYOUTS: OrderedDict = OrderedDict()  # recent topologies → their PDBLayout, or None when seen once
_KEEP = 64


def pdb_text(residues: Residues, positions: np.ndarray, protonation: Protonation | None = None) -> str:
    """PDB text of the rows ``positions`` [F, S, L, 14, 3] Å (row = frame·S + sample; one MODEL per row when
    there are several), every heavy atom of every residue, the input's chain IDs and residue numbers: the text
    of :func:`protein_to_pdb_string`. With a ``protonation``, positions have 14 + NUM_EXTRA slots and OXT and the
    hydrogens are written too (:func:`hydrogen_pdb_string`). A topology met again (the files of one protein), or
    written with several rows or hydrogens, goes through a :class:`PDBLayout` (the most recent 64 are kept)."""
    rows = positions.reshape(-1, *positions.shape[-3:])
    key = (residues.restype.tobytes(), residues.segment.tobytes(), residues.resseq.tobytes(),
           tuple(residues.chain_id), tuple(residues.icode),
           protonation)
    seen = key in _LAYOUTS
    layout = _LAYOUTS.pop(key, None)
    if protonation is not None:
        layout = layout or PDBLayout(residues, protonation)
        text = layout.text(rows)
    elif not seen and len(rows) == 1:
        text = protein_to_pdb_string(Protein(residues, rows[0], SLOT_MASK[residues.restype]))
    else:
        layout = layout or PDBLayout(residues)
        text = layout.text(rows)
    _LAYOUTS[key] = layout
    while len(_LAYOUTS) > _KEEP:
        _LAYOUTS.popitem(last=False)
    return text


def write_pdb(protein: Protein | list[Protein], path) -> None:
    """Write a Protein (or a list as models) to a PDB file (``.gz`` → gzipped), via a temp name + rename.

    Reading the file back with :func:`read_structure` gives the same atoms to 1e-3 Å (the PDB
    coordinate precision). Raises OutputError when the file cannot be written.
    """
    path = os.fspath(path)
    text = protein_to_pdb_string(protein)
    tmp = temp_name(os.path.abspath(path))
    try:
        if path.lower().endswith(".gz"):
            with gzip.open(tmp, "wt") as fh:
                fh.write(text)
        else:
            with open(tmp, "w") as fh:
                fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
