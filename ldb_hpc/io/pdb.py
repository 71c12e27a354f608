"""Writing PDB text and files: every PDB record ldb-hpc writes itself is laid out here.

A :class:`ldb_hpc.chem.protein.Protein` (atom14 slots, Å) as text or a file; a model with OXT and hydrogens
(``--hydrogens``); the rows of one topology through a :class:`PDBLayout` laid out once (the many-files backmap, the
standard output stream, the ``.pdb`` files and topology PDBs of ``ldb_hpc.io.export``, whose layout comes from the
all-atom file's topology: :meth:`PDBLayout.from_topology`). Records are built without coordinates first
(:func:`_records`) and filled per row, so no writer parses another's text. Reading PDB/mmCIF is ldb_hpc.io.structure;
a written file reads back to the same atoms to 1e-3 Å.

Every file carries its covalent bonds and box: an ``SSBOND`` record per disulfide in the header (its length measured
on the first model) and a ``CONECT`` record each way per SG–SG bond once after the last model (readers that know the
standard residues, mdtraj and OpenMM, add every other bond themselves); with a cell, ``CRYST1`` before the first
model and again before each model whose cell differs (as GROMACS writes a trajectory), none without a cell.
"""

from __future__ import annotations

import gzip
import os
from collections import OrderedDict

import numpy as np

from ldb_hpc.chem.hydrogens import Protonation, extra_mask
from ldb_hpc.chem.protein import Protein, Residues
from ldb_hpc.chem.residues import ATOM14, NUM_SLOTS, RESTYPES_3, SLOT_INDEX, SLOT_MASK
from ldb_hpc.errors import FormatLimitError, OutputError
from ldb_hpc.io.files import temp_name
from ldb_hpc.io.topology import chain_letter, output_disulfides

_SG = SLOT_INDEX[("CYS", "SG")]
_STANDARD = frozenset(RESTYPES_3[:20])


def _atom_field(name: str) -> str:
    # PDB convention: names shorter than 4 characters with a one-letter element start in column 14.
    return name if len(name) >= 4 else f" {name:<3}"


def cryst1(lengths, angles) -> str:
    """The CRYST1 record of a cell: lengths a, b, c in Å, angles α, β, γ in degrees (space group P 1, Z = 1)."""
    a, b, c = (float(x) for x in lengths)
    al, be, ga = (float(x) for x in angles)
    return f"CRYST1{a:9.3f}{b:9.3f}{c:9.3f}{al:7.2f}{be:7.2f}{ga:7.2f} P 1           1"


def _cryst1_rows(cell, n: int) -> list[str | None]:
    """The CRYST1 record of each of ``n`` rows; ``cell`` = (lengths [n, 3] Å, angles [n, 3] degrees) or None."""
    if cell is None:
        return [None] * n
    lengths, angles = (np.asarray(x, dtype=np.float64).reshape(-1, 3) for x in cell)
    if len(lengths) != n or len(angles) != n:
        raise ValueError(f"cell has {len(lengths)} lengths and {len(angles)} angles for {n} rows")
    return [cryst1(a, b) for a, b in zip(lengths, angles)]


def _ssbond(k: int, first: tuple, second: tuple, length: float) -> str:
    """SSBOND record ``k`` (1-based) between residues (chain ID, number, insertion code); symmetry 1555 1555."""
    (c1, r1, i1), (c2, r2, i2) = first, second
    return (f"SSBOND{k % 1000:4d} CYS{c1:>2}{r1:5d}{(i1 or ' ')[:1]}   CYS{c2:>2}{r2:5d}{(i2 or ' ')[:1]}"
            f"{'':23}  1555   1555 {length:5.2f}")


