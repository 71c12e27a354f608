"""Where coarse-grained frames come from: one table maps a coarse-grained mapping to its frame source.

A *frame source* is what every trajectory backmap reads (the MPI run, the Python API): an object with
``residues`` (:class:`~ldb_hpc.chem.protein.Residues`), ``n_frames``, ``n_residues``, ``has_cell`` and
``read(start, stop) -> ldb_hpc.io.cg.CGFrames`` (the model's conditioning in Å, time in ps, cell in Å and
radians), usable as a context manager. :func:`open_source` turns an input (a path, with ``top`` for formats
that carry no topology, or an in-memory ``mdtraj.Trajectory``) into the source of a mapping, through
:data:`SOURCES`: a new coarse-grained mapping is one source class plus one :func:`register_source` line, and
the CLI, the Python API and the MPI runtime all resolve it here. (Many PDB/mmCIF files are read file by file:
ldb_hpc.runtime.batch with ldb_hpc.io.structure_files.)
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ldb_hpc.errors import InputError
from ldb_hpc.io.cg import CGFrames, CGTrajectory

SOURCES: dict[str, type] = {}  # coarse-grained mapping name → its frame source class


def register_source(mapping: str):
    """Class decorator: the frame source of the coarse-grained mapping ``mapping`` (a ``--cg`` value). The class
    is built as ``cls(input, top=None, residue_map=None)``."""

    def add(cls):
        if mapping in SOURCES:
            raise ValueError(f"coarse-grained mapping {mapping!r} is registered twice")
        SOURCES[mapping] = cls
        return cls

    return add


def open_source(input, mapping: str = "ca", top: str | None = None, residue_map: dict | None = None):
    """The frame source of ``input`` (a path or an ``mdtraj.Trajectory``) for the coarse-grained ``mapping``."""
    cls = SOURCES.get(mapping)
    if cls is None:
        raise InputError(f"unknown coarse-grained mapping {mapping!r}; known: {', '.join(sorted(SOURCES))}")
    return cls(input, top=top, residue_map=residue_map)


class FrameSource:
    """What every frame source shares: ``n_residues``, ``time`` (in-memory inputs), ``close`` and the context
    manager. Subclasses set ``residues``, ``n_frames``, ``has_cell``, ``cell_nm_deg`` and define ``read``."""

    def note(self) -> str:
        """What the input held beside the protein beads (dropped and counted), or ""."""
        return ""

    @property
    def n_residues(self) -> int:
        return len(self.residues)

    @property
    def time(self) -> np.ndarray:
        """[F] ps of every frame (in-memory sources only)."""
        return self._time

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BeadTrace(FrameSource):
    """One bead per residue, each an atom named CA (the CA itself, or a bead at another place named CA, as CALVADOS
    writes its residue centres of mass). A path is streamed (MDTraj-HDF5 through h5py, anything else through
    mdtraj; all-atom inputs are reduced to their CA atoms: ldb_hpc.io.cg.CGTrajectory); an ``mdtraj.Trajectory``
    is read from memory (its CA atoms; other atoms are ignored). Segments: chains, broken where consecutive beads
    are farther apart than the mapping's ``max_gap`` (ldb_hpc.chem.cg_mappings)."""

    mapping = "ca"

    def __init__(self, input, top: str | None = None, residue_map: dict | None = None):
        self.name = "the trajectory" if not isinstance(input, (str, os.PathLike)) else os.fspath(input)
        if isinstance(input, (str, os.PathLike)):
            self._file = CGTrajectory(os.fspath(input), top=top, residue_map=residue_map)
            self.residues, self.has_cell = self._file.residues, self._file.has_cell
            self.n_frames = self._file.n_frames
            self.cell_nm_deg = None
        else:
            self._file = None
            self._memory(input, residue_map)
        self._segments()

    def _memory(self, traj, residue_map) -> None:
        from ldb_hpc.io.mdtraj_bridge import traj_to_atom14

        residues, pos, mask = traj_to_atom14(traj, residue_map=residue_map)
        if not mask[:, 1].all():
            raise InputError("every residue needs a CA atom")
        self._ca = pos[:, :, 1]  # [F, L, 3] Å
        if not np.isfinite(self._ca).all():
            raise InputError("the trajectory has non-finite CA coordinates")
        self.residues, self.n_frames = residues, traj.n_frames
        self._time = np.asarray(traj.time, dtype=np.float64)
        self.has_cell = traj.unitcell_lengths is not None and traj.unitcell_angles is not None
        # the cell as mdtraj holds it (nm, degrees): a trajectory backmapped in memory keeps it bit for bit
        self.cell_nm_deg = (traj.unitcell_lengths, traj.unitcell_angles) if self.has_cell else None

    def _segments(self) -> None:
        self.residues = bead_residues(self.residues, self.read(0, 1).ca[0], self.mapping, self.name)

    def read(self, start: int, stop: int) -> CGFrames:
        """Frames ``start`` ≤ f < ``stop`` (see the module docstring)."""
        if self._file is not None:
            return self._file.read(start, stop)
        return CGFrames(start, np.ascontiguousarray(self._ca[start:stop]), self._time[start:stop])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@register_source("ca")
