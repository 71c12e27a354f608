"""Synthetic CA trajectories: overdamped Langevin (Brownian) dynamics of an elastic network.

The CA trace of a structure is held together by harmonic springs between every pair of CAs closer than a
cutoff in the reference structure (soft "contact" springs) plus stiff "virtual bond" springs between
sequence neighbours of a segment, which keep CA–CA at ≈ 3.8 Å. The dynamics is integrated with a fixed
seed and streamed in chunks of frames, so a trajectory of any length takes memory independent of its
length. Used by ``ldb-hpc synth`` (scale tests, benchmarks) and by scripts/make_example.py (the bundled
example). Units: Å, kcal/mol, ps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from ldb_hpc.chem.protein import Residues
from ldb_hpc.errors import InputError

KT = 0.596  # kcal/mol at 300 K
DEFAULT_CUTOFF = 10.0  # Å
K_CONTACT = 1.0  # kcal/mol/Å²
K_BONDED = 100.0  # kcal/mol/Å²
DT_D = 0.002  # D·dt, Å² per step
_ROW_BLOCK = 1024  # rows of the distance matrix computed at a time (memory O(block · L))


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


def brownian_chunks(ca0: np.ndarray, pairs: np.ndarray, rest: np.ndarray, k: np.ndarray, frames: int,
                    steps: int, dt_d: float = DT_D, seed: int = 0, chunk: int = 1000) -> Iterator[np.ndarray]:
    """Overdamped Langevin on the network, yielded ``chunk`` frames at a time.

    ca0: [L, 3] Å start (and centre, kept fixed); pairs/rest/k from :func:`elastic_network`;
    steps: integration steps between frames; dt_d: D·dt in Å² per step. Yields [n ≤ chunk, L, 3]
    float32 Å arrays, ``frames`` frames in all; frame 0 is after the first ``steps`` steps. The random
    stream does not depend on ``chunk``: the same seed gives the same frames for any chunk size.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(ca0, dtype=np.float64).copy()
    n_atoms = len(x)
    centre = x.mean(axis=0)
    i, j = pairs[:, 0], pairs[:, 1]
    # Forces are accumulated with one bincount over (i..., j...) so that the sums run in the same
    # order as np.add.at(force, i, f); np.add.at(force, j, -f) (bit-identical, ~10× faster).
    idx = np.concatenate([i, j])
    noise = np.sqrt(2.0 * dt_d)
    for start in range(0, frames, chunk):
        out = np.empty((min(chunk, frames - start), n_atoms, 3), dtype=np.float32)
        for f in range(len(out)):
            for _ in range(steps):
                v = x[j] - x[i]
                d = np.linalg.norm(v, axis=-1, keepdims=True)
                fij = (k * (d[:, 0] - rest))[:, None] * v / np.maximum(d, 1e-6)  # pulls i toward j when stretched
                w = np.concatenate([fij, -fij])
                force = np.stack([np.bincount(idx, weights=w[:, c], minlength=n_atoms) for c in range(3)], -1)
                x += dt_d / KT * force + noise * rng.standard_normal(x.shape)
            x += centre - x.mean(axis=0)
            out[f] = x
        yield out


def brownian_frames(ca0: np.ndarray, pairs: np.ndarray, rest: np.ndarray, k: np.ndarray, frames: int,
                    steps: int, dt_d: float = DT_D, seed: int = 0) -> np.ndarray:
    """All frames of :func:`brownian_chunks` at once: [frames, L, 3] float32 Å (small trajectories only)."""
    return np.concatenate(list(brownian_chunks(ca0, pairs, rest, k, frames, steps, dt_d, seed, chunk=frames)))


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


def synthesize(residues: Residues, ca0: np.ndarray, output: str, frames: int, *, seed: int = 0,
               chunk: int = 1000, steps: int = 20, dt_ps: float = 10.0, cutoff: float = DEFAULT_CUTOFF,
               overwrite: bool = False, title: str | None = None) -> dict:
    """Write a ``frames``-frame CG trajectory around ``ca0`` to ``output`` (temp file, then rename).

    residues: L residues; ca0: [L, 3] Å; chunk: frames simulated and written at a time (memory
    O(chunk · L)); steps: Brownian steps between frames; dt_ps: time between frames in /time (ps).
    Returns a summary dict: frames, residues, springs, CA–CA mean/min/max over peptide links (Å).
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
    pairs, rest, k = elastic_network(ca0, residues, cutoff)
    link = residues.peptide_links()
    cc_sum, cc_n, cc_min, cc_max = 0.0, 0, np.inf, -np.inf
    title = title or "elastic-network Brownian dynamics (ldb-hpc synth)"
    with CGWriter(output, residues, overwrite=overwrite, expected_frames=frames, title=title) as w:
        for ca in brownian_chunks(ca0, pairs, rest, k, frames, steps, DT_D, seed, chunk):
            a = w.n_frames
            w.append(ca, np.arange(a, a + len(ca)) * dt_ps)
            cc = np.linalg.norm(ca[:, 1:] - ca[:, :-1], axis=-1)[:, link]
            if cc.size:
                cc_sum, cc_n = cc_sum + float(cc.sum()), cc_n + cc.size
                cc_min, cc_max = min(cc_min, float(cc.min())), max(cc_max, float(cc.max()))
    return {"frames": frames, "residues": len(residues), "springs": len(pairs),
            "ca_ca_mean": cc_sum / cc_n if cc_n else float("nan"), "ca_ca_min": cc_min, "ca_ca_max": cc_max,
            "bytes": os.path.getsize(output)}
