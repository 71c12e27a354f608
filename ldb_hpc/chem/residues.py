"""Residue vocabulary, name normalisation, the atom14 slot layout, bonds and χ definitions.

Everything here is a published chemical fact (IUPAC/PDB atom names, the covalent topology of the
20 standard amino acids, the IUPAC-IUB χ-angle definitions). The numeric ideal geometry that goes
with it is *measured* on ../shared/data/train and lives in ``ideal.py`` / ``ideal_geometry.json``.

The atom14 layout: every residue has 14 heavy-atom slots; slots 0..3 are N, CA, C, O for every
residue type, side-chain atoms follow in the order below, unused slots are masked.
"""

from __future__ import annotations

import numpy as np

# 20 standard amino acids in alphabetical order of their 3-letter code, then UNK.
RESTYPES_3 = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL", "UNK",
)
RESTYPES_1 = "ARNDCQEGHILKMFPSTWYVX"
NUM_RESTYPES = len(RESTYPES_3)  # 21, UNK last
UNK = NUM_RESTYPES - 1
RESTYPE_INDEX = {name: i for i, name in enumerate(RESTYPES_3)}
ONE_TO_THREE = dict(zip(RESTYPES_1, RESTYPES_3))
THREE_TO_ONE = dict(zip(RESTYPES_3, RESTYPES_1))

# Force-field / legacy residue names → standard name.
RESNAME_ALIASES = {
    "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HIS": "HIS",
    "CYX": "CYS", "CYM": "CYS",
    "MSE": "MET",
    "ASH": "ASP", "GLH": "GLU", "LYN": "LYS",
}

# Atom renames applied after residue normalisation: (residue, atom) → atom; "*" = any residue.
ATOM_ALIASES = {
    ("*", "OT1"): "O",
    ("*", "OT2"): "OXT",
    ("*", "O1"): "O",
    ("*", "O2"): "OXT",
    ("ILE", "CD"): "CD1",
    ("MET", "SE"): "SD",  # selenomethionine: Se takes the S slot
}

NUM_SLOTS = 14
BACKBONE = ("N", "CA", "C", "O")

