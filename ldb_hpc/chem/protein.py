"""Plain containers for proteins in atom14 slots (numpy only; units: Å).

``Residues`` is the per-residue topology shared by CG and all-atom data; ``Protein`` adds atom14
coordinates for one structure; CG trajectories are ``Residues`` + CA coordinates ``[F, L, 3]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ldb_hpc.chem.residues import NUM_SLOTS, RESTYPES_3, SLOT_MASK

# Consecutive CA atoms farther apart than this (Å) start a new segment (a chain break).
CHAIN_BREAK_CA_CA = 4.2


@dataclass
class Residues:
    """Per-residue topology, in chain order.

    restype:  [L] int64, index into RESTYPES_3 (UNK = 20)
    resname:  [L] str, the residue name as it appeared in the input (before normalisation)
    chain_id: [L] str, chain identifier
    resseq:   [L] int64, residue number from the input
    icode:    [L] str, insertion code ('' when none)
    segment:  [L] int64, 0-based segment index over the whole structure; a new segment starts at a
              new chain and at every chain break (consecutive CA–CA > 4.2 Å). Peptide bonds join
              consecutive residues of the same segment only.
    disulfides: the Cys–Cys SG–SG bonds of the topology, as sorted pairs (i, j), i < j, of residue indices
              (empty until decided: ldb_hpc.geometry.disulfides); every output writes them as bonds.
    """

    restype: np.ndarray
    resname: np.ndarray
    chain_id: np.ndarray
    resseq: np.ndarray
    icode: np.ndarray
    segment: np.ndarray
    disulfides: tuple[tuple[int, int], ...] = ()

    def __len__(self) -> int:
        return int(self.restype.shape[0])

    def __post_init__(self):
        self.restype = np.asarray(self.restype, dtype=np.int64)
        n = self.restype.shape[0]
        self.resname = np.asarray(self.resname, dtype=object)
        self.chain_id = np.asarray(self.chain_id, dtype=object)
        self.resseq = np.asarray(self.resseq, dtype=np.int64)
        self.icode = np.asarray(self.icode, dtype=object)
        self.segment = np.asarray(self.segment, dtype=np.int64)
        for name in ("resname", "chain_id", "resseq", "icode", "segment"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"Residues.{name} has shape {getattr(self, name).shape}, expected ({n},)")
        self.disulfides = tuple(sorted((int(min(p)), int(max(p))) for p in self.disulfides))
        for i, j in self.disulfides:
            if not (0 <= i < j < n):
                raise ValueError(f"Residues.disulfides: pair ({i}, {j}) is not two residues of {n}")

    def with_disulfides(self, pairs) -> "Residues":
        """The same residues with the disulfide bonds ``pairs`` (residue index pairs) instead of their own."""
        return Residues(self.restype, self.resname, self.chain_id, self.resseq, self.icode, self.segment,
                        tuple(pairs))

    @property
    def sequence(self) -> str:
        from ldb_hpc.chem.residues import RESTYPES_1

        return "".join(RESTYPES_1[i] for i in self.restype)

    @property
    def standard_names(self) -> list[str]:
        return [RESTYPES_3[i] for i in self.restype]

    def atom_mask(self) -> np.ndarray:
        """[L, 14] bool: the slots that exist for each residue type."""
        return SLOT_MASK[self.restype]

    def select(self, index) -> "Residues":
        """The residues at ``index`` (in that order); a disulfide is kept when both its residues are."""
        rows = np.arange(len(self))[index]
        new = {int(r): k for k, r in enumerate(np.atleast_1d(rows))}
        pairs = tuple((new[i], new[j]) for i, j in self.disulfides if i in new and j in new)
        return Residues(self.restype[index], self.resname[index], self.chain_id[index],
                        self.resseq[index], self.icode[index], self.segment[index], pairs)

    def peptide_links(self) -> np.ndarray:
        """[L-1] bool: residue i is peptide-bonded to i+1 (same segment)."""
        return self.segment[1:] == self.segment[:-1]


def segments_from_ca(chain_id: np.ndarray, ca: np.ndarray, ca_present: np.ndarray | None = None,
                     max_gap: float = CHAIN_BREAK_CA_CA, resseq: np.ndarray | None = None) -> np.ndarray:
    """Segment index per residue from chains and CA–CA distances.

    chain_id: [L] chain identifiers; ca: [L, 3] CA positions in Å (or another bead per residue, with its own
    ``max_gap``: ldb_hpc.chem.cg_mappings); ca_present: [L] bool (a residue without a CA breaks the chain on both
    sides); resseq: [L] residue numbers, when given a jump of more than one also breaks the chain (for beads
    whose spacing cannot show a short gap, e.g. residue centres of mass). Returns [L] int64.
    """
    n = len(chain_id)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    ca = np.asarray(ca, dtype=np.float64)
    present = np.ones(n, dtype=bool) if ca_present is None else np.asarray(ca_present, dtype=bool)
    new = np.zeros(n, dtype=bool)
    new[0] = True
    chain = np.asarray(chain_id, dtype=object)
    new[1:] |= chain[1:] != chain[:-1]
    d = np.linalg.norm(ca[1:] - ca[:-1], axis=-1)
    new[1:] |= ~(d <= max_gap)  # NaN distances break too
    if resseq is not None:
        new[1:] |= np.diff(np.asarray(resseq, dtype=np.int64)) > 1
    new[1:] |= ~present[1:] | ~present[:-1]
    return np.cumsum(new).astype(np.int64) - 1


@dataclass
class Protein:
    """One structure in atom14 slots.

    residues:  the per-residue topology (L residues)
    positions: [L, 14, 3] float32, Å (zeros where mask is False)
    mask:      [L, 14] bool, atom present in the input
    bfactor:   [L, 14] float32 (optional, zeros when unknown)
    name:      a label (file name, model number)
    """

    residues: Residues
    positions: np.ndarray
    mask: np.ndarray
    name: str = ""
    bfactor: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        n = len(self.residues)
        self.positions = np.asarray(self.positions, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.positions.shape != (n, NUM_SLOTS, 3):
            raise ValueError(f"Protein.positions has shape {self.positions.shape}, expected ({n}, 14, 3)")
        if self.mask.shape != (n, NUM_SLOTS):
            raise ValueError(f"Protein.mask has shape {self.mask.shape}, expected ({n}, 14)")

    def __len__(self) -> int:
        return len(self.residues)

    @property
    def ca(self) -> np.ndarray:
        """[L, 3] CA positions, Å."""
        return self.positions[:, 1]
