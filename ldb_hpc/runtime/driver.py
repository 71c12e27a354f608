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

import os
import resource
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

from ldb_hpc import ops
from ldb_hpc.chem.hydrogens import Protonation
from ldb_hpc.engine import devices
from ldb_hpc.engine.compute import DisulfideLog, Engine
from ldb_hpc.engine.pipeline import run_pipeline
from ldb_hpc.engine.sources import open_source
from ldb_hpc.errors import InputError
from ldb_hpc.geometry.contacts import CloseContactReport, CloseContacts
from ldb_hpc.runtime import output as out_mod
from ldb_hpc.runtime.comm import get_comm, ranks_per_node
from ldb_hpc.runtime.messages import RankExit, broadcast_outcome
from ldb_hpc.runtime.output import write_json
from ldb_hpc.runtime.progress import ProgressMonitor, progress_enabled
from ldb_hpc.runtime.publish import finish
from ldb_hpc.runtime.records import RankStats, RunRecord, RunSummary
from ldb_hpc.runtime.run_setup import BackmapConfig, setup
from ldb_hpc.runtime.sinks import RunSink


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


def _run_rank(cfg: BackmapConfig, comm, record: RunRecord, folder: str, shards: list[int],
              threads: int) -> RankStats:
    """Compute and write every unrecorded chunk of ``shards``; returns this rank's statistics."""
    import torch

    plan = record.plan
    ss = record.disulfides  # the output's disulfide bonds, decided by rank 0 (run_setup)
    pairs = () if ss is None else ss.pairs
    protonation = None if record.hydrogens is None else Protonation.from_pairs(pairs)
    torch.set_num_threads(threads)
    device = devices.select_device(cfg.job.device, comm.local_rank, ranks_per_node())
    engine = Engine(replace(cfg.job, batch_frames=plan.batch_frames), device)  # one model call per chunk
    if engine.hash != record.model.hash:  # another rank saw another model file: never mix results
        raise InputError(f"model {cfg.job.model} changed during the run (hash {engine.hash})")
    t_setup = time.perf_counter()
    calls0 = ops.kernel_calls()
    with open_source(cfg.input, cfg.job.cg, top=cfg.top, residue_map=cfg.job.residue_map) as cg:
        residues = cg.residues.with_disulfides(pairs)
        contacts = CloseContacts(residues)
        disulfide_log = DisulfideLog()
        if cg.n_frames != plan.n_frames:
            raise InputError(f"{cfg.input} has {cg.n_frames} frames, the run record says {plan.n_frames}")
        with RunSink(record, folder, shards, residues, comm, protonation) as sink:
            tasks = [Task(s, k, *plan.chunk_frames(k)) for s in shards for k in plan.shard_chunks(s)
                     if sink.pending(s, k)]
            hook = _test_hooks(comm.rank, tasks[-1] if tasks else None)

            def compute(task, frames):
                hook(task)
                return engine.rows(frames.ca, residues, np.arange(task.start, task.stop, dtype=np.int64),
                                   protonation, contacts, frame_start=task.start, disulfide_log=disulfide_log)

            times = run_pipeline(tasks, lambda task: cg.read(task.start, task.stop), compute,
                                 lambda task, frames, rows: sink.write(task.shard, task.chunk, frames, rows),
                                 depth=1, frames_of=lambda t: t.stop - t.start)
    return RankStats(comm.rank, shards, times.chunks, times.frames, round(times.read_s, 4),
                     round(times.compute_s, 4), round(times.write_s, 4), round(time.perf_counter() - t_setup, 4),
                     threads, str(device), ops.backend(device), contacts.report(),
                     round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                     disulfide_log.count, disulfide_log.first, _calls_since(calls0))


def _calls_since(before: dict[str, int]) -> dict[str, int]:
    """This process's fused-op calls by implementation since ``before`` (an ops.kernel_calls() snapshot)."""
    return {k: n - before.get(k, 0) for k, n in sorted(ops.kernel_calls().items()) if n - before.get(k, 0)}


# ----------------------------------------------------------------------------------------------
# phase 3 (rank 0) and the whole run


