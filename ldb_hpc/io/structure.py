"""Reading PDB / mmCIF structures into :class:`ldb_hpc.chem.protein.Protein` in atom14 slots (positions in Å).

Reading goes through gemmi. PDB files are read with ``max_line_length=72``: some files in the wild
(dozens in the training set) carry the legacy entry ID + serial in columns 73–80 where strict readers
expect the element and charge; heavy protein atoms are identified by name, never by element, so
nothing is lost by ignoring those columns (the segment ID in 73–76 is not used as a chain either).

What the reader does with each thing it meets (everything is counted in a :class:`ParseReport`):

- models: ``"first"`` (default), ``"all"`` or a 0-based index into the models in file order
  (MODEL serial numbers are not used: some files start at MODEL 0);
- alternate conformers: per residue number the first altloc letter met is kept with the atoms
  without altloc; the other letters' atoms are dropped (counted), and so is a whole residue made
  only of them (the second residue of point-mutation microheterogeneity; counted as ignored).
  Consecutive residues with the same number but no altlocs are kept as distinct residues
  (gemmi's ``remove_alternative_conformations`` would drop them: Rosetta files with stripped
  insertion codes have such residues);
- residue and atom names follow ldb_hpc.io.naming (HSD→HIS, CYX→CYS, MSE→MET, ..., ILE CD→CD1, OT1→O,
  OT2→OXT, MSE SE→SD); ``residue_map`` applies to names as written, UNK keeps its atom names but OT1/OT2;
- hydrogens and deuteriums are dropped (counted), OXT is ignored (no atom14 slot; counted),
  any other atom without an atom14 slot in its residue is ignored and counted as non-standard;
- water, ligands and nucleic acids are ignored (counted per kind);
- amino-acid-like residues with names outside the vocabulary: ``residue_map`` OLD→NEW first, else
  UNK with backbone atoms only when ``keep_unknown``, else :class:`InputError` naming them;
- a residue without a CA atom is skipped (counted as "no CA atom"): the coarse-grained model has one
  bead per residue at CA, so such a residue can neither be coarse-grained nor rebuilt. A chain
  break is forced where it was, so no peptide bond is assumed across the gap;
- missing heavy atoms stay masked (``mask`` False, position 0); chain breaks (new segments) are at
  chain changes and at consecutive CA–CA > 4.2 Å (:func:`segments_from_ca`).

Writing PDB files is ldb_hpc.io.pdb.
"""

from __future__ import annotations

import gzip
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ldb_hpc.chem.protein import Protein, Residues, segments_from_ca
from ldb_hpc.chem.residues import ATOM14, NUM_SLOTS, RESTYPE_INDEX, RESTYPES_3
from ldb_hpc.errors import InputError
from ldb_hpc.io import naming
from ldb_hpc.io.files import check_readable
from ldb_hpc.io.paths import CIF_EXTENSIONS, STRUCTURE_EXTENSIONS

# Reasons used as keys in ParseReport counters (kept short: they appear in summary tables).
SKIP_NO_CA = "no CA atom"
ATOM_HYDROGEN = "hydrogen"
ATOM_OXT = naming.OXT
ATOM_ALTLOC = "alternate conformer"
ATOM_NONSTANDARD = naming.NONSTANDARD
ATOM_UNK_SIDECHAIN = naming.UNK_SIDE_CHAIN
ATOM_DUPLICATE = naming.DUPLICATE
RES_ALTERNATIVE = "alternate conformer"


