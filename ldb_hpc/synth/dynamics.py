"""The dynamics of ``ldb-hpc synth`` (docs/SYNTH.md): the protein-like CA model, its forces and integrator, and the
elastic network alone (``brownian_*``, which scripts/make_example.py keeps for the bundled example)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from ldb_hpc.chem.protein import Residues
from ldb_hpc.errors import InputError

KT = 0.596  # kcal/mol at 300 K
DEFAULT_CUTOFF = 10.0  # Å
K_CONTACT = 1.0  # kcal/mol/Å²
K_BONDED = 100.0  # kcal/mol/Å²
DT_D = 0.002  # D·dt, Å² per step (the Euler–Maruyama network of brownian_chunks)
_ROW_BLOCK = 1024  # rows of the distance matrix computed at a time (memory O(block · L))

# Fitted on ../shared/data/train (the first model of each of the 1,676 files, 494,120 residues, as prepared in
# /work/runs/train.h5 by `ldb-hpc prepare`); the measurement is in docs/SYNTH.md.
# Virtual bond angle CA(i-1)-CA(i)-CA(i+1) over the 485,998 triples of consecutive residues of a segment:
# percentiles 0.1 / 99.9 are 79.57° / 153.24° (0.01 / 99.99: 72.2° / 164.2°; median 107.3°).
THETA_MIN = np.deg2rad(79.6)
THETA_MAX = np.deg2rad(153.2)
# Within that range each angle is also held near the reference's own, like the dihedrals below: over the 111,855 angles
# of the bound/unbound pairs of train/bm5, |Δθ| has percentiles 50 / 90 / 95 / 99 = 2.6° / 9.4° / 13.6° / 28.6°; the
# flat bottom is the 95th percentile. (With the global range alone, a PED00151 run put an 86° angle, 110° in the
# reference, between two β-like dihedrals of -149° and -140°, and the backmapper built a clash there.)
THETA_WIDTH = np.deg2rad(13.6)
# Virtual dihedral CA(i-1)..CA(i+2): every 20° bin of [-180°, 180°) holds at least 0.9 % of the 482,077 train
# dihedrals, so no global range constrains them; they are held near the reference's own values instead. The width
# is how much the dihedrals of one protein differ between two real structures of it: over the 110,264 dihedrals of
# the 444 bound/unbound pairs of train/bm5 (residues matched by chain, number and type), |Δτ| has percentiles
# 50 / 90 / 95 / 99 = 3.9° / 17.5° / 29.4° / 106°; the flat bottom is the 95th percentile.
TAU_WIDTH = np.deg2rad(30.0)
K_ANGLE = 1000.0  # kcal/mol/rad² outside an angle's range: (kT/k)^½ = 1.4° beyond it
K_DIHEDRAL = 100.0  # kcal/mol/rad² beyond TAU_WIDTH: (kT/k)^½ = 4.4° beyond the flat bottom
# Inside the flat bottoms each angle and dihedral is also pulled harmonically toward the reference's own value, so that
# frames differ from the reference as much as two real structures of one protein do, not uniformly over the whole
# flat bottom. Median |Δθ| / |Δτ| between the bound/unbound pairs of train/bm5 are 2.6° / 3.9° (above), and 2.7° /
# 4.2° between the frames of the lysozyme MD of ../shared/data/md and their mean; with these constants a 2,000-frame
# run from the crystal 1BHL (pdbfixer's test data, the source of examples/example.cg.h5) gives 2.6° / 3.8°. Without
# them (a free flat bottom) it gave 5.1° / 7.1°, and the default model flagged 9 of its 2,000 rows (an O–CB pair
# < 1.2 Å across a close contact: CA–CA 5.2 Å in the crystal pressed to 4.7–4.9 Å with the residues turned); with them,
# none (docs/SYNTH.md).
K_ANGLE_CENTRE = 80.0  # kcal/mol/rad²: (kT/k)^½ = 4.9°
K_DIHEDRAL_CENTRE = 25.0  # kcal/mol/rad²: (kT/k)^½ = 8.8°
# Excluded volume: hard core between non-bonded CAs (|i-j| >= 3 in a segment, any pair across segments). In train the
# nearest non-bonded CA of a residue has percentiles 0.1 / 1 / 5 / 50 = 3.59 / 3.92 / 4.21 / 5.04 Å (below 4.0 Å for
# 1.6 % of residues); 4.0 Å keeps every frame above 3.8 Å, the acceptance bound. A soft harmonic wall below 4.0 Å
# instead let 9 of 3,000 frames of the bundled example fall below 3.8 Å at 100 kcal/mol/Å², 1 of 3,000 at 300 (which
# is already at the stability limit of the step); the hard core is exact and costs nothing while no pair overlaps.
CORE = 4.0  # Å
# Hard floors under the local distances CA(i)-CA(i+k), k = 2, 3, 4 of a segment: their 0.1th percentiles in train
# (485,998 / 482,077 / 478,219 pairs; the 0.01th are 4.30 / 4.07 / 3.81 Å, the 1st 5.10 / 4.78 / 4.99 Å). 4.74 Å
# under CA(i)-CA(i+2) is θ = 77° at 3.8 Å bonds, just below THETA_MIN: the floor makes CA(i)-CA(i+2) >= 4.4 Å exact
# (unless the reference's own is under 4.5 Å, e.g. next to a cis peptide). Without the k = 3 floor, 0.7 % of the
# i,i+3 distances of a PED00151 run fell below 4.48 Å (0.1 % of real ones do).
CORE_NEAR = (4.74, 4.48, 4.25)  # Å
DT_D_LM = 0.002  # D·dt, Å² per step of the Leimkuhler–Matthews integrator (stable for the 100 kcal/mol/Å² bonds)
SKIN = 4.0  # Å: the neighbour list holds non-bonded pairs within CORE + SKIN; rebuilt when a bead moved SKIN/2
# The reference is first relaxed into the common range of real CA traces (regularise): every CA(i)-CA(i+k),
# k = 2, 3, 4, up to its 1st percentile in train (5.10 / 4.78 / 4.99 Å, measured with CORE_NEAR), every angle into
# its 1st-99th percentile range [84.6°, 146.3°] and every virtual bond to 3.80 Å (cis bonds, under 3.3 Å, keep their
# own). A real structure barely moves (PED00151 model 0: 0.007 Å RMSD, the 1BHL crystal 0.05 Å), but a distorted one
# does: frame 0 of examples/example.cg.h5 (a frame of the old network-only dynamics, with CA(i)-CA(i+3) down to
# 4.09 Å) moves 0.19 Å, and its run's flagged rows (the default model) went from at least 20 in its first 20,000 frames
# to 3 (8 in all 100,000; docs/SYNTH.md).
REG_NEAR = (5.10, 4.78, 4.99)  # Å
REG_THETA = (np.deg2rad(84.6), np.deg2rad(146.3))
REG_BOND = 3.80  # Å
CIS_BOND = 3.3  # Å: a virtual bond shorter than this is a cis peptide's (2.9 Å) and keeps its length
REG_STEPS = 3000  # steepest-descent steps of D·dt = DT_D_LM (about 0.5 s for 135 residues)
_PAIR_BLOCK = 1 << 20  # distance-matrix entries computed at a time when the neighbour list is built
_MAX_SWEEPS = 200  # hard-core separation sweeps per step (a few in practice)
_YZX, _ZXY = np.array([1, 2, 0]), np.array([2, 0, 1])  # column orders of a cross product


def elastic_network(ca0: np.ndarray, residues: Residues, cutoff: float = DEFAULT_CUTOFF,
                    k_contact: float = K_CONTACT, k_bonded: float = K_BONDED):
    """Springs of the network around a reference CA trace.

    ca0: [L, 3] Å; residues: the L residues (their ``segment`` decides which neighbours are bonded);
    cutoff: Å. Returns (pairs [P, 2] int64 with i < j in row-major order, rest lengths [P] float64 Å,
    force constants [P] float64 kcal/mol/Å²).
    """
    ca0 = np.asarray(ca0, dtype=np.float64)
    n = len(ca0)
    ii, jj, dd = [], [], []
    for a in range(0, n, _ROW_BLOCK):
        b = min(n, a + _ROW_BLOCK)
        d = np.linalg.norm(ca0[a:b, None] - ca0[None], axis=-1)
        upper = np.arange(n)[None, :] > np.arange(a, b)[:, None]
        i, j = np.nonzero((d < cutoff) & upper)
        ii.append(i + a)
        jj.append(j)
        dd.append(d[i, j])
    i, j = np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64)
    # Sequence neighbours of a segment get the stiff "virtual bond" spring.
    bonded = (j == i + 1) & (residues.segment[i] == residues.segment[np.minimum(j, n - 1)])
    k = np.where(bonded, k_bonded, k_contact)
    return np.stack([i, j], axis=-1), np.concatenate(dd), k


# ----------------------------------------------------------------------------------------------------
# The protein-like CA model


def _wrap(a: np.ndarray) -> np.ndarray:
    """Angles in radians wrapped to [-π, π)."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def virtual_angles(x: np.ndarray) -> np.ndarray:
    """[..., L, 3] Å → [..., L-2] rad: the angle CA(k)–CA(k+1)–CA(k+2) of every consecutive triple."""
    u, v = x[..., :-2, :] - x[..., 1:-1, :], x[..., 2:, :] - x[..., 1:-1, :]
    c = (u * v).sum(-1) / np.sqrt((u * u).sum(-1) * (v * v).sum(-1))
    return np.arccos(np.clip(c, -1.0, 1.0))


