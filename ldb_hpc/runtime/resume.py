"""Resume records: the run identity file and the per-shard append-only logs of finished chunks.

``run.json`` (written first, temporary name then rename) says what is being computed: the input's
identity (path, size, frames, residues, a hash of the topology and of the first and last frames), the
model (name, content hash), seed, samples, IO mode and the chunk plan. Each shard has a log of JSON lines
``{"chunk": k, "start": a, "stop": b, "run": run_id}``, appended (flush + fsync) only after the chunk's
rows were flushed to the shard file, so a recorded chunk is a written chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.io.files import read_json_document, temp_name
from ldb_hpc.runtime.output import RUN_FILE, shard_log_path, shard_path
from ldb_hpc.runtime.sharding import ChunkPlan

FORMAT = "ldb-hpc run 1"


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
        h.update(b"\0")
    return "sha256:" + h.hexdigest()[:16]


def input_identity(path: str, cg) -> dict:
    """Identity of a CG input: path, byte size, frames, residues, topology hash, first+last frame hash.

    cg: an open :class:`ldb_hpc.io.cg.CGTrajectory` of ``path`` (reads frames 0 and F-1).
    """
    res = cg.residues
    topo = _sha(res.restype.astype(np.int64).tobytes(), "|".join(map(str, res.chain_id)).encode(),
                res.resseq.astype(np.int64).tobytes(), res.segment.astype(np.int64).tobytes())
    n = cg.n_frames
    ends = np.concatenate([cg.read(0, 1).ca, cg.read(n - 1, n).ca]).astype(np.float32)
    return {"path": os.path.abspath(path), "size": os.path.getsize(path), "n_frames": int(n),
            "n_residues": int(cg.n_residues), "topology_hash": topo, "frames_hash": _sha(ends.tobytes())}


def make_run_record(identity: dict, model, seed: int, samples: int, io: str, plan: ChunkPlan,
                    has_cell: bool, provenance: dict) -> dict:
    """The content of ``run.json``; ``run_id`` hashes everything a resumed run must share."""
    sampling = dict(getattr(model, "sampling", {}))
    same = {"input": {k: v for k, v in identity.items() if k != "path"}, "model_hash": model.hash,
            "seed": int(seed), "samples": int(samples), "io": io, "plan": plan.to_dict(), "sampling": sampling}
    run_id = _sha(json.dumps(same, sort_keys=True).encode())
    return {"format": FORMAT, "run_id": run_id, "input": identity, "model": {"name": model.name, "hash": model.hash},
            "seed": int(seed), "samples": int(samples), "io": io, "plan": plan.to_dict(), "sampling": sampling,
            "has_cell": bool(has_cell),
            "provenance": provenance, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def differences(recorded: dict, current: dict) -> list[str]:
    """What differs between two run records, as short phrases ("seed 0 vs 1"); empty when compatible."""
    out = []
    ri, ci = recorded.get("input", {}), current["input"]
    for key, what in (("n_frames", "frames"), ("n_residues", "residues"), ("size", "bytes"),
                      ("topology_hash", "topology"), ("frames_hash", "coordinates")):
        if ri.get(key) != ci[key]:
            out.append(f"input {what} ({ri.get(key)} vs {ci[key]})" if key in ("n_frames", "n_residues", "size")
                       else f"input {what}")
    if recorded.get("model", {}).get("hash") != current["model"]["hash"]:
        out.append(f"model ({recorded.get('model', {}).get('name')} {recorded.get('model', {}).get('hash')} vs "
                   f"{current['model']['name']} {current['model']['hash']})")
    for key in ("seed", "samples", "io", "sampling"):
        if recorded.get(key, {} if key == "sampling" else None) != current[key]:
            out.append(f"{key} ({recorded.get(key)} vs {current[key]})")
    return out


def write_run_record(folder: str, record: dict) -> None:
    path = os.path.join(folder, RUN_FILE)
    tmp = temp_name(path)
    try:
        with open(tmp, "w") as fh:
            json.dump(record, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc


def read_run_record(folder: str) -> dict | None:
    """The run record of ``folder``, or None when it has none; InputError when it is unreadable."""
    path = os.path.join(folder, RUN_FILE)
    try:
        record = read_json_document(path, FORMAT)
        if record is not None:
            ChunkPlan.from_dict(record["plan"])
        return record
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


def read_log(path: str, run_id: str) -> dict[int, tuple[int, int]]:
    """Recorded chunks of a shard log: chunk → (start, stop); torn lines and other runs' lines ignored."""
    done: dict[int, tuple[int, int]] = {}
    if not os.path.exists(path):
        return done
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                rec = json.loads(raw)
                if rec.get("run") == run_id:
                    done[int(rec["chunk"])] = (int(rec["start"]), int(rec["stop"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return done


@dataclass
class RunStatus:
    """Completion state of a run folder: which chunks of which shards are recorded."""

    folder: str
    record: dict
    plan: ChunkPlan
    done: dict = field(default_factory=dict)  # shard → {chunk: (start, stop)}

    def shard_done(self, shard: int) -> bool:
        chunks = self.plan.shard_chunks(shard)
        if len(chunks) == 0:
            return True
        if self.record.get("io", "shards") == "shards" and not os.path.exists(shard_path(self.folder, shard)):
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
    plan = ChunkPlan.from_dict(record["plan"])
    status = RunStatus(folder, record, plan)
    for s in range(plan.n_shards):
        got = read_log(shard_log_path(folder, s), record["run_id"])
        valid = set(plan.shard_chunks(s))
        status.done[s] = {k: v for k, v in got.items() if k in valid}
    return status