def protein_to_pdb_string(protein: Protein | list[Protein], cell=None) -> str:
    """PDB text of one Protein (or MODEL/ENDMDL blocks for a list); standard residue names.

    Only present atoms (mask True) are written, in atom14 slot order; positions in Å with 3 decimals;
    occupancy 1.00; B-factor from ``protein.bfactor`` when set; element from the atom name; a TER
    record after each chain; SSBOND/CONECT for ``residues.disulfides`` (of the first protein; ValueError when an
    SG is absent); cell: (lengths [M, 3] Å, angles [M, 3] degrees) of the M models, or None. Raises InputError
    when a field does not fit the PDB columns (resseq outside -999..9999, chain ID longer than 2 characters).
    """
    proteins = list(protein) if isinstance(protein, (list, tuple)) else [protein]
    first = proteins[0]
    serials: dict = {}
    records = [_records(p.residues, p.mask, _bfactor(p), ATOM14, serials=serials if m == 0 else None)
               for m, p in enumerate(proteins)]
    bonds = _residue_disulfides(first.residues, first.residues.disulfides, serials, NUM_SLOTS)
    header, conect = _ssbond_lines(bonds, first.positions.reshape(-1, 3)), _conect_lines(bonds)
    crysts = _cryst1_rows(cell, len(proteins))
    lines, last = header, None
    for m, (p, recs) in enumerate(zip(proteins, records)):
        if crysts[m] is not None and crysts[m] != last:
            lines.append(last := crysts[m])
        if len(proteins) > 1:
            lines.append(f"MODEL     {m + 1:4d}")
        lines.extend(_fill(recs, p.positions, p.mask))
        if len(proteins) > 1:
            lines.append("ENDMDL")
    return "\n".join(lines + conect + ["END"]) + "\n"


def _bfactor(prot: Protein) -> np.ndarray:
    return prot.bfactor if prot.bfactor is not None else np.zeros(prot.mask.shape, np.float32)


def hydrogen_pdb_string(residues, positions: np.ndarray, mask: np.ndarray, disulfides=(), cell=None) -> str:
    """PDB text of one model with OXT and hydrogens (``--hydrogens``): positions [L, 14 + NUM_EXTRA, 3] Å and mask
    [L, 14 + NUM_EXTRA] in the slots of ldb_hpc.chem.hydrogens (heavy atoms, then the extra atoms), written per
    residue in slot order — the atom order of ldb_hpc.io.topology.hydrogen_topology — with TER at every chain break
    too (each segment is a chain with its own termini, as in that topology), and SSBOND and CONECT records for each
    of the ``disulfides`` (residue index pairs, SG–SG); cell: (lengths [1, 3] Å, angles [1, 3] degrees) or None."""
    records, bonds = _hydrogen_records(residues, mask, disulfides)
    header, conect = _ssbond_lines(bonds, positions.reshape(-1, 3)), _conect_lines(bonds)
    cryst = [c for c in _cryst1_rows(cell, 1) if c is not None]
    return "\n".join(header + cryst + _fill(records, positions, mask) + conect + ["END"]) + "\n"


def _hydrogen_records(residues, mask: np.ndarray, disulfides) -> tuple[list, list]:
    """:func:`_records` of a model with OXT and hydrogens, and its disulfides (:func:`_residue_disulfides`)."""
    from ldb_hpc.chem.hydrogens import EXTRA_NAMES

    names = {res: tuple(ATOM14[res]) + ("",) * (NUM_SLOTS - len(ATOM14[res])) + tuple(EXTRA_NAMES[res])
             for res in RESTYPES_3}
    serials: dict = {}
    records = _records(residues, mask, np.zeros(mask.shape, np.float32), names, ter_at_breaks=True, serials=serials)
    return records, _residue_disulfides(residues, disulfides, serials, mask.shape[1])


def _residue_disulfides(res: Residues, pairs, serials: dict, slots: int) -> list[tuple]:
    """Each disulfide (i, j) of ``pairs`` as (label i, label j, flat index of SG i, of SG j in a row [L·slots],
    ATOM serial of SG i, of SG j); labels (chain ID, residue number, insertion code). ValueError when a residue is
    not a CYS or its SG is not written."""
    out = []
    for i, j in pairs:
        label = [(str(res.chain_id[k]), int(res.resseq[k]), str(res.icode[k] or "")) for k in (i, j)]
        if (i, _SG) not in serials or (j, _SG) not in serials or RESTYPES_3[res.restype[i]] != "CYS" \
                or RESTYPES_3[res.restype[j]] != "CYS":
            raise ValueError(f"disulfide {label[0]}–{label[1]}: not two CYS with their SG atoms written")
        out.append((*label, i * slots + _SG, j * slots + _SG, serials[(i, _SG)], serials[(j, _SG)]))
    return out


def _ssbond_lines(bonds: list[tuple], flat_xyz: np.ndarray) -> list[str]:
    """SSBOND lines of ``bonds`` (:func:`_residue_disulfides`), their lengths measured in ``flat_xyz`` [N, 3] Å."""
    xyz = np.asarray(flat_xyz, dtype=np.float64)
    return [_ssbond(k + 1, first, second, float(np.linalg.norm(xyz[a] - xyz[b])))
            for k, (first, second, a, b, _, _) in enumerate(bonds)]


