"""``ldb-hpc synth``'s input and output: the reference trace to simulate around and the streamed trajectory file."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ldb_hpc.chem.protein import Residues
from ldb_hpc.errors import InputError
from ldb_hpc.synth.dynamics import (
    DEFAULT_CUTOFF,
    DT_D_LM,
    SimulationStats,
    ca_model,
    regularise,
    simulate_chunks,
    virtual_angles,
)


def _is_hdf5(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89HDF\r\n\x1a\n"


def load_reference(path: str, residue_map: dict[str, str] | None = None,
                   keep_unknown: bool = False) -> tuple[Residues, np.ndarray]:
    """The CA trace to simulate around: (residues, ca [L, 3] float64 Å).

    path: a PDB/mmCIF file (first model; residues without CA are skipped by the reader) or a CG
    MDTraj-HDF5 trajectory (its frame 0).
    """
    from ldb_hpc.io.files import check_readable

    check_readable(path, "structure")
    if _is_hdf5(path):
        from ldb_hpc.io.cg import CGTrajectory

        with CGTrajectory(path, residue_map=residue_map, keep_unknown=keep_unknown) as traj:
            return traj.residues, traj.read(0, 1).ca[0].astype(np.float64)
    from ldb_hpc.io.structure import read_structure

    protein = read_structure(path, residue_map=residue_map, keep_unknown=keep_unknown)[0]
    return protein.residues, protein.ca.astype(np.float64)


@dataclass
class SynthSummary:
    """What ``synthesize`` wrote: sizes, and the local geometry over every frame (Å, degrees)."""

    frames: int
    residues: int
    springs: int
    bytes: int
    ca_ca_mean: float  # virtual bonds (peptide links only)
    ca_ca_min: float
    ca_ca_max: float
    ca_13_min: float  # CA(i)–CA(i+2) within a segment
    theta_min: float  # virtual bond angle, degrees
    theta_max: float
    neighbour_list_builds: int
    hard_core_separations: int  # pair separations of the hard cores (Heyes–Melrose), over all steps
    reference_shift_rmsd: float  # how far regularise moved the reference (Å, no superposition)
    reference_shift_max: float


def synthesize(residues: Residues, ca0: np.ndarray, output: str, frames: int, *, seed: int = 0,
               chunk: int = 1000, steps: int = 5, dt_ps: float = 10.0, cutoff: float = DEFAULT_CUTOFF,
               overwrite: bool = False, title: str | None = None) -> SynthSummary:
    """Write a ``frames``-frame CG trajectory of :func:`ca_model` around ``ca0`` to ``output`` (temp file, then
    rename). ``ca0`` is first relaxed into the common range of real CA traces (:func:`regularise`); the frames move
    around that trace.

    residues: L residues; ca0: [L, 3] Å; chunk: frames simulated and written at a time (memory
    O(chunk · L)); steps: Brownian steps between frames; dt_ps: time between frames in /time (ps).
    """
    from ldb_hpc.io.cg import CGWriter

    if frames < 1:
        raise InputError(f"--frames must be at least 1, got {frames}")
    if chunk < 1:
        raise InputError(f"--chunk must be at least 1, got {chunk}")
    if steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    if not dt_ps > 0:
        raise InputError(f"--dt-ps must be positive, got {dt_ps}")
    reference = regularise(ca0, residues, cutoff)
    shift = np.linalg.norm(reference - np.asarray(ca0, dtype=np.float64), axis=-1)
    model = ca_model(reference, residues, cutoff)
    link = residues.peptide_links()
    in3 = link[:-1] & link[1:]
    cc_sum, cc_n, cc_min, cc_max, c13_min = 0.0, 0, np.inf, -np.inf, np.inf
    th_min, th_max = np.inf, -np.inf
    stats = SimulationStats()
    title = title or "protein-like CA Brownian dynamics (ldb-hpc synth)"
    with CGWriter(output, residues, overwrite=overwrite, expected_frames=frames, title=title) as w:
        for ca in simulate_chunks(model, frames, steps, DT_D_LM, seed, chunk, stats):
            a = w.n_frames
            w.append(ca, np.arange(a, a + len(ca)) * dt_ps)
            cc = np.linalg.norm(ca[:, 1:] - ca[:, :-1], axis=-1)[:, link]
            if cc.size:
                cc_sum, cc_n = cc_sum + float(cc.sum()), cc_n + cc.size
                cc_min, cc_max = min(cc_min, float(cc.min())), max(cc_max, float(cc.max()))
            if in3.any():
                c13_min = min(c13_min, float(np.linalg.norm(ca[:, 2:] - ca[:, :-2], axis=-1)[:, in3].min()))
                th = np.rad2deg(virtual_angles(ca.astype(np.float64))[:, in3])
                th_min, th_max = min(th_min, float(th.min())), max(th_max, float(th.max()))
    nan = float("nan")
    return SynthSummary(frames=frames, residues=len(residues), springs=len(model.pairs),
                        bytes=os.path.getsize(output), ca_ca_mean=cc_sum / cc_n if cc_n else nan,
                        ca_ca_min=cc_min if cc_n else nan, ca_ca_max=cc_max if cc_n else nan,
                        ca_13_min=c13_min if in3.any() else nan, theta_min=th_min if in3.any() else nan,
                        theta_max=th_max if in3.any() else nan, neighbour_list_builds=stats.builds,
                        hard_core_separations=stats.separations,
                        reference_shift_rmsd=float(np.sqrt((shift ** 2).mean())),
                        reference_shift_max=float(shift.max()))