# atom14 names per residue (heavy atoms only).
ATOM14 = {
    "ALA": ("N", "CA", "C", "O", "CB"),
    "ARG": ("N", "CA", "C", "O", "CB", "CG", "CD", "NE", "CZ", "NH1", "NH2"),
    "ASN": ("N", "CA", "C", "O", "CB", "CG", "OD1", "ND2"),
    "ASP": ("N", "CA", "C", "O", "CB", "CG", "OD1", "OD2"),
    "CYS": ("N", "CA", "C", "O", "CB", "SG"),
    "GLN": ("N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "NE2"),
    "GLU": ("N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "OE2"),
    "GLY": ("N", "CA", "C", "O"),
    "HIS": ("N", "CA", "C", "O", "CB", "CG", "ND1", "CD2", "CE1", "NE2"),
    "ILE": ("N", "CA", "C", "O", "CB", "CG1", "CG2", "CD1"),
    "LEU": ("N", "CA", "C", "O", "CB", "CG", "CD1", "CD2"),
    "LYS": ("N", "CA", "C", "O", "CB", "CG", "CD", "CE", "NZ"),
    "MET": ("N", "CA", "C", "O", "CB", "CG", "SD", "CE"),
    "PHE": ("N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ"),
    "PRO": ("N", "CA", "C", "O", "CB", "CG", "CD"),
    "SER": ("N", "CA", "C", "O", "CB", "OG"),
    "THR": ("N", "CA", "C", "O", "CB", "OG1", "CG2"),
    "TRP": ("N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "NE1", "CE2", "CE3", "CZ2", "CZ3", "CH2"),
    "TYR": ("N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "OH"),
    "VAL": ("N", "CA", "C", "O", "CB", "CG1", "CG2"),
    "UNK": ("N", "CA", "C", "O"),
}

# Covalent bonds inside each residue (heavy atoms). The peptide bond C(i)–N(i+1) is added between
# consecutive residues of a segment.
_BB_BONDS = (("N", "CA"), ("CA", "C"), ("C", "O"))
_SC_BONDS = {
    "ALA": (("CA", "CB"),),
    "ARG": (("CA", "CB"), ("CB", "CG"), ("CG", "CD"), ("CD", "NE"), ("NE", "CZ"), ("CZ", "NH1"), ("CZ", "NH2")),
    "ASN": (("CA", "CB"), ("CB", "CG"), ("CG", "OD1"), ("CG", "ND2")),
    "ASP": (("CA", "CB"), ("CB", "CG"), ("CG", "OD1"), ("CG", "OD2")),
    "CYS": (("CA", "CB"), ("CB", "SG")),
    "GLN": (("CA", "CB"), ("CB", "CG"), ("CG", "CD"), ("CD", "OE1"), ("CD", "NE2")),
    "GLU": (("CA", "CB"), ("CB", "CG"), ("CG", "CD"), ("CD", "OE1"), ("CD", "OE2")),
    "GLY": (),
    "HIS": (("CA", "CB"), ("CB", "CG"), ("CG", "ND1"), ("CG", "CD2"), ("ND1", "CE1"), ("CD2", "NE2"),
            ("CE1", "NE2")),
    "ILE": (("CA", "CB"), ("CB", "CG1"), ("CB", "CG2"), ("CG1", "CD1")),
    "LEU": (("CA", "CB"), ("CB", "CG"), ("CG", "CD1"), ("CG", "CD2")),
    "LYS": (("CA", "CB"), ("CB", "CG"), ("CG", "CD"), ("CD", "CE"), ("CE", "NZ")),
    "MET": (("CA", "CB"), ("CB", "CG"), ("CG", "SD"), ("SD", "CE")),
    "PHE": (("CA", "CB"), ("CB", "CG"), ("CG", "CD1"), ("CG", "CD2"), ("CD1", "CE1"), ("CD2", "CE2"),
            ("CE1", "CZ"), ("CE2", "CZ")),
    "PRO": (("CA", "CB"), ("CB", "CG"), ("CG", "CD"), ("CD", "N")),
    "SER": (("CA", "CB"), ("CB", "OG")),
    "THR": (("CA", "CB"), ("CB", "OG1"), ("CB", "CG2")),
    "TRP": (("CA", "CB"), ("CB", "CG"), ("CG", "CD1"), ("CG", "CD2"), ("CD1", "NE1"), ("NE1", "CE2"),
            ("CD2", "CE2"), ("CD2", "CE3"), ("CE2", "CZ2"), ("CE3", "CZ3"), ("CZ2", "CH2"), ("CZ3", "CH2")),
    "TYR": (("CA", "CB"), ("CB", "CG"), ("CG", "CD1"), ("CG", "CD2"), ("CD1", "CE1"), ("CD2", "CE2"),
            ("CE1", "CZ"), ("CE2", "CZ"), ("CZ", "OH")),
    "VAL": (("CA", "CB"), ("CB", "CG1"), ("CB", "CG2")),
    "UNK": (),
}
BONDS = {res: _BB_BONDS + _SC_BONDS[res] for res in RESTYPES_3}
PEPTIDE_BOND = ("C", "N")

# χ angles (IUPAC-IUB): four atoms each.
CHI_ATOMS = {
    "ALA": (), "GLY": (), "UNK": (),
    "ARG": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "NE"), ("CG", "CD", "NE", "CZ")),
    "ASN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "ASP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "CYS": (("N", "CA", "CB", "SG"),),
    "GLN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "GLU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "HIS": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "ND1")),
    "ILE": (("N", "CA", "CB", "CG1"), ("CA", "CB", "CG1", "CD1")),
    "LEU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "LYS": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "CE"), ("CG", "CD", "CE", "NZ")),
    "MET": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "SD"), ("CB", "CG", "SD", "CE")),
    "PHE": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "PRO": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD")),
    "SER": (("N", "CA", "CB", "OG"),),
    "THR": (("N", "CA", "CB", "OG1"),),
    "TRP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "TYR": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "VAL": (("N", "CA", "CB", "CG1"),),
}
# χ angles that are only defined modulo 180° because the two terminal atoms are chemically equivalent.
CHI_PI_PERIODIC = {("ASP", 2), ("GLU", 3), ("PHE", 2), ("TYR", 2)}

# Torsion channels of the atom builder: 0 = the O torsion, dihedral N–CA–C–O (≈ ψ + 180°, offset 0),
# 1..4 = χ1..χ4.
NUM_TORSIONS = 5
PSI, CHI1 = 0, 1  # PSI names the O-torsion channel

