#!/usr/bin/env python
"""Thermal frames for training (issue 20): short implicit-solvent MD of real structures, harvested into a training set.

The model backmaps MD frames worse than crystal structures, and the gap is side chains. These frames are
structures perturbed as MD perturbs them: each input chain is completed (missing heavy atoms, hydrogens),
minimised, equilibrated at 300 K and sampled every few ps; every harvested frame becomes one "structure" of a
training-set HDF5 in the exact layout of :mod:`ldb_hpc.io.training_set`, so ``read_training_set`` and
``ldb-hpc train refine --data`` take it as it is.

Usage::

    python scripts/thermal_frames.py run ../shared/data/valid/pfam40 --out /work/runs/thermal/pfam40 \\
        --manifest ../shared/data/MANIFEST.tsv
    python scripts/thermal_frames.py run ../shared/data/train --out /work/runs/thermal/train \\
        --manifest ../shared/data/MANIFEST.tsv --shuffle --limit 300      # raise --limit later to add more
    python scripts/thermal_frames.py merge /work/runs/thermal/pfam40      # → OUT/thermal.h5 (run does it too)
    python scripts/thermal_frames.py status /work/runs/thermal/pfam40

What one input goes through (:func:`process_file`):

1. read with the project's reader (first model; altlocs, MSE, Rosetta names, legacy columns as in ``prepare``);
   the first chain of ``--min-res``..``--max-res`` residues without UNK residues is taken (one chain per file);
   its segments (pieces between chain breaks, CA–CA > 4.2 Å) become separate chains for the force field, so no
   peptide bond is made across a gap (their ends become charged termini); segments under 3 residues are dropped;
2. completed with PDBFixer (missing heavy atoms incl. OXT, hydrogens at pH 7; no missing residues are built);
   without PDBFixer, ``openmm.app.Modeller.addHydrogens`` after OXT is placed by hand, and a chain with
   missing heavy atoms is skipped (the reason says so);
3. OpenMM: amber14-all.xml + implicit/gbn2.xml (GBn2, the implicit model OpenMM ships for amber14), no cutoff,
   HBonds constraints, LangevinMiddleIntegrator 300 K, friction 1/ps, 2 fs, CPU platform with ``--threads``;
   minimise, velocities from the seed, ``--equil-ps`` of equilibration, then ``--frames`` frames every
   ``--every-ps``;
4. heavy atoms back to atom14 slots (HIS variants → HIS, CYX → CYS; OXT and hydrogens have no slot), every
   slot of every residue present (mask all True), the input's resseq/icode/chain id kept.

Output folder (OUT):

    state.json          done / failed (with reasons) / skipped inputs and the simulation settings; rewritten
                        atomically after every input, so a killed run loses at most the input it was on
    shards/KEY.h5       one training-set HDF5 per done input (its frames), written under a temporary name and
                        renamed when complete: a reader never sees half a protein
    thermal.h5          all done shards merged (``merge``; also written by ``run`` every ``--merge-every`` inputs
                        and at the end), again under a temporary name and renamed
    run.lock            held (flock) by a running ``run``: a second run on the same OUT stops with an error

In both HDF5 kinds ``files`` holds ``INPUT#frameKK`` per frame, and the group ``frames/`` one row per frame:
``source`` (input path), ``chain``, ``frame`` (index), ``time_ps`` (since the end of minimisation), ``seed``,
``potential_kj_mol``; attribute ``thermal`` is the settings (JSON). Chains carry the input's cluster95/cluster40
from the manifest (looked up with the ``#frame`` suffix removed), so the split by cluster keeps every frame of a
protein with its crystal structure's cluster.

Determinism: the seed of an input is a hash of ``--seed`` and its key (the path relative to the manifest's data
folder when listed), so it does not depend on order or on which other inputs run; OpenMM's CPU platform with one
thread, for the MD and for the minimisations PDBFixer and Modeller run while completing, gives the same frames on
the same machine and OpenMM version (with several threads the force sums vary from run to run).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ldb_hpc.chem.residues import (
    ATOM14,
    NUM_SLOTS,
    RESTYPES_3,
    SLOT_INDEX,
    SLOT_MASK,
    UNK,
    normalize_atomname,
    normalize_resname,
)
from ldb_hpc.errors import InputError
from ldb_hpc.io.files import replaced_when_done
from ldb_hpc.io.parsed_file import ParsedFile
from ldb_hpc.io.sources import Manifest, collect_structure_files
from ldb_hpc.io.structure import ParseReport, read_structure
from ldb_hpc.io.training_set import read_training_set, write_training_h5

STATE_VERSION = 1
MIN_SEGMENT = 3  # shorter pieces cannot be matched by amber's terminal templates (a lone residue is both termini)
FRAME_MARK = "#frame"


# ----------------------------------------------------------------------------------------------------
# Settings and state (typed records; JSON only in the read/write functions)


@dataclass(frozen=True)
class SimSettings:
    """What makes the frames what they are; a rerun with other values is refused (the set would be mixed)."""

    forcefield: tuple[str, ...] = ("amber14-all.xml",)
    solvent: str = "obc2"  # "obc2" (native GBSAOBCForce, = implicit/obc2.xml) or "gbn2" (implicit/gbn2.xml)
    cutoff_nm: float = 1.2  # CutoffNonPeriodic for nonbonded and GB; 0 = NoCutoff (2x slower at 120 residues)
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    timestep_fs: float = 2.0
    constraints: str = "HBonds"
    min_tolerance_kj_mol_nm: float = 10.0
    min_iterations: int = 5000
    equil_ps: float = 5.0
    every_ps: float = 2.0
    frames: int = 8
    ph: float = 7.0
    min_res: int = 40
    max_res: int = 250
    seed: int = 0

    def steps(self, ps: float) -> int:
        return int(round(ps * 1000.0 / self.timestep_fs))


@dataclass
class Done:
    shard: str  # file name under OUT/shards
    chain: str
    residues: int
    frames: int
    atoms: int
    fixer: str
    seconds: float
    md_seconds: float
    ns_per_day: float
    minimise_seconds: float


@dataclass
class State:
    settings: SimSettings
    done: dict[str, Done] = field(default_factory=dict)  # key → what was written
    failed: dict[str, str] = field(default_factory=dict)  # key → why (an error while processing)
    skipped: dict[str, str] = field(default_factory=dict)  # key → why (no eligible chain: not an error)
    paths: dict[str, str] = field(default_factory=dict)  # key → input path as read
    manifest: str = ""  # the MANIFEST.tsv of the run ('' when none): merge looks clusters up there


def read_state(path: str) -> State | None:
    """The state at ``path``, or None when there is none yet."""
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        raw = json.load(fh)
    if raw.get("version") != STATE_VERSION:
        raise InputError(f"{path}: state version {raw.get('version')}, expected {STATE_VERSION}")
    s = raw["settings"]
    s["forcefield"] = tuple(s["forcefield"])
    return State(settings=SimSettings(**s), done={k: Done(**v) for k, v in raw["done"].items()},
                 failed=dict(raw["failed"]), skipped=dict(raw["skipped"]), paths=dict(raw["paths"]),
                 manifest=raw.get("manifest", ""))


def write_state(path: str, state: State) -> None:
    """Write ``state`` to ``path`` atomically (temporary name, then rename)."""
    raw = {"version": STATE_VERSION, "settings": dataclasses.asdict(state.settings),
           "done": {k: dataclasses.asdict(v) for k, v in state.done.items()},
           "failed": state.failed, "skipped": state.skipped, "paths": state.paths, "manifest": state.manifest}
    with replaced_when_done(path, "state ") as tmp:
        with open(tmp, "w") as fh:
            json.dump(raw, fh, indent=1, sort_keys=True)
            fh.write("\n")


# ----------------------------------------------------------------------------------------------------
# One input: chain selection, completion, MD, atom14


class Skip(Exception):
    """The input has nothing to simulate (recorded under ``skipped``, not an error)."""


@dataclass
class Chain:
    """The rows of one chain of a read structure, split into the segments simulated as separate chains."""

    chain_id: str
    segments: list[np.ndarray]  # row indices into the Protein, each a run of consecutive residues
    dropped_short: int  # residues in segments under MIN_SEGMENT

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate(self.segments)


def select_chain(protein, min_res: int, max_res: int) -> Chain:
    """The first chain of ``protein`` with ``min_res``..``max_res`` residues (after dropping segments under
    MIN_SEGMENT residues) and no UNK residue; :class:`Skip` naming every chain's reason when there is none."""
    res = protein.residues
    cid = res.chain_id
    n = len(res)
    starts = np.flatnonzero(np.r_[True, cid[1:] != cid[:-1]])
    ends = np.r_[starts[1:], n]
    why = []
    for s, e in zip(starts, ends):
        name = str(cid[s]) or "' '"
        rows = np.arange(s, e)
        if np.any(res.restype[rows] == UNK):
            unk = sorted({str(x) for x in res.resname[rows][res.restype[rows] == UNK]})
            why.append(f"{name}: non-standard residues {','.join(unk)}")
            continue
        seg = res.segment[rows]
        cuts = np.flatnonzero(seg[1:] != seg[:-1]) + 1
        pieces = np.split(rows, cuts)
        kept = [p for p in pieces if len(p) >= MIN_SEGMENT]
        n_kept = sum(len(p) for p in kept)
        if not min_res <= n_kept <= max_res:
            why.append(f"{name}: {n_kept} residues")
            continue
        return Chain(str(cid[s]), kept, int(len(rows) - n_kept))
    raise Skip(f"no chain of {min_res}-{max_res} standard residues ({'; '.join(why)})")