def run_backmap(cfg: BackmapConfig, comm=None) -> RunSummary | None:
    """Run ``cfg`` on this rank of ``comm`` (default: launched MPI world or serial).

    Returns the run summary on rank 0 (None elsewhere, and when the output was already complete). Raises
    InputError on rank 0 for bad input found during setup, :class:`RankExit` on other ranks; a failure during the
    run aborts the job when there is more than one rank and is re-raised otherwise.
    """
    comm = comm or get_comm()
    t0 = time.perf_counter()
    if cfg.shard is not None and comm.size > 1:
        raise InputError("--shard I/N runs one process per array task; do not combine it with several MPI ranks")
    state = broadcast_outcome(comm, lambda: setup(cfg, comm.size))
    record, folder = state.record, state.folder
    if state.complete:
        if comm.rank == 0:
            print(f"{cfg.output} is already complete; nothing to do")
        return None
    plan = record.plan
    shards = [cfg.shard[0]] if cfg.shard else list(plan.rank_shards(comm.rank, comm.size))
    threads = cfg.job.threads or default_threads()
    monitor = None
    try:
        if comm.rank == 0 and progress_enabled(cfg.progress):
            watch = shards if cfg.shard else range(plan.n_shards)
            monitor = ProgressMonitor(folder, record.run_id, watch,
                                      sum(plan.shard_frames(s)[1] - plan.shard_frames(s)[0] for s in watch),
                                      record.input.n_residues)
        try:
            stats = _run_rank(cfg, comm, record, folder, shards, threads)
        finally:
            if monitor is not None:
                monitor.close()
    except BaseException as exc:  # noqa: BLE001
        _abort_others(comm, exc)
        raise  # not reached under MPI
    all_stats = comm.gather(stats)
    result = None
    if comm.rank == 0:
        try:
            result = _summarise(cfg, comm, record, folder, all_stats, threads, time.perf_counter() - t0)
        except BaseException as exc:  # noqa: BLE001
            _abort_others(comm, exc, "0")
    comm.barrier()
    return result


def _abort_others(comm, exc: BaseException, who: str | None = None) -> None:
    """Under several ranks: one ``error: rank R: …`` line and MPI_Abort (nobody waits forever, no master is
    written); alone: return, so the caller re-raises."""
    if comm.size == 1:
        raise exc
    what = str(exc) if isinstance(exc, InputError) or who is not None else f"{type(exc).__name__}: {exc}"
    print(f"error: rank {who or comm.rank}: {' '.join(what.split())}", file=sys.stderr, flush=True)
    comm.abort(2 if isinstance(exc, InputError) else 1)


def _disulfide_summary(record: RunRecord, all_stats: list[RankStats]) -> dict:
    """The summary's ``disulfides``: the bonds every frame of the output carries, how they were decided, and the
    frames whose own geometry would have decided otherwise (counted; the first named)."""
    if record.disulfides is None:
        return {}
    first = sorted(f for s in all_stats for f in s.disulfide_first)[:10]
    return {**record.disulfides.to_json(), "count": len(record.disulfides.pairs),
            "frames_disagreeing": sum(s.disulfide_frames for s in all_stats), "first_disagreeing": first}


def _summarise(cfg: BackmapConfig, comm, record: RunRecord, folder: str, all_stats: list[RankStats], threads: int,
               wall: float) -> RunSummary:
    """Rank 0: publish the output (unless this is one ``--shard`` task) and write the run summary."""
    plan = record.plan
    frames = sum(s.frames for s in all_stats)
    n_res = record.input.n_residues
    summary = RunSummary(
        output=os.path.abspath(cfg.output), input=record.input.path, io=record.io,
        shard=list(cfg.shard) if cfg.shard else None, frames=plan.n_frames, samples=record.samples,
        rows=plan.n_frames * record.samples, frames_this_run=frames, residues=n_res, batch_frames=plan.batch_frames,
        n_shards=plan.n_shards, ranks=comm.size, threads=threads, model=record.model, seed=record.seed,
        wall_s=round(wall, 3), devices=sorted({s.device for s in all_stats}),
        close_contacts=CloseContactReport.merge([s.close_contacts for s in all_stats]),
        kernels=sorted({s.kernels for s in all_stats}), frames_per_s=round(frames / max(wall, 1e-9), 3),
        residue_frames_per_s=round(frames * n_res / max(wall, 1e-9), 1),
        peak_rss_mb_max=max(s.peak_rss_mb for s in all_stats), per_rank=all_stats, input_note=record.input_note,
        disulfides=_disulfide_summary(record, all_stats))
    if cfg.shard is None:
        summary.published = finish(summary.output, folder, record)
        summary.summary_path = summary.output + ".summary.json"
    else:
        summary.summary_path = out_mod.shard_summary_path(folder, cfg.shard[0])
    write_json(summary.summary_path, summary.to_json())
    return summary


__all__ = ["BackmapConfig", "RankExit", "run_backmap", "setup", "finish", "default_threads"]
