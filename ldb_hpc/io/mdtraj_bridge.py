"""mdtraj trajectories ↔ ldb-hpc containers: residue selection and atom14 slots (names: ldb_hpc.io.naming, the
map also renaming aliases; an atom twice in a residue is an error).

Only amino-acid residues are kept: a residue is one when its (normalised or ``--map-residue``-mapped)
name is a standard residue, or when it has backbone atoms N, CA, C (a non-standard amino acid: an
error naming it unless mapped or ``keep_unknown``), or when it is a lone carbon CA bead (CG input).
Water, ions (calcium's atom is also named CA but its element is Ca) and ligands are skipped and
counted, never dropped silently. Hydrogens and OXT are ignored; other unexpected heavy atoms are
reported with a warning.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ldb_hpc.chem.protein import Residues, segments_from_ca
from ldb_hpc.chem.residues import NUM_SLOTS, RESTYPES_3, normalize_resname
from ldb_hpc.errors import InputError
from ldb_hpc.io.files import check_readable  # noqa: F401 - part of this module's API
from ldb_hpc.io.mdtraj_hdf5 import HDF5_EXTENSIONS
from ldb_hpc.io.naming import OXT, DuplicateAtom, atom_slots, clean_residue_map, resolve_restypes
from ldb_hpc.io.paths import MDTRAJ_STRUCTURE_EXTENSIONS, extension
from ldb_hpc.io.topology import chain_letter, residue_labels

# Text structure formats: mdtraj reads them whole (iterload cannot seek in them).
STRUCTURE_FORMATS = MDTRAJ_STRUCTURE_EXTENSIONS
# Formats that carry their own topology (mdtraj loads them without ``top``).
SELF_DESCRIBING = STRUCTURE_FORMATS + HDF5_EXTENSIONS + (".arc", ".hoomdxml", ".mol2", ".gsd")
_HYDROGEN = {"H", "D"}


def needs_topology(path: str) -> bool:
    """True for formats without a topology of their own (xtc, trr, dcd, nc, ...)."""
    return extension(path) not in SELF_DESCRIBING


def _mdtraj_kwargs(path: str, top: str | None) -> dict:
    if top is not None:
        check_readable(top, "topology")
        return {"top": top}
    if needs_topology(path):
        raise InputError(f"{path}: a {extension(path) or 'extension-less'} trajectory has no topology; "
                         "pass --top TOPOLOGY (e.g. a PDB of the same system)")
    return {}


def load_topology(path: str, top: str | None = None):
    """The mdtraj.Topology of ``path`` (from ``top`` when given); InputError when unreadable."""
    import mdtraj

    check_readable(path)
    src = top if top is not None else path
    _mdtraj_kwargs(path, top)
    for f in {path, src}:
        check_hdf5(f)
    try:
        topology = mdtraj.load_topology(src)
    except Exception as exc:  # noqa: BLE001 - mdtraj raises many types for bad files
        raise InputError(f"cannot read a topology from {src}: {type(exc).__name__}: {short_message(exc)}") from exc
    if top is not None:
        n = count_atoms(path)
        if n is not None and n != topology.n_atoms:
            raise InputError(f"{path} has {n} atoms per frame but the topology {top} has {topology.n_atoms}; "
                             "pass the topology of the same system with --top")
    return topology


def check_hdf5(path: str) -> None:
    """For .h5/.hdf5 files: InputError unless h5py can open them (clear message for corrupt/truncated files)."""
    if extension(path) not in HDF5_EXTENSIONS:
        return
    import h5py

    try:
        with h5py.File(path, "r"):
            pass
    except OSError as exc:
        raise InputError(f"cannot open {path}: not an HDF5 file, or corrupt or truncated "
                         f"({short_message(exc, 120)})") from exc


def count_atoms(path: str) -> int | None:
    """Atoms per frame stored in a trajectory file (read from its first frame), None when unknown."""
    import mdtraj

    if extension(path) in STRUCTURE_FORMATS:
        return None
    try:
        with mdtraj.open(path) as fh:
            first = fh.read(1)
        xyz = first[0] if isinstance(first, tuple) else first
        return int(np.asarray(xyz).shape[1])
    except Exception:  # noqa: BLE001 - formats mdtraj.open cannot read this way: no check
        return None


def load_any(path: str, top: str | None = None, atom_indices=None):
    """Load a whole trajectory or structure with mdtraj (multi-model PDB/mmCIF → frames).

    path: any mdtraj-readable file; top: topology file for formats without one (xtc, dcd, ...);
    atom_indices: optional [K] atoms to keep. Returns an ``mdtraj.Trajectory`` (positions in nm).
    Raises InputError for a missing/unreadable file, a missing ``top`` and unparsable contents.
    """
    import mdtraj

    check_readable(path)
    kwargs = _mdtraj_kwargs(path, top)
    try:
        traj = mdtraj.load(path, atom_indices=atom_indices, **kwargs)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read {path} as a trajectory: {type(exc).__name__}: {short_message(exc)}") from exc
    if traj.n_frames == 0:
        raise InputError(f"{path} has no frames")
    return traj


def iterload_any(path: str, top: str | None = None, chunk: int = 1000, atom_indices=None, skip: int = 0):
    """Stream a trajectory in chunks of ``chunk`` frames (mdtraj.Trajectory each, positions in nm).

    Structure formats (PDB, mmCIF, GRO) are read whole and then cut into chunks. Errors → InputError.
    """
    import mdtraj

    check_readable(path)
    kwargs = _mdtraj_kwargs(path, top)
    if extension(path) in STRUCTURE_FORMATS:
        traj = load_any(path, top, atom_indices)
        for i in range(skip, traj.n_frames, chunk):
            yield traj[i: i + chunk]
        return
    try:
        for t in mdtraj.iterload(path, chunk=chunk, atom_indices=atom_indices, skip=skip, **kwargs):
            yield t
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read {path} as a trajectory: {type(exc).__name__}: {short_message(exc)}") from exc


def read_range(path: str, top: str | None, start: int, stop: int, atom_indices=None):
    """Frames ``start`` ≤ f < ``stop`` of a seekable trajectory as one mdtraj.Trajectory (the atoms
    ``atom_indices``); InputError naming the range when fewer frames could be read (a truncated file)."""
    traj = next(iter(iterload_any(path, top, chunk=stop - start, atom_indices=atom_indices, skip=start)), None)
    if traj is None or traj.n_frames < stop - start:
        got = 0 if traj is None else traj.n_frames
        raise InputError(f"{path}: expected frames {start}..{stop - 1} but only {got} could be read "
                         "(file truncated?)")
    return traj


def count_frames(path: str) -> int | None:
    """Number of frames of a seekable trajectory file (xtc, dcd, trr, nc, ...), None when unknown."""
    import mdtraj

    if extension(path) in STRUCTURE_FORMATS:
        return None
    try:
        with mdtraj.open(path) as fh:
            return int(len(fh))
    except Exception:  # noqa: BLE001 - formats without len() or without open()
        return None


def short_message(exc: BaseException, limit: int = 200) -> str:
    """The text of ``exc`` on one line, cut to ``limit`` characters (for one-line error messages)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class ProteinAtoms:
    """Protein residues and heavy atoms selected from an mdtraj topology.

    residue_index [L] int64: mdtraj residue index of each kept residue; restype/resname/chain_id/resseq [L];
    atom_index [K] int64: mdtraj atom index of each mapped heavy atom; atom_residue [K] int64 (0..L-1);
    atom_slot [K] int64 (atom14 slot); ca_atom [L] int64 mdtraj index of the CA atom (-1 if absent);
    skipped: non-protein residue name → count; unmapped: "A:42 ALA XX" heavy atoms without a slot.
    """

    residue_index: np.ndarray
    restype: np.ndarray
    resname: np.ndarray
    chain_id: np.ndarray
    resseq: np.ndarray
    atom_index: np.ndarray
    atom_residue: np.ndarray
    atom_slot: np.ndarray
    ca_atom: np.ndarray
    skipped: Counter = field(default_factory=Counter)
    unmapped: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.residue_index)

    def labels(self) -> list[str]:
        return residue_labels(self.chain_id, self.resseq)

    def residues(self, ca0: np.ndarray | None = None) -> Residues:
        """Residues with segments from ``ca0`` [L, 3] Å (frame 0 CA; NaN rows = missing CA)."""
        n = len(self)
        ca0 = np.zeros((n, 3)) if ca0 is None else ca0
        segment = segments_from_ca(self.chain_id, ca0, self.ca_atom >= 0)
        return Residues(self.restype, self.resname, self.chain_id, self.resseq, np.full(n, "", dtype=object),
                        segment)

    def skipped_summary(self) -> str:
        """"3 non-protein residues skipped (HOH×2, NA×1)" or ""."""
        if not self.skipped:
            return ""
        total = sum(self.skipped.values())
        names = ", ".join(f"{k}×{v}" for k, v in self.skipped.most_common(6))
        more = ", ..." if len(self.skipped) > 6 else ""
        return f"{total} non-protein residue{'s' if total > 1 else ''} skipped ({names}{more})"


