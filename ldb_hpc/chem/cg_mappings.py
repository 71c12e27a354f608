"""Coarse-grained mappings of a residue's heavy atoms to beads, as weights over its atom14 slots.

- ``ca``: one bead, the C-alpha.
- ``com``: one bead per residue at the mass-weighted centre of its heavy atoms (CALVADOS, HPS models).
- ``martini3``: Martini 3's backbone bead BB and side-chain beads SC1…SC5, read from the ``vermouth`` package's own
  martini3001 mapping files (the martinize2 project's data, ``{res}.charmm36.map``), placed as martinize2 places
  them: each atom's mass times its mapping weight (an atom listed for two beads gives each half; one marked ``!``
  gives none), over the atoms present. Structures here carry heavy atoms only, so hydrogens add no mass.

A mapping is a :class:`CGMapping`: bead names per residue type and a weight table [21, NB, 14]; :meth:`beads`
turns atom14 coordinates into beads (numpy or torch, batched).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ldb_hpc.chem.residues import ATOM14, NUM_SLOTS, RESTYPES_3, SLOT_ELEMENT, UNK

MASS = {"C": 12.011, "N": 14.007, "O": 15.999, "S": 32.06}
MARTINI_BEADS = ("BB", "SC1", "SC2", "SC3", "SC4", "SC5")
_CHARMM_NAMES = {("ILE", "CD"): "CD1", ("*", "OT1"): "O", ("*", "O1"): "O"}  # map-file name → atom14 name


@dataclass(frozen=True)
class CGMapping:
    """name: the ``--cg`` value; bead_names: per residue type, the names of its beads (in bead order); weights:
    [21, NB, 14] float64 (bead k of type t is Σ_s w[t, k, s]·x_s / Σ_s w[t, k, s] over present slots s)."""

    name: str
    bead_names: tuple[tuple[str, ...], ...]
    weights: np.ndarray
    max_gap: float = 4.2  # Å between the first beads of bonded residues, beyond which a chain is broken

    @property
    def max_beads(self) -> int:
        return int(self.weights.shape[1])

    def bead_mask(self, restype) -> np.ndarray:
        """[L, NB] bool: which beads residues of these types have."""
        return self.weights[np.asarray(restype)].sum(-1) > 0

    def beads(self, positions, mask, restype):
        """Bead positions [..., L, NB, 3] (zeros where a residue has no such bead or none of its atoms) from
        positions [..., L, 14, 3] Å and the atoms present mask [L, 14] (or [..., L, 14]); numpy or torch in,
        the same out. Also returns which beads were placed [..., L, NB] bool."""
        w = self.weights[np.asarray(restype)]  # [L, NB, 14]
        if hasattr(positions, "detach"):  # torch
            import torch

            wt = torch.as_tensor(w, dtype=positions.dtype, device=positions.device)
            wt = wt * torch.as_tensor(mask, device=positions.device).to(positions.dtype).unsqueeze(-2)
            total = wt.sum(-1)
            xyz = torch.einsum("...bs,...sx->...bx", wt, positions) / total.clamp_min(1e-9).unsqueeze(-1)
            return xyz, total > 0
        wm = w * np.asarray(mask, dtype=np.float64)[..., None, :]
        total = wm.sum(-1)
        xyz = np.einsum("...bs,...sx->...bx", wm, np.asarray(positions, dtype=np.float64))
        xyz = xyz / np.maximum(total, 1e-9)[..., None]
        return xyz.astype(np.float32), total > 0


def _slot(res: str, atom: str) -> int | None:
    atom = _CHARMM_NAMES.get((res, atom), _CHARMM_NAMES.get(("*", atom), atom))
    names = ATOM14[res]
    return names.index(atom) if atom in names else None


def _single(name: str, weight_of) -> CGMapping:
    w = np.zeros((len(RESTYPES_3), 1, NUM_SLOTS))
    for t, res in enumerate(RESTYPES_3):
        for s, atom in enumerate(ATOM14[res]):
            w[t, 0, s] = weight_of(t, s, atom)
    # Bonded residues' centres of mass are at most 9.14 Å apart over the 494k residues of train/ (99.99 % within
    # 8.5 Å): 9.5 Å splits none of them and finds the wider chain breaks (40 % of train/'s; narrower ones look
    # bonded at this resolution, and CALVADOS-style simulations have none).
    return CGMapping(name, tuple(("CA",) if name == "ca" else (res,) for res in RESTYPES_3), w,
                     4.2 if name == "ca" else 9.5)


def parse_map_atoms(text: str) -> list[tuple[str, list[str]]]:
    """The ``[ atoms ]`` section of a vermouth/backward mapping file: [(atom, [bead, ...]), ...] in file order
    (a bead marked ``!`` stays in the list with its mark)."""
    out, section = [], None
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            section = line.strip("[] ").lower()
            continue
        if section == "atoms":
            parts = line.split()
            out.append((parts[1], parts[2:]))
    return out


def _martini_file(res: str) -> str:
    from importlib import resources

    name = {"HIS": "his"}.get(res, res.lower())
    folder = resources.files("vermouth") / "data" / "mappings" / "martini3001"
    return (folder / f"{name}.charmm36.map").read_text()


def _martini3() -> CGMapping:
    w = np.zeros((len(RESTYPES_3), len(MARTINI_BEADS), NUM_SLOTS))
    names = []
    for t, res in enumerate(RESTYPES_3):
        if t == UNK:  # unknown residues keep their backbone bead only
            for s, atom in enumerate(("N", "CA", "C", "O")):
                w[t, 0, s] = MASS[atom[0]]
            names.append(("BB",))
            continue
        beads: list[str] = []
        for atom, targets in parse_map_atoms(_martini_file(res)):
            slot = _slot(res, atom)
            real = [b for b in targets if not b.startswith("!")]
            for b in [x.lstrip("!") for x in targets]:
                if b not in beads:
                    beads.append(b)
            if slot is None or not real:  # hydrogens and null weights
                continue
            for b in real:
                w[t, MARTINI_BEADS.index(b), slot] += MASS[SLOT_ELEMENT[t, slot]] / len(real)
        names.append(tuple(b for b in MARTINI_BEADS if b in beads))
    return CGMapping("martini3", tuple(names), w, 6.0)  # BB is within ~1 Å of the CA


@functools.cache
def mapping(name: str) -> CGMapping:
    """The mapping ``name`` (ca, com, martini3); KeyError for another name."""
    if name == "ca":
        return _single("ca", lambda t, s, atom: 1.0 if atom == "CA" else 0.0)
    if name == "com":
        return _single("com", lambda t, s, atom: MASS[SLOT_ELEMENT[t, s]])
    if name == "martini3":
        return _martini3()
    raise KeyError(name)


MAPPINGS = ("ca", "com", "martini3")