def _topology(protein, chain: Chain, add_oxt: bool):
    """OpenMM Topology + positions (nm) of the heavy atoms present in ``chain``, one OpenMM chain per segment.

    add_oxt: place OXT on each segment's last residue by mirroring O through the CA→C axis (what PDBFixer would
    add; amber's C-terminal templates need it)."""
    from openmm import app, unit
    from openmm.app.element import Element

    top = app.Topology()
    xyz = []
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    res = protein.residues
    for k, seg in enumerate(chain.segments):
        oc = top.addChain(id=letters[k % 26])
        for j, r in enumerate(seg):
            name = RESTYPES_3[res.restype[r]]
            ores = top.addResidue(name, oc, id=str(int(res.resseq[r])), insertionCode=str(res.icode[r] or ""))
            for s, atom in enumerate(ATOM14[name]):
                if protein.mask[r, s]:
                    top.addAtom(atom, Element.getBySymbol(atom[0]), ores)
                    xyz.append(protein.positions[r, s])
            if add_oxt and j == len(seg) - 1 and protein.mask[r, :4].all():
                ca, c, o = protein.positions[r, 1], protein.positions[r, 2], protein.positions[r, 3]
                axis = (c - ca) / np.linalg.norm(c - ca)
                d = o - c
                top.addAtom("OXT", Element.getBySymbol("O"), ores)
                xyz.append(c + 2.0 * np.dot(d, axis) * axis - d)
    return top, unit.Quantity(np.asarray(xyz, dtype=np.float64) / 10.0, unit.nanometer)