def _element(atom) -> str:
    el = getattr(atom, "element", None)
    sym = getattr(el, "symbol", None) if el is not None else None
    return (sym or "").strip().upper()


def select_protein(topology, residue_map: dict[str, str] | None = None, keep_unknown: bool = False,
                   source: str = "input") -> ProteinAtoms:
    """Select amino-acid residues and map their heavy atoms to atom14 slots.

    topology: an mdtraj.Topology. Raises InputError when there is no amino-acid residue or when a
    residue name is unknown (naming it and ``--map-residue OLD=NEW``) unless mapped or ``keep_unknown``.
    """
    mapped_names = set(clean_residue_map(residue_map))
    res_idx, names, chains, resseq, atoms_of = [], [], [], [], []
    skipped: Counter = Counter()
    for chain in topology.chains:
        cid = (getattr(chain, "chain_id", None) or "").strip() or chain_letter(chain.index)
        for res in chain.residues:
            raw = res.name.strip().upper()
            atoms = [(a.index, a.name.strip().upper(), _element(a)) for a in res.atoms]
            heavy = [(i, n, e) for i, n, e in atoms if e not in _HYDROGEN]
            by_name = {n: e for _, n, e in heavy}
            is_standard = normalize_resname(raw) in RESTYPES_3 or raw in mapped_names
            has_backbone = {"N", "CA", "C"} <= by_name.keys()
            ca_bead = len(heavy) == 1 and "CA" in by_name and by_name["CA"] in ("C", "", "VS")
            if not (is_standard or has_backbone or ca_bead) or getattr(res, "is_water", False):
                skipped[res.name] += 1
                continue
            res_idx.append(res.index)
            names.append(res.name)
            chains.append(cid)
            resseq.append(res.resSeq)
            atoms_of.append(heavy)
    if not res_idx:
        extra = f" (found: {', '.join(f'{k}×{v}' for k, v in skipped.most_common(5))})" if skipped else ""
        raise InputError(f"{source}: no amino-acid residues found{extra}")
    chain_arr = np.asarray(chains, dtype=object)
    resseq_arr = np.asarray(resseq, dtype=np.int64)
    labels = residue_labels(chain_arr, resseq_arr)
    restype = resolve_restypes(names, residue_map, keep_unknown, labels)
    std = [RESTYPES_3[t] for t in restype]
    atom_index, atom_residue, atom_slot, unmapped = [], [], [], []
    ca_atom = np.full(len(res_idx), -1, dtype=np.int64)
    for r, heavy in enumerate(atoms_of):  # topology walk, once per file
        try:
            slots = atom_slots(std[r], [name for _, name, _ in heavy], duplicates="error")
        except DuplicateAtom as exc:
            raise InputError(f"{source}: residue {names[r]} {labels[r]} has atom {exc.name} twice "
                             f"(e.g. both O and OT1); fix the input structure") from None
        for (i, name, _), slot in zip(heavy, slots):
            if slot == OXT:
                continue
            if isinstance(slot, str):
                unmapped.append(f"{labels[r]} {names[r]} {name}")
                continue
            atom_index.append(i)
            atom_residue.append(r)
            atom_slot.append(slot)
            if slot == 1:
                ca_atom[r] = i
    return ProteinAtoms(np.asarray(res_idx, dtype=np.int64), restype, np.asarray(names, dtype=object), chain_arr,
                        resseq_arr, np.asarray(atom_index, dtype=np.int64), np.asarray(atom_residue, dtype=np.int64),
                        np.asarray(atom_slot, dtype=np.int64), ca_atom, skipped, unmapped)


