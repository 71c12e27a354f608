"""``backmap`` over ranks: setup on rank 0, one pipeline per rank, master + summary on rank 0.

Phases: (1) rank 0 validates everything (options, input, model, output state, resume identity), creates
the run folder and its ``run.json`` (ldb_hpc.runtime.run_setup), and broadcasts the plan or the error
(every rank then exits with the same code, only rank 0 prints); (2) every rank opens the input, creates
or reopens its shard files (their layout: ldb_hpc.io.aa) and runs its chunks through the pipeline,
recording each finished chunk; a rank that fails prints ``error: rank R: …`` and aborts the whole job
(MPI_Abort), so nobody waits forever and no master is written; (3) rank 0 checks that every chunk is
recorded, writes the master or renames the collective file (ldb_hpc.runtime.publish) and the JSON run
summary.

Test-only environment variables: ``LDB_HPC_TEST_CHUNK_DELAY`` (seconds slept per chunk, to kill a run
midway deterministically) and ``LDB_HPC_TEST_FAIL_RANK`` (that rank raises on its last chunk).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import dataclass

from ldb_hpc import ops
from ldb_hpc.chem.hydrogens import Protonation
from ldb_hpc.chem.residues import NUM_SLOTS
from ldb_hpc.errors import InputError
from ldb_hpc.io import aa
from ldb_hpc.io.files import temp_name
from ldb_hpc.runtime import contacts as close_contacts
from ldb_hpc.runtime import devices, resume
from ldb_hpc.runtime import output as out_mod
from ldb_hpc.runtime.comm import get_comm, ranks_per_node
from ldb_hpc.runtime.pipeline import run_pipeline
from ldb_hpc.runtime.progress import ProgressMonitor, progress_enabled
from ldb_hpc.runtime.publish import finish
from ldb_hpc.runtime.run_setup import BackmapConfig, setup
from ldb_hpc.runtime.sharding import ChunkPlan


class RankExit(Exception):
    """Raised on ranks other than 0 when rank 0 has already reported an error: exit quietly with ``code``."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


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


def _forget_chunks(folder: str, shard: int) -> dict:
    """A shard whose rows file is being created anew has no finished chunks: delete its log; returns {}."""
    if os.path.exists(out_mod.shard_log_path(folder, shard)):
        os.remove(out_mod.shard_log_path(folder, shard))
    return {}


def _run_rank(cfg: BackmapConfig, comm, record: dict, folder: str, shards: list[int], threads: int) -> dict:
    """Compute and write every unrecorded chunk of ``shards``; returns this rank's statistics."""
    import torch

    from ldb_hpc.geometry.hydrogens import place_extra
    from ldb_hpc.io.cg import CGTrajectory
    from ldb_hpc.model.backmappers import load_backmapper

    plan = ChunkPlan.from_dict(record["plan"])
    run_id, S = record["run_id"], int(record["samples"])
    h = record.get("hydrogens")  # --hydrogens: the disulfides rank 0 found (run_setup)
    protonation = None if h is None else Protonation.from_pairs(h["disulfides"])
    torch.set_num_threads(threads)
    device = devices.select_device(cfg.device, comm.local_rank, ranks_per_node())
    model = load_backmapper(cfg.model, steps=cfg.steps, temperature=cfg.temperature).to(device)
    if model.hash != record["model"]["hash"]:  # another rank saw another model file: never mix results
        raise InputError(f"model {cfg.model} changed during the run (hash {model.hash})")
    t_setup = time.perf_counter()
    files, writers, logs = {}, {}, {}
    mpio = record["io"] == "mpio"
    collective = None  # the one file of --io mpio, closed by every rank together
    with CGTrajectory(cfg.input, top=cfg.top, residue_map=cfg.residue_map) as cg:
        residues, has_cell = cg.residues, cg.has_cell
        contacts = close_contacts.CloseContacts(residues)
        if cg.n_frames != plan.n_frames:
            raise InputError(f"{cfg.input} has {cg.n_frames} frames, the run record says {plan.n_frames}")
        done = {s: resume.read_log(out_mod.shard_log_path(folder, s), run_id) for s in shards}
        try:
            if mpio:
                data = os.path.join(folder, out_mod.MPIO_FILE)
                fresh = comm.allreduce(int(not os.path.exists(data)), "max") > 0
                if fresh:
                    for s in shards:
                        done[s] = _forget_chunks(folder, s)
                    collective = aa.create_collective(data, comm.mpi, residues, S, has_cell, record["provenance"],
                                                      plan.n_frames, protonation)
                else:
                    collective = aa.open_rows(data, comm.mpi)
                for s in shards:
                    writers[s] = aa.RowWriter(collective, residues, 0, S, has_cell, protonation)
            else:
                for s in shards:
                    a, b = plan.shard_frames(s)
                    if a == b:
                        continue
                    path = out_mod.shard_path(folder, s)
                    if not os.path.exists(path):
                        done[s] = _forget_chunks(folder, s)
                        aa.create_shard(path, residues, a, b, S, has_cell, record["provenance"], plan.n_frames,
                                        run_id, protonation)
                    files[s] = aa.open_rows(path)
                    writers[s] = aa.RowWriter(files[s], residues, a, S, has_cell, protonation)
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
                pos = model.backmap(ca, residues, index, S, cfg.seed).detach()
                if protonation is not None:  # OXT and hydrogens after the heavy atoms, on the same device
                    pos = place_extra(pos, residues.restype, residues.segment, protonation)
                pos = pos.to("cpu", torch.float32).numpy()
                contacts.check(task.start, pos[..., :NUM_SLOTS, :])
                return pos

            def write(task, frames, pos):
                writers[task.shard].write(task.start, pos, frames.time, frames.cell_lengths, frames.cell_angles)
                writers[task.shard].sync(durable=not mpio)
                logs[task.shard].record(task.chunk, task.start, task.stop)

            times = run_pipeline(tasks, read, compute, write, depth=1, frames_of=lambda t: t.stop - t.start)
        finally:
            for log in logs.values():
                log.close()
            for f in files.values():  # shard files; the collective file is closed below, by every rank
                f.close()
        if collective is not None:
            collective.close()  # collective: every rank gets here unless one failed (then the job aborts)
    elapsed = time.perf_counter() - t_setup
    return {"rank": comm.rank, "shards": shards, "chunks": times.chunks, "frames": times.frames,
            "read_s": round(times.read_s, 4), "compute_s": round(times.compute_s, 4),
            "write_s": round(times.write_s, 4), "wall_s": round(elapsed, 4), "threads": threads,
            "device": str(device), "kernels": ops.backend(device), "close_contacts": contacts.stats(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


# ----------------------------------------------------------------------------------------------
# phase 3 (rank 0) and the whole run


def _write_summary(path: str, summary: dict) -> None:
    tmp = temp_name(path)
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
                "devices": sorted({s["device"] for s in all_stats}),
                "close_contacts": close_contacts.merge([s.pop("close_contacts") for s in all_stats]),
                "kernels": sorted({s["kernels"] for s in all_stats}),
                "frames_per_s": round(frames / max(wall, 1e-9), 3),
                "residue_frames_per_s": round(frames * n_res / max(wall, 1e-9), 1),
                "peak_rss_mb_max": max(s["peak_rss_mb"] for s in all_stats), "per_rank": all_stats,
            }
            if cfg.shard is None:
                summary.update(finish(output, folder, record))
                summary_path = output + ".summary.json"
            else:
                summary_path = out_mod.shard_summary_path(folder, cfg.shard[0])
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


__all__ = ["BackmapConfig", "RankExit", "run_backmap", "setup", "finish", "default_threads"]
