"""``backmap`` over ranks: setup on rank 0, one pipeline per rank, master + summary on rank 0.

Phases: (1) rank 0 validates everything (options, input, model, output state, resume identity), creates
the run folder and its ``run.json``, and broadcasts the plan or the error (every rank then exits with
the same code, only rank 0 prints); (2) every rank opens the input, creates or reopens its shard files
and runs its chunks through the pipeline, recording each finished chunk; a rank that fails prints
``error: rank R: …`` and aborts the whole job (MPI_Abort), so nobody waits forever and no master is
written; (3) rank 0 checks that every chunk is recorded, writes the master (or renames the collective
file) and the JSON run summary.

Test-only environment variables: ``LDB_HPC_TEST_CHUNK_DELAY`` (seconds slept per chunk, to kill a run
midway deterministically) and ``LDB_HPC_TEST_FAIL_RANK`` (that rank raises on its last chunk).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field

from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.runtime import output as out_mod
from ldb_hpc.runtime import resume
from ldb_hpc.runtime.comm import get_comm, ranks_per_node
from ldb_hpc.runtime.sharding import ChunkPlan

IO_MODES = ("shards", "mpio")


class RankExit(Exception):
    """Raised on ranks other than 0 when rank 0 has already reported an error: exit quietly with ``code``."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


@dataclass
class BackmapConfig:
    """Options of one backmap run (the CLI's arguments, validated by :func:`run_backmap`)."""

    input: str
    output: str
    top: str | None = None
    model: str | None = None
    steps: int | None = None  # diffusion sampling steps (None: the model's default)
    temperature: float | None = None  # sampling temperature (None: 0 for one sample, the model's for ensembles)
    batch_frames: int = 64
    samples: int = 1
    seed: int = 0
    threads: int | None = None
    progress: bool | None = None  # None: only on a terminal
    overwrite: bool = False
    resume: bool = False
    residue_map: dict = field(default_factory=dict)
    io: str = "shards"
    shard: tuple[int, int] | None = None  # (I, N) of --shard I/N


@dataclass
class Task:
    shard: int
    chunk: int
    start: int
    stop: int


def default_threads() -> int:
    """Torch threads per rank: SLURM_CPUS_PER_TASK, else the cores of this node divided by its ranks."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    cores = os.cpu_count() or 1
    try:
        cores = min(cores, len(os.sched_getaffinity(0)) * ranks_per_node())
    except AttributeError:
        pass
    return max(1, cores // ranks_per_node())


def pick_device(local_rank: int):
    """One GPU per rank (local rank modulo the GPUs of the node) when CUDA is available, else the CPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# phase 1: setup on rank 0


def _validate_options(cfg: BackmapConfig) -> None:
    if cfg.batch_frames < 1:
        raise InputError(f"--batch-frames must be at least 1, got {cfg.batch_frames}")
    if cfg.samples < 1:
        raise InputError(f"--samples must be at least 1, got {cfg.samples}")
    if cfg.threads is not None and cfg.threads < 1:
        raise InputError(f"--threads must be at least 1, got {cfg.threads}")
    if cfg.io not in IO_MODES:
        raise InputError(f"--io must be one of {', '.join(IO_MODES)}, got {cfg.io!r}")
    if cfg.io == "mpio":
        import h5py

        if not h5py.get_config().mpi:
            raise InputError("--io mpio needs h5py built with MPI (parallel HDF5); this h5py is serial "
                             "(h5py.get_config().mpi is False): use --io shards")
        if cfg.shard is not None:
            raise InputError("--io mpio writes one file collectively; it cannot be combined with --shard")
    if cfg.overwrite and cfg.resume:
        raise InputError("--overwrite and --resume exclude each other")


def _is_run_folder(folder: str) -> bool:
    """True when every entry of ``folder`` is something the runtime writes there."""
    for name in os.listdir(folder):
        if not (name == out_mod.RUN_FILE or name.startswith("shard-") or name == out_mod.MPIO_FILE
                or name.startswith(".") or name.startswith(out_mod.RUN_FILE)):
            return False
    return True


