"""MDTraj-HDF5 topology JSON built from (and parsed back into) :class:`~ldb_hpc.chem.protein.Residues`.

MDTraj's HDF5 format stores the topology as one JSON string in ``/topology``::

    {"chains": [{"index": 0, "chain_id": "A",
                 "residues": [{"index": 0, "name": "ALA", "resSeq": 1, "segmentID": "",
                               "atoms": [{"index": 0, "name": "N", "element": "N"}, ...]}, ...]}, ...],
     "bonds": [[0, 1], ...]}

Three topologies are built here: the CG one (one atom ``CA`` per residue), the all-atom heavy one
(atoms in atom14 slot order per residue, only the slots that exist for the residue type, standard
bonds plus peptide bonds C(i)–N(i+1) within a segment, disulfide bonds SG–SG of ``Residues.disulfides``)
and, for ``--hydrogens``, the heavy one plus OXT and every hydrogen (ldb_hpc.chem.hydrogens; one chain per
segment).
``atom_index [L, 14]`` (``[L, 14 + NUM_EXTRA]`` with hydrogens) maps slots to flat atom indices (-1 where
absent) so that writers gather ``[..., L, K, 3] → [..., n_atoms, 3]`` with one fancy-indexing operation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ldb_hpc.chem.hydrogens import EXTRA_ELEMENT, EXTRA_NAMES, EXTRA_PARENT, Protonation, extra_mask, termini
from ldb_hpc.chem.protein import Residues, segments_from_ca
from ldb_hpc.chem.residues import (
    ATOM14,
    BOND_MASK,
    BOND_SLOTS,
    NUM_SLOTS,
    RESTYPES_3,
    SLOT_ELEMENT,
    SLOT_INDEX,
    SLOT_MASK,
)
from ldb_hpc.errors import InputError
from ldb_hpc.io.naming import atom_slots, resolve_restypes

_CHAIN_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Slots of the backbone atoms in every residue type.
_N, _CA, _C = 0, 1, 2


def chain_letter(index: int) -> str:
    """Chain identifier for a 0-based chain index: A..Z, a..z, 0..9, then the index as a string."""
    return _CHAIN_LETTERS[index] if index < len(_CHAIN_LETTERS) else str(index)


def residue_labels(chain_id, resseq, icode=None) -> list[str]:
    """["A:42", "B:7A", ...] labels for messages; inputs are [L] arrays."""
    icode = icode if icode is not None else [""] * len(chain_id)
    return [f"{c}:{int(r)}{i or ''}" for c, r, i in zip(chain_id, resseq, icode)]


# ----------------------------------------------------------------------------------------------
# building topologies


def heavy_atom_index(residues: Residues) -> tuple[np.ndarray, int]:
    """Flat atom index of every atom14 slot in the all-atom heavy topology.

    Returns (atom_index [L, 14] int64, -1 where the residue type has no such slot; n_atoms). Atoms are
    numbered residue by residue, in slot order.
    """
    mask = SLOT_MASK[residues.restype]
    flat = np.cumsum(mask.ravel()) - 1
    atom_index = np.where(mask, flat.reshape(mask.shape), -1).astype(np.int64)
    return atom_index, int(mask.sum())


def heavy_bonds(residues: Residues, atom_index: np.ndarray) -> np.ndarray:
    """[B, 2] int64 bonds of the heavy topology: standard intra-residue bonds, then peptide bonds.

    residues: L residues; atom_index: [L, 14] from :func:`heavy_atom_index`. The peptide bond
    C(i)–N(i+1) joins consecutive residues of the same segment only.
    """
    restype = residues.restype
    pairs = BOND_SLOTS[restype]  # [L, maxb, 2] slots
    valid = BOND_MASK[restype]  # [L, maxb]
    res = np.broadcast_to(np.arange(len(residues))[:, None, None], pairs.shape)
    intra = atom_index[res, pairs][valid]  # [B_intra, 2]
    link = np.nonzero(residues.peptide_links())[0]
    peptide = np.stack([atom_index[link, _C], atom_index[link + 1, _N]], axis=-1)
    return np.concatenate([intra, peptide.reshape(-1, 2)], axis=0).astype(np.int64)


def output_disulfides(residues: Residues, protonation: Protonation | None = None) -> tuple[tuple[int, int], ...]:
    """The disulfides (residue index pairs) an output of ``residues`` bonds: ``residues.disulfides``; with a
    ``protonation`` (``--hydrogens``) its pairs, which decide the hydrogens (no HG on a bonded SG) and must be the
    residues' own when the residues have any (ValueError otherwise: a bond without its hydrogens removed)."""
    if protonation is None:
        return residues.disulfides
    if residues.disulfides and tuple(residues.disulfides) != tuple(protonation.disulfides):
        raise ValueError(f"the residues' disulfides {list(residues.disulfides)} differ from the protonation's "
                         f"{list(protonation.disulfides)}")
    return protonation.disulfides


