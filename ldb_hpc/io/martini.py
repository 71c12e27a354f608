"""Martini 3 systems as GROMACS and martinize2 write them: ``.gro`` (or PDB) + ``.xtc``/``.trr``, or any file
mdtraj reads with its topology.

A protein residue is one whose particles include a backbone bead ``BB``; its side-chain beads are named ``SC1`` …
``SC5`` as in the vermouth martini3001 mapping of its residue type (ldb_hpc.chem.cg_mappings). Everything else is
dropped and counted, never silently: water (``W``), ions, lipids, other molecules, and the virtual sites of Gō
models (an extra particle named ``CA`` in a residue that has ``BB``). A protein residue missing one of its beads, a
bead name its residue type has no bead of, and one file holding residues of another mapping (C-alpha beads) beside
Martini ones are errors that name the residue.

:class:`MartiniTrajectory` reads frame ranges as :class:`~ldb_hpc.io.cg.CGFrames` whose ``ca`` holds the beads
[n, L, NB, 3] Å in the mapping's bead order (BB, SC1, …; zeros where a residue has no such bead).
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from ldb_hpc.chem.cg_mappings import MARTINI_BEADS, mapping
from ldb_hpc.chem.protein import Residues, segments_from_ca
from ldb_hpc.chem.residues import RESTYPE_INDEX, RESTYPES_3
from ldb_hpc.errors import InputError
from ldb_hpc.io import mdtraj_bridge as mb
from ldb_hpc.io.cg import CGFrames, check_coordinates
from ldb_hpc.io.mdtraj_hdf5 import NM, cell_from_file
from ldb_hpc.io.naming import resolve_restypes, standard_resname
from ldb_hpc.io.topology import chain_letter


def is_martini(topology) -> bool:
    """Whether an mdtraj topology holds Martini protein beads (any particle named BB)."""
    return any(a.name == "BB" for a in topology.atoms)


def select_beads(topology, residue_map: dict | None = None, source: str = "input"):
    """(residues without segments, bead atom indices [L, NB] (-1 absent), dropped: Counter of what was left out)."""
    m = mapping("martini3")
    rows, names, chains, resseq, dropped, ca_only = [], [], [], [], Counter(), []
    for res in topology.residues:
        atoms = list(res.atoms)
        here = {a.name: a.index for a in atoms}
        if "BB" not in here:
            std = standard_resname(res.name, residue_map or {})
            if "CA" in here and std in RESTYPE_INDEX:
                ca_only.append(f"{res.name} {chain_letter(res.chain.index)}:{res.resSeq}")
            dropped[res.name] += len(atoms)
            continue
        label = f"{res.name} {chain_letter(res.chain.index)}:{res.resSeq}"
        t = int(resolve_restypes([res.name], residue_map, labels=[label])[0])
        expected = m.bead_names[t]
        row = np.full(len(MARTINI_BEADS), -1, dtype=np.int64)
        for a in atoms:
            if a.name in expected:
                row[MARTINI_BEADS.index(a.name)] = a.index
            elif a.name == "CA":  # a Gō model's virtual site on the backbone bead
                dropped["Gō virtual site"] += 1
            else:
                raise InputError(f"{source}: residue {label} has a particle {a.name}, a bead of no known mapping "
                                 f"(Martini 3 {RESTYPES_3[t]} has {', '.join(expected)})")
        missing = [b for b in expected if row[MARTINI_BEADS.index(b)] < 0]
        if missing:
            raise InputError(f"{source}: residue {label} has no bead {', '.join(missing)} (Martini 3 "
                             f"{RESTYPES_3[t]} has {', '.join(expected)})")
        rows.append(row)
        names.append(res.name)
        chains.append(chain_letter(res.chain.index))
        resseq.append(res.resSeq)
    if rows and ca_only:
        raise InputError(f"{source}: mixed coarse-grained mappings in one file: {len(rows)} Martini residues (BB "
                         f"beads) and {len(ca_only)} with a CA bead only (first {ca_only[0]}); give one mapping per "
                         "file")
    if not rows:
        raise InputError(f"{source}: no Martini protein bead (BB) in the topology")
    restype = resolve_restypes(names, residue_map)
    L = len(rows)
    residues = Residues(restype, np.asarray(names, dtype=object), np.asarray(chains, dtype=object),
                        np.asarray(resseq, dtype=np.int64), np.full(L, "", dtype=object), np.zeros(L, np.int64))
    return residues, np.stack(rows), dropped


def _gather_beads(xyz: np.ndarray, columns: np.ndarray, present: np.ndarray) -> np.ndarray:
    """xyz [n, atoms, 3] Å → beads [n, L, NB, 3] Å: atom ``columns`` [L, NB] where ``present``, zeros elsewhere."""
    return np.where(present[None, ..., None], xyz[:, columns], np.float32(0.0))


class MartiniTrajectory:
    """A Martini 3 trajectory opened for streaming reads (see the module docstring); attributes residues (segments:
    chains, broken where consecutive BB beads are more than the mapping's gap apart in frame 0), n_frames,
    n_residues, has_cell, dropped (Counter), ``note()``; ``read(start, stop)`` → CGFrames with beads in ``ca``."""

    def __init__(self, path: str, top: str | None = None, residue_map: dict | None = None):
        self.path, self.top = str(path), top
        topology = mb.load_topology(self.path, top)
        self.residues, self._beads, self.dropped = select_beads(topology, residue_map, self.path)
        self._atoms = np.unique(self._beads[self._beads >= 0])
        self._columns = np.searchsorted(self._atoms, np.maximum(self._beads, 0))  # [L, NB] column of each bead
        self._cached = None
        n = mb.count_frames(self.path)
        if n is None:
            self._cached = mb.load_any(self.path, top, atom_indices=self._atoms)
            n = self._cached.n_frames
        if n == 0:
            raise InputError(f"{self.path}: the trajectory has zero frames")
        self.n_frames = int(n)
        first = self.read(0, 1)
        self.has_cell = first.cell_lengths is not None
        bb = first.ca[0, :, 0]
        self.residues.segment = segments_from_ca(self.residues.chain_id, bb, max_gap=mapping("martini3").max_gap,
                                                 resseq=self.residues.resseq)

    @property
    def n_residues(self) -> int:
        return len(self.residues)

    def note(self) -> str:
        """What was left out, e.g. "12,401 particles dropped (W×11,800, NA×300, …)", or ""."""
        if not self.dropped:
            return ""
        names = ", ".join(f"{k}×{v}" for k, v in self.dropped.most_common(6))
        return f"{sum(self.dropped.values()):,} particles dropped ({names}{', …' if len(self.dropped) > 6 else ''})"

    def read(self, start: int, stop: int) -> CGFrames:
        stop = min(int(stop), self.n_frames)
        if not 0 <= start < stop:
            raise InputError(f"{self.path}: frame range {start}..{stop} is empty or outside 0..{self.n_frames}")
        if self._cached is not None:
            traj = self._cached[start:stop]
        else:
            traj = mb.read_range(self.path, self.top, start, stop, self._atoms)
        xyz = traj.xyz.astype(np.float32) * np.float32(NM)  # [n, atoms read, 3] Å
        check_coordinates(xyz, start, self.path)
        beads = _gather_beads(xyz, self._columns, self._beads >= 0)
        cl = ang = None
        if traj.unitcell_lengths is not None and traj.unitcell_angles is not None:
            cl, ang = cell_from_file(traj.unitcell_lengths, traj.unitcell_angles)
        return CGFrames(start, np.ascontiguousarray(beads, dtype=np.float32), np.asarray(traj.time, np.float64),
                        cl, ang)

    def close(self) -> None:
        pass

    def __enter__(self) -> MartiniTrajectory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MemoryMartini:
    """:class:`MartiniTrajectory`'s reads over an ``mdtraj.Trajectory`` of Martini beads held in memory."""

    def __init__(self, traj, residue_map: dict | None = None):
        self.residues, self._beads, self.dropped = select_beads(traj.topology, residue_map, "the trajectory")
        self._traj = traj
        self.n_frames = traj.n_frames
        self.time = np.asarray(traj.time, dtype=np.float64)
        self.has_cell = traj.unitcell_lengths is not None and traj.unitcell_angles is not None
        self.cell_nm_deg = (traj.unitcell_lengths, traj.unitcell_angles) if self.has_cell else None
        bb = self.read(0, 1).ca[0, :, 0]
        self.residues.segment = segments_from_ca(self.residues.chain_id, bb, max_gap=mapping("martini3").max_gap,
                                                 resseq=self.residues.resseq)

    note = MartiniTrajectory.note

    def read(self, start: int, stop: int) -> CGFrames:
        xyz = self._traj.xyz[start:stop].astype(np.float32) * np.float32(NM)
        check_coordinates(xyz, start, "the trajectory")
        beads = _gather_beads(xyz, np.maximum(self._beads, 0), self._beads >= 0)
        return CGFrames(start, np.ascontiguousarray(beads, dtype=np.float32), self.time[start:stop])

    def close(self) -> None:
        pass


def write_martini(path: str, output: str, top: str | None = None, residue_map: dict | None = None,
                  keep_unknown: bool = False, overwrite: bool = False):
    """``coarsen --cg martini3``: the Martini 3 beads of every protein residue of ``path`` (all frames), written by
    mdtraj by the extension of ``output`` (.gro, .pdb, .h5; .xtc, .dcd, .trr with ``OUTPUT-stem.gro`` beside it),
    complete or not at all. Returns (frames, residues, note about skipped non-protein residues or "")."""
    import mdtraj as md

    from ldb_hpc.chem.residues import NUM_SLOTS
    from ldb_hpc.io.files import check_output_location, replaced_when_done

    check_output_location(output, overwrite)
    topology = mb.load_topology(path, top)
    sel = mb.select_protein(topology, residue_map, keep_unknown, path)
    traj = mb.load_any(path, top, atom_indices=sel.atom_index)
    L = len(sel)
    pos = np.zeros((traj.n_frames, L, NUM_SLOTS, 3), dtype=np.float32)
    pos[:, sel.atom_residue, sel.atom_slot] = traj.xyz * np.float32(NM)
    mask = np.zeros((L, NUM_SLOTS), dtype=bool)
    mask[sel.atom_residue, sel.atom_slot] = True
    m = mapping("martini3")
    beads, placed = m.beads(pos, mask, sel.restype)  # [F, L, NB, 3] Å
    out_top, chains = md.Topology(), {}
    columns = []
    for i in range(L):
        chain = chains.setdefault(sel.chain_id[i], out_top.add_chain())
        res = out_top.add_residue(RESTYPES_3[sel.restype[i]], chain, resSeq=int(sel.resseq[i]))
        for k, name in enumerate(m.bead_names[sel.restype[i]]):
            if not placed[i, MARTINI_BEADS.index(name)]:
                raise InputError(f"{path}: residue {sel.resname[i]} {sel.labels()[i]} has none of the atoms of its "
                                 f"Martini bead {name}")
            out_top.add_atom(name, md.element.virtual, res)
            columns.append((i, MARTINI_BEADS.index(name)))
    rows, cols = (np.asarray(x) for x in zip(*columns))
    xyz = beads[:, rows, cols] / np.float32(NM)
    out = md.Trajectory(xyz, out_top, time=traj.time, unitcell_lengths=traj.unitcell_lengths,
                        unitcell_angles=traj.unitcell_angles)
    ext = mb.extension(output)
    with replaced_when_done(os.path.abspath(output)) as tmp:
        if ext in (".xtc", ".dcd", ".trr"):
            getattr(out, f"save_{ext[1:]}")(tmp)
        elif ext == ".gro":
            out.save_gro(tmp)
        elif ext == ".pdb":
            out.save_pdb(tmp)
        else:
            out.save_hdf5(tmp)
    if ext in (".xtc", ".dcd", ".trr"):
        gro = os.path.splitext(output)[0] + ".gro"
        with replaced_when_done(os.path.abspath(gro)) as tmp:
            out[0].save_gro(tmp)
    residues = sel.residues(pos[0, :, 1])
    return traj.n_frames, residues, sel.skipped_summary()
