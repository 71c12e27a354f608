"""Phase 3 of ``backmap`` (rank 0), and ``merge``: publish a finished run as its output file.

A run is published only when its resume records say every chunk is written: the shards' master file of
virtual datasets is written (``--io shards``), or the collective file is renamed into place (``--io
mpio``). ``merge`` does the same for the run folder of ``--shard I/N`` array tasks.
"""

from __future__ import annotations

import os
import shutil

from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.io import aa
from ldb_hpc.runtime import output as out_mod
from ldb_hpc.runtime import resume


def finish(output: str, folder: str, record: dict) -> None:
    """Check that every chunk is recorded, then publish the output (master file or collective file)."""
    status = resume.run_status(folder)
    if not status.complete:
        raise OutputError(f"{output} not written: {status.describe_missing()}")
    plan, S = status.plan, int(record["samples"])
    if record["io"] == "mpio":
        os.replace(os.path.join(folder, out_mod.MPIO_FILE), output)
        shutil.rmtree(folder, ignore_errors=True)
        return
    shards = [s for s in range(plan.n_shards) if len(plan.shard_chunks(s))]
    _check_shard_ids(folder, shards, record["run_id"])
    aa.write_master(output, [(out_mod.shard_path(folder, s), *plan.shard_frames(s)) for s in shards], S)


def _check_shard_ids(folder: str, shards: list[int], run_id: str) -> None:
    for s in shards:
        path = out_mod.shard_path(folder, s)
        try:
            rid = aa.read_run_id(path)
        except OSError as exc:
            raise OutputError(f"shard {s} ({path}) cannot be opened: {exc}") from exc
        if rid != run_id:
            raise OutputError(f"shard {s} ({path}) belongs to another run; rerun that shard with --overwrite")


def merge(output: str) -> dict:
    """Assemble the master of ``output`` from its run folder (after ``--shard`` array tasks)."""
    output = os.path.abspath(output)
    folder = out_mod.run_dir(output)
    if not os.path.isdir(folder):
        raise InputError(f"no run folder {folder}: nothing to merge (run 'ldb-hpc backmap --shard I/N' first)")
    status = resume.run_status(folder)
    if status.record.get("io") != "shards":
        raise InputError(f"{folder} was written with --io {status.record.get('io')}; only shard runs are merged")
    if not status.complete:
        raise InputError(f"cannot merge {output}: {status.describe_missing()}")
    if os.path.exists(output):
        raise OutputError(f"output exists: {output} (remove it first)")
    finish(output, folder, status.record)
    return {"frames": status.plan.n_frames, "samples": status.record["samples"], "n_shards": status.plan.n_shards}