class CASource(BeadTrace):
    """C-alpha traces: the model's conditioning is the bead itself. A trace whose consecutive beads are not spaced
    as C-alphas are is refused (:func:`check_ca_spacing`), never backmapped as if it were one."""

    mapping = "ca"


@register_source("com")
class COMSource(BeadTrace):
    """One bead per residue at the mass-weighted centre of its heavy atoms (CALVADOS, HPS; ``coarsen --cg com``):
    the model places the CAs first (ldb_hpc.model.placement)."""

    mapping = "com"


@register_source("martini3")
class MartiniSource(FrameSource):
    """Martini 3: a backbone bead BB and 0–5 side-chain beads per residue (GROMACS .gro/.xtc/.trr, or any file
    mdtraj reads with its topology; ldb_hpc.io.martini), or an ``mdtraj.Trajectory`` of such beads. Frames carry
    the beads [n, L, NB, 3] Å in ``ca``; water, ions, lipids and Gō virtual sites are dropped and counted
    (``dropped``, ``note()``)."""

    mapping = "martini3"

    def __init__(self, input, top: str | None = None, residue_map: dict | None = None):
        from ldb_hpc.io.martini import MartiniTrajectory, MemoryMartini

        if isinstance(input, (str, os.PathLike)):
            self._t = MartiniTrajectory(os.fspath(input), top=top, residue_map=residue_map)
        else:
            self._t = MemoryMartini(input, residue_map)
        self.residues, self.n_frames, self.has_cell = self._t.residues, self._t.n_frames, self._t.has_cell
        self.dropped = self._t.dropped
        self.cell_nm_deg = getattr(self._t, "cell_nm_deg", None)

    @property
    def time(self) -> np.ndarray:
        return self._t.time

    def note(self) -> str:
        return self._t.note()

    def read(self, start: int, stop: int) -> CGFrames:
        return self._t.read(start, stop)


def detect_mapping(input, top: str | None = None) -> str:
    """The mapping of an input whose ``--cg`` was not given: martini3 when its topology has Martini backbone beads
    (BB), else ca (COM traces name their beads CA: they need ``--cg com``)."""
    from ldb_hpc.io.martini import is_martini

    if isinstance(input, (str, os.PathLike)):
        from ldb_hpc.io import mdtraj_bridge as mb

        path = os.fspath(input)
        if not os.path.isfile(path):
            return "ca"
        try:
            topology = mb.load_topology(path, top)
        except InputError:
            return "ca"  # the CA reader says what is wrong with it
    else:
        topology = input.topology
    return "martini3" if is_martini(topology) else "ca"


def bead_residues(residues, first: np.ndarray, mapping_name: str, name: str):
    """The residues of a trace of ``mapping_name`` beads whose frame 0 is ``first`` [L, 3] Å: a C-alpha trace is
    checked (:func:`check_ca_spacing`); another mapping's segments follow its own bead spacing (the readers break
    chains at CA–CA > 4.2 Å; ldb_hpc.chem.cg_mappings gives each mapping its own gap) and the residue numbers (a
    jump of more than one is a gap that bead spacing alone may not show)."""
    from ldb_hpc.chem.cg_mappings import mapping
    from ldb_hpc.chem.protein import segments_from_ca

    if mapping_name == "ca":
        check_ca_spacing(first, residues.chain_id, name)
        return residues
    gap = mapping(mapping_name).max_gap
    return dataclasses.replace(residues, segment=segments_from_ca(residues.chain_id, first, max_gap=gap,
                                                                  resseq=residues.resseq))


def check_ca_spacing(first: np.ndarray, chain_id, name: str) -> None:
    """InputError when more than a fifth of the consecutive beads of a chain are not 2.6–4.3 Å apart (C-alphas
    are 3.8 Å, 2.9 Å for cis; a chain break here and there is allowed): ``first`` [L, 3] Å of frame 0."""
    chain = np.asarray(chain_id, dtype=object)
    same = chain[1:] == chain[:-1]
    if same.sum() < 4:
        return
    d = np.linalg.norm(first[1:] - first[:-1], axis=-1)[same]
    off = float(np.mean((d < 2.6) | (d > 4.3)))
    if off > 0.2:
        raise InputError(f"{name}: {off:.0%} of consecutive beads are not spaced as C-alphas (3.8 Å, 2.9 Å cis; "
                         f"median {np.median(d):.1f} Å): a residue centre-of-mass trace? pass --cg com")
