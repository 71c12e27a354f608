"""Training batches: random windows of consecutive residues from the chains of an opened training set, packed into
one pseudo-protein (each window moved 1000 Å from the others, with its own segment ids, so the k-NN graph never
links windows), from one set (:class:`WindowSampler`) or two (:class:`MixedSampler`). Draws are keyed, not
streamed: the windows of step s on rank r come from a generator seeded with (seed, stream, s, r), so a resumed run
draws exactly what it would have drawn (:mod:`ldb_hpc.model.train`)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from ldb_hpc.errors import InputError

# Streams of keyed random draws (the second key of every seed); a second training set (MixedSampler) draws its
# windows from the stream + EXTRA_STREAM.
WINDOWS_STREAM, STATS_STREAM, TORCH_STREAM = 0, 1, 2
EXTRA_STREAM = 16


def keyed_seed(*key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(k) for k in key])


class ChainRows(Protocol):
    """The chains table of a training set: the residue rows of chain c are offset[c] .. offset[c] + count[c]."""

    @property
    def offset(self) -> np.ndarray: ...  # [C] int64

    @property
    def count(self) -> np.ndarray: ...  # [C] int64


class TrainingData(Protocol):
    """An opened training set, as training reads it (``ldb_hpc.io.training_set.TrainingSet`` is one)."""

    @property
    def path(self) -> str: ...  # where it was read from (for messages)

    @property
    def positions(self) -> np.ndarray: ...  # [N, 14, 3] float32 Å, zeros where mask is False

    @property
    def mask(self) -> np.ndarray: ...  # [N, 14] bool

    @property
    def restype(self) -> np.ndarray: ...  # [N] int64

    @property
    def segment(self) -> np.ndarray: ...  # [N] int64: residues i and i+1 are peptide-bonded iff equal

    @property
    def chains(self) -> ChainRows: ...


class WindowSampler:
    """Random windows of consecutive residues from the chains of a training set, packed into one pseudo-protein.

    Default: rank r draws its own ``windows`` windows per step (the global batch grows with the ranks).
    ``split``: ``windows`` is the global batch; every rank draws rank 0's windows and keeps windows r, r + world,
    …, so N ranks see exactly the batch that one rank sees alone (window k sits 1000·k Å out on every rank).
    """

    def __init__(self, data: TrainingData, windows: int, crop: int, seed: int, rank: int = 0, world: int = 1,
                 split: bool = False):
        if split and windows < world:
            raise InputError(f"--split-batch shares --windows {windows} out over {world} ranks: give at least "
                             f"{world} windows")
        self.pos, self.mask, self.restype, self.segment = data.positions, data.mask, data.restype, data.segment
        offset, count = data.chains.offset, data.chains.count
        keep = count >= 8
        self.offset, self.count = offset[keep], count[keep]
        if not len(self.count):
            raise InputError(f"no chain of 8 residues or more in {data.path}")
        self.weights = self.count / self.count.sum()
        self.windows, self.crop, self.seed = windows, crop, seed
        self.rank, self.world, self.split = rank, world, split

    def __len__(self) -> int:
        return int(self.count.sum())

    def batch(self, step: int, stream: int = WINDOWS_STREAM):
        """This rank's windows of ``step``: (pos [1, N, 14, 3] Å, mask [1, N, 14], restype [N], segment [N])."""
        rng = np.random.default_rng(keyed_seed(self.seed, stream, step, 0 if self.split else self.rank))
        chains = rng.choice(len(self.offset), size=self.windows, p=self.weights)
        starts = [int(self.offset[c]) + int(rng.integers(0, self.count[c] - min(self.crop, self.count[c]) + 1))
                  for c in chains]
        mine = range(self.rank, self.windows, self.world) if self.split else range(self.windows)
        pos, mask, rt, seg = [], [], [], []
        next_seg = 0
        for k in mine:
            sl = slice(starts[k], starts[k] + min(self.crop, int(self.count[chains[k]])))
            p = self.pos[sl].astype(np.float32)
            m = self.mask[sl]
            centre = p[:, 1].mean(0)
            p = np.where(m[..., None], p - centre + np.array([1000.0 * k, 0.0, 0.0], np.float32), 0.0)
            s = self.segment[sl]
            s = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1 + next_seg
            next_seg = int(s[-1]) + 1
            pos.append(p), mask.append(m), rt.append(self.restype[sl]), seg.append(s)
        return (torch.from_numpy(np.concatenate(pos))[None], torch.from_numpy(np.concatenate(mask))[None],
                torch.from_numpy(np.concatenate(rt)), torch.from_numpy(np.concatenate(seg)))


class MixedSampler:
    """Each step's windows from two training sets packed into one pseudo-protein: ``main``'s windows as they
    come, then ``extra``'s (drawn from their own keyed stream), moved on past main's last window slot and given
    segment ids after main's, so no window touches another."""

    def __init__(self, main: WindowSampler, extra: WindowSampler):
        self.main, self.extra = main, extra

    def __len__(self) -> int:
        return len(self.main) + len(self.extra)

    def batch(self, step: int, stream: int = WINDOWS_STREAM):
        pos, mask, rt, seg = self.main.batch(step, stream)
        xpos, xmask, xrt, xseg = self.extra.batch(step, stream + EXTRA_STREAM)
        shift = torch.tensor([1000.0 * self.main.windows, 0.0, 0.0])
        xpos = torch.where(xmask[..., None], xpos + shift, xpos)
        return (torch.cat([pos, xpos], 1), torch.cat([mask, xmask], 1), torch.cat([rt, xrt]),
                torch.cat([seg, xseg + int(seg.max()) + 1]))
