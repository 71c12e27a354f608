"""Partitioning arithmetic, in one place: contiguous ranges, the chunk plan, shards and ``--shard I/N``.

A run's *chunk plan* is fixed when its output is created and recorded in the run folder, so a resume
(with any number of ranks) reuses it: frames are cut into chunks of ``batch_frames``; chunk ``k`` covers
frames ``[k·B, min((k+1)·B, F))``; the chunks are dealt contiguously to ``n_shards`` shards (one shard
file each), and the shards contiguously to the ranks of the current run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ldb_hpc.errors import InputError


def shard_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous part ``[start, stop)`` of ``range(n)`` owned by ``rank`` of ``size``.

    Parts differ in length by at most one (the first ``n % size`` parts are one longer) and cover
    ``range(n)`` exactly once, in order.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} outside 0..{size - 1}")
    base, extra = divmod(int(n), int(size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass(frozen=True)
class ChunkPlan:
    """n_frames F CG frames in chunks of batch_frames, dealt to n_shards shards."""

    n_frames: int
    batch_frames: int
    n_shards: int

    @property
    def n_chunks(self) -> int:
        return -(-self.n_frames // self.batch_frames)

    def chunk_frames(self, k: int) -> tuple[int, int]:
        """Frames ``[start, stop)`` of chunk ``k``."""
        return k * self.batch_frames, min((k + 1) * self.batch_frames, self.n_frames)

    def shard_chunks(self, shard: int) -> range:
        """Chunk indices of shard ``shard`` (possibly empty when there are more shards than chunks)."""
        return range(*shard_range(self.n_chunks, shard, self.n_shards))

    def shard_frames(self, shard: int) -> tuple[int, int]:
        """Frames ``[start, stop)`` of shard ``shard`` (start == stop for an empty shard)."""
        chunks = self.shard_chunks(shard)
        if len(chunks) == 0:
            start = self.chunk_frames(chunks.start)[0] if chunks.start < self.n_chunks else self.n_frames
            return start, start
        return self.chunk_frames(chunks[0])[0], self.chunk_frames(chunks[-1])[1]

    def rank_shards(self, rank: int, size: int) -> range:
        """Shards handled by ``rank`` of ``size`` ranks (one each when size == n_shards)."""
        return range(*shard_range(self.n_shards, rank, size))

    def to_dict(self) -> dict:
        return {"n_frames": self.n_frames, "batch_frames": self.batch_frames, "n_shards": self.n_shards}

    @classmethod
    def from_dict(cls, d: dict) -> "ChunkPlan":
        return cls(int(d["n_frames"]), int(d["batch_frames"]), int(d["n_shards"]))


def parse_shard_spec(spec: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (``--shard``) → (I, N) with 0 ≤ I < N; None → None. InputError on anything else."""
    if spec is None:
        return None
    i, sep, n = str(spec).partition("/")
    try:
        i, n = int(i), int(n)
    except ValueError:
        i = n = -1
    if not sep or n < 1 or not 0 <= i < n:
        raise InputError(f"--shard expects I/N with 0 <= I < N (e.g. --shard 0/4), got {spec!r}")
    return i, n
