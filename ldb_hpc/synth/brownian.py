"""The elastic network alone under overdamped Langevin dynamics: the dynamics that made examples/example.cg.h5
(moved out of :mod:`ldb_hpc.synth.dynamics`, which holds the CA model that ``ldb-hpc synth`` runs)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ldb_hpc.synth.dynamics import DT_D, KT


def brownian_chunks(ca0: np.ndarray, pairs: np.ndarray, rest: np.ndarray, k: np.ndarray, frames: int,
                    steps: int, dt_d: float = DT_D, seed: int = 0, chunk: int = 1000) -> Iterator[np.ndarray]:
    """Overdamped Langevin (Euler–Maruyama) on the elastic network alone, yielded ``chunk`` frames at a time.

    The dynamics that made examples/example.cg.h5; nothing holds angles or keeps beads apart, so long runs are
    not protein-like (use :func:`simulate_chunks`). ca0: [L, 3] Å start (and centre, kept fixed); pairs/rest/k
    from :func:`elastic_network`; steps: integration steps between frames; dt_d: D·dt in Å² per step. Yields
    [n ≤ chunk, L, 3] float32 Å arrays, ``frames`` frames in all; frame 0 is after the first ``steps`` steps.
    The random stream does not depend on ``chunk``: the same seed gives the same frames for any chunk size.
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