def _have_pdbfixer() -> bool:
    try:
        import pdbfixer  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_platform(threads: int):
    """OpenMM's CPU platform with ``threads`` threads as its default: every Context made on it without explicit
    properties (PDBFixer's and Modeller's own minimisations included) uses them. With more than one thread the
    CPU platform sums forces in an order that varies from run to run, so equal seeds give unequal frames."""
    import openmm

    platform = openmm.Platform.getPlatformByName("CPU")
    platform.setPropertyDefaultValue("Threads", str(threads))
    return platform


def complete(protein, chain: Chain, forcefield, ph: float, seed: int, fixer: str, threads: int = 1):
    """(topology, positions) of ``chain`` with every heavy atom and the hydrogens of pH ``ph``.

    fixer: "pdbfixer" (missing heavy atoms rebuilt) or "modeller" (hydrogens only; :class:`Skip` when heavy atoms
    are missing). Both minimise what they add on :func:`cpu_platform` (``threads``), never on a platform OpenMM picks
    with all cores. Raises whatever PDBFixer / OpenMM raise on a structure they cannot complete."""
    import random

    from openmm import app

    platform = cpu_platform(threads)
    random.seed(seed)  # Modeller.addHydrogens starts hydrogens at positions from Python's random
    if fixer == "pdbfixer":
        from pdbfixer import PDBFixer

        top, pos = _topology(protein, chain, add_oxt=False)
        text = io.StringIO()
        app.PDBFile.writeFile(top, pos, text, keepIds=True)
        fx = PDBFixer(pdbfile=io.StringIO(text.getvalue()), platform=platform)
        fx.missingResidues = {}  # never invent residues: gaps stay gaps (separate chains)
        fx.findMissingAtoms()
        fx.addMissingAtoms(seed=seed)
        fx.addMissingHydrogens(ph, forcefield=forcefield)
        return fx.topology, fx.positions
    rows = chain.rows
    missing = int(np.count_nonzero(SLOT_MASK[protein.residues.restype[rows]] & ~protein.mask[rows]))
    if missing:
        raise Skip(f"{missing} heavy atoms missing and PDBFixer is not installed (pip install pdbfixer)")
    top, pos = _topology(protein, chain, add_oxt=True)
    top.createStandardBonds()
    top.createDisulfideBonds(pos)
    modeller = app.Modeller(top, pos)
    modeller.addHydrogens(forcefield, pH=ph, platform=platform)
    return modeller.topology, modeller.positions