def _remove_run_files(folder: str, shards=None) -> None:
    """Delete the runtime's files from ``folder`` (only those of ``shards`` when given)."""
    if not os.path.isdir(folder):
        return
    if shards is None:
        shutil.rmtree(folder)
        return
    for s in shards:
        for path in (out_mod.shard_path(folder, s), out_mod.shard_log_path(folder, s)):
            if os.path.exists(path):
                os.remove(path)


def _check_output_location(output: str) -> None:
    parent = os.path.dirname(output)
    if os.path.isdir(output):
        raise OutputError(f"output is a directory: {output}")
    if not os.path.isdir(parent):
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory is not writable: {parent}")


def setup(cfg: BackmapConfig, size: int) -> dict:
    """Validate the run and prepare its folder; returns {"record": run record, "folder", "complete"}."""
    from ldb_hpc.io.cg import CGTrajectory
    from ldb_hpc.io.files import check_readable
    from ldb_hpc.model.api import load_model

    _validate_options(cfg)
    check_readable(cfg.input, "input")
    if cfg.top:
        check_readable(cfg.top, "topology")
    output = os.path.abspath(cfg.output)
    if output == os.path.abspath(cfg.input):
        raise InputError(f"output would overwrite the input: {cfg.output}")
    _check_output_location(output)
    folder = out_mod.run_dir(output)
    model = load_model(cfg.model, steps=cfg.steps, temperature=cfg.temperature)
    with CGTrajectory(cfg.input, top=cfg.top, residue_map=cfg.residue_map) as cg:
        identity = resume.input_identity(cfg.input, cg)
        has_cell = cg.has_cell
    n_shards = cfg.shard[1] if cfg.shard else size
    plan = ChunkPlan(identity["n_frames"], cfg.batch_frames, n_shards)
    provenance = {"model": model.name, "model_hash": model.hash, "seed": cfg.seed, "steps": model.steps,
                  "samples": cfg.samples, "input": os.path.basename(cfg.input)}
    current = resume.make_run_record(identity, model, cfg.seed, cfg.samples, cfg.io, plan, has_cell, provenance)

    recorded = None
    if os.path.isdir(folder):
        if not _is_run_folder(folder):
            raise OutputError(f"{folder} exists and is not an ldb-hpc run folder; remove it or choose another output")
        if not cfg.overwrite:
            recorded = resume.read_run_record(folder)
    elif os.path.exists(folder):
        raise OutputError(f"{folder} exists and is not a folder; remove it or choose another output")

    def mismatch(rec) -> None:
        diffs = resume.differences(rec, current)
        if diffs:
            raise InputError(f"cannot resume {cfg.output}: the existing run differs in {'; '.join(diffs)}; "
                             "rerun with its options or pass --overwrite to start over")

    if os.path.exists(output) and not cfg.overwrite:
        if cfg.resume and recorded is not None:
            mismatch(recorded)
            return {"record": recorded, "folder": folder, "complete": True}
        raise OutputError(f"output exists: {cfg.output} (pass --overwrite to replace it)")

    if cfg.overwrite:
        if os.path.exists(output) and cfg.shard is None:
            os.remove(output)
        if cfg.shard is None:
            _remove_run_files(folder)
        else:
            if os.path.exists(output):
                os.remove(output)
            _remove_run_files(folder, [cfg.shard[0]])
            old = resume.read_run_record(folder) if os.path.isdir(folder) else None
            if old is not None and not resume.differences(old, current) and old["plan"] == current["plan"]:
                current = old  # keep the run id the other shards of this run record under
    elif recorded is not None:
        if cfg.resume or cfg.shard is not None:
            # An array task joins the run its sibling tasks created (and a retried task resumes its shard).
            mismatch(recorded)
            if cfg.shard is not None and recorded["plan"]["n_shards"] != cfg.shard[1]:
                raise InputError(f"--shard {cfg.shard[0]}/{cfg.shard[1]}: the existing run of {cfg.output} has "
                                 f"{recorded['plan']['n_shards']} shards; use the same N or --overwrite")
            current = recorded  # the recorded chunk plan is reused, whatever --batch-frames says now
        else:
            raise OutputError(f"an incomplete output of an interrupted run exists: {folder}; pass --resume to "
                              "finish it or --overwrite to start over")
    elif os.path.isdir(folder) and os.listdir(folder) and not cfg.overwrite and cfg.shard is None:
        raise OutputError(f"{folder} holds shard files without a run record; pass --overwrite to start over")

    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc}")
    if resume.read_run_record(folder) is None or cfg.overwrite:
        resume.write_run_record(folder, current)
    return {"record": current, "folder": folder, "complete": False}


