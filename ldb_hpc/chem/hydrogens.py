"""Hydrogens at standard protonation and the C-terminal OXT: names, elements and how each is placed.

Every residue type gets, after its atom14 heavy slots, ``NUM_EXTRA`` extra slots holding OXT and its hydrogens
(only those a residue has are used; see :func:`extra_mask`). Names are the PDB's (wwPDB v3, the names mdtraj and
OpenMM use); the protonation is the one of pH 7 that amber14's templates call standard (docs/HYDROGENS.md):

- every N-terminus NH3+ (H H2 H3, the PDB's names, which mdtraj and OpenMM keep: both readers rename H1 to H;
  proline NH2+: H2 H3), every C-terminus COO- (O, OXT); a segment start or end inside a chain (a chain break)
  is a terminus too;
- LYS NH3+ (HZ1-3), ARG guanidinium (HE, HH11, HH12, HH21, HH22), ASP and GLU carboxylates (no H);
- HIS neutral, Nε2-protonated (HIE: HD2, HE1, HE2; named HIS);
- CYS SH (HG) unless its SG is in a disulfide (then no HG: amber's CYX).

Placement (Å, radians; done by ldb_hpc.geometry.hydrogens from the heavy atoms) is one of four kinds, with the
reference atoms given by atom14 name or ``-C`` (the previous residue's C):

- ``BISECT`` (c; n1, n2): in the plane of n1–c–n2, on the bisector of the outer angle (sp2 H, amide H, OXT);
- ``TETRA1`` (c; n1, n2, n3): opposite the sum of the three bond directions (the one H of an sp3 CH);
- ``TETRA2`` (c; prev, next) sign: one H of an sp3 CH2 at half the tetrahedral angle from the outer bisector,
  out of the prev–c–next plane on the side ``sign``: −1 for H…2 and +1 for H…3, the IUPAC/PDB naming
  (dot((prev − c) × (next − c), H − c) < 0 for H…2, as reduce names them; prev is the atom toward CA);
- ``ZMAT`` (c; b, a) angle, torsion: the Z-matrix placement, angle b–c–H and dihedral a–b–c–H (methyl, NH3+,
  OH, SH, planar NH2). Methyls and NH3+ are staggered with H…1 anti to a (180°), H…2 at −60°, H…3 at +60°;
  an NH2 of ASN, GLN, ARG has H…1 cis (0°) to a (OD1, OE1, NE) and H…2 trans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ldb_hpc.chem.residues import BONDS, NUM_RESTYPES, NUM_SLOTS, RESTYPES_3, SLOT_INDEX, UNK

BISECT, TETRA1, TETRA2, ZMAT = 0, 1, 2, 3
# When an extra atom exists: always, at an N-terminus only, away from N-termini only, at a C-terminus only,
# unless the residue's SG is in a disulfide.
ALWAYS, NTERM, NOT_NTERM, CTERM, NOT_DISULFIDE = 0, 1, 2, 3, 4
PREV_C = NUM_SLOTS  # reference slot of the previous residue's C in the placement arrays

# Ideal bond lengths (Å) and angles (degrees).
NH, CH, CH_AROMATIC, OH, SH, C_OXT = 1.01, 1.09, 1.08, 0.96, 1.34, 1.25
TETRAHEDRAL, TRIGONAL, CSH_ANGLE = 109.47, 120.0, 96.0
STAGGERED = (180.0, -60.0, 60.0)


def _ch2(c, prev, nxt, names=None):
    """The two hydrogens of the sp3 CH2 at c: (H…2, H…3)."""
    suffix = c[1:]
    h2, h3 = names or (f"H{suffix}2", f"H{suffix}3")
    return ((h2, "H", c, TETRA2, (prev, nxt), CH, -1.0, ALWAYS), (h3, "H", c, TETRA2, (prev, nxt), CH, 1.0, ALWAYS))


def _methyl(c, b, a, prefix, bond=CH):
    """A staggered CH3 or NH3+: H…1 anti to a, H…2 at −60°, H…3 at +60° (dihedral a–b–c–H)."""
    return tuple((f"{prefix}{k + 1}", "H", c, ZMAT, (b, a), bond, (TETRAHEDRAL, t), ALWAYS)
                 for k, t in enumerate(STAGGERED))


def _bisect(name, c, n1, n2, bond=CH_AROMATIC):
    return ((name, "H", c, BISECT, (n1, n2), bond, 0.0, ALWAYS),)


def _nh2(c, b, a, prefix):
    """Planar NH2 (amide, guanidinium): H…1 cis to a, H…2 trans."""
    return ((f"{prefix}1", "H", c, ZMAT, (b, a), NH, (TRIGONAL, 0.0), ALWAYS),
            (f"{prefix}2", "H", c, ZMAT, (b, a), NH, (TRIGONAL, 180.0), ALWAYS))


def _oh(name, c, b, a, bond, angle=TETRAHEDRAL, torsion=180.0, variant=ALWAYS):
    return ((name, "H", c, ZMAT, (b, a), bond, (angle, torsion), variant),)


# Backbone: OXT and the amide hydrogens (H inside a segment; NH3+ at its start: H anti to C, H2, H3), then HA.
# The two H slots never exist together.
_OXT = (("OXT", "O", "C", BISECT, ("CA", "O"), C_OXT, 0.0, CTERM),)
_AMIDE = (("H", "H", "N", BISECT, ("-C", "CA"), NH, 0.0, NOT_NTERM),) + tuple(
    (name, "H", "N", ZMAT, ("CA", "C"), NH, (TETRAHEDRAL, t), NTERM) for name, t in zip(("H", "H2", "H3"), STAGGERED))
_HA = (("HA", "H", "CA", TETRA1, ("N", "C", "CB"), CH, 0.0, ALWAYS),)
_BB = _OXT + _AMIDE + _HA
_AROMATIC6 = (_bisect("HD1", "CD1", "CG", "CE1") + _bisect("HD2", "CD2", "CG", "CE2")
              + _bisect("HE1", "CE1", "CD1", "CZ") + _bisect("HE2", "CE2", "CD2", "CZ"))

# Every extra atom of every residue type: (name, element, parent atom, kind, reference atoms, bond length,
# TETRA2 sign or ZMAT (angle, torsion) in degrees, when it exists).
EXTRA = {
    "ALA": _BB + _methyl("CB", "CA", "N", "HB"),
    "ARG": _BB + _ch2("CB", "CA", "CG") + _ch2("CG", "CB", "CD") + _ch2("CD", "CG", "NE")
    + _bisect("HE", "NE", "CD", "CZ", NH) + _nh2("NH1", "CZ", "NE", "HH1") + _nh2("NH2", "CZ", "NE", "HH2"),
    "ASN": _BB + _ch2("CB", "CA", "CG") + _nh2("ND2", "CG", "OD1", "HD2"),
    "ASP": _BB + _ch2("CB", "CA", "CG"),
    "CYS": _BB + _ch2("CB", "CA", "SG") + _oh("HG", "SG", "CB", "CA", SH, CSH_ANGLE, variant=NOT_DISULFIDE),
    "GLN": _BB + _ch2("CB", "CA", "CG") + _ch2("CG", "CB", "CD") + _nh2("NE2", "CD", "OE1", "HE2"),
    "GLU": _BB + _ch2("CB", "CA", "CG") + _ch2("CG", "CB", "CD"),
    "GLY": _OXT + _AMIDE + _ch2("CA", "N", "C", ("HA2", "HA3")),
    "HIS": _BB + _ch2("CB", "CA", "CG") + _bisect("HD2", "CD2", "CG", "NE2") + _bisect("HE1", "CE1", "ND1", "NE2")
    + _bisect("HE2", "NE2", "CD2", "CE1", NH),
    "ILE": _BB + (("HB", "H", "CB", TETRA1, ("CA", "CG1", "CG2"), CH, 0.0, ALWAYS),) + _ch2("CG1", "CB", "CD1")
    + _methyl("CG2", "CB", "CA", "HG2") + _methyl("CD1", "CG1", "CB", "HD1"),
    "LEU": _BB + _ch2("CB", "CA", "CG") + (("HG", "H", "CG", TETRA1, ("CB", "CD1", "CD2"), CH, 0.0, ALWAYS),)
    + _methyl("CD1", "CG", "CB", "HD1") + _methyl("CD2", "CG", "CB", "HD2"),
    "LYS": _BB + _ch2("CB", "CA", "CG") + _ch2("CG", "CB", "CD") + _ch2("CD", "CG", "CE") + _ch2("CE", "CD", "NZ")
    + _methyl("NZ", "CE", "CD", "HZ", NH),
    "MET": _BB + _ch2("CB", "CA", "CG") + _ch2("CG", "CB", "SD") + _methyl("CE", "SD", "CG", "HE"),
    "PHE": _BB + _ch2("CB", "CA", "CG") + _AROMATIC6 + _bisect("HZ", "CZ", "CE1", "CE2"),
    # Proline: no amide H; at an N-terminus NH2+ (H2, H3 as amber's NPRO names them).
    "PRO": _OXT + (("H2", "H", "N", TETRA2, ("CA", "CD"), NH, -1.0, NTERM),
                   ("H3", "H", "N", TETRA2, ("CA", "CD"), NH, 1.0, NTERM)) + _HA
    + _ch2("CB", "CA", "CG") + _ch2("CG", "CB", "CD") + _ch2("CD", "CG", "N"),
    "SER": _BB + _ch2("CB", "CA", "OG") + _oh("HG", "OG", "CB", "CA", OH),
    "THR": _BB + (("HB", "H", "CB", TETRA1, ("CA", "OG1", "CG2"), CH, 0.0, ALWAYS),)
    + _oh("HG1", "OG1", "CB", "CA", OH) + _methyl("CG2", "CB", "CA", "HG2"),
    "TRP": _BB + _ch2("CB", "CA", "CG") + _bisect("HD1", "CD1", "CG", "NE1") + _bisect("HE1", "NE1", "CD1", "CE2", NH)
    + _bisect("HE3", "CE3", "CD2", "CZ3") + _bisect("HZ2", "CZ2", "CE2", "CH2") + _bisect("HZ3", "CZ3", "CE3", "CH2")
    + _bisect("HH2", "CH2", "CZ2", "CZ3"),
    "TYR": _BB + _ch2("CB", "CA", "CG") + _AROMATIC6 + _oh("HH", "OH", "CZ", "CE1", OH, TRIGONAL),
    "VAL": _BB + (("HB", "H", "CB", TETRA1, ("CA", "CG1", "CG2"), CH, 0.0, ALWAYS),)
    + _methyl("CG1", "CB", "CA", "HG1") + _methyl("CG2", "CB", "CA", "HG2"),
    "UNK": (),  # no standard protonation: refused (check_protonatable)
}
NUM_EXTRA = max(len(v) for v in EXTRA.values())


@dataclass(frozen=True)
class Protonation:
    """What a hydrogen layout depends on beyond the residues: the disulfides, as pairs of residue indices."""

    disulfides: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_pairs(cls, pairs) -> "Protonation":
        return cls(tuple(sorted((int(min(p)), int(max(p))) for p in pairs)))


def _slot(res: str, atom: str) -> int:
    return PREV_C if atom == "-C" else SLOT_INDEX[(res, atom)]


def _build_tables():
    """numpy tables [21, NUM_EXTRA(, …)] of the extra slots: exists, variant, kind, parent + 3 reference slots,
    bond (Å), angle (rad), torsion (rad) or TETRA2 sign."""
    exists = np.zeros((NUM_RESTYPES, NUM_EXTRA), dtype=bool)
    variant = np.zeros((NUM_RESTYPES, NUM_EXTRA), dtype=np.int64)
    kind = np.zeros((NUM_RESTYPES, NUM_EXTRA), dtype=np.int64)
    refs = np.zeros((NUM_RESTYPES, NUM_EXTRA, 4), dtype=np.int64)
    bond = np.zeros((NUM_RESTYPES, NUM_EXTRA))
    angle = np.zeros((NUM_RESTYPES, NUM_EXTRA))
    torsion = np.zeros((NUM_RESTYPES, NUM_EXTRA))
    names = {}
    for r, res in enumerate(RESTYPES_3):
        names[res] = tuple(e[0] for e in EXTRA[res])
        for k, (name, element, parent, how, ref, length, param, when) in enumerate(EXTRA[res]):
            exists[r, k], variant[r, k], kind[r, k], bond[r, k] = True, when, how, length
            slots = [_slot(res, parent)] + [_slot(res, a) for a in ref]
            refs[r, k, : len(slots)] = slots
            if how == ZMAT:
                angle[r, k], torsion[r, k] = np.deg2rad(param[0]), np.deg2rad(param[1])
            elif how == TETRA2:
                torsion[r, k] = param
    return exists, variant, kind, refs, bond, angle, torsion, names


(EXTRA_EXISTS, EXTRA_VARIANT, EXTRA_KIND, EXTRA_REFS, EXTRA_BOND, EXTRA_ANGLE, EXTRA_TORSION,
 EXTRA_NAMES) = _build_tables()
EXTRA_ELEMENT = {res: tuple(e[1] for e in EXTRA[res]) for res in RESTYPES_3}
# The parent heavy slot of each extra atom (its one bond).
EXTRA_PARENT = EXTRA_REFS[..., 0]
# Every reference of an extra atom is a heavy atom (or the previous C), never another extra atom.
assert (EXTRA_REFS <= PREV_C).all()


# Rotatable hydrogens (ldb_hpc.geometry.hydrogen_fit turns them): the hydrogens on one parent c that turn together
# about the bond b→c. A methyl, NH3+ or amine has period 120° (its three H are equivalent); an OH or SH turns
# freely; TYR HH stays in the ring plane (two positions).
METHYL, HYDROXYL, RING_OH = 0, 1, 2
ROTORS = {
    "ALA": (("CB", "CA", ("HB1", "HB2", "HB3"), METHYL),),
    "CYS": (("SG", "CB", ("HG",), HYDROXYL),),
    "ILE": (("CG2", "CB", ("HG21", "HG22", "HG23"), METHYL), ("CD1", "CG1", ("HD11", "HD12", "HD13"), METHYL)),
    "LEU": (("CD1", "CG", ("HD11", "HD12", "HD13"), METHYL), ("CD2", "CG", ("HD21", "HD22", "HD23"), METHYL)),
    "LYS": (("NZ", "CE", ("HZ1", "HZ2", "HZ3"), METHYL),),
    "MET": (("CE", "SD", ("HE1", "HE2", "HE3"), METHYL),),
    "SER": (("OG", "CB", ("HG",), HYDROXYL),),
    "THR": (("OG1", "CB", ("HG1",), HYDROXYL), ("CG2", "CB", ("HG21", "HG22", "HG23"), METHYL)),
    "TYR": (("OH", "CZ", ("HH",), RING_OH),),
    "VAL": (("CG1", "CB", ("HG11", "HG12", "HG13"), METHYL), ("CG2", "CB", ("HG21", "HG22", "HG23"), METHYL)),
}
NTERM_ROTOR = ("N", "CA", ("H", "H2", "H3"), METHYL)  # the NH3+ of every N-terminus but proline's NH2+
NUM_ROTORS = 1 + max(len(v) for v in ROTORS.values())  # rotor groups per residue, the N-terminus's first
NUM_ATOMS = NUM_SLOTS + NUM_EXTRA  # slots of a residue with its extra atoms


def _extra_slot(res: str, name: str) -> int:
    """Slot (in NUM_ATOMS) of the extra atom ``name``: of the two slots named H, the N-terminal one."""
    return NUM_SLOTS + next(k for k, e in enumerate(EXTRA[res]) if e[0] == name and e[7] != NOT_NTERM)


def _bond_hops(res: str) -> np.ndarray:
    """[NUM_ATOMS, NUM_ATOMS] bonds between the slots of one residue type (heavy and extra), in hops; 99: none."""
    hops = np.full((NUM_ATOMS, NUM_ATOMS), 99, dtype=np.int64)
    np.fill_diagonal(hops, 0)
    pairs = [(SLOT_INDEX[(res, a)], SLOT_INDEX[(res, b)]) for a, b in BONDS[res]]
    pairs += [(NUM_SLOTS + k, int(p)) for k, p in enumerate(EXTRA_PARENT[RESTYPES_3.index(res)][: len(EXTRA[res])])
              if p != PREV_C]
    for a, b in pairs:
        hops[a, b] = hops[b, a] = 1
    for k in range(NUM_ATOMS):  # Floyd–Warshall on ≤ 31 slots
        hops = np.minimum(hops, hops[:, k : k + 1] + hops[k : k + 1, :])
    return hops


def _build_rotor_tables():
    """numpy tables of the rotor groups, [21, NUM_ROTORS(, …)]: kind (−1: none), the axis slots (b, c), the
    hydrogen slots (padded with the first) and which are real, the slots within two bonds of c (every atom within
    three bonds of the group's hydrogens, themselves included: not scored); and [21, NUM_ATOMS] the group each
    slot turns with (−1: none)."""
    kind = np.full((NUM_RESTYPES, NUM_ROTORS), -1, dtype=np.int64)
    axis = np.zeros((NUM_RESTYPES, NUM_ROTORS, 2), dtype=np.int64)
    h_slots = np.zeros((NUM_RESTYPES, NUM_ROTORS, 3), dtype=np.int64)
    h_real = np.zeros((NUM_RESTYPES, NUM_ROTORS, 3), dtype=bool)
    near = np.zeros((NUM_RESTYPES, NUM_ROTORS, NUM_ATOMS), dtype=bool)
    slot_group = np.full((NUM_RESTYPES, NUM_ATOMS), -1, dtype=np.int64)
    for r, res in enumerate(RESTYPES_3):
        if res == "UNK":
            continue
        hops = _bond_hops(res)
        groups = ((NTERM_ROTOR,) if res != "PRO" else (None,)) + ROTORS.get(res, ())
        for g, group in enumerate(groups):
            if group is None:
                continue
            c, b, hs, how = group
            kind[r, g], axis[r, g] = how, (SLOT_INDEX[(res, b)], SLOT_INDEX[(res, c)])
            slots = [_extra_slot(res, h) for h in hs]
            h_slots[r, g], h_real[r, g, : len(slots)] = (slots + [slots[0]] * 3)[:3], True
            near[r, g] = hops[SLOT_INDEX[(res, c)]] <= 2
            slot_group[r, slots] = g
    return kind, axis, h_slots, h_real, near, slot_group


(ROTOR_KIND, ROTOR_AXIS, ROTOR_H, ROTOR_H_REAL, ROTOR_NEAR, SLOT_ROTOR) = _build_rotor_tables()
# [21, NUM_ATOMS]: which slots hold a hydrogen (every extra atom but OXT).
SLOT_IS_H = np.zeros((NUM_RESTYPES, NUM_ATOMS), dtype=bool)
for _r, _res in enumerate(RESTYPES_3):
    SLOT_IS_H[_r, NUM_SLOTS:NUM_SLOTS + len(EXTRA[_res])] = [e[1] == "H" for e in EXTRA[_res]]


def termini(segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first [L] bool, last [L] bool): residues that start / end a segment (a chain or a piece between breaks)."""
    segment = np.asarray(segment)
    first = np.ones(len(segment), dtype=bool)
    last = np.ones(len(segment), dtype=bool)
    first[1:] = segment[1:] != segment[:-1]
    last[:-1] = first[1:]
    return first, last


def extra_mask(restype: np.ndarray, segment: np.ndarray, protonation: Protonation) -> np.ndarray:
    """[L, NUM_EXTRA] bool: the extra slots each residue has (OXT at segment ends, NH3+ at segment starts, HG of
    CYS outside disulfides, ...)."""
    restype = np.asarray(restype, dtype=np.int64)
    first, last = termini(segment)
    bonded = np.zeros(len(restype), dtype=bool)
    for i, j in protonation.disulfides:
        bonded[[i, j]] = True
    variant = EXTRA_VARIANT[restype]
    keep = ((variant == ALWAYS) | ((variant == NTERM) & first[:, None]) | ((variant == NOT_NTERM) & ~first[:, None])
            | ((variant == CTERM) & last[:, None]) | ((variant == NOT_DISULFIDE) & ~bonded[:, None]))
    return EXTRA_EXISTS[restype] & keep


def check_protonatable(restype: np.ndarray, labels=None) -> str | None:
    """A message naming the first residue without a standard protonation (UNK), or None when all have one."""
    bad = np.nonzero(np.asarray(restype) == UNK)[0]
    if bad.size == 0:
        return None
    where = f" (first {labels[bad[0]]})" if labels is not None else ""
    return (f"--hydrogens needs standard residues: {bad.size} residue(s) of unknown type{where} have no standard "
            "protonation; map them with --map-residue OLD=NEW or backmap without --hydrogens")
