"""Ideal internal geometry, *measured* on ../shared/data/train (not taken from a published table).

``ideal_geometry.json`` beside this file is written by ``scripts/measure_geometry.py`` from the training
HDF5 that ``ldb-hpc prepare`` makes of ../shared/data/train (first models, every residue with the atoms
involved present). Medians are used for bond lengths and angles, circular means (after dropping values
more than 30° from a first estimate) for dihedral offsets, so that the odd misbuilt residue does not move
them. The file records how many residues each value was measured on.

Arrays (numpy, Å and radians), indexed by restype (ldb_hpc.chem.residues.RESTYPES_3) and atom14 slot:
    frame_local  [21, 3, 3]  local coordinates of N, CA, C in the residue frame (see geometry.frames)
    bond         [21, 14]    Z-matrix bond length c–x of each slot (0 for frame slots / absent slots)
    angle        [21, 14]    Z-matrix angle b–c–x
    offset       [21, 14]    Z-matrix dihedral offset (a–b–c–x minus its torsion channel; fixed slots: the dihedral)
    bond_length  [21, 15]    ideal length of each intra-residue bond (ldb_hpc.chem.residues.BOND_SLOTS order)
    bond_std     [21, 15]    its spread (robust: 1.4826 × MAD)
    peptide_bond float       ideal C(i)–N(i+1) length
    peptide_std  float
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GEOMETRY_FILE = Path(__file__).with_name("ideal_geometry.json")


@dataclass(frozen=True)
class IdealGeometry:
    frame_local: np.ndarray
    bond: np.ndarray
    angle: np.ndarray
    offset: np.ndarray
    bond_length: np.ndarray
    bond_std: np.ndarray
    peptide_bond: float
    peptide_std: float
    source: str = ""

    def to_json(self) -> dict:
        out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        return out

    @classmethod
    def from_json(cls, data: dict) -> "IdealGeometry":
        arrays = ("frame_local", "bond", "angle", "offset", "bond_length", "bond_std")
        kwargs = {k: np.asarray(data[k], dtype=np.float64) for k in arrays}
        return cls(peptide_bond=float(data["peptide_bond"]), peptide_std=float(data["peptide_std"]),
                   source=str(data.get("source", "")), **kwargs)


@functools.lru_cache(maxsize=1)
def ideal_geometry() -> IdealGeometry:
    """The shipped ideal geometry (measured on the training set); cached."""
    with open(GEOMETRY_FILE) as fh:
        return IdealGeometry.from_json(json.load(fh))