# ----------------------------------------------------------------------------------------------
# phase 2: the chunks of this rank


def _test_hooks(rank: int, last_task):
    delay = float(os.environ.get("LDB_HPC_TEST_CHUNK_DELAY", "0") or 0)
    fail = os.environ.get("LDB_HPC_TEST_FAIL_RANK", "")

    def hook(task) -> None:
        if delay > 0:
            time.sleep(delay)
        if fail.strip() == str(rank) and task is last_task:
            raise RuntimeError(f"LDB_HPC_TEST_FAIL_RANK={rank}: simulated failure on chunk {task.chunk}")

    return hook


def _run_rank(cfg: BackmapConfig, comm, record: dict, folder: str, shards: list[int], threads: int) -> dict:
    """Compute and write every unrecorded chunk of ``shards``; returns this rank's statistics."""
    import h5py
    import torch

    from ldb_hpc.io.cg import CGTrajectory
    from ldb_hpc.model.api import load_model

    plan = ChunkPlan.from_dict(record["plan"])
    run_id, S = record["run_id"], int(record["samples"])
    torch.set_num_threads(threads)
    device = pick_device(comm.local_rank)
    model = load_model(cfg.model, steps=cfg.steps, temperature=cfg.temperature)
    if model.hash != record["model"]["hash"]:  # another rank saw another model file: never mix results
        raise InputError(f"model {cfg.model} changed during the run (hash {model.hash})")
    if device.type != "cpu" and hasattr(model, "to"):
        model.to(device)
    else:
        device = torch.device("cpu")
    t_setup = time.perf_counter()
    files, writers, logs = {}, {}, {}
    mpio = record["io"] == "mpio"
    collective = None  # the one file of --io mpio, closed by every rank together
    with CGTrajectory(cfg.input, top=cfg.top, residue_map=cfg.residue_map) as cg:
        residues, has_cell = cg.residues, cg.has_cell
        if cg.n_frames != plan.n_frames:
            raise InputError(f"{cfg.input} has {cg.n_frames} frames, the run record says {plan.n_frames}")
        done = {s: resume.read_log(out_mod.shard_log_path(folder, s), run_id) for s in shards}
        try:
            if mpio:
                data = os.path.join(folder, out_mod.MPIO_FILE)
                fresh = not os.path.exists(data)
                fresh = comm.allreduce(int(fresh), "max") > 0
                if fresh:
                    for s in shards:
                        done[s] = {}
                        if os.path.exists(out_mod.shard_log_path(folder, s)):
                            os.remove(out_mod.shard_log_path(folder, s))
                    f = collective = h5py.File(data, "w", driver="mpio", comm=comm.mpi)
                    out_mod.create_row_file(f, residues, 0, plan.n_frames, S, has_cell, record["provenance"],
                                            plan.n_frames)
                    f.flush()  # collective: the layout is on disk before any rank writes rows
                else:
                    f = collective = h5py.File(data, "r+", driver="mpio", comm=comm.mpi)
                for s in shards:
                    files[s] = f
                    writers[s] = out_mod.RowWriter(f, residues, 0, S, has_cell)
            else:
                for s in shards:
                    a, b = plan.shard_frames(s)
                    if a == b:
                        continue
                    path = out_mod.shard_path(folder, s)
                    if not os.path.exists(path):
                        done[s] = {}
                        if os.path.exists(out_mod.shard_log_path(folder, s)):
                            os.remove(out_mod.shard_log_path(folder, s))
                        out_mod.create_shard(path, residues, a, b, S, has_cell, record["provenance"],
                                             plan.n_frames, run_id)
                    files[s] = out_mod.open_shard(path)
                    writers[s] = out_mod.RowWriter(files[s], residues, a, S, has_cell)
            for s in shards:
                logs[s] = resume.ChunkLog(out_mod.shard_log_path(folder, s), run_id)

            tasks = [Task(s, k, *plan.chunk_frames(k)) for s in shards for k in plan.shard_chunks(s)
                     if done[s].get(k) != plan.chunk_frames(k)]
            hook = _test_hooks(comm.rank, tasks[-1] if tasks else None)

            def read(task):
                return cg.read(task.start, task.stop)

            def compute(task, frames):
                hook(task)
                ca = torch.from_numpy(frames.ca).to(device)
                index = torch.arange(task.start, task.stop, dtype=torch.int64, device=device)
                pos = model.backmap(ca, residues, index, S, cfg.seed)
                return pos.detach().to("cpu", torch.float32).numpy()

            def write(task, frames, pos):
                writers[task.shard].write(task.start, pos, frames.time, frames.cell_lengths, frames.cell_angles)
                writers[task.shard].sync(durable=not mpio)
                logs[task.shard].record(task.chunk, task.start, task.stop)

            from ldb_hpc.runtime.pipeline import run_pipeline

            times = run_pipeline(tasks, read, compute, write, depth=1, frames_of=lambda t: t.stop - t.start)
        finally:
            for log in logs.values():
                log.close()
            if not mpio:
                for f in files.values():
                    f.close()
        if collective is not None:
            collective.close()  # collective: every rank gets here unless one failed (then the job aborts)
    elapsed = time.perf_counter() - t_setup
    return {"rank": comm.rank, "shards": shards, "chunks": times.chunks, "frames": times.frames,
            "read_s": round(times.read_s, 4), "compute_s": round(times.compute_s, 4),
            "write_s": round(times.write_s, 4), "wall_s": round(elapsed, 4), "threads": threads,
            "device": str(device), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


# ----------------------------------------------------------------------------------------------
# phase 3 (rank 0) and the whole run


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
    ranges = {s: plan.shard_frames(s) for s in range(plan.n_shards) if len(plan.shard_chunks(s))}
    _check_shard_ids(folder, ranges, record["run_id"])
    out_mod.write_master(output, folder, ranges, S)


def _check_shard_ids(folder: str, ranges: dict, run_id: str) -> None:
    import h5py

    for s in ranges:
        path = out_mod.shard_path(folder, s)
        try:
            with h5py.File(path, "r") as f:
                rid = f.attrs.get("ldb_run_id")
        except OSError as exc:
            raise OutputError(f"shard {s} ({path}) cannot be opened: {exc}")
        rid = rid.decode() if isinstance(rid, bytes) else rid
        if rid != run_id:
            raise OutputError(f"shard {s} ({path}) belongs to another run; rerun that shard with --overwrite")


def _write_summary(path: str, summary: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(summary, fh, indent=1)
    os.replace(tmp, path)


def run_backmap(cfg: BackmapConfig, comm=None) -> dict | None:
    """Run ``cfg`` on this rank of ``comm`` (default: launched MPI world or serial).

    Returns the run summary on rank 0 (None elsewhere). Raises InputError on rank 0 for bad input found
    during setup, :class:`RankExit` on other ranks; a failure during the run aborts the job when there is
    more than one rank and is re-raised otherwise.
    """
    comm = comm or get_comm()
    t0 = time.perf_counter()
    if cfg.shard is not None and comm.size > 1:
        raise InputError("--shard I/N runs one process per array task; do not combine it with several MPI ranks")
    message = None
    if comm.rank == 0:
        try:
            message = ("ok", setup(cfg, comm.size))
        except InputError as exc:
            message = ("input", str(exc))
        except Exception as exc:  # noqa: BLE001 - every rank must learn about it
            message = ("crash", f"{type(exc).__name__}: {exc}")
            if comm.size == 1:
                raise
    message = comm.bcast(message)
    if message[0] != "ok":
        if comm.rank == 0:
            if message[0] == "input":
                raise InputError(message[1])
            raise RuntimeError(message[1])
        raise RankExit(2 if message[0] == "input" else 1)
    state = message[1]
    record, folder = state["record"], state["folder"]
    output = os.path.abspath(cfg.output)
    if state["complete"]:
        if comm.rank == 0:
            print(f"{cfg.output} is already complete; nothing to do")
        return None
    plan = ChunkPlan.from_dict(record["plan"])
    shards = [cfg.shard[0]] if cfg.shard else list(plan.rank_shards(comm.rank, comm.size))
    threads = cfg.threads or default_threads()
    from ldb_hpc.runtime.progress import ProgressMonitor, progress_enabled

    monitor = None
    try:
        if comm.rank == 0 and progress_enabled(cfg.progress):
            watch = shards if cfg.shard else range(plan.n_shards)
            monitor = ProgressMonitor(folder, record["run_id"], watch,
                                      sum(plan.shard_frames(s)[1] - plan.shard_frames(s)[0] for s in watch),
                                      record["input"]["n_residues"])
        try:
            stats = _run_rank(cfg, comm, record, folder, shards, threads)
        finally:
            if monitor is not None:
                monitor.close()
    except BaseException as exc:  # noqa: BLE001
        if comm.size == 1:
            raise
        what = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        print(f"error: rank {comm.rank}: {' '.join(what.split())}", file=sys.stderr, flush=True)
        comm.abort(2 if isinstance(exc, InputError) else 1)
        raise  # not reached under MPI
    all_stats = comm.gather(stats)
    result = None
    if comm.rank == 0:
        try:
            wall = time.perf_counter() - t0
            frames = sum(s["frames"] for s in all_stats)
            n_res = record["input"]["n_residues"]
            summary = {
                "output": output, "input": record["input"]["path"], "io": record["io"],
                "shard": list(cfg.shard) if cfg.shard else None,
                "frames": plan.n_frames, "samples": record["samples"], "rows": plan.n_frames * record["samples"],
                "frames_this_run": frames, "residues": n_res, "batch_frames": plan.batch_frames,
                "n_shards": plan.n_shards, "ranks": comm.size, "threads": threads,
                "model": record["model"], "seed": record["seed"], "wall_s": round(wall, 3),
                "frames_per_s": round(frames / max(wall, 1e-9), 3),
                "residue_frames_per_s": round(frames * n_res / max(wall, 1e-9), 1),
                "peak_rss_mb_max": max(s["peak_rss_mb"] for s in all_stats), "per_rank": all_stats,
            }
            if cfg.shard is None:
                finish(output, folder, record)
                summary_path = output + ".summary.json"
            else:
                summary_path = os.path.join(folder, f"shard-{cfg.shard[0]:05d}.summary.json")
            _write_summary(summary_path, summary)
            summary["summary_path"] = summary_path
            result = summary
        except BaseException as exc:  # noqa: BLE001
            if comm.size == 1:
                raise
            print(f"error: rank 0: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
            comm.abort(2 if isinstance(exc, InputError) else 1)
    comm.barrier()
    return result


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


__all__ = ["BackmapConfig", "RankExit", "run_backmap", "merge", "setup", "finish", "default_threads",
           "pick_device"]
