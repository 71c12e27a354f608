"""Residue naming: from the names in an input file to standard residue types and atom14 slots.

One set of rules for every reader (ldb_hpc.io.structure: PDB/mmCIF through gemmi; ldb_hpc.io.mdtraj_bridge:
anything mdtraj reads; ldb_hpc.io.topology: MDTraj-HDF5 topologies):

- residues: ``--map-residue OLD=NEW`` (:func:`clean_residue_map`) first, then the force-field and legacy aliases
  of ldb_hpc.chem.residues (HSD/HSE/HSP/HID/HIE/HIP→HIS, CYX/CYM→CYS, ASH→ASP, GLH→GLU, LYN→LYS, MSE→MET); a
  name outside the vocabulary is unknown: UNK with ``keep_unknown``, else an error naming ``--map-residue``;
- atoms: names upper-cased and stripped, then the aliases after the residue's (ILE CD→CD1, MSE SE→SD, OT1/O1→O,
  OT2/O2→OXT), then the atom14 slot; an atom without a slot gets a reason instead (:data:`OXT`,
  :data:`UNK_SIDE_CHAIN`, :data:`NONSTANDARD`). Hydrogens are the readers' business (gemmi's elements are
  inferred from names, mdtraj's are given).

Where the readers differ, the difference is an argument:

- ``map_normalised`` (:func:`standard_resname`): the map also applies to the alias of the name (map HIS=X renames
  HSD too): True for mdtraj and HDF5 topologies, False for PDB/mmCIF (the map applies to the name as written);
- ``unk_exact`` (:func:`atom_slot`): an UNK residue keeps its atom names but OT1/OT2 (in modified residues O1/O2
  are side-chain atoms): True for PDB/mmCIF; False elsewhere (O1/O2 of UNK taken as O/OXT);
- ``duplicates`` (:func:`atom_slots`): two atoms of one residue on one slot: "error" for mdtraj inputs, "keep"
  for HDF5 topologies (every atom keeps its slot; a reader writing positions keeps the last). The PDB/mmCIF
  reader keeps the first and counts the others as :data:`DUPLICATE` (a second N without altloc starts a new
  residue: gemmi merged two), in ldb_hpc.io.structure.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np

from ldb_hpc.chem.residues import ATOM14, RESTYPE_INDEX, SLOT_INDEX, UNK, normalize_atomname, normalize_resname
from ldb_hpc.errors import InputError

# Why an atom has no atom14 slot (kept short: they appear in summary tables).
OXT = "OXT"
UNK_SIDE_CHAIN = "side chain of UNK"
NONSTANDARD = "non-standard name"
DUPLICATE = "duplicate name"
_TERMINAL_OXYGENS = ("OT1", "OT2")


class DuplicateAtom(ValueError):
    """Two atoms of one residue map to one atom14 slot; ``name`` is the slot's standard atom name."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


# ----------------------------------------------------------------------------------------------
# residues


def clean_residue_map(residue_map: dict[str, str] | None) -> dict[str, str]:
    """``--map-residue`` pairs {OLD: NEW} with both names stripped and upper-cased."""
    return {k.strip().upper(): v.strip().upper() for k, v in (residue_map or {}).items()}


def check_residue_map(residue_map: dict[str, str]) -> None:
    """InputError naming the pairs of a (clean) map whose NEW is not a standard residue name."""
    bad = [f"{k}={v}" for k, v in residue_map.items() if v not in RESTYPE_INDEX]
    if bad:
        raise InputError(f"residue map targets must be standard residue names: {', '.join(bad)}")


def standard_resname(name: str, residue_map: dict[str, str], map_normalised: bool = True) -> str:
    """The standard name of residue ``name`` under a clean ``residue_map`` (see the module docstring), or the
    upper-cased name when it is neither mapped nor an alias (callers decide whether that is UNK)."""
    raw = str(name).strip().upper()
    if raw in residue_map:
        return residue_map[raw]
    norm = normalize_resname(raw)
    if map_normalised and norm in residue_map:
        return residue_map[norm]
    return norm


def resolve_restypes(names, residue_map: dict[str, str] | None = None, keep_unknown: bool = False,
                     labels=None) -> np.ndarray:
    """Residue types for residue names.

    names: [L] residue names as in the input (any case, force-field variants such as HSD, CYX, MSE);
    residue_map: {OLD: NEW} from ``--map-residue`` (NEW a standard 3-letter name), applied to the
    name as given and to its normalised form; keep_unknown: unknown names become UNK instead of an
    error; labels: [L] optional residue labels (e.g. "A:42") to name the first unknown residue.
    Returns [L] int64 indices into RESTYPES_3. Raises InputError naming the unknown names and the
    ``--map-residue OLD=NEW`` option.
    """
    residue_map = clean_residue_map(residue_map)
    out = np.empty(len(names), dtype=np.int64)
    unknown: Counter = Counter()
    first: dict[str, int] = {}
    # Residue names repeat a lot: resolve each distinct name once.
    cache: dict[str, int] = {}
    for i, name in enumerate(names):
        r = cache.get(name)
        if r is None:
            r = RESTYPE_INDEX.get(standard_resname(name, residue_map), -1)
            if r < 0 and keep_unknown:
                r = UNK
            cache[name] = r
        if r < 0:
            unknown[str(name).strip()] += 1
            first.setdefault(str(name).strip(), i)
        out[i] = r
    if unknown:
        parts = []
        for name, count in unknown.most_common(8):
            where = f", first {labels[first[name]]}" if labels is not None else ""
            parts.append(f"{name} ({count} residue{'s' if count > 1 else ''}{where})")
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        example = next(iter(unknown))
        raise InputError(
            f"unknown residue name(s): {', '.join(parts)}{more}; map each to the standard residue it derives "
            f"from with --map-residue OLD=NEW (e.g. --map-residue {example}=XXX, XXX a standard 3-letter name)"
        )
    return out


# ----------------------------------------------------------------------------------------------
# atoms


@lru_cache(maxsize=4096)
def atom_slot(resname: str, name: str, unk_exact: bool = False) -> int | str:
    """The atom14 slot of atom ``name`` in standard residue ``resname``, or why it has none (:data:`OXT`,
    :data:`UNK_SIDE_CHAIN`, :data:`NONSTANDARD`); ``unk_exact``: see the module docstring."""
    name = name.strip().upper()
    if unk_exact and resname == "UNK" and name not in _TERMINAL_OXYGENS:
        norm = name
    else:
        norm = normalize_atomname(resname, name)
    slot = SLOT_INDEX.get((resname, norm))
    if slot is not None:
        return slot
    if norm == "OXT":
        return OXT
    return UNK_SIDE_CHAIN if resname == "UNK" else NONSTANDARD


def atom_slots(resname: str, names, unk_exact: bool = False, duplicates: str = "keep") -> list[int | str]:
    """:func:`atom_slot` of every atom ``names`` of one residue, in order. duplicates: "keep" (atoms on one slot
    all keep it) or "error" (:class:`DuplicateAtom` naming the slot's atom)."""
    if duplicates not in ("keep", "error"):
        raise ValueError(f"duplicates must be 'keep' or 'error', got {duplicates!r}")
    slots = [atom_slot(resname, str(n), unk_exact) for n in names]
    if duplicates == "error":
        seen: set[int] = set()
        for s in slots:
            if isinstance(s, int):
                if s in seen:
                    raise DuplicateAtom(ATOM14[resname][s])
                seen.add(s)
    return slots