def warn_unmapped(sel: ProteinAtoms, source: str = "input") -> None:
    """Warn (once, summarised) about heavy atoms that have no atom14 slot, so none vanish silently."""
    if sel.unmapped:
        shown = "; ".join(sel.unmapped[:5]) + ("; ..." if len(sel.unmapped) > 5 else "")
        warnings.warn(f"{source}: {len(sel.unmapped)} heavy atom(s) with non-standard names were ignored: {shown}",
                      stacklevel=3)


def traj_to_atom14(traj, residue_map: dict[str, str] | None = None, keep_unknown: bool = False,
                   source: str = "input") -> tuple[Residues, np.ndarray, np.ndarray]:
    """Protein heavy atoms of an mdtraj trajectory in atom14 slots.

    traj: mdtraj.Trajectory (positions in nm); residue_map: {OLD: NEW} residue renames; keep_unknown:
    unknown amino acids become UNK (backbone only) instead of an InputError.
    Returns (residues (L, segments from frame 0 CA–CA distances), positions [F, L, 14, 3] float32 Å
    (zeros where absent), mask [L, 14] bool atoms present).
    """
    sel = select_protein(traj.topology, residue_map, keep_unknown, source)
    warn_unmapped(sel, source)
    n_frames, n_res = traj.n_frames, len(sel)
    positions = np.zeros((n_frames, n_res, NUM_SLOTS, 3), dtype=np.float32)
    positions[:, sel.atom_residue, sel.atom_slot] = traj.xyz[:, sel.atom_index] * np.float32(10.0)
    mask = np.zeros((n_res, NUM_SLOTS), dtype=bool)
    mask[sel.atom_residue, sel.atom_slot] = True
    ca0 = np.where(mask[:, 1:2], positions[0, :, 1], np.nan) if n_frames else None
    return sel.residues(ca0), positions, mask