def virtual_dihedrals(x: np.ndarray) -> np.ndarray:
    """[..., L, 3] Å → [..., L-3] rad in (-π, π]: the IUPAC dihedral CA(k)…CA(k+3) of every consecutive quad."""
    b = x[..., 1:, :] - x[..., :-1, :]
    b1, b2, b3 = b[..., :-2, :], b[..., 1:-1, :], b[..., 2:, :]
    m, n = np.cross(b1, b2), np.cross(b2, b3)
    return np.arctan2(np.linalg.norm(b2, axis=-1) * (b1 * n).sum(-1), (m * n).sum(-1))


@dataclass(frozen=True)
class CAModel:
    """The potential of ``ldb-hpc synth`` around a reference CA trace (Å, rad, kcal/mol).

    Terms (L beads; a triple/quad is "in a segment" when its beads are consecutive residues of one segment):
    network springs ``k/2 (d − rest)²`` over ``pairs``; for each triple k = (k, k+1, k+2) in a segment a
    flat-bottom ``k_angle/2 (θ − clip(θ, theta_lo, theta_hi))²`` plus ``k_theta0/2 (θ − theta0)²``; for each quad
    in a segment ``k_dihedral/2 (|Δτ| − tau_width)²`` where |Δτ| = |τ − tau0| (wrapped) exceeds ``tau_width``, plus
    ``k_tau0/2 Δτ²``; hard floors
    d(i, i+k) ≥ ``core_near[k-2, i]`` for k = 2, 3, 4 in a segment; a hard core d ≥ ``core`` between the other
    non-bonded beads (:meth:`nonbonded`). Triples and quads that span a segment break have an empty restraint
    (theta_lo = 0, theta_hi = π, tau_width = π); a pair without a floor has core_near = 0.
    """

    ca0: np.ndarray  # [L, 3] float64 Å: the reference (start and centre of the dynamics)
    segment: np.ndarray  # [L] int64
    pairs: np.ndarray  # [P, 2] int64, i < j: network springs
    rest: np.ndarray  # [P] float64 Å
    k: np.ndarray  # [P] float64 kcal/mol/Å²
    theta_lo: np.ndarray  # [L-2] float64 rad
    theta_hi: np.ndarray  # [L-2] float64 rad
    core_near: np.ndarray  # [3, L] float64 Å: row k-2 is the floor under d(i, i+k), 0 where there is none
    tau0: np.ndarray  # [L-3] float64 rad
    tau_width: np.ndarray  # [L-3] float64 rad
    theta0: np.ndarray  # [L-2] float64 rad: the reference's own angles (the centre of the harmonic pull)
    k_theta0: np.ndarray  # [L-2] float64 kcal/mol/rad²: its constant, 0 for a triple across a segment break
    k_tau0: np.ndarray  # [L-3] float64 kcal/mol/rad²: the harmonic pull of each dihedral toward tau0
    k_angle: float = K_ANGLE
    k_dihedral: float = K_DIHEDRAL
    core: float = CORE

    def nonbonded(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """[N] bool: bead pairs (i, j) under the excluded volume (|i−j| ≥ 3 in a segment, or two segments)."""
        return (self.segment[i] != self.segment[j]) | (np.abs(j - i) >= 3)


def ca_model(ca0: np.ndarray, residues: Residues, cutoff: float = DEFAULT_CUTOFF) -> CAModel:
    """The protein-like CA model around ``ca0`` ([L, 3] Å) of ``residues`` (their segments).

    Each angle's range is θ0 ± THETA_WIDTH (θ0: the reference's own angle) cut to [THETA_MIN, THETA_MAX], but
    always taking in θ0, so that the reference itself feels no restraint force; each dihedral's is
    τ0 ± TAU_WIDTH. The floor under CA(i)–CA(i+k) is CORE_NEAR[k-2], or 0.1 Å below the reference's own distance
    where that is shorter (but not below CORE for k ≥ 3).
    """
    ca0 = np.asarray(ca0, dtype=np.float64)
    n = len(ca0)
    if n < 1:
        raise InputError("the reference structure has no residues")
    pairs, rest, k = elastic_network(ca0, residues, cutoff)
    seg = residues.segment
    in3 = (seg[1:-1] == seg[:-2]) & (seg[2:] == seg[:-2]) if n >= 3 else np.zeros(0, bool)
    in4 = (in3[:-1] & in3[1:]) if n >= 4 else np.zeros(0, bool)
    theta0, tau0 = virtual_angles(ca0), virtual_dihedrals(ca0)
    core_near = np.zeros((len(CORE_NEAR), n))
    for row, floor in enumerate(CORE_NEAR):
        sep = row + 2
        if n > sep:
            d0 = np.linalg.norm(ca0[sep:] - ca0[:-sep], axis=-1)
            own = d0 - 0.1 if sep == 2 else np.maximum(d0 - 0.1, CORE)
            core_near[row, :n - sep] = np.where(seg[sep:] == seg[:-sep], np.minimum(floor, own), 0.0)
    return CAModel(
        ca0=ca0, segment=seg.copy(), pairs=pairs, rest=rest, k=k,
        theta_lo=np.where(in3, np.minimum(np.maximum(THETA_MIN, theta0 - THETA_WIDTH), theta0), 0.0),
        theta_hi=np.where(in3, np.maximum(np.minimum(THETA_MAX, theta0 + THETA_WIDTH), theta0), np.pi),
        core_near=core_near,
        tau0=np.where(in4, tau0, 0.0), tau_width=np.where(in4, TAU_WIDTH, np.pi),
        theta0=np.where(in3, theta0, 0.0), k_theta0=np.where(in3, K_ANGLE_CENTRE, 0.0),
        k_tau0=np.where(in4, K_DIHEDRAL_CENTRE, 0.0))


def regularise(ca0: np.ndarray, residues: Residues, cutoff: float = DEFAULT_CUTOFF,
               steps: int = REG_STEPS) -> np.ndarray:
    """``ca0`` ([L, 3] Å) relaxed into the common range of real CA traces: [L, 3] float64 Å.

    Steepest descent (no noise) under :func:`ca_model`'s terms around ``ca0`` with the local floors raised to
    ``REG_NEAR`` (kept 0.1 Å under the reference's own next to a cis bond), the angle ranges set to ``REG_THETA`` and
    the virtual bonds' rest length to ``REG_BOND``; the dihedral flat bottoms are left open, so only the pulls
    toward ``ca0``'s own angles and dihedrals and the network hold the rest of the trace in place. Stops when no bead
    moves more than 1e-6 Å in a step, or after ``steps`` steps; the hard floors and cores hold at the end.
    """
    ca0 = np.asarray(ca0, dtype=np.float64)
    model = ca_model(ca0, residues, cutoff)
    n = len(ca0)
    if n < 2:
        return ca0.copy()
    seg = model.segment
    b0 = np.linalg.norm(ca0[1:] - ca0[:-1], axis=-1)  # [L-1]
    bonded = model.k == K_BONDED
    rest = model.rest.copy()
    rest[bonded] = np.where(b0[model.pairs[bonded, 0]] >= CIS_BOND, REG_BOND, b0[model.pairs[bonded, 0]])
    core_near = np.zeros_like(model.core_near)
    for row, floor in enumerate(REG_NEAR):
        sep = row + 2
        if n <= sep:
            continue
        d0 = np.linalg.norm(ca0[sep:] - ca0[:-sep], axis=-1)
        cis = np.zeros(n - sep, bool)
        for k in range(sep):
            cis |= b0[k:n - sep + k] < CIS_BOND
        core_near[row, :n - sep] = np.where(seg[sep:] == seg[:-sep],
                                            np.where(cis, np.minimum(floor, d0 - 0.1), floor), 0.0)
    in3 = model.theta_hi < np.pi
    reg = replace(model, rest=rest, core_near=core_near, theta_lo=np.where(in3, REG_THETA[0], 0.0),
                  theta_hi=np.where(in3, REG_THETA[1], np.pi), tau_width=np.full_like(model.tau_width, np.pi))
    forces = _Forces(reg)
    x = ca0.copy()
    forces.build(x)
    c = DT_D_LM / KT
    for _ in range(steps):
        if forces.moved_too_far(x):
            forces.build(x)
        dx = c * forces(x)
        x += dx
        if np.abs(dx).max() < 1e-6:
            break
    forces(x)  # the floors and cores hold after the last move too
    return x


def potential_energy(model: CAModel, x: np.ndarray) -> float:
    """Total soft potential (kcal/mol) of ``x`` ([L, 3] Å): network + angle + dihedral terms, loop-clear.

    The reference of the fast forces in :class:`_Forces` (tests differentiate it); the hard cores add nothing
    to the energy of an allowed configuration.
    """
    x = np.asarray(x, dtype=np.float64)
    e = 0.0
    for (i, j), r0, k in zip(model.pairs, model.rest, model.k):
        e += 0.5 * k * (np.linalg.norm(x[j] - x[i]) - r0) ** 2
    for t, lo, hi, t0, k0 in zip(virtual_angles(x), model.theta_lo, model.theta_hi, model.theta0, model.k_theta0):
        e += 0.5 * model.k_angle * (t - min(max(t, lo), hi)) ** 2 + 0.5 * k0 * (t - t0) ** 2
    for t, t0, w, k0 in zip(virtual_dihedrals(x), model.tau0, model.tau_width, model.k_tau0):
        e += 0.5 * model.k_dihedral * max(abs(_wrap(t - t0)) - w, 0.0) ** 2 + 0.5 * k0 * _wrap(t - t0) ** 2
    return float(e)


def _close_nonbonded(model: CAModel, x: np.ndarray, r: float) -> np.ndarray:
    """[N, 2] int64 (i < j, row-major): non-bonded pairs closer than ``r`` Å, computed a block of rows at a time
    (memory O(_PAIR_BLOCK + N))."""
    n = len(x)
    block = max(1, _PAIR_BLOCK // max(n, 1))
    found = []
    for a in range(0, n, block):
        b = min(n, a + block)
        d2 = ((x[a:b, None, :] - x[None, a + 1:, :]) ** 2).sum(-1)  # [B, n-a-1]: column c is bead a+1+c
        i, c = np.nonzero(d2 < r * r)
        i, j = i + a, c + a + 1
        keep = (j > i) & model.nonbonded(i, j)
        found.append(np.stack([i[keep], j[keep]], -1))
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), np.int64)