def atom14_index(topology, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Where each heavy atom of ``topology`` goes: (atom index [M], residue [M], slot [M]) and the standard
    residue names [L]. Raises ValueError when the topology does not have ``n_rows`` residues or a slot stays
    empty."""
    atoms, rows, slots, names = [], [], [], []
    for k, res in enumerate(topology.residues()):
        name = normalize_resname(res.name)
        names.append(name)
        for a in res.atoms():
            if a.element is None or a.element.symbol in ("H", "D"):
                continue
            s = SLOT_INDEX.get((name, normalize_atomname(name, a.name)))
            if s is not None:
                atoms.append(a.index)
                rows.append(k)
                slots.append(s)
    if len(names) != n_rows:
        raise ValueError(f"completed topology has {len(names)} residues, expected {n_rows}")
    filled = np.zeros((n_rows, NUM_SLOTS), bool)
    filled[rows, slots] = True
    want = SLOT_MASK[[RESTYPES_3.index(n) if n in RESTYPES_3 else UNK for n in names]]
    if (want & ~filled).any():
        r, s = np.argwhere(want & ~filled)[0]
        raise ValueError(f"no atom for slot {ATOM14[names[r]][s]} of residue {r} ({names[r]}) after completion")
    return np.asarray(atoms), np.asarray(rows), np.asarray(slots), names


@dataclass
class MDResult:
    positions: np.ndarray  # [F, n_atoms, 3] float64 nm
    time_ps: np.ndarray  # [F] since the end of minimisation
    potential: np.ndarray  # [F] kJ/mol
    md_seconds: float
    minimise_seconds: float
    platform: str


def build_system(topology, settings: SimSettings):
    """The OpenMM System of ``topology``: settings.forcefield (amber14-all.xml) plus the implicit solvent.

    solvent "obc2": OpenMM's native GBSAOBCForce with the radii and screening factors of implicit/obc2.xml (mbondi2;
    Amber igb=5, ACE surface term): the same energy as ``ForceField("amber14-all.xml", "implicit/obc2.xml")``, about
    3x faster on the CPU platform, whose CustomGBForce (every implicit/*.xml file) is slow. "gbn2": implicit/gbn2.xml
    as OpenMM ships it (about 4x slower than obc2 here)."""
    import openmm
    from openmm import app, unit

    cutoff = {} if not settings.cutoff_nm else {"nonbondedCutoff": settings.cutoff_nm * unit.nanometer}
    method = app.CutoffNonPeriodic if settings.cutoff_nm else app.NoCutoff
    files = settings.forcefield + (("implicit/gbn2.xml",) if settings.solvent == "gbn2" else ())
    system = app.ForceField(*files).createSystem(topology, nonbondedMethod=method,
                                                 constraints=getattr(app, settings.constraints), **cutoff)
    if settings.solvent == "obc2":
        from openmm.app.internal.customgbforces import GBSAOBC2Force

        nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
        gb = openmm.GBSAOBCForce()
        gb.setSoluteDielectric(1.0)
        gb.setSolventDielectric(78.5)
        for i, (radius, screen) in enumerate(GBSAOBC2Force.getStandardParameters(topology)):
            gb.addParticle(nb.getParticleParameters(i)[0], float(radius), float(screen))
        if settings.cutoff_nm:
            gb.setNonbondedMethod(openmm.GBSAOBCForce.CutoffNonPeriodic)
            gb.setCutoffDistance(settings.cutoff_nm * unit.nanometer)
            nb.setReactionFieldDielectric(1.0)  # the solvent is the GB term's, not a reaction field's
        system.addForce(gb)
    elif settings.solvent != "gbn2":
        raise InputError(f"unknown solvent {settings.solvent!r} (obc2 or gbn2)")
    return system


def simulate(topology, positions, settings: SimSettings, seed: int, threads: int) -> MDResult:
    """Minimise, equilibrate and harvest ``settings.frames`` frames (see the module docstring). seed > 0."""
    import openmm
    from openmm import app, unit

    system = build_system(topology, settings)
    integ = openmm.LangevinMiddleIntegrator(settings.temperature_k * unit.kelvin,
                                           settings.friction_per_ps / unit.picosecond,
                                           settings.timestep_fs * unit.femtosecond)
    integ.setRandomNumberSeed(seed)
    platform = cpu_platform(threads)
    sim = app.Simulation(topology, system, integ, platform, {"Threads": str(threads)})
    sim.context.setPositions(positions)
    t0 = time.perf_counter()
    sim.minimizeEnergy(tolerance=settings.min_tolerance_kj_mol_nm * unit.kilojoule_per_mole / unit.nanometer,
                       maxIterations=settings.min_iterations)
    t1 = time.perf_counter()
    sim.context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, seed)
    sim.step(settings.steps(settings.equil_ps))
    frames, times, energies = [], [], []
    every = settings.steps(settings.every_ps)
    for k in range(settings.frames):
        sim.step(every)
        st = sim.context.getState(getPositions=True, getEnergy=True)
        xyz = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not np.isfinite(xyz).all():
            raise ValueError(f"non-finite coordinates at frame {k}")
        frames.append(np.array(xyz))
        times.append(settings.equil_ps + (k + 1) * settings.every_ps)
        energies.append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return MDResult(np.stack(frames), np.asarray(times), np.asarray(energies), time.perf_counter() - t1, t1 - t0,
                    platform.getName())


def check_geometry(pos: np.ndarray, segment: np.ndarray, tol: float = 0.25) -> None:
    """ValueError when a frame's N–CA, CA–C or peptide C–N bond is off by more than ``tol`` Å (a broken frame).

    pos: [F, L, 14, 3] Å; segment: [L]."""
    same = segment[1:] == segment[:-1]
    for name, d, ideal in (("N-CA", np.linalg.norm(pos[:, :, 1] - pos[:, :, 0], axis=-1), 1.46),
                           ("CA-C", np.linalg.norm(pos[:, :, 2] - pos[:, :, 1], axis=-1), 1.52),
                           ("C-N", np.linalg.norm(pos[:, 1:, 0] - pos[:, :-1, 2], axis=-1)[:, same], 1.33)):
        worst = float(np.abs(d - ideal).max()) if d.size else 0.0
        if worst > tol:
            raise ValueError(f"{name} bond off ideal by {worst:.2f} Å in a harvested frame")


@dataclass
class ProteinFrames:
    """The harvested frames of one input, ready for the training-set writer."""

    key: str
    path: str
    chain: Chain
    frames: list[ParsedFile]
    time_ps: np.ndarray
    potential: np.ndarray
    seed: int
    fixer: str
    atoms: int
    md_seconds: float
    minimise_seconds: float
    seconds: float


def input_seed(seed: int, key: str) -> int:
    """The OpenMM seed of one input: a hash of the run's seed and the input's key, in 1..2**31-1 (0 = random
    in OpenMM)."""
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "little")
    return 1 + h % (2 ** 31 - 2)


def process_file(path: str, key: str, settings: SimSettings, threads: int = 1, fixer: str = "auto") -> ProteinFrames:
    """Read, complete, simulate and map one input to atom14 frames. Raises :class:`Skip` when it has no eligible
    chain; any other exception is a failure of this input."""
    from openmm import app

    t0 = time.perf_counter()
    if fixer == "auto":
        fixer = "pdbfixer" if _have_pdbfixer() else "modeller"
    try:
        protein = read_structure(path, models="first", keep_unknown=True)[0]
    except InputError as exc:
        raise Skip(f"unreadable: {' '.join(str(exc).split())}") from None
    chain = select_chain(protein, settings.min_res, settings.max_res)
    seed = input_seed(settings.seed, key)
    ff = app.ForceField(*settings.forcefield)
    top, pos = complete(protein, chain, ff, settings.ph, seed, fixer, threads)
    rows = chain.rows
    idx, res_k, slots, names = atom14_index(top, len(rows))
    md = simulate(top, pos, settings, seed, threads)
    n_frames, n = len(md.positions), len(rows)
    xyz = np.zeros((n_frames, n, NUM_SLOTS, 3), np.float32)
    xyz[:, res_k, slots] = md.positions[:, idx] * 10.0
    mask = SLOT_MASK[[RESTYPES_3.index(x) for x in names]]
    seg_of_row = np.concatenate([np.full(len(s), k) for k, s in enumerate(chain.segments)])
    check_geometry(xyz, seg_of_row)
    res = protein.residues
    restype = np.asarray([RESTYPES_3.index(x) for x in names], np.int8)
    frames = []
    for f in range(n_frames):
        fpath = f"{path}{FRAME_MARK}{f:02d}"
        rep = ParseReport(path=fpath, n_models=1, models_read=1, chains=1, segments=len(chain.segments),
                          residues=n)
        frames.append(ParsedFile(
            fpath, True, report=rep, positions=xyz[f] * mask[..., None], mask=mask.copy(), restype=restype,
            resname=np.asarray(names).astype("S5"), resseq=res.resseq[rows].astype(np.int32),
            icode=np.asarray([str(c)[:1] for c in res.icode[rows]]).astype("S1"),
            chain_id=np.full(n, chain.chain_id, dtype=object), segment=seg_of_row.astype(np.int64)))
    return ProteinFrames(key, path, chain, frames, md.time_ps, md.potential, seed, fixer, top.getNumAtoms(),
                         md.md_seconds, md.minimise_seconds, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------------
# Writing: shards and the merged file


class _FrameManifest(Manifest):
    """The manifest, looked up with the ``#frameKK`` suffix of a frame's path removed."""

    def match_file(self, path: str) -> str | None:
        return super().match_file(path.split(FRAME_MARK)[0])


def _frame_tables(h5, source, chain, frame, time_ps, seed, potential, settings: SimSettings) -> None:
    import h5py

    s = h5py.string_dtype()
    g = h5.create_group("frames")
    g.create_dataset("source", data=np.asarray(source, dtype=object), dtype=s)
    g.create_dataset("chain", data=np.asarray(chain, dtype=object), dtype=s)
    g.create_dataset("frame", data=np.asarray(frame, np.int32))
    g.create_dataset("time_ps", data=np.asarray(time_ps, np.float32))
    g.create_dataset("seed", data=np.asarray(seed, np.int64))
    g.create_dataset("potential_kj_mol", data=np.asarray(potential, np.float32))
    h5.attrs["thermal"] = json.dumps(dataclasses.asdict(settings))


def write_shard(out: str, pf: ProteinFrames, settings: SimSettings, manifest: Manifest | None) -> None:
    """One input's frames as a training-set HDF5 at ``out`` (appears only when complete)."""
    import h5py

    with replaced_when_done(out, "shard ") as tmp:
        write_training_h5(pf.frames, tmp, manifest=manifest, n_files=len(pf.frames))
        with h5py.File(tmp, "r+") as h5:
            n = len(pf.frames)
            _frame_tables(h5, [pf.path] * n, [pf.chain.chain_id] * n, range(n), pf.time_ps, [pf.seed] * n,
                          pf.potential, settings)
            h5.attrs["thermal_input"] = json.dumps({"key": pf.key, "path": pf.path, "fixer": pf.fixer,
                                                    "atoms": pf.atoms, "dropped_short": pf.chain.dropped_short})


def _frames_of_shard(path: str) -> tuple[list[ParsedFile], dict]:
    """The ParsedFile of every frame in a shard, and its frames/ table."""
    import h5py

    ts = read_training_set(path)
    ch = ts.chains
    out = []
    for c in range(len(ch)):
        rows = slice(int(ch.offset[c]), int(ch.offset[c] + ch.count[c]))
        seg = ts.segment[rows]
        n = int(ch.count[c])
        fpath = ch.files[ch.file[c]]
        rep = ParseReport(path=fpath, n_models=1, models_read=1, chains=1, segments=int(len(np.unique(seg))),
                          residues=n)
        out.append(ParsedFile(fpath, True, report=rep, positions=ts.positions[rows], mask=ts.mask[rows],
                              restype=ts.restype[rows].astype(np.int8), resname=ts.resname[rows],
                              resseq=ts.resseq[rows], icode=ts.icode[rows],
                              chain_id=np.full(n, ch.chain_id[c], dtype=object), segment=seg - seg.min()))
    with h5py.File(path, "r") as h5:
        g = h5["frames"]
        table = {k: (g[k].asstr()[:] if g[k].dtype.kind == "O" else g[k][:]) for k in g}
    return out, table


# Settings that only choose which inputs run; runs that differ only in these may be merged into one set.
SELECTION_SETTINGS = ("min_res", "max_res", "seed")


def merge(out_dir: str, state: State, manifest: Manifest | None, dest: str | None = None,
          more: tuple[tuple[str, State], ...] = ()) -> str | None:
    """Merge the shards of every done input (state order) into OUT/thermal.h5, or into ``dest`` together with the
    done inputs of the runs ``more`` ((folder, state) pairs, whose simulation settings must equal this run's but
    for SELECTION_SETTINGS; an input done in several runs is taken once, from the first); its path, or None when
    none is done."""
    import h5py

    sim = lambda st: {k: v for k, v in dataclasses.asdict(st.settings).items()  # noqa: E731
                      if k not in SELECTION_SETTINGS}
    for folder, other in more:
        if sim(other) != sim(state):
            raise InputError(f"{folder} ran with other simulation settings than {out_dir}: not one set")
    runs, seen = [], set()
    for folder, st in ((out_dir, state), *more):
        for k in st.done:
            if k not in seen:
                seen.add(k)
                runs.append(os.path.join(folder, "shards", st.done[k].shard))
    if not runs:
        return None
    frames, tables = [], []
    for shard in runs:
        f, t = _frames_of_shard(shard)
        frames += f
        tables.append(t)
    dest = dest or os.path.join(out_dir, "thermal.h5")
    with replaced_when_done(dest, "merged set ") as tmp:
        write_training_h5(frames, tmp, manifest=manifest, n_files=len(frames))
        with h5py.File(tmp, "r+") as h5:
            cat = {name: np.concatenate([t[name] for t in tables]) for name in tables[0]}
            _frame_tables(h5, cat["source"], cat["chain"], cat["frame"], cat["time_ps"], cat["seed"],
                          cat["potential_kj_mol"], state.settings)
            h5.attrs["thermal_inputs"] = len(runs)
            if more:  # the settings attribute is this run's; the selection settings of the others may differ
                h5.attrs["thermal_runs"] = json.dumps({f: dataclasses.asdict(st.settings)
                                                       for f, st in ((out_dir, state), *more)})
    return dest


# ----------------------------------------------------------------------------------------------------
# The run


def _key(path: str, manifest: Manifest | None) -> str:
    m = manifest.match_file(path) if manifest is not None else None
    return m if m is not None else os.path.abspath(path)


def _shard_name(key: str) -> str:
    base = key.strip("/").replace("/", "__")
    for ext in (".gz", ".pdb", ".cif", ".ent", ".mmcif"):
        base = base[: -len(ext)] if base.endswith(ext) else base
    return base + ".h5"


def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}", flush=True)


def run(inputs: list[str], out_dir: str, settings: SimSettings, *, manifest_path: str | None = None,
        shuffle: bool = False, limit: int | None = None, threads: int = 1, fixer: str = "auto",
        merge_every: int = 10, retry_failed: bool = False) -> State:
    """Process the inputs not yet in OUT/state.json (see the module docstring); the final state."""
    os.makedirs(os.path.join(out_dir, "shards"), exist_ok=True)
    lock = open(os.path.join(out_dir, "run.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise InputError(f"another run holds {out_dir}/run.lock") from None
    try:
        return _run_locked(inputs, out_dir, settings, manifest_path, shuffle, limit, threads, fixer, merge_every,
                           retry_failed)
    finally:
        lock.close()


def _run_locked(inputs, out_dir, settings, manifest_path, shuffle, limit, threads, fixer, merge_every,
                retry_failed) -> State:
    manifest = _FrameManifest(Manifest.read(manifest_path).entries, manifest_path) if manifest_path else None
    state_path = os.path.join(out_dir, "state.json")
    state = read_state(state_path)
    if state is None:
        state = State(settings=settings)
    if manifest_path:
        state.manifest = os.path.abspath(manifest_path)
    elif state.settings != settings:
        diff = {k: (getattr(state.settings, k), getattr(settings, k)) for k in dataclasses.asdict(settings)
                if getattr(state.settings, k) != getattr(settings, k)}
        raise InputError(f"settings differ from {state_path} (state, asked): {diff}; use another --out")
    paths = collect_structure_files(inputs)
    paths.sort()
    if shuffle:
        paths = [paths[i] for i in np.random.default_rng(settings.seed).permutation(len(paths))]
    if limit is not None:
        paths = paths[:limit]
    if retry_failed:
        state.failed.clear()
    todo = [(p, _key(p, manifest)) for p in paths]
    todo = [(p, k) for p, k in todo if k not in state.done and k not in state.failed and k not in state.skipped]
    _log(f"{len(paths)} inputs considered, {len(todo)} to do; done {len(state.done)}, failed {len(state.failed)}, "
         f"skipped {len(state.skipped)}; settings {dataclasses.asdict(settings)}")
    since_merge = 0
    for i, (path, key) in enumerate(todo):
        path = os.path.abspath(path)
        state.paths[key] = path
        try:
            pf = process_file(path, key, settings, threads, fixer)
        except Skip as exc:
            state.skipped[key] = str(exc)
            _log(f"[{i + 1}/{len(todo)}] skip {key}: {exc}")
            write_state(state_path, state)
            continue
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad structure must not stop a run over hundreds
            state.failed[key] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
            _log(f"[{i + 1}/{len(todo)}] FAILED {key}: {state.failed[key]}")
            write_state(state_path, state)
            continue
        shard = _shard_name(key)
        write_shard(os.path.join(out_dir, "shards", shard), pf, settings, manifest)
        sim_ps = settings.equil_ps + settings.frames * settings.every_ps
        d = Done(shard=shard, chain=pf.chain.chain_id, residues=len(pf.chain.rows), frames=len(pf.frames),
                 atoms=pf.atoms, fixer=pf.fixer, seconds=round(pf.seconds, 1), md_seconds=round(pf.md_seconds, 1),
                 ns_per_day=round(sim_ps / 1000.0 / pf.md_seconds * 86400.0, 2),
                 minimise_seconds=round(pf.minimise_seconds, 1))
        state.done[key] = d
        write_state(state_path, state)
        _log(f"[{i + 1}/{len(todo)}] done {key} chain {d.chain}: {d.residues} res, {d.atoms} atoms, {d.frames} "
             f"frames, {d.seconds:.0f} s (minimise {d.minimise_seconds:.0f} s, MD {d.ns_per_day:.1f} ns/day)")
        since_merge += 1
        if merge_every and since_merge >= merge_every:
            merge(out_dir, state, manifest)
            since_merge = 0
    if since_merge or not os.path.exists(os.path.join(out_dir, "thermal.h5")):
        dest = merge(out_dir, state, manifest)
        if dest:
            _log(f"merged {len(state.done)} inputs into {dest}")
    _log(f"finished: done {len(state.done)}, failed {len(state.failed)}, skipped {len(state.skipped)}")
    return state


# ----------------------------------------------------------------------------------------------------
# CLI


SETTING_OPTIONS = ("solvent", "cutoff_nm", "temperature_k", "equil_ps", "every_ps", "frames", "min_res", "max_res",
                   "seed")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="simulate the inputs not yet done (resumable)")
    r.add_argument("inputs", nargs="+", help="structure files or folders (recursive)")
    r.add_argument("--out", required=True, help="output folder (state.json, shards/, thermal.h5)")
    r.add_argument("--manifest", help="MANIFEST.tsv: cluster95/40 of each chain, and the inputs' keys")
    r.add_argument("--shuffle", action="store_true", help="process the inputs in an order shuffled by --seed")
    r.add_argument("--limit", type=int, help="consider only the first N inputs (of the shuffled order)")
    r.add_argument("--threads", type=int, default=1, help="OpenMM CPU threads (default 1)")
    r.add_argument("--fixer", choices=("auto", "pdbfixer", "modeller"), default="auto")
    r.add_argument("--merge-every", type=int, default=10, help="rewrite OUT/thermal.h5 every N done inputs")
    r.add_argument("--retry-failed", action="store_true", help="try the failed inputs of the state again")
    d = SimSettings()
    for name in SETTING_OPTIONS:
        r.add_argument("--" + name.replace("_", "-"), type=type(getattr(d, name)), default=getattr(d, name),
                       help=f"default {getattr(d, name)}")
    m = sub.add_parser("merge", help="merge the done shards of OUT into OUT/thermal.h5, or of several runs into --to")
    m.add_argument("out")
    m.add_argument("more", nargs="*", help="further run folders (same simulation settings) merged into --to")
    m.add_argument("--to", help="the merged file (needed with several runs; default OUT/thermal.h5)")
    m.add_argument("--manifest", help="default: the manifest of the run (state.json)")
    s = sub.add_parser("status", help="counts, speed and failures of OUT")
    s.add_argument("out")
    return p


def _status(out_dir: str) -> str:
    st = read_state(os.path.join(out_dir, "state.json"))
    if st is None:
        return f"no state in {out_dir}"
    lines = [f"done {len(st.done)}, failed {len(st.failed)}, skipped {len(st.skipped)}"]
    if st.done:
        d = list(st.done.values())
        med = {k: float(np.median([getattr(x, k) for x in d])) for k in ("residues", "seconds", "ns_per_day")}
        lines.append(f"frames {sum(x.frames for x in d)}, residues/input median {med['residues']:.0f}, minutes/input "
                     f"median {med['seconds'] / 60:.1f}, MD ns/day median "
                     f"{med['ns_per_day']:.1f}")
    lines += [f"failed {k}: {v}" for k, v in st.failed.items()]
    lines += [f"skipped {k}: {v}" for k, v in st.skipped.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "run":
            os.environ.setdefault("OPENMM_CPU_THREADS", str(args.threads))
            settings = SimSettings(**{k: getattr(args, k) for k in SETTING_OPTIONS})
            run(args.inputs, args.out, settings, manifest_path=args.manifest, shuffle=args.shuffle,
                limit=args.limit, threads=args.threads, fixer=args.fixer, merge_every=args.merge_every,
                retry_failed=args.retry_failed)
        elif args.cmd == "merge":
            state = read_state(os.path.join(args.out, "state.json"))
            if state is None:
                raise InputError(f"no state.json in {args.out}")
            mpath = args.manifest or state.manifest
            man = _FrameManifest(Manifest.read(mpath).entries, mpath) if mpath else None
            if args.more and not args.to:
                raise InputError("merging several runs needs --to FILE")
            more = []
            for folder in args.more:
                st = read_state(os.path.join(folder, "state.json"))
                if st is None:
                    raise InputError(f"no state.json in {folder}")
                more.append((folder, st))
            print(merge(args.out, state, man, args.to, tuple(more)) or "nothing done yet")
        else:
            print(_status(args.out))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
