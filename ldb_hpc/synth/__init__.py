"""Synthetic CA trajectories: overdamped Langevin (Brownian) dynamics of a protein-like CA model.

``ldb-hpc synth`` moves the CA trace of a structure with the potential of :class:`CAModel`
(:func:`ca_model`), built around that reference trace:

- an elastic network (:func:`elastic_network`) that holds the fold: harmonic springs of 1 kcal/mol/Å² between
  CAs closer than 10 Å in the reference, and 100 kcal/mol/Å² "virtual bonds" between sequence neighbours of a
  segment (CA–CA ≈ 3.8 Å);
- virtual bond angles CA(i−1)–CA(i)–CA(i+1) held in the range of real structures, ``THETA_MIN``–``THETA_MAX``,
  and within ``THETA_WIDTH`` of the reference's own by a flat-bottom restraint (stiff outside), inside which a
  weak harmonic term (``K_ANGLE_CENTRE``) pulls each angle toward the reference's own; hard floors under
  CA(i)–CA(i+k), k = 2, 3, 4, at their 0.1th percentiles in real structures;
- virtual dihedrals CA(i−1)…CA(i+2) held within ``TAU_WIDTH`` of the reference's own values by a flat-bottom
  restraint (this keeps the handedness of helices and turns), with a weak harmonic pull toward them inside
  (``K_DIHEDRAL_CENTRE``), so that frames differ from the reference as much as two real structures of one protein;
- excluded volume: a hard core of ``CORE`` Å between non-bonded beads (|i−j| ≥ 3 within a segment, every pair
  across segments), found through a Verlet neighbour list built blockwise, so memory is O(L·k).

The reference is first relaxed into the common range of real CA traces (:func:`regularise`: local distances up to
their 1st percentiles, angles into their 1st-99th percentile range, virtual bonds to 3.80 Å), so that a distorted
trace (a frame of an old simulation) does not pass its distortions on; a real structure barely moves.
The constants were fitted on the CA traces of ../shared/data/train (docs/SYNTH.md gives the measurement). The
dynamics is integrated with the Leimkuhler–Matthews scheme (the overdamped limit of BAOAB: the same cost per step
as Euler–Maruyama, but the configurational distribution of a harmonic term is exact at any stable step, so the
stiff virtual bonds do not inflate) and overlapping pairs are separated after each step along their line of
centres (Heyes–Melrose hard-sphere Brownian dynamics). Frames are streamed in chunks with a fixed seed: the same
seed gives bit-identical frames for any chunk size, and memory does not grow with the number of frames.

:func:`brownian_chunks` / :func:`brownian_frames` are the elastic network alone under Euler–Maruyama, the
dynamics that made examples/example.cg.h5 (scripts/make_example.py reproduces it byte for byte with them); over
long runs it lets angles collapse and beads overlap, so ``ldb-hpc synth`` no longer uses it.
Units: Å, kcal/mol, radians, D·dt in Å² per step.
"""

from ldb_hpc.synth.brownian import brownian_chunks, brownian_frames
from ldb_hpc.synth.dynamics import (
    CORE,
    CORE_NEAR,
    DEFAULT_CUTOFF,
    DT_D,
    DT_D_LM,
    K_ANGLE,
    K_ANGLE_CENTRE,
    K_BONDED,
    K_CONTACT,
    K_DIHEDRAL,
    K_DIHEDRAL_CENTRE,
    KT,
    SKIN,
    TAU_WIDTH,
    THETA_MAX,
    THETA_MIN,
    THETA_WIDTH,
    CAModel,
    SimulationStats,
    ca_model,
    elastic_network,
    potential_energy,
    regularise,
    simulate_chunks,
    simulate_frames,
    virtual_angles,
    virtual_dihedrals,
)
from ldb_hpc.synth.files import SynthSummary, load_reference, synthesize

__all__ = [
    "CAModel",
    "CORE",
    "CORE_NEAR",
    "DEFAULT_CUTOFF",
    "DT_D",
    "DT_D_LM",
    "KT",
    "K_ANGLE",
    "K_ANGLE_CENTRE",
    "K_BONDED",
    "K_CONTACT",
    "K_DIHEDRAL",
    "K_DIHEDRAL_CENTRE",
    "SKIN",
    "SimulationStats",
    "SynthSummary",
    "TAU_WIDTH",
    "THETA_MAX",
    "THETA_MIN",
    "THETA_WIDTH",
    "brownian_chunks",
    "brownian_frames",
    "ca_model",
    "elastic_network",
    "load_reference",
    "potential_energy",
    "regularise",
    "simulate_chunks",
    "simulate_frames",
    "synthesize",
    "virtual_angles",
    "virtual_dihedrals",
]