class _Forces:
    """The forces of a :class:`CAModel` and its hard cores, with a Verlet list of the non-bonded pairs.

    The pair list is the network ∪ the floored local pairs ∪ the non-bonded pairs within CORE + SKIN at the
    last build; it is rebuilt when any bead has moved more than SKIN/2 since, so no non-bonded pair outside it
    can reach CORE. Angle and dihedral terms are computed for every triple / quad with slices of the chain (a
    triple or quad across a segment break has an empty restraint), skipped when none is outside its flat bottom.
    """

    def __init__(self, model: CAModel):
        self.m = model
        n = len(model.ca0)
        self.n = n
        row, near_i = np.nonzero(model.core_near)
        near_key = near_i * n + near_i + row + 2
        key = model.pairs[:, 0] * n + model.pairs[:, 1]
        self._fixed_key = np.union1d(key, near_key)
        self._fixed_k = np.zeros(len(self._fixed_key))
        self._fixed_rest = np.zeros(len(self._fixed_key))
        at = np.searchsorted(self._fixed_key, key)
        self._fixed_k[at], self._fixed_rest[at] = model.k, model.rest
        self._fixed_core = np.zeros(len(self._fixed_key))
        fi, fj = self._fixed_key // n, self._fixed_key % n
        self._fixed_core[model.nonbonded(fi, fj)] = model.core
        self._fixed_core[np.searchsorted(self._fixed_key, near_key)] = model.core_near[row, near_i]
        self.ncos_lo, self.ncos_hi = -np.cos(model.theta_lo), -np.cos(model.theta_hi)  # θ < lo ⟺ −cos θ < ncos_lo
        self.tau0_minus_pi = model.tau0 - np.pi
        self.centre_angles, self.centre_dihedrals = bool(model.k_theta0.any()), bool(model.k_tau0.any())
        self.builds = 0
        self.separations = 0

    def build(self, x: np.ndarray) -> None:
        """Rebuild the pair list around ``x`` ([L, 3] Å)."""
        n, m = self.n, self.m
        near = _close_nonbonded(m, x, m.core + SKIN)
        extra = np.setdiff1d(near[:, 0] * n + near[:, 1], self._fixed_key)
        key = np.concatenate([self._fixed_key, extra])
        self.i, self.j = key // n, key % n
        pad = np.zeros(len(extra))
        self.k, self.rest = np.concatenate([self._fixed_k, pad]), np.concatenate([self._fixed_rest, pad])
        self.core = np.concatenate([self._fixed_core, pad + m.core])
        self.idx3 = (np.concatenate([self.i, self.j])[:, None] * 3 + np.arange(3)).ravel()
        self.x_built = x.copy()
        self.builds += 1

    def moved_too_far(self, x: np.ndarray) -> bool:
        dx = x - self.x_built
        return bool(np.einsum("ij,ij->i", dx, dx).max() > 0.25 * SKIN * SKIN)

    def _pair_vectors(self, x):
        v = x.take(self.j, 0) - x.take(self.i, 0)
        return v, np.sqrt(np.einsum("ij,ij->i", v, v))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """[L, 3] kcal/mol/Å: the force on every bead at ``x``, after moving the pairs closer than their hard core
        apart along their line of centres (in place, in sweeps until none is left: Heyes–Melrose)."""
        n, m = self.n, self.m
        v, d = self._pair_vectors(x)
        for _ in range(_MAX_SWEEPS):
            over = np.nonzero(d < self.core)[0]
            if not len(over):
                break
            self.separations += len(over)
            # Each bead of a pair moves half the overlap (plus 1e-6 Å, so the pair ends just outside its core).
            step = v[over] * ((self.core[over] - d[over] + 1e-6) / (2.0 * np.maximum(d[over], 1e-6)))[:, None]
            np.add.at(x, self.i[over], -step)
            np.add.at(x, self.j[over], step)
            v, d = self._pair_vectors(x)
        f = v * (self.k * (d - self.rest) / np.maximum(d, 1e-6))[:, None]  # pulls i toward j when stretched
        force = np.bincount(self.idx3, np.concatenate([f, -f]).ravel(), 3 * n).reshape(n, 3)
        if n < 3:
            return force
        b = x[1:] - x[:-1]
        bl2 = np.einsum("ij,ij->i", b, b)
        bl = np.sqrt(bl2)
        e = b / bl[:, None]
        c = np.einsum("ij,ij->i", e[:-1], e[1:])  # −cos θ
        if self.centre_angles or ((c < self.ncos_lo) | (c > self.ncos_hi)).any():
            # Flat-bottom angle: dU/dθ times dθ/dx of the end beads k and k+2 (the middle bead takes minus both).
            cos = np.minimum(np.maximum(-c, -1.0), 1.0)
            theta = np.arccos(cos)
            du = m.k_angle * (theta - np.minimum(np.maximum(theta, m.theta_lo), m.theta_hi))
            if self.centre_angles:
                du += m.k_theta0 * (theta - m.theta0)
            s = du / np.maximum(np.sqrt(1.0 - cos * cos), 1e-6)
            f1 = (e[1:] - c[:, None] * e[:-1]) * (s / bl[:-1])[:, None]  # = −dU/dx of bead k
            f3 = (e[:-1] - c[:, None] * e[1:]) * (s / bl[1:])[:, None]  # = +dU/dx of bead k+2
            force[:-2] += f1
            force[1:-1] += f3 - f1
            force[2:] -= f3
        if n < 4:
            return force
        yzx, zxy = b.take(_YZX, 1), b.take(_ZXY, 1)
        nn = yzx[:-1] * zxy[1:] - zxy[:-1] * yzx[1:]  # nn[k] = b[k] × b[k+1]
        tau = np.arctan2(bl[1:-1] * np.einsum("ij,ij->i", b[:-2], nn[1:]), np.einsum("ij,ij->i", nn[:-1], nn[1:]))
        dtau = (tau - self.tau0_minus_pi) % (2 * np.pi) - np.pi  # τ − τ0 wrapped to [−π, π)
        excess = dtau - np.minimum(np.maximum(dtau, -m.tau_width), m.tau_width)
        if self.centre_dihedrals or excess.any():
            # Flat-bottom dihedral: dU/dτ times dτ/dx (Blondel & Karplus, J. Comput. Chem. 17, 1132 (1996)).
            du = (m.k_dihedral * excess + m.k_tau0 * dtau)[:, None]
            a, c = nn[:-1], nn[1:]  # b1 × b2, b2 × b3 of quad k = (b[k], b[k+1], b[k+2])
            l2 = bl[1:-1][:, None]
            g1 = a * (l2 / np.maximum(np.einsum("ij,ij->i", a, a), 1e-12)[:, None])  # −dτ/dx of bead k
            g4 = c * (l2 / np.maximum(np.einsum("ij,ij->i", c, c), 1e-12)[:, None])  # dτ/dx of bead k+3
            p = (np.einsum("ij,ij->i", b[:-2], b[1:-1]) / bl2[1:-1])[:, None]
            q = (np.einsum("ij,ij->i", b[2:], b[1:-1]) / bl2[1:-1])[:, None]
            g2 = q * g4 + (1.0 + p) * g1  # dτ/dx of bead k+1
            f1, f2, f4 = du * g1, du * g2, du * g4
            force[:-3] += f1
            force[1:-2] -= f2
            force[2:-1] += f2 - f1 + f4
            force[3:] -= f4
        return force