# How every non-frame atom is placed (the builder's Z-matrix): atom ← (a, b, c, torsion),
# dihedral(a, b, c, atom) = offset + torsion_channel value (torsion None = fixed dihedral).
# N, CA, C define the residue frame and are placed directly from it.
# The numbers (bond c–atom, angle b–c–atom, offset) are measured: see ideal.py.
_CB = ("CB", "C", "N", "CA", None)
_O = ("O", "N", "CA", "C", PSI)
ZMATRIX = {
    "ALA": (_O, _CB),
    "ARG": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("CD", "CA", "CB", "CG", 2), ("NE", "CB", "CG", "CD", 3),
            ("CZ", "CG", "CD", "NE", 4), ("NH1", "CD", "NE", "CZ", None), ("NH2", "CD", "NE", "CZ", None)),
    "ASN": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("OD1", "CA", "CB", "CG", 2), ("ND2", "CA", "CB", "CG", 2)),
    "ASP": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("OD1", "CA", "CB", "CG", 2), ("OD2", "CA", "CB", "CG", 2)),
    "CYS": (_O, _CB, ("SG", "N", "CA", "CB", 1)),
    "GLN": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("CD", "CA", "CB", "CG", 2), ("OE1", "CB", "CG", "CD", 3),
            ("NE2", "CB", "CG", "CD", 3)),
    "GLU": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("CD", "CA", "CB", "CG", 2), ("OE1", "CB", "CG", "CD", 3),
            ("OE2", "CB", "CG", "CD", 3)),
    "GLY": (_O,),
    "HIS": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("ND1", "CA", "CB", "CG", 2), ("CD2", "CA", "CB", "CG", 2),
            ("CE1", "CB", "CG", "ND1", None), ("NE2", "CB", "CG", "CD2", None)),
    "ILE": (_O, _CB, ("CG1", "N", "CA", "CB", 1), ("CG2", "N", "CA", "CB", 1), ("CD1", "CA", "CB", "CG1", 2)),
    "LEU": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("CD1", "CA", "CB", "CG", 2), ("CD2", "CA", "CB", "CG", 2)),
    "LYS": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("CD", "CA", "CB", "CG", 2), ("CE", "CB", "CG", "CD", 3),
            ("NZ", "CG", "CD", "CE", 4)),
    "MET": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("SD", "CA", "CB", "CG", 2), ("CE", "CB", "CG", "SD", 3)),
    "PHE": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("CD1", "CA", "CB", "CG", 2), ("CD2", "CA", "CB", "CG", 2),
            ("CE1", "CB", "CG", "CD1", None), ("CE2", "CB", "CG", "CD2", None), ("CZ", "CG", "CD1", "CE1", None)),
    "PRO": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("CD", "CA", "CB", "CG", 2)),
    "SER": (_O, _CB, ("OG", "N", "CA", "CB", 1)),
    "THR": (_O, _CB, ("OG1", "N", "CA", "CB", 1), ("CG2", "N", "CA", "CB", 1)),
    "TRP": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("CD1", "CA", "CB", "CG", 2), ("CD2", "CA", "CB", "CG", 2),
            ("NE1", "CB", "CG", "CD1", None), ("CE2", "CB", "CG", "CD2", None), ("CE3", "CB", "CG", "CD2", None),
            ("CZ2", "CG", "CD2", "CE2", None), ("CZ3", "CG", "CD2", "CE3", None), ("CH2", "CD2", "CE2", "CZ2", None)),
    "TYR": (_O, _CB, ("CG", "N", "CA", "CB", 1), ("CD1", "CA", "CB", "CG", 2), ("CD2", "CA", "CB", "CG", 2),
            ("CE1", "CB", "CG", "CD1", None), ("CE2", "CB", "CG", "CD2", None), ("CZ", "CG", "CD1", "CE1", None),
            ("OH", "CD1", "CE1", "CZ", None)),
    "VAL": (_O, _CB, ("CG1", "N", "CA", "CB", 1), ("CG2", "N", "CA", "CB", 1)),
    "UNK": (_O,),
}

# Covalent radii (Å) of the heavy elements in proteins, for distance-inferred bond graphs
# (Cordero et al. 2008, sp3 C).
COVALENT_RADIUS = {"C": 0.76, "N": 0.71, "O": 0.66, "S": 1.05}


def normalize_resname(name: str) -> str:
    """Map a residue name (any case, force-field variants) to a standard 3-letter name.

    Returns the input upper-cased when it is not a known alias; callers decide whether that is UNK.
    """
    name = name.strip().upper()
    return RESNAME_ALIASES.get(name, name)


