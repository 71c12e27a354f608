"""The run folder beside an output: what the runtime keeps there and what the files are called.

Layout of an output ``OUT.h5`` written by the runtime (``--io shards``, the default)::

    OUT.h5                 master: virtual datasets over the shard files (ldb_hpc.io.aa.write_master)
    OUT.h5.d/run.json      run identity and chunk plan (ldb_hpc.runtime.resume)
    OUT.h5.d/shard-00003.h5   rows of the frames of shard 3 (ldb_hpc.io.aa.create_shard)
    OUT.h5.d/shard-00003.log  one JSON line per finished chunk (resume record)
    OUT.h5.d/shard-00003.summary.json  run summary of a ``--shard 3/N`` task

With ``--io mpio`` every rank writes its rows into one file ``OUT.h5.d/data.h5`` opened collectively
(ldb_hpc.io.aa.create_collective), which is renamed to ``OUT.h5`` when complete. The layout of the
HDF5 files themselves belongs to ldb_hpc.io.aa; this module only names files and folders.

An output in another format (``OUT.xtc``, ``.dcd``, ``.trr``, ``.nc``, ``.pdb``, ``.cif``) is computed the
same way into ``OUT.xtc.d/``, whose master (``OUT.xtc.d/master.h5``, or ``data.h5`` of ``--io mpio``) is
the HDF5 working copy; rank 0 converts it (ldb_hpc.io.export) to ``OUT.xtc`` (+ ``OUT.top.pdb``,
``OUT.xtc.manifest.json``) and then removes the folder.
"""

from __future__ import annotations

import json
import os
import shutil

from ldb_hpc.errors import OutputError
from ldb_hpc.io.files import temp_name

RUN_FILE = "run.json"
MPIO_FILE = "data.h5"
MASTER_FILE = "master.h5"  # the master inside the run folder of an output in another format


def run_dir(output: str) -> str:
    """The folder of shard files and resume records beside ``output`` (``OUT.h5`` → ``OUT.h5.d``)."""
    return os.path.abspath(output) + ".d"


def master_path(folder: str) -> str:
    """The HDF5 working copy of an output in another format (its master of virtual datasets)."""
    return os.path.join(folder, MASTER_FILE)


def shard_path(folder: str, shard: int) -> str:
    return os.path.join(folder, f"shard-{shard:05d}.h5")


def shard_log_path(folder: str, shard: int) -> str:
    return os.path.join(folder, f"shard-{shard:05d}.log")


def shard_summary_path(folder: str, shard: int) -> str:
    return os.path.join(folder, f"shard-{shard:05d}.summary.json")


def is_run_folder(folder: str) -> bool:
    """True when every entry of ``folder`` is something the runtime writes there."""
    for name in os.listdir(folder):
        if not (name == RUN_FILE or name.startswith("shard-") or name in (MPIO_FILE, MASTER_FILE)
                or name.startswith(".") or name.startswith(RUN_FILE)):
            return False
    return True


def remove_run_files(folder: str, shards=None) -> None:
    """Delete the runtime's files from ``folder`` (only those of ``shards`` when given)."""
    if not os.path.isdir(folder):
        return
    if shards is None:
        shutil.rmtree(folder)
        return
    for s in shards:
        for path in (shard_path(folder, s), shard_log_path(folder, s)):
            if os.path.exists(path):
                os.remove(path)


def write_json(path: str, data: dict, durable: bool = False) -> None:
    """Write ``data`` as indented JSON to ``path``, complete or not at all (temporary name, then rename); with
    ``durable`` fsync'ed before the rename. OutputError when it cannot be written."""
    tmp = temp_name(path)
    try:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