@dataclass
class SimulationStats:
    """What a run did besides its frames: neighbour-list builds and hard-core separations (pairs moved)."""

    steps: int = 0
    builds: int = 0
    separations: int = 0


def simulate_chunks(model: CAModel, frames: int, steps: int, dt_d: float = DT_D_LM, seed: int = 0,
                    chunk: int = 1000, stats: SimulationStats | None = None) -> Iterator[np.ndarray]:
    """Overdamped Langevin dynamics of ``model``, yielded ``chunk`` frames at a time.

    Starts at ``model.ca0`` and keeps its centre fixed; ``steps`` steps of D·dt = ``dt_d`` Å² between frames;
    frame 0 is after the first ``steps`` steps. Leimkuhler–Matthews update
    x ← x + (D·dt/kT)·F(x) + √(2·D·dt)·(ξₙ + ξₙ₊₁)/2, then the hard cores are separated. Yields
    [n ≤ chunk, L, 3] float32 Å arrays, ``frames`` in all. The random stream and the neighbour-list rebuilds
    depend only on the state, not on ``chunk``: the same seed gives the same frames for any chunk size.
    ``stats``, when given, is filled in as the run goes.
    """
    rng = np.random.default_rng(seed)
    stats = stats if stats is not None else SimulationStats()
    x = model.ca0.copy()
    n = len(x)
    centre = x.mean(axis=0)
    forces = _Forces(model)
    forces.build(x)
    f = forces(x)
    c, s = dt_d / KT, np.sqrt(2.0 * dt_d) / 2.0
    xi = rng.standard_normal((n, 3))
    for start in range(0, frames, chunk):
        out = np.empty((min(chunk, frames - start), n, 3), dtype=np.float32)
        for fr in range(len(out)):
            for step in range(steps):
                xi_next = rng.standard_normal((n, 3))
                x += c * f + s * (xi + xi_next)
                xi = xi_next
                if step == steps - 1:
                    x += centre - x.mean(axis=0)
                if forces.moved_too_far(x):
                    forces.build(x)
                f = forces(x)
            out[fr] = x
        stats.steps, stats.builds, stats.separations = stats.steps + len(out) * steps, forces.builds, forces.separations
        yield out


def simulate_frames(model: CAModel, frames: int, steps: int, dt_d: float = DT_D_LM, seed: int = 0) -> np.ndarray:
    """All frames of :func:`simulate_chunks` at once: [frames, L, 3] float32 Å (small trajectories only)."""
    return np.concatenate(list(simulate_chunks(model, frames, steps, dt_d, seed, chunk=frames)))