def _conect_lines(bonds: list[tuple]) -> list[str]:
    """CONECT lines of ``bonds`` (:func:`_residue_disulfides`, or any tuples ending in two ATOM serials): each bond
    both ways."""
    return [line for *_, sa, sb in bonds for line in (f"CONECT{sa:5d}{sb:5d}", f"CONECT{sb:5d}{sa:5d}")]


def _check_fields(resseq, chain_ids) -> None:
    if len(resseq) and (min(resseq) < -999 or max(resseq) > 9999):
        raise FormatLimitError("residue numbers outside -999..9999 do not fit a PDB file")
    bad = sorted({c for c in chain_ids if len(c) > 2})
    if bad:
        raise FormatLimitError(f"chain IDs longer than 2 characters do not fit a PDB file: {', '.join(bad)}")


def _atom_record(serial: int, atom: str, head: str, bfac: float, element: str) -> tuple[str, str]:
    """An ATOM record without coordinates: columns 1–30 and 55–80; head = residue name, chain, number, icode."""
    return (f"ATOM  {serial % 100000:5d} {_atom_field(atom)} {head}   ",
            f"{1.0:6.2f}{bfac:6.2f}          {element:>2}  ")


def _records(res, mask: np.ndarray, bfac: np.ndarray, names: dict, ter_at_breaks: bool = False,
             serials: dict | None = None) -> list:
    """The records of the present slots (mask) of every residue, without coordinates: an ATOM record as its
    columns 1–30 and 55–80 (str, str), a TER record as its line. names[residue name][slot]; TER after each chain
    (and, with ter_at_breaks, after each segment); ``serials`` gets {(residue, slot): ATOM serial}."""
    _check_fields(res.resseq, res.chain_id)
    records: list = []
    serial = 0
    n = len(res)
    for i in range(n):
        std = RESTYPES_3[res.restype[i]]
        chain = res.chain_id[i]
        head = f"{std:>3}{chain:>2}{res.resseq[i]:4d}{(res.icode[i] or ' ')[:1]}"
        for s in np.flatnonzero(mask[i]):
            atom = names[std][s]
            serial += 1
            if serials is not None:
                serials[(i, int(s))] = serial % 100000
            records.append(_atom_record(serial, atom, head, float(bfac[i, s]), atom[0]))
        if i == n - 1 or res.chain_id[i + 1] != chain or (ter_at_breaks and res.segment[i + 1] != res.segment[i]):
            serial += 1
            records.append(f"TER   {serial % 100000:5d}      {head}")
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


def _topology_records(topology) -> tuple[list, list[tuple], list[tuple]]:
    """Records (:func:`_records`) of every atom of an ``mdtraj.Topology`` in its order, TER after each chain; its
    SG–SG bonds between CYS residues (:func:`_residue_disulfides`; flat indices are atom indices); and the ATOM
    serial pairs of its bonds to a residue that is not one of the 20 standard ones (UNK), which readers cannot
    infer (CONECT records, as mdtraj and OpenMM write them)."""
    chains = [(c, c.chain_id if getattr(c, "chain_id", None) else chain_letter(c.index)) for c in topology.chains]
    _check_fields([r.resSeq for r in topology.residues], [cid for _, cid in chains])
    records, serial, serials = [], 0, {}
    for chain, cid in chains:
        head = None
        for r in chain.residues:
            if len(r.name) > 3:
                raise FormatLimitError(f"residue name {r.name} is longer than the 3 characters of a PDB file")
            head = f"{r.name:>3}{cid:>2}{r.resSeq:4d} "
            for atom in r.atoms:
                serial += 1
                serials[atom.index] = serial % 100000
                element = atom.element.symbol.upper() if atom.element is not None else atom.name[:1]
                records.append(_atom_record(serial, atom.name, head, 0.0, element))
        if head is not None:
            serial += 1
            records.append(f"TER   {serial % 100000:5d}      {head}")
    bonds, other, ids = [], [], {c.index: cid for c, cid in chains}
    for a, b in topology.bonds:
        a, b = sorted((a, b), key=lambda x: x.index)
        if a.name == b.name == "SG" and a.residue.name == b.residue.name == "CYS":
            label = [(ids[x.residue.chain.index], x.residue.resSeq, "") for x in (a, b)]
            bonds.append((*label, a.index, b.index, serials[a.index], serials[b.index]))
        elif a.residue.name not in _STANDARD or b.residue.name not in _STANDARD:
            other.append((serials[a.index], serials[b.index]))
    return records, bonds, other