def disulfide_bonds(residues: Residues, pairs, atom_index: np.ndarray) -> np.ndarray:
    """[D, 2] int64 SG–SG atom pairs of the disulfides ``pairs`` (residue index pairs); atom_index [L, K] as
    :func:`heavy_atom_index`. ValueError when a residue of a pair is not a CYS."""
    cys = RESTYPES_3.index("CYS")
    bad = [(i, j) for i, j in pairs if residues.restype[i] != cys or residues.restype[j] != cys]
    if bad:
        raise ValueError(f"disulfides {bad} are not between two CYS residues")
    sg = SLOT_INDEX[("CYS", "SG")]
    return np.array([[atom_index[i, sg], atom_index[j, sg]] for i, j in pairs], dtype=np.int64).reshape(-1, 2)


def _chain_runs(chain_id: np.ndarray) -> list[tuple[str, int, int]]:
    """Consecutive runs of equal chain ids: [(chain_id, start, stop), ...]."""
    n = len(chain_id)
    if n == 0:
        return []
    starts = np.concatenate([[0], np.nonzero(chain_id[1:] != chain_id[:-1])[0] + 1, [n]])
    return [(str(chain_id[a]), int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


def _topology_dict(residues: Residues, names_per_type, elements_per_type, bonds: np.ndarray,
                   runs: list[tuple[str, int, int]] | None = None) -> dict:
    """Assemble the mdtraj JSON dict; names/elements_per_type: restype → list of atom names/elements, or callables
    (residue index, restype) → that list; runs: the chains as (chain_id, start, stop) (default: by chain id)."""
    std = RESTYPES_3
    chains = []
    atom = 0
    names_of = names_per_type if callable(names_per_type) else (lambda i, t: names_per_type[t])
    elements_of = elements_per_type if callable(elements_per_type) else (lambda i, t: elements_per_type[t])
    for c, (cid, a, b) in enumerate(_chain_runs(residues.chain_id) if runs is None else runs):
        res_list = []
        for i in range(a, b):
            t = int(residues.restype[i])
            atoms = []
            for name, el in zip(names_of(i, t), elements_of(i, t)):
                atoms.append({"index": atom, "name": name, "element": el})
                atom += 1
            res_list.append({"index": i, "name": std[t], "resSeq": int(residues.resseq[i]),
                             "segmentID": "", "atoms": atoms})
        chains.append({"index": c, "chain_id": cid, "residues": res_list})
    return {"chains": chains, "bonds": np.asarray(bonds, dtype=np.int64).reshape(-1, 2).tolist()}


def cg_topology(residues: Residues) -> dict:
    """The CG topology dict: one carbon atom ``CA`` per residue (atom i = residue i).

    Consecutive CAs of a segment are bonded (virtual bonds, for viewers); residue names are the
    standard 3-letter names, resSeq and chains from ``residues``.
    """
    names = [("CA",)] * len(RESTYPES_3)
    elements = [("C",)] * len(RESTYPES_3)
    link = np.nonzero(residues.peptide_links())[0]
    return _topology_dict(residues, names, elements, np.stack([link, link + 1], axis=-1))


def aa_topology(residues: Residues) -> tuple[dict, np.ndarray, int]:
    """The all-atom heavy topology dict.

    Returns (topology dict, atom_index [L, 14] int64 (-1 where absent), n_atoms). Atoms of each residue
    are its existing atom14 slots in slot order; bonds are the standard ones, the peptide bonds, then the SG–SG
    bonds of ``residues.disulfides``.
    """
    atom_index, n_atoms = heavy_atom_index(residues)
    names = [ATOM14[r] for r in RESTYPES_3]
    elements = [tuple(SLOT_ELEMENT[t, : len(ATOM14[r])]) for t, r in enumerate(RESTYPES_3)]
    bonds = np.concatenate([heavy_bonds(residues, atom_index),
                            disulfide_bonds(residues, residues.disulfides, atom_index)])
    return _topology_dict(residues, names, elements, bonds), atom_index, n_atoms


def _segment_runs(residues: Residues) -> list[tuple[str, int, int]]:
    """One chain per segment: [(chain_id, start, stop), ...] (a chain break starts a new chain, same chain id)."""
    first, _ = termini(residues.segment)
    starts = np.concatenate([np.nonzero(first)[0], [len(residues)]])
    return [(str(residues.chain_id[a]), int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


def hydrogen_topology(residues: Residues, protonation: Protonation) -> tuple[dict, np.ndarray, int]:
    """The all-atom topology with OXT and hydrogens (``--hydrogens``; ldb_hpc.chem.hydrogens).

    Returns (topology dict, atom_index [L, 14 + NUM_EXTRA] int64 (-1 where absent), n_atoms). Atoms of each residue:
    its heavy atoms in slot order, then its extra atoms in extra-slot order; bonds: the heavy ones (as
    :func:`aa_topology` without disulfides), each extra atom to its parent, then the disulfides SG–SG
    (:func:`output_disulfides`). Every segment is its own
    chain (chain id kept), so that a PDB file written from it has TER at every chain break and no tool bonds
    across it.
    """
    extra = extra_mask(residues.restype, residues.segment, protonation)
    mask = np.concatenate([SLOT_MASK[residues.restype], extra], axis=1)
    flat = np.cumsum(mask.ravel()) - 1
    atom_index = np.where(mask, flat.reshape(mask.shape), -1).astype(np.int64)
    heavy = heavy_bonds(residues, atom_index[:, :NUM_SLOTS])
    res, k = np.nonzero(extra)
    parent = atom_index[res, EXTRA_PARENT[residues.restype[res], k]]
    to_parent = np.stack([parent, atom_index[res, NUM_SLOTS + k]], axis=-1)
    ss = disulfide_bonds(residues, output_disulfides(residues, protonation), atom_index)
    bonds = np.concatenate([heavy, to_parent.reshape(-1, 2), ss], axis=0)
    std = RESTYPES_3

    def names(i, t):
        return list(ATOM14[std[t]]) + [n for n, m in zip(EXTRA_NAMES[std[t]], extra[i]) if m]

    def elements(i, t):
        return list(SLOT_ELEMENT[t, : len(ATOM14[std[t]])]) + [e for e, m in zip(EXTRA_ELEMENT[std[t]], extra[i]) if m]

    topology = _topology_dict(residues, names, elements, bonds, _segment_runs(residues))
    return topology, atom_index, int(mask.sum())


def output_topology(residues: Residues, protonation: Protonation | None = None) -> tuple[dict, np.ndarray, int]:
    """:func:`aa_topology` (heavy atoms) when ``protonation`` is None, else :func:`hydrogen_topology`."""
    return aa_topology(residues) if protonation is None else hydrogen_topology(residues, protonation)


def topology_json(topology: dict) -> bytes:
    """Serialise a topology dict the way mdtraj stores it (ASCII JSON bytes)."""
    return json.dumps(topology, separators=(",", ":")).encode("ascii")


# ----------------------------------------------------------------------------------------------
# parsing topologies


@dataclass
class ParsedTopology:
    """A topology JSON flattened to arrays (residues in file order).

    resname [L] str, chain_id [L] str, resseq [L] int64, atom_residue [N] int64 (residue of each atom),
    atom_name [N] str, atom_element [N] str, bonds [B, 2] int64 (atom indices).
    """

    resname: np.ndarray
    chain_id: np.ndarray
    resseq: np.ndarray
    atom_residue: np.ndarray
    atom_name: np.ndarray
    atom_element: np.ndarray
    bonds: np.ndarray

    @property
    def n_residues(self) -> int:
        return len(self.resname)

    @property
    def n_atoms(self) -> int:
        return len(self.atom_name)


def parse_topology(raw, source: str = "topology") -> ParsedTopology:
    """Parse mdtraj topology JSON (str, bytes or dict) into :class:`ParsedTopology`.

    Chains, residues and atoms are ordered by their ``index`` as mdtraj does; atoms must be numbered
    0..N-1 in that order. Raises InputError for anything that is not such a topology.
    """
    try:
        if isinstance(raw, (bytes, bytearray, np.bytes_)):
            raw = bytes(raw).decode("utf-8")
        topo = json.loads(raw) if isinstance(raw, str) else raw
        chains = sorted(topo["chains"], key=lambda c: c["index"])
        resname, chain_id, resseq, atom_residue, atom_name, atom_element, atom_index = [], [], [], [], [], [], []
        for c, chain in enumerate(chains):
            cid = chain.get("chain_id") or chain_letter(c)
            for res in sorted(chain["residues"], key=lambda r: r["index"]):
                r = len(resname)
                resname.append(str(res["name"]))
                chain_id.append(str(cid))
                resseq.append(int(res.get("resSeq", r)))
                for atom in sorted(res["atoms"], key=lambda a: a["index"]):
                    atom_residue.append(r)
                    atom_name.append(str(atom["name"]))
                    atom_element.append(str(atom.get("element", "")))
                    atom_index.append(int(atom["index"]))
        bonds = np.asarray(topo.get("bonds", []), dtype=np.int64).reshape(-1, 2)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: /topology is not an mdtraj topology JSON ({type(exc).__name__}: {exc})") from exc
    n = len(atom_name)
    if atom_index != list(range(n)):
        raise InputError(f"{source}: /topology atoms are not numbered 0..{n - 1} in chain/residue order")
    if bonds.size and (bonds.min() < 0 or bonds.max() >= n):
        raise InputError(f"{source}: /topology has bonds to atoms outside 0..{n - 1}")
    return ParsedTopology(np.asarray(resname, dtype=object), np.asarray(chain_id, dtype=object),
                          np.asarray(resseq, dtype=np.int64), np.asarray(atom_residue, dtype=np.int64),
                          np.asarray(atom_name, dtype=object), np.asarray(atom_element, dtype=object), bonds)


def cg_residues(topo: ParsedTopology, ca0: np.ndarray | None = None, residue_map=None, keep_unknown=False,
                source: str = "CG input") -> Residues:
    """Residues of a CG topology (exactly one atom named CA per residue, atom i = residue i).

    topo: the parsed topology; ca0: [L, 3] CA positions of frame 0 in Å for the segments (chain
    breaks at CA–CA > 4.2 Å); when None, segments follow the chains only.
    Raises InputError when a residue has no atom or more than one, or its atom is not named CA.
    """
    counts = np.bincount(topo.atom_residue, minlength=topo.n_residues)
    bad = np.nonzero(counts != 1)[0]
    if bad.size == 0:
        not_ca = np.nonzero(np.char.upper(topo.atom_name.astype(str)) != "CA")[0]
        bad = topo.atom_residue[not_ca]
    if bad.size:
        i = int(bad[0])
        atoms = topo.atom_name[topo.atom_residue == i]
        shown = ", ".join(atoms[:6]) + (", ..." if len(atoms) > 6 else "")
        desc = "no atom" if len(atoms) == 0 else f"{len(atoms)} atom{'s' if len(atoms) > 1 else ''} ({shown})"
        raise InputError(
            f"{source}: the CG topology must have one CA atom per residue; residue "
            f"{topo.resname[i]} {topo.chain_id[i]}:{topo.resseq[i]} has {desc} ({bad.size} such residues); "
            "make a CG file from an all-atom trajectory with 'ldb-hpc coarsen'"
        )
    labels = residue_labels(topo.chain_id, topo.resseq)
    restype = resolve_restypes(topo.resname, residue_map, keep_unknown, labels)
    n = topo.n_residues
    if ca0 is None:
        segment = segments_from_ca(topo.chain_id, np.zeros((n, 3)))
    else:
        segment = segments_from_ca(topo.chain_id, ca0)
    return Residues(restype, topo.resname, topo.chain_id, topo.resseq, np.full(n, "", dtype=object), segment)


def aa_residues(topo: ParsedTopology) -> tuple[Residues, np.ndarray, np.ndarray]:
    """Residues and the atom → atom14 slot map of an all-atom heavy topology (e.g. an ldb-hpc output).

    Returns (residues, atom_slot [N] int64 (-1 for atoms without a slot: hydrogens, OXT, unknown names; two atoms
    on one slot both keep it), mask [L, 14] bool). Unknown residue names become UNK. Segments follow the peptide
    bonds C(i)–N(i+1) of the topology (consecutive residues of a chain without that bond start a new segment);
    ``residues.disulfides`` are its SG–SG bonds between two CYS residues.
    """
    restype = resolve_restypes(topo.resname, keep_unknown=True)
    std = np.asarray(RESTYPES_3, dtype=object)[restype]
    res_of_atom = topo.atom_residue
    n = topo.n_residues
    atom_slot = np.full(topo.n_atoms, -1, dtype=np.int64)
    bounds = np.searchsorted(res_of_atom, np.arange(n + 1))  # atoms are numbered residue by residue
    for r in range(n):  # topology parsing, once per file
        a, b = bounds[r], bounds[r + 1]
        slots = atom_slots(std[r], topo.atom_name[a:b], duplicates="keep")
        atom_slot[a:b] = [s if isinstance(s, int) else -1 for s in slots]
    mask = np.zeros((n, NUM_SLOTS), dtype=bool)
    ok = atom_slot >= 0
    mask[res_of_atom[ok], atom_slot[ok]] = True
    # Peptide bonds → segments.
    linked = np.zeros(max(n - 1, 0), dtype=bool)
    if topo.bonds.size:
        a, b = topo.bonds[:, 0], topo.bonds[:, 1]
        for x, y in ((a, b), (b, a)):
            is_pep = (atom_slot[x] == _C) & (atom_slot[y] == _N) & (res_of_atom[y] == res_of_atom[x] + 1)
            linked[res_of_atom[x][is_pep]] = True
    chain = topo.chain_id
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = ~linked | (chain[1:] != chain[:-1])
    segment = np.cumsum(new).astype(np.int64) - 1
    disulfides = []
    if topo.bonds.size:  # SG–SG bonds between two CYS residues
        a, b = topo.bonds[:, 0], topo.bonds[:, 1]
        sg = SLOT_INDEX[("CYS", "SG")]
        cys = (std[res_of_atom[a]] == "CYS") & (std[res_of_atom[b]] == "CYS")
        ss = cys & (atom_slot[a] == sg) & (atom_slot[b] == sg) & (res_of_atom[a] != res_of_atom[b])
        disulfides = sorted({(min(i, j), max(i, j)) for i, j in zip(res_of_atom[a][ss].tolist(),
                                                                   res_of_atom[b][ss].tolist())})
    residues = Residues(restype, topo.resname, chain, topo.resseq, np.full(n, "", dtype=object), segment,
                        tuple(disulfides))
    return residues, atom_slot, mask
