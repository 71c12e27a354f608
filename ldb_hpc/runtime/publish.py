"""Phase 3 of ``backmap`` (rank 0), ``merge`` and ``export``: publish a finished run as its output file.

A run is published only when its resume records say every chunk is written: the shards' master file of
virtual datasets is written (``--io shards``), or the collective file is renamed into place (``--io
mpio``). ``merge`` does the same for the run folder of ``--shard I/N`` array tasks.

An output in another format than MDTraj-HDF5 (``OUT.xtc``, ``.dcd``, ``.trr``, ``.nc``, ``.pdb``,
``.cif``; ldb_hpc.io.export) is computed into the same run folder ``OUT.xtc.d``; once every chunk is
recorded the master is written inside it (``OUT.xtc.d/master.h5``; ``data.h5`` of ``--io mpio`` serves as
it is), converted, streamed, to ``OUT.xtc`` (+ ``OUT.top.pdb``, ``OUT.xtc.manifest.json``, the trajectory
renamed into place last), and only then is the folder removed: a run killed during the conversion is
finished by ``--resume`` (or ``merge``) from the folder.
"""

from __future__ import annotations

import os
import shutil
import time

from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.io import aa, export
from ldb_hpc.io.files import check_output_location, check_readable, check_temporaries, temporaries
from ldb_hpc.runtime import output as out_mod
from ldb_hpc.runtime import resume
from ldb_hpc.runtime.records import IOMode, RunRecord


def finish(output: str, folder: str, record: RunRecord) -> dict:
    """Check that every chunk is recorded, then publish the output (master file, collective file, or the
    conversion of either to another format). Returns what the run summary records about the output:
    ``output_format`` and, for another format, ``topology_pdb`` (or None), ``manifest`` and ``export_s``."""
    status = resume.run_status(folder)
    if not status.complete:
        raise OutputError(f"{output} not written: {status.describe_missing()}")
    plan, S = status.plan, record.samples
    fmt = export.output_format(output)
    if record.io is IOMode.MPIO:
        source = os.path.join(folder, out_mod.MPIO_FILE)
        if fmt is None:
            os.replace(source, output)
            shutil.rmtree(folder, ignore_errors=True)
            return {"output_format": "h5"}
    else:
        shards = [s for s in range(plan.n_shards) if len(plan.shard_chunks(s))]
        _check_shard_ids(folder, shards, record.run_id)
        source = output if fmt is None else out_mod.master_path(folder)
        aa.write_master(source, [(out_mod.shard_path(folder, s), *plan.shard_frames(s)) for s in shards], S)
        if fmt is None:
            return {"output_format": "h5"}
    t0 = time.perf_counter()
    manifest = export.export(source, output, run=record.to_json())
    shutil.rmtree(folder, ignore_errors=True)  # the HDF5 working copy: the converted output is complete
    return _described(output, manifest, time.perf_counter() - t0)


def _described(output: str, manifest: dict, seconds: float) -> dict:
    folder = os.path.dirname(os.path.abspath(output))
    return {"output_format": manifest["kind"],
            "topology_pdb": os.path.join(folder, manifest["topology"]) if manifest["topology"] else None,
            "manifest": export.manifest_path(os.path.abspath(output)), "export_s": round(seconds, 3)}


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
    """Assemble the master of ``output`` from its run folder (after ``--shard`` array tasks); an output in
    another format is converted as well. Returns frames, samples, n_shards and :func:`finish`'s keys."""
    output = os.path.abspath(output)
    export.output_format(output)
    folder = out_mod.run_dir(output)
    if not os.path.isdir(folder):
        raise InputError(f"no run folder {folder}: nothing to merge (run 'ldb-hpc backmap --shard I/N' first)")
    status = resume.run_status(folder)
    if status.record.io is not IOMode.SHARDS:
        raise InputError(f"{folder} was written with --io {status.record.io.value}; only shard runs are merged")
    if not status.complete:
        raise InputError(f"cannot merge {output}: {status.describe_missing()}")
    if os.path.exists(output):
        raise OutputError(f"output exists: {output} (remove it first)")
    check_temporaries([t for p in [output, *export.companions(output)] for t in temporaries(p)], output)
    info = finish(output, folder, status.record)
    return {"frames": status.plan.n_frames, "samples": status.record.samples, "n_shards": status.plan.n_shards,
            **info}


def export_output(source: str, dest: str, overwrite: bool = False) -> dict:
    """``ldb-hpc export``: convert the finished all-atom MDTraj-HDF5 file ``source`` to ``dest`` (format by
    extension), streamed. Refuses an unknown or HDF5 ``dest``, ``dest`` equal to ``source``, and existing
    files of ``dest`` (or its topology PDB / manifest) without ``overwrite``. Returns the manifest and
    :func:`finish`'s keys."""
    check_readable(source, "input")
    dest = os.path.abspath(dest)
    if export.output_format(dest) is None:
        raise InputError(f"{os.path.basename(dest)} is MDTraj-HDF5: export writes "
                         f"{', '.join(export.FORMATS)} (choose the format by the extension of -o)")
    check_output_location(dest)
    names = [dest, *export.companions(dest)]
    if os.path.abspath(source) in names:
        raise InputError(f"output would overwrite the input: {source}")
    existing = [p for p in names if os.path.exists(p)]
    if existing and not overwrite:
        raise OutputError(f"output exists: {existing[0]} (pass --overwrite to replace it)")
    check_temporaries([t for p in names for t in temporaries(p)], dest)
    t0 = time.perf_counter()
    manifest = export.export(source, dest)
    return {"manifest_content": manifest, **_described(dest, manifest, time.perf_counter() - t0)}