class PDBLayout:
    """The PDB text of rows of one topology, fast: the records (names, chain IDs, numbers, TER, SSBOND, CONECT) are
    laid out once, then each row's coordinates fill them with one %-format (the same 8.3f fields).

    residues: the L residues; every heavy atom of every residue is written, in atom14 slot order, and the SG–SG
    bonds of ``residues.disulfides``; with a ``protonation`` (``--hydrogens``) also OXT and the hydrogens (rows then
    have 14 + NUM_EXTRA slots per residue) and its disulfides (ldb_hpc.io.topology.output_disulfides).
    :meth:`from_topology` lays out the atoms of an ``mdtraj.Topology`` instead (rows [A, 3] per row).
    """

    def __init__(self, residues: Residues, protonation: Protonation | None = None):
        mask = SLOT_MASK[residues.restype]
        if protonation is None:
            serials: dict = {}
            records = _records(residues, mask, np.zeros(mask.shape, np.float32), ATOM14, serials=serials)
            bonds = _residue_disulfides(residues, residues.disulfides, serials, NUM_SLOTS)
        else:
            mask = np.concatenate([mask, extra_mask(residues.restype, residues.segment, protonation)], axis=1)
            records, bonds = _hydrogen_records(residues, mask, output_disulfides(residues, protonation))
        self._lay_out(records, bonds, (), np.flatnonzero(mask.reshape(-1)))

    @classmethod
    def from_topology(cls, topology) -> PDBLayout:
        """The layout of every atom of an ``mdtraj.Topology``, in its order: one chain per topology chain (its
        chain ID, else A, B, …), TER after each, SSBOND/CONECT for its SG–SG bonds between CYS residues, CONECT for
        its bonds to residues other than the 20 standard ones."""
        layout = cls.__new__(cls)
        layout._lay_out(*_topology_records(topology), np.arange(topology.n_atoms))
        return layout

    def _lay_out(self, records: list, bonds: list[tuple], other: list[tuple], atoms: np.ndarray) -> None:
        body = [f"{r[0].replace('%', '%%')}%8.3f%8.3f%8.3f{r[1].replace('%', '%%')}" if isinstance(r, tuple)
                else r.replace("%", "%%") for r in records]
        self.template = "\n".join(body) + "\n"
        self.bonds = bonds
        # CONECT records (disulfides, then bonds readers cannot infer) once, after the last model
        self.end = "".join(line + "\n" for line in _conect_lines(bonds) + _conect_lines(other)) + "END\n"
        self.atoms = atoms  # flat index (atom14 slot or atom) of each ATOM record, in order

    def header(self, row: np.ndarray) -> str:
        """The records before the first model: SSBOND, each length measured in ``row`` (one row, Å)."""
        return "".join(line + "\n" for line in _ssbond_lines(self.bonds, np.reshape(row, (-1, 3))))

    def models(self, rows: np.ndarray, cell=None, start: int = 0, multi: bool = True,
               cryst: str | None = None) -> tuple[str, str | None]:
        """The models of ``rows`` [R, ..., 3] Å (a row as the layout's: [L, K, 3] or [A, 3]), numbered from
        ``start + 1`` (MODEL/ENDMDL only when ``multi``); cell: (lengths [R, 3] Å, angles [R, 3] degrees) or None,
        a CRYST1 record before each row whose cell differs from the one written last (``cryst``). Returns (text,
        the CRYST1 record written last) so that a file can be written in blocks of rows."""
        flat = rows.reshape(rows.shape[0], -1, 3)[:, self.atoms]
        parts = []
        for r, (xyz, line) in enumerate(zip(flat, _cryst1_rows(cell, len(flat)))):
            if line is not None and line != cryst:
                parts.append(line + "\n")
                cryst = line
            if multi:
                parts.append(f"MODEL     {start + r + 1:4d}\n")
            parts.append(self.template % tuple(xyz.ravel().tolist()))
            if multi:
                parts.append("ENDMDL\n")
        return "".join(parts), cryst

    def text(self, rows: np.ndarray, cell=None) -> str:
        """PDB text of ``rows`` [R, ..., 3] Å (rows as the layout's): the model alone when R == 1, else one MODEL
        per row; cell: (lengths [R, 3] Å, angles [R, 3] degrees) or None (see :meth:`models`)."""
        return self.header(rows[0]) + self.models(rows, cell, multi=len(rows) > 1)[0] + self.end