def normalize_atomname(resname: str, atom: str) -> str:
    """Standardise an atom name of residue ``resname`` (already normalised), e.g. ILE CD → CD1."""
    atom = atom.strip().upper()
    return ATOM_ALIASES.get((resname, atom), ATOM_ALIASES.get(("*", atom), atom))


def element_of(atom: str) -> str:
    """Element of a standard heavy protein atom name (first letter: C, N, O, S)."""
    return atom[0]


def _build_tables():
    """Integer/boolean numpy tables indexed by restype (and slot) for vectorised code."""
    slot_mask = np.zeros((NUM_RESTYPES, NUM_SLOTS), dtype=bool)
    slot_index = {}
    for r, res in enumerate(RESTYPES_3):
        for s, atom in enumerate(ATOM14[res]):
            slot_mask[r, s] = True
            slot_index[(res, atom)] = s
    # Intra-residue bonds as slot pairs, padded to the largest count.
    max_bonds = max(len(b) for b in BONDS.values())
    bond_pairs = np.zeros((NUM_RESTYPES, max_bonds, 2), dtype=np.int64)
    bond_mask = np.zeros((NUM_RESTYPES, max_bonds), dtype=bool)
    for r, res in enumerate(RESTYPES_3):
        for k, (a, b) in enumerate(BONDS[res]):
            bond_pairs[r, k] = (slot_index[(res, a)], slot_index[(res, b)])
            bond_mask[r, k] = True
    # χ atoms as slots.
    chi_slots = np.zeros((NUM_RESTYPES, 4, 4), dtype=np.int64)
    chi_mask = np.zeros((NUM_RESTYPES, 4), dtype=bool)
    chi_pi = np.zeros((NUM_RESTYPES, 4), dtype=bool)
    for r, res in enumerate(RESTYPES_3):
        for k, atoms in enumerate(CHI_ATOMS[res]):
            chi_slots[r, k] = [slot_index[(res, a)] for a in atoms]
            chi_mask[r, k] = True
            chi_pi[r, k] = (res, k + 1) in CHI_PI_PERIODIC
    # Z-matrix as slots; entries in placement order; slot s of residue r is placed from refs.
    zm_refs = np.zeros((NUM_RESTYPES, NUM_SLOTS, 3), dtype=np.int64)
    zm_torsion = np.full((NUM_RESTYPES, NUM_SLOTS), -1, dtype=np.int64)  # -1 = fixed dihedral
    zm_mask = np.zeros((NUM_RESTYPES, NUM_SLOTS), dtype=bool)  # slot placed by the Z-matrix
    for r, res in enumerate(RESTYPES_3):
        for atom, a, b, c, tor in ZMATRIX[res]:
            s = slot_index[(res, atom)]
            zm_refs[r, s] = [slot_index[(res, a)], slot_index[(res, b)], slot_index[(res, c)]]
            zm_torsion[r, s] = -1 if tor is None else tor
            zm_mask[r, s] = True
    element = np.full((NUM_RESTYPES, NUM_SLOTS), "", dtype=object)
    for r, res in enumerate(RESTYPES_3):
        for s, atom in enumerate(ATOM14[res]):
            element[r, s] = element_of(atom)
    return (slot_mask, slot_index, bond_pairs, bond_mask, chi_slots, chi_mask, chi_pi, zm_refs, zm_torsion, zm_mask,
            element)


(SLOT_MASK, SLOT_INDEX, BOND_SLOTS, BOND_MASK, CHI_SLOTS, CHI_MASK, CHI_PI_PERIODIC_MASK,
 ZM_REFS, ZM_TORSION, ZM_MASK, SLOT_ELEMENT) = _build_tables()

# Z-matrix placement order is slot order: every reference of slot s is a frame atom (0..2) or a slot < s.
assert all(ZM_REFS[r, s].max() < s for r in range(NUM_RESTYPES) for s in range(NUM_SLOTS) if ZM_MASK[r, s])


def slot_of(resname: str, atom: str) -> int | None:
    """atom14 slot of ``atom`` in standard residue ``resname``, or None if that residue has no such atom."""
    return SLOT_INDEX.get((resname, atom))


def restype_index(resname: str) -> int:
    """Index of a standard 3-letter name in RESTYPES_3; raises KeyError for unknown names."""
    return RESTYPE_INDEX[resname]
