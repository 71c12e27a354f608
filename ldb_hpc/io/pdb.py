"""Writing :class:`ldb_hpc.chem.protein.Protein` (atom14 slots, Å) as PDB text or files.

Reading PDB/mmCIF is ldb_hpc.io.structure; a written file reads back to the same atoms to 1e-3 Å.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from ldb_hpc.chem.protein import Protein
from ldb_hpc.chem.residues import ATOM14, NUM_SLOTS, RESTYPES_3
from ldb_hpc.errors import InputError, OutputError
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
    from ldb_hpc.chem.hydrogens import EXTRA_NAMES
    from ldb_hpc.chem.residues import SLOT_INDEX

    names = {res: tuple(ATOM14[res]) + ("",) * (NUM_SLOTS - len(ATOM14[res])) + tuple(EXTRA_NAMES[res])
             for res in RESTYPES_3}
    bfac = np.zeros(mask.shape, np.float32)
    serials: dict = {}
    lines = _records(residues, positions, mask, bfac, names, ter_at_breaks=True, serials=serials)
    sg = SLOT_INDEX[("CYS", "SG")]
    for i, j in disulfides:
        a, b = serials[(i, sg)], serials[(j, sg)]
        lines += [f"CONECT{a:5d}{b:5d}", f"CONECT{b:5d}{a:5d}"]
    return "\n".join(lines + ["END"]) + "\n"


def _atom_lines(prot: Protein) -> list[str]:
    bfac = prot.bfactor if prot.bfactor is not None else np.zeros(prot.mask.shape, np.float32)
    return _records(prot.residues, prot.positions, prot.mask, bfac, ATOM14)


def _records(res, positions: np.ndarray, mask: np.ndarray, bfac: np.ndarray, names: dict,
             ter_at_breaks: bool = False, serials: dict | None = None) -> list[str]:
    """ATOM and TER records of the present slots (mask) of every residue; names[residue name][slot]; TER after
    each chain (and, with ter_at_breaks, after each segment); ``serials`` gets {(residue, slot): ATOM serial}."""
    if len(res) and (res.resseq.min() < -999 or res.resseq.max() > 9999):
        raise InputError("residue numbers outside -999..9999 do not fit a PDB file")
    bad = sorted({c for c in res.chain_id if len(c) > 2})
    if bad:
        raise InputError(f"chain IDs longer than 2 characters do not fit a PDB file: {', '.join(bad)}")
    lines: list[str] = []
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
            x, y, z = positions[i, s]
            lines.append(f"ATOM  {serial % 100000:5d} {_atom_field(atom)} {head}   "
                         f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{float(bfac[i, s]):6.2f}          "
                         f"{atom[0]:>2}  ")
        if i == n - 1 or res.chain_id[i + 1] != chain or (ter_at_breaks and res.segment[i + 1] != res.segment[i]):
            serial += 1
            lines.append(f"TER   {serial % 100000:5d}      {std:>3}{cfield}{res.resseq[i]:4d}"
                         f"{(res.icode[i] or ' ')[:1]}")
    return lines


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