class PDBStream:
    """Writes ``n_rows`` rows of one :class:`PDBLayout` to an open text stream ``fh`` in blocks (memory stays
    bounded): the header before the first row, one MODEL per row numbered on when ``n_rows`` > 1, a CRYST1 record
    where the cell changes, CONECT and END at :meth:`close`."""

    def __init__(self, fh, layout: PDBLayout, n_rows: int):
        self.fh, self.layout, self.n_rows = fh, layout, int(n_rows)
        self.written, self._cryst = 0, None

    def write(self, rows: np.ndarray, cell=None) -> None:
        """Rows [R, ..., 3] Å (as the layout's); cell: (lengths [R, 3] Å, angles [R, 3] degrees) or None."""
        if self.written == 0 and len(rows):
            self.fh.write(self.layout.header(rows[0]))
        text, self._cryst = self.layout.models(rows, cell, self.written, self.n_rows > 1, self._cryst)
        self.fh.write(text)
        self.written += len(rows)

    def close(self) -> None:
        """The records after the last model; ValueError when fewer or more than ``n_rows`` rows were written."""
        if self.written != self.n_rows:
            raise ValueError(f"{self.written} rows written of {self.n_rows}")
        self.fh.write(self.layout.end)


_LAYOUTS: OrderedDict = OrderedDict()  # recent topologies → their PDBLayout, or None when seen once
_KEEP = 64


def pdb_text(residues: Residues, positions: np.ndarray, protonation: Protonation | None = None, cell=None) -> str:
    """PDB text of the rows ``positions`` [F, S, L, 14, 3] Å (row = frame·S + sample; one MODEL per row when
    there are several), every heavy atom of every residue, the input's chain IDs and residue numbers, SSBOND and
    CONECT for ``residues.disulfides``: the text of :func:`protein_to_pdb_string`. With a ``protonation``, positions
    have 14 + NUM_EXTRA slots and OXT and the hydrogens are written too (:func:`hydrogen_pdb_string`). cell: the F
    frames' (lengths [F, 3] Å, angles [F, 3] degrees), CRYST1 records; None: none. A topology met again (the files
    of one protein), or written with several rows or hydrogens, goes through a :class:`PDBLayout` (the most recent
    64 are kept)."""
    rows = positions.reshape(-1, *positions.shape[-3:])
    if cell is not None:
        samples = rows.shape[0] // positions.shape[0] if positions.ndim == 5 else 1
        cell = tuple(np.repeat(np.asarray(x, np.float64).reshape(-1, 3), samples, axis=0) for x in cell)
    key = (residues.restype.tobytes(), residues.segment.tobytes(), residues.resseq.tobytes(),
           tuple(residues.chain_id), tuple(residues.icode), residues.disulfides, protonation)
    seen = key in _LAYOUTS
    layout = _LAYOUTS.pop(key, None)
    if protonation is not None:
        layout = layout or PDBLayout(residues, protonation)
        text = layout.text(rows, cell)
    elif not seen and len(rows) == 1:
        text = protein_to_pdb_string(Protein(residues, rows[0], SLOT_MASK[residues.restype]), cell)
    else:
        layout = layout or PDBLayout(residues)
        text = layout.text(rows, cell)
    _LAYOUTS[key] = layout
    while len(_LAYOUTS) > _KEEP:
        _LAYOUTS.popitem(last=False)
    return text


def write_pdb(protein: Protein | list[Protein], path, cell=None) -> None:
    """Write a Protein (or a list as models) to a PDB file (``.gz`` → gzipped), via a temp name + rename;
    cell: (lengths [M, 3] Å, angles [M, 3] degrees) of the M models, or None (no CRYST1).

    Reading the file back with :func:`read_structure` gives the same atoms to 1e-3 Å (the PDB
    coordinate precision). Raises OutputError when the file cannot be written.
    """
    path = os.fspath(path)
    text = protein_to_pdb_string(protein, cell)
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
