"""Resume records: the run identity file and the per-shard append-only logs of finished chunks.

``run.json`` (written first, temporary name then rename) says what is being computed: the input's
identity (path, size, frames, residues, a hash of the topology and of the first and last frames), the
model (name, content hash), seed, samples, IO mode and the chunk plan. Each shard has a log of JSON lines
``{"chunk": k, "start": a, "stop": b, "run": run_id}``, appended (flush + fsync) only after the chunk's
rows were flushed to the shard file, so a recorded chunk is a written chunk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ldb_hpc.errors import InputError
from ldb_hpc.io.files import read_json_document
from ldb_hpc.runtime.output import RUN_FILE, shard_log_path, shard_path, write_json
from ldb_hpc.runtime.records import FORMAT, InputIdentity, IOMode, RunRecord, content_hash
from ldb_hpc.runtime.sharding import ChunkPlan


def input_identity(path: str, cg) -> InputIdentity:
    """Identity of a CG input: path, byte size, frames, residues, topology hash, first+last frame hash.

    cg: an open frame source of ``path`` (ldb_hpc.engine.sources; reads frames 0 and F-1).
    """
    res = cg.residues
    topo = content_hash(res.restype.astype(np.int64).tobytes(), "|".join(map(str, res.chain_id)).encode(),
                        res.resseq.astype(np.int64).tobytes(), res.segment.astype(np.int64).tobytes())
    n = cg.n_frames
    ends = np.concatenate([cg.read(0, 1).ca, cg.read(n - 1, n).ca]).astype(np.float32)
    return InputIdentity(os.path.abspath(path), os.path.getsize(path), int(n), int(cg.n_residues), topo,
                         content_hash(ends.tobytes()))


def write_run_record(folder: str, record: RunRecord) -> None:
    write_json(os.path.join(folder, RUN_FILE), record.to_json(), durable=True)


def read_run_record(folder: str) -> RunRecord | None:
    """The run record of ``folder``, or None when it has none; InputError when it is unreadable."""
    path = os.path.join(folder, RUN_FILE)
    try:
        record = read_json_document(path, FORMAT)
        return None if record is None else RunRecord.from_json(record)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is not a readable ldb-hpc run record ({exc}); "
                         "pass --overwrite to start over") from exc


class ChunkLog:
    """Append-only record of the finished chunks of one shard (one JSON line per chunk, fsync'ed)."""

    def __init__(self, path: str, run_id: str):
        self.run_id = run_id
        self._fh = open(path, "a+b")
        self._fh.seek(0, os.SEEK_END)
        if self._fh.tell() > 0:
            self._fh.seek(-1, os.SEEK_END)
            if self._fh.read(1) != b"\n":  # a line torn by a kill: end it so the next record parses
                self._fh.write(b"\n")

    def record(self, chunk: int, start: int, stop: int, seconds: float | None = None) -> None:
        line = {"chunk": int(chunk), "start": int(start), "stop": int(stop), "run": self.run_id}
        if seconds is not None:
            line["s"] = round(float(seconds), 4)
        self._fh.write((json.dumps(line) + "\n").encode())
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def log_records(lines, run_id: str):
    """(chunk, start, stop) of every line of run ``run_id`` among ``lines`` (bytes or str, as a shard log holds
    them); torn lines and other runs' lines are skipped. The one reader of the chunk-log format (:class:`ChunkLog`
    writes it; :func:`read_log` and the progress bar read it through here)."""
    for raw in lines:
        try:
            rec = json.loads(raw)
            if rec.get("run") != run_id:
                continue
            entry = int(rec["chunk"]), int(rec["start"]), int(rec["stop"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        yield entry


def read_log(path: str, run_id: str) -> dict[int, tuple[int, int]]:
    """Recorded chunks of a shard log: chunk → (start, stop); torn lines and other runs' lines ignored."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as fh:
        return {chunk: (start, stop) for chunk, start, stop in log_records(fh, run_id)}


@dataclass
class RunStatus:
    """Completion state of a run folder: which chunks of which shards are recorded."""

    folder: str
    record: RunRecord
    plan: ChunkPlan
    done: dict = field(default_factory=dict)  # shard → {chunk: (start, stop)}

    def shard_done(self, shard: int) -> bool:
        chunks = self.plan.shard_chunks(shard)
        if len(chunks) == 0:
            return True
        if self.record.io is IOMode.SHARDS and not os.path.exists(shard_path(self.folder, shard)):
            return False
        got = self.done.get(shard, {})
        return all(k in got and got[k] == self.plan.chunk_frames(k) for k in chunks)

    @property
    def missing_shards(self) -> list[int]:
        return [s for s in range(self.plan.n_shards) if not self.shard_done(s)]

    @property
    def frames_done(self) -> int:
        return sum(b - a for d in self.done.values() for a, b in d.values())

    @property
    def complete(self) -> bool:
        return not self.missing_shards

    def describe_missing(self, limit: int = 8) -> str:
        miss = self.missing_shards
        names = ", ".join(str(s) for s in miss[:limit])
        if len(miss) > limit:
            names += f" and {len(miss) - limit} more"
        return (f"{self.frames_done} of {self.plan.n_frames} frames recorded; shard(s) {names} of "
                f"{self.plan.n_shards} not finished")


def run_status(folder: str) -> RunStatus:
    """Read the run record and every shard log of ``folder``; InputError when it is not a run folder."""
    record = read_run_record(folder)
    if record is None:
        raise InputError(f"{folder} is not an ldb-hpc run folder (no {RUN_FILE})")
    plan = record.plan
    status = RunStatus(folder, record, plan)
    for s in range(plan.n_shards):
        got = read_log(shard_log_path(folder, s), record.run_id)
        valid = set(plan.shard_chunks(s))
        status.done[s] = {k: v for k, v in got.items() if k in valid}
    return status