@dataclass
class ParseReport:
    """What one file contributed and what was left out, with reasons (counts).

    path:               the file
    n_models:           models in the file
    models_read:        models returned
    chains:             chains with at least one kept residue (summed over models read)
    segments:           segments (chain pieces between breaks), summed over models read
    residues:           residues kept (summed over models read)
    residues_skipped:   reason → count of amino-acid residues that were not kept
    residues_ignored:   kind → count of non-protein residues (water, ligand, nucleic acid)
    unknown_as_unk:     residue name → count kept as UNK (keep_unknown)
    mapped:             residue name → count mapped through ``residue_map``
    atoms_ignored:      reason → count of atoms of kept residues that have no atom14 slot
    atoms_missing:      heavy-atom slots of kept residues absent from the file (masked)
    cell:               the file's unit cell (a, b, c in Å, α, β, γ in degrees; CRYST1 or _cell), None when it has
                        none or gemmi's placeholder (1 Å cube); the space group is not kept
    """

    path: str = ""
    n_models: int = 0
    models_read: int = 0
    chains: int = 0
    segments: int = 0
    residues: int = 0
    residues_skipped: Counter = field(default_factory=Counter)
    residues_ignored: Counter = field(default_factory=Counter)
    unknown_as_unk: Counter = field(default_factory=Counter)
    mapped: Counter = field(default_factory=Counter)
    atoms_ignored: Counter = field(default_factory=Counter)
    atoms_missing: int = 0
    cell: tuple[float, float, float, float, float, float] | None = None

    def merge(self, other: "ParseReport") -> None:
        """Add ``other``'s counts to this report (for totals over many files)."""
        for name in ("n_models", "models_read", "chains", "segments", "residues", "atoms_missing"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("residues_skipped", "residues_ignored", "unknown_as_unk", "mapped", "atoms_ignored"):
            getattr(self, name).update(getattr(other, name))


# ----------------------------------------------------------------------------------------------------
# Reading


def _has_ext(path: str, exts) -> bool:
    low = path.lower()
    return any(low.endswith(e) for e in exts)


def _read_gemmi(path: str):
    """gemmi.Structure of a PDB or mmCIF file (plain or gzipped); InputError when it cannot be read."""
    import gemmi

    check_readable(path, "structure")
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as fh:
                text = fh.read()
        else:
            with open(path, "rb") as fh:
                text = fh.read()
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if b"\x00" in text[:65536]:
        raise InputError(f"cannot read {path}: binary data, not a PDB or mmCIF file")
    text = text.decode("latin-1")
    # Decide by content, not only by name: an mmCIF file starts with a data_ block.
    stripped = text.lstrip()
    is_cif = _has_ext(path, CIF_EXTENSIONS) or stripped[:5].lower() == "data_"
    try:
        if is_cif:
            st = gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
        else:
            st = gemmi.read_pdb_string(text, max_line_length=72)
    except Exception as exc:  # noqa: BLE001 - gemmi raises RuntimeError/ValueError/IndexError on bad input
        msg = " ".join(str(exc).split())[:200]
        raise InputError(f"cannot parse {path} as {'mmCIF' if is_cif else 'PDB'}: {msg}") from None
    return st


def _is_hydrogen(atom, name: str) -> bool:
    if atom.is_hydrogen():
        return True
    # Elements may be inferred (columns 77-78 ignored); Rosetta/CHARMM names like 1HB, HD11, DG.
    return name.lstrip("0123456789")[:1] in ("H", "D")


def _aa_like(res, info) -> bool:
    """True for a residue that is an amino acid by the CCD table or has a peptide backbone by names."""
    if info is not None and info.is_amino_acid():
        return True
    names = {a.name.strip().upper() for a in res}
    return "CA" in names and ("N" in names or "C" in names or res.het_flag == "A")


def _guess_parent(res) -> str:
    """Standard residue whose atom14 names best match this residue's heavy atoms (for hints only)."""
    names = {a.name.strip().upper() for a in res}
    best, best_score = "ALA", (-1, 0)
    for std in RESTYPES_3[:-1]:
        atoms = set(ATOM14[std])
        score = (len(atoms & names), -len(atoms - names))
        if score > best_score:
            best, best_score = std, score
    return best


def _new_piece():
    """Empty atom14 buffers of one residue: positions [14, 3] Å, mask [14], B-factors [14]."""
    return np.zeros((NUM_SLOTS, 3), np.float32), np.zeros(NUM_SLOTS, bool), np.zeros(NUM_SLOTS, np.float32)


def _select_models(st, models, path: str):
    n = len(st)
    if models == "first":
        return [0]
    if models == "all":
        return list(range(n))
    if isinstance(models, (int, np.integer)) and not isinstance(models, bool):
        if not 0 <= int(models) < n:
            raise InputError(f"{path} has {n} model(s); model index {models} is out of range (0-based)")
        return [int(models)]
    raise ValueError(f"models must be 'first', 'all' or a 0-based int, got {models!r}")


def _model_to_protein(model, label: str, residue_map: dict[str, str], keep_unknown: bool,
                      report: ParseReport, unknown: dict[str, str]):
    """One gemmi Model → Protein (or None when it has no protein residues); counts into ``report``."""
    import gemmi

    restype, resname, chain_id, resseq, icode, has_ca = [], [], [], [], [], []
    pos_rows, mask_rows, b_rows = [], [], []
    for chain in model:
        cname = chain.name
        group, letter = None, None  # alternate conformers: first altloc letter per residue number
        for res in chain:
            seqid = res.seqid
            key = (seqid.num, seqid.icode)
            if key != group:
                # Consecutive residues with one number are point-mutation alternatives only when their
                # atoms carry altlocs; without altlocs they are distinct residues (e.g. stripped icodes).
                group, letter = key, None
            raw = res.name.strip().upper()
            std = naming.standard_resname(raw, residue_map, map_normalised=False)
            if std not in RESTYPE_INDEX:  # mapped names are standard (check_residue_map)
                if res.is_water():
                    report.residues_ignored["water"] += 1
                    continue
                info = gemmi.find_tabulated_residue(raw)
                if info is not None and info.is_nucleic_acid():
                    report.residues_ignored["nucleic acid"] += 1
                    continue
                if not _aa_like(res, info):
                    report.residues_ignored["ligand"] += 1
                    continue
                if not keep_unknown:
                    unknown.setdefault(raw, _guess_parent(res))
                    continue
                std = "UNK"
            r = RESTYPE_INDEX[std]
            pieces = [_new_piece()]
            n_alt = n_kept = 0
            for atom in res:
                alt = atom.altloc
                if alt != "\0":
                    if letter is None:
                        letter = alt
                    elif alt != letter:
                        n_alt += 1
                        continue
                n_kept += 1
                name = atom.name.strip().upper()
                slot = naming.atom_slot(std, name, unk_exact=True)
                if isinstance(slot, str):
                    if slot == ATOM_NONSTANDARD and _is_hydrogen(atom, name):
                        slot = ATOM_HYDROGEN
                    report.atoms_ignored[slot] += 1
                    continue
                pos, msk, bf = pieces[-1]
                if msk[slot]:
                    if slot == 0 and alt == "\0":
                        # A second N without altloc: gemmi merged two consecutive residues of the same
                        # name and number (insertion codes stripped); split them again.
                        pieces.append(_new_piece())
                        pos, msk, bf = pieces[-1]
                    else:
                        report.atoms_ignored[ATOM_DUPLICATE] += 1
                        continue
                p = atom.pos
                pos[slot] = (p.x, p.y, p.z)
                msk[slot] = True
                bf[slot] = atom.b_iso
            report.atoms_ignored[ATOM_ALTLOC] += n_alt
            if n_kept == 0 and n_alt:
                report.residues_ignored[RES_ALTERNATIVE] += 1  # the other residue of a point mutation
                continue
            for pos, msk, bf in pieces:
                if raw in residue_map:
                    report.mapped[raw] += 1
                elif std == "UNK" and raw != "UNK":
                    report.unknown_as_unk[raw] += 1
                restype.append(r)
                resname.append(raw)
                chain_id.append(cname)
                resseq.append(seqid.num)
                icode.append(seqid.icode.strip())
                has_ca.append(bool(msk[1]))
                pos_rows.append(pos)
                mask_rows.append(msk)
                b_rows.append(bf)
    if not restype:
        return None
    has_ca = np.asarray(has_ca)
    positions = np.stack(pos_rows)
    mask = np.stack(mask_rows)
    chain_arr = np.asarray(chain_id, dtype=object)
    # Segments over all residues first (a CA-less residue breaks on both sides), then drop those.
    seg = segments_from_ca(chain_arr, positions[:, 1], has_ca)
    keep = np.flatnonzero(has_ca)
    report.residues_skipped[SKIP_NO_CA] += int(len(has_ca) - len(keep))
    if len(keep) == 0:
        return None
    _, seg = np.unique(seg[keep], return_inverse=True)
    restype_arr = np.asarray(restype, dtype=np.int64)[keep]
    residues = Residues(
        restype=restype_arr,
        resname=np.asarray(resname, dtype=object)[keep],
        chain_id=chain_arr[keep],
        resseq=np.asarray(resseq, dtype=np.int64)[keep],
        icode=np.asarray(icode, dtype=object)[keep],
        segment=seg.astype(np.int64),
    )
    mask = mask[keep]
    report.residues += len(keep)
    report.segments += int(seg.max()) + 1
    ch = residues.chain_id
    report.chains += int(1 + np.count_nonzero(ch[1:] != ch[:-1]))
    report.atoms_missing += int(np.count_nonzero(residues.atom_mask() & ~mask))
    return Protein(residues=residues, positions=positions[keep], mask=mask, name=label,
                   bfactor=np.stack(b_rows)[keep])


def read_structure_with_report(path, *, models="first", residue_map: dict[str, str] | None = None,
                               keep_unknown: bool = False) -> tuple[list[Protein], ParseReport]:
    """Read a PDB/mmCIF file (optionally gzipped) into atom14 proteins, with a report of what was left out.

    path:         PDB (.pdb/.ent) or mmCIF (.cif/.mmcif) file, plain or .gz (format also sniffed from content)
    models:       "first", "all", or a 0-based model index in file order
    residue_map:  {OLD: NEW} residue names (NEW a standard 3-letter name) applied before normalisation
    keep_unknown: keep amino-acid-like residues with unknown names as UNK (N, CA, C, O only)

    Returns (proteins, report): one Protein per model read, positions [L, 14, 3] float32 in Å, mask
    [L, 14] bool, bfactor [L, 14] float32 (Å²); and a :class:`ParseReport`.
    Raises InputError for a missing/unreadable/unparsable file, a file without protein residues, or
    unknown residue names (when not mapped and not ``keep_unknown``).
    """
    path = os.fspath(path)
    residue_map = naming.clean_residue_map(residue_map)
    naming.check_residue_map(residue_map)
    st = _read_gemmi(path)
    report = ParseReport(path=path, n_models=len(st))
    if st.cell.is_crystal():
        c = st.cell
        report.cell = (c.a, c.b, c.c, c.alpha, c.beta, c.gamma)
    if len(st) == 0:
        raise InputError(f"no atoms in {path} (is it a PDB or mmCIF file?)")
    wanted = _select_models(st, models, path)
    base = os.path.basename(path)
    proteins: list[Protein] = []
    unknown: dict[str, str] = {}
    for k in wanted:
        model = st[k]
        label = base if len(wanted) == 1 and len(st) == 1 else f"{base}#model{k}"
        protein = _model_to_protein(model, label, residue_map, keep_unknown, report, unknown)
        if protein is not None:
            proteins.append(protein)
        report.models_read += 1
    if unknown:
        names = sorted(unknown)
        hint = " ".join(f"--map-residue {n}={unknown[n]}" for n in names)
        raise InputError(f"unknown residue names in {path}: {', '.join(names)} (use {hint} to map them)")
    if not proteins:
        if sum(model.count_atom_sites() for model in st) == 0:
            raise InputError(f"no atoms in {path} (is it a PDB or mmCIF file?)")
        raise InputError(f"no protein residues in {path}")
    report.atoms_ignored = Counter({k: v for k, v in report.atoms_ignored.items() if v})
    return proteins, report


def read_structure(path, *, models="first", residue_map: dict[str, str] | None = None,
                   keep_unknown: bool = False) -> list[Protein]:
    """Read a PDB/mmCIF file into atom14 proteins (one per model read); see :func:`read_structure_with_report`.

    Returns list[Protein]: positions [L, 14, 3] float32 Å, mask [L, 14] bool.
    """
    return read_structure_with_report(path, models=models, residue_map=residue_map,
                                      keep_unknown=keep_unknown)[0]


__all__ = [
    "ParseReport",
    "STRUCTURE_EXTENSIONS",
    "read_structure",
    "read_structure_with_report",
]
