"""``backmap`` of many structure files in one process: ``ldb-hpc backmap a.pdb b.cif 'snap/*.pdb' -o out/``.

Start-up is paid once: the model is loaded once per process; files are read (ldb_hpc.io.structure_files) by the
reader thread, computed on the calling thread and written by the writer thread of ldb_hpc.runtime.pipeline, so
parsing and writing overlap the model. Consecutive files of the same protein (same residue types and chain
breaks: the snapshots of one trajectory, the models of an ensemble) are batched, up to ``batch_frames`` frames of
several files per model call. Every file's frames keep their own frame indices 0..F-1, so a file's result depends
neither on its neighbours nor on the batch: it is what ``ldb-hpc backmap FILE -o X.h5`` writes with that seed.

A file that fails (unreadable, no protein, a residue without CA, its output exists, ...) becomes one
:class:`FileResult` with its error, handed to ``on_result`` as soon as it is known; the other files are still
written, each complete (temporary name, then rename). With ``resume``, inputs whose output exists are skipped
(an output exists only complete). Stream mode (``inputs == ["-"]``): one PDB/mmCIF text from standard input,
the PDB text of the result on standard output (or ``output``).

Under several MPI ranks the files are dealt to the ranks in contiguous blocks (each rank loads the model once and
writes its own files); rank 0 writes the summary (``OUTDIR/backmap.summary.json``). Stream mode is one process.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ldb_hpc.chem.residues import NUM_SLOTS
from ldb_hpc.engine import devices
from ldb_hpc.engine.job import Job
from ldb_hpc.engine.pipeline import run_pipeline
from ldb_hpc.errors import FormatLimitError, InputError, OutputError
from ldb_hpc.geometry.contacts import CloseContacts
from ldb_hpc.io import structure_files as sf
from ldb_hpc.runtime.comm import get_comm, ranks_per_node
from ldb_hpc.runtime.driver import default_threads
from ldb_hpc.runtime.messages import broadcast_outcome
from ldb_hpc.runtime.output import write_json
from ldb_hpc.runtime.records import BatchOutcome, FileResult, FileStatus, StructuresSummary
from ldb_hpc.runtime.run_setup import validate_options
from ldb_hpc.runtime.sharding import shard_range

SUMMARY_NAME = "backmap.summary.json"


@dataclass
class BatchConfig:
    """A many-files backmap: the :class:`~ldb_hpc.engine.job.Job` and the inputs and outputs (the CLI's
    arguments); see the module docstring."""

    inputs: list[str]
    job: Job = field(default_factory=Job)
    outdir: str | None = None  # folder of the outputs; None in stream mode
    output: str | None = None  # stream mode only: a file (.pdb or .h5) instead of standard output
    fmt: str | None = None  # "pdb" (default) or "h5"
    overwrite: bool = False
    resume: bool = False
    stdin: object = None  # binary stream of stream mode (default sys.stdin.buffer)
    stdout: object = None  # text stream of stream mode (default sys.stdout)

    @property
    def stream(self) -> bool:
        return self.inputs == [sf.STDIN]


@dataclass
class _Parsed:
    result: FileResult
    frames: sf.CAFrames | None = None
    positions: np.ndarray | None = None  # [F, S, L, 14, 3] Å once computed ([F, S, L, 14 + NUM_EXTRA, 3]: hydrogens)
    protonation: object = None  # --hydrogens: this file's ldb_hpc.chem.hydrogens.Protonation


def _validate(cfg: BatchConfig) -> None:
    """The checks of the trajectory path's options (ranges, --overwrite with --resume, the device), and --format."""
    validate_options(cfg.job, overwrite=cfg.overwrite, resume=cfg.resume)
    if cfg.fmt is not None and cfg.fmt not in sf.OUTPUT_FORMATS:
        raise InputError(f"--format must be one of {', '.join(sf.OUTPUT_FORMATS)}, got {cfg.fmt!r}")


def _stream_output(cfg: BatchConfig) -> tuple[str | None, str]:
    """(output file or None for standard output, its format) of stream mode."""
    from ldb_hpc.io.files import check_output_location

    if cfg.output is None:
        if cfg.fmt not in (None, "pdb"):
            raise InputError(f"standard output takes PDB text; --format {cfg.fmt} needs -o FILE")
        return None, "pdb"
    ext = os.path.splitext(cfg.output)[1].lower().lstrip(".")
    fmt = {"pdb": "pdb", "h5": "h5", "hdf5": "h5"}.get(ext)
    if fmt is None:
        raise InputError(f"-o {cfg.output}: from standard input ldb-hpc writes .pdb or .h5 (or PDB on standard "
                         "output without -o)")
    check_output_location(cfg.output, overwrite=cfg.overwrite or cfg.resume)
    return cfg.output, fmt


def plan(cfg: BatchConfig) -> list[FileResult]:
    """Validate options and the output folder; one :class:`FileResult` per input file, in order (status
    "failed" already for inputs that name no file or share another input's output). InputError/OutputError for
    what stops the whole command."""
    _validate(cfg)
    if cfg.stream:
        output, _ = _stream_output(cfg)
        return [FileResult(0, sf.STDIN, output)]
    if sf.STDIN in cfg.inputs:
        raise InputError("- (standard input) must be the only input: ldb-hpc backmap - < ca.pdb > aa.pdb")
    if cfg.outdir is None:
        raise InputError("several inputs: pass -o DIR/, an existing folder for one output per input")
    if not os.path.isdir(cfg.outdir):
        what = "is not a folder" if os.path.exists(cfg.outdir) else "does not exist"
        raise OutputError(f"output folder {what}: {cfg.outdir} (create it first; -o DIR/ takes an existing folder)")
    if not os.access(cfg.outdir, os.W_OK):
        raise OutputError(f"output folder is not writable: {cfg.outdir}")
    fmt = cfg.fmt or "pdb"
    results: list[FileResult] = []
    owner: dict[str, str] = {}
    for k, item in enumerate(sf.expand_inputs(cfg.inputs)):
        out = None if item.problem else sf.output_path(item.path, cfg.outdir, fmt)
        r = FileResult(k, item.path, out)
        if item.problem:
            r.status, r.error = FileStatus.FAILED, item.problem
        elif item.note:
            r.status, r.note, r.output = FileStatus.SKIPPED, item.note, None
        elif os.path.abspath(out) in owner:
            r.status = FileStatus.FAILED
            r.error = (f"its output {out} would also be the output of {owner[os.path.abspath(out)]}"
                       "; rename one of them or backmap them in separate calls")
        else:
            owner[os.path.abspath(out)] = item.path
        results.append(r)
    return results


def _read(cfg: BatchConfig, r: FileResult, stdin) -> sf.CAFrames:
    from ldb_hpc.engine.sources import bead_residues

    if r.input == sf.STDIN:
        frames = sf.read_ca_stream(stdin.read(), cfg.job.residue_map)
    else:
        frames = sf.read_ca_frames(r.input, cfg.job.residue_map)
    frames.residues = bead_residues(frames.residues, frames.ca[0], cfg.job.cg, r.input)
    return frames


def _fail(r: FileResult, exc: BaseException) -> None:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, InputError):
        text = f"internal error ({type(exc).__name__}: {text})"
    r.status, r.error = FileStatus.FAILED, text.removeprefix(f"{r.input}: ")


def _groups(cfg: BatchConfig, results: list[FileResult], stdin, clock: dict):
    """Parsed files in order, grouped: consecutive files of the same residue types and segments, at most
    ``batch_frames`` frames per group (a longer file is a group of its own). Runs in the reader thread."""
    pending: list[_Parsed] = []
    key, n = None, 0
    for r in results:
        if r.status is not FileStatus.WRITTEN:
            yield from ([pending] if pending else [])
            pending, key, n = [], None, 0
            yield [_Parsed(r)]
            continue
        t0 = time.perf_counter()
        parsed = _Parsed(r)
        if r.output is not None and os.path.exists(r.output) and (cfg.resume or not cfg.overwrite):
            if cfg.resume:
                r.status, r.note = FileStatus.PRESENT, f"output exists: {r.output} (--resume)"
            else:
                r.status, r.error = FileStatus.FAILED, f"output exists: {r.output} (pass --overwrite to replace it)"
        else:
            try:
                parsed.frames = _read(cfg, r, stdin)
            except Exception as exc:  # noqa: BLE001 - one file's failure is that file's error line
                _fail(r, exc)
        clock["parse_s"] += time.perf_counter() - t0
        if parsed.frames is None:
            yield from ([pending] if pending else [])
            pending, key, n = [], None, 0
            yield [parsed]
            continue
        res = parsed.frames.residues
        r.frames, r.residues, r.note = parsed.frames.n_frames, len(res), parsed.frames.note
        this = (res.restype.tobytes(), res.segment.tobytes())
        if pending and (this != key or n + r.frames > cfg.job.batch_frames):
            yield pending
            pending, n = [], 0
        pending.append(parsed)
        key, n = this, n + r.frames
        if n >= cfg.job.batch_frames:
            yield pending
            pending, key, n = [], None, 0
    if pending:
        yield pending


def _compute(cfg: BatchConfig, engine, group: list[_Parsed]) -> None:
    """Backmap the frames of ``group`` (files of one protein) in model calls of at most ``batch_frames``; each file
    gets its own close-contact check and, with ``--hydrogens``, its disulfides from its first row."""
    todo = [p for p in group if p.frames is not None]
    if cfg.job.hydrogens:  # a residue without a standard protonation fails its file before any work
        from ldb_hpc.chem.hydrogens import check_protonatable
        from ldb_hpc.io.topology import residue_labels

        for p in todo:
            res = p.frames.residues
            problem = check_protonatable(res.restype, residue_labels(res.chain_id, res.resseq))
            if problem:
                _fail(p.result, InputError(problem))
                p.frames = None
        todo = [p for p in todo if p.frames is not None]
    if not todo:
        return
    ca = np.concatenate([p.frames.ca for p in todo])
    index = np.concatenate([np.arange(p.frames.n_frames, dtype=np.int64) for p in todo])
    B = cfg.job.batch_frames
    try:  # one model call per batch of frames, across the files of the group
        raw = [engine.sample(ca[a: a + B], todo[0].frames.residues, index[a: a + B]) for a in range(0, len(ca), B)]
    except Exception as exc:  # noqa: BLE001 - the files of this group fail, the others go on
        for p in todo:
            _fail(p.result, exc)
            p.frames = None
        return
    import torch

    raw = torch.cat(raw)
    start = 0
    for p in todo:
        f = p.frames.n_frames
        try:
            _finish(cfg, engine, p, raw[start: start + f])
        except Exception as exc:  # noqa: BLE001 - this file fails, the others go on
            _fail(p.result, exc)
            p.positions = None
        start += f


def _finish(cfg: BatchConfig, engine, p: _Parsed, raw) -> None:
    """One file's output rows from the model's rows ``raw`` [F, S, L, 14, 3]: its disulfides decided on its first
    row (Engine.decide, by the job's rule) and built, OXT and hydrogens with ``--hydrogens``, and its own
    close-contact check."""
    from ldb_hpc.chem.hydrogens import Protonation

    res = engine.decide(raw[0, 0], p.frames.residues)
    p.frames.residues = res
    p.protonation = Protonation.from_pairs(res.disulfides) if cfg.job.hydrogens else None
    p.positions = engine.complete(raw, res, p.protonation).cpu().numpy()
    check = CloseContacts(res)
    rows = check.check(0, p.positions[..., :NUM_SLOTS, :])
    if rows:
        p.result.close_contact_rows = rows
        first = check.named[0]
        p.result.closest = f"frame {first.frame} sample {first.sample}: {first.closest}"


def _write(sink, p: _Parsed) -> None:
    r = p.result
    if p.positions is None:
        return
    try:
        if r.output is None:
            sink.stream.write(p.frames.residues, p.positions, p.protonation, p.frames.cell)
        else:
            sink.files.write(r.output, r.input, p.frames.residues, p.positions, p.protonation, p.frames.cell)
        r.rows = int(p.positions.shape[0] * p.positions.shape[1])
    except Exception as exc:  # noqa: BLE001 - this file's error line; the others are still written
        _fail(r, exc)
        if isinstance(exc, FormatLimitError):
            r.error += " (write HDF5 instead: --format h5)"
    p.positions = None  # memory: the rows are written


@dataclass
class _Sinks:
    files: object  # ldb_hpc.engine.sinks.StructureFileSink
    stream: object  # ldb_hpc.engine.sinks.StreamSink


def run_batch(cfg: BatchConfig, on_result=None, comm=None) -> BatchOutcome:
    """Backmap every input of ``cfg`` on this rank's share. ``on_result(FileResult)`` is called for each of this
    rank's files, in order, once it is written, skipped or failed (files "present" under ``resume`` are not
    announced)."""
    comm = comm or get_comm()
    t0 = time.perf_counter()
    if cfg.stream and comm.size > 1:
        raise InputError("reading standard input is one process: run it without mpiexec/srun")
    results = broadcast_outcome(comm, lambda: plan(cfg))
    a, b = shard_range(len(results), comm.rank, comm.size)
    mine = results[a:b]
    threads = cfg.job.threads or default_threads()
    fmt = _stream_output(cfg)[1] if cfg.stream else (cfg.fmt or "pdb")

    import torch

    from ldb_hpc import ops
    from ldb_hpc.engine.compute import Engine
    from ldb_hpc.engine.sinks import StreamSink, StructureFileSink
    torch.set_num_threads(threads)
    device = devices.select_device(cfg.job.device, comm.local_rank, ranks_per_node())
    t_model = time.perf_counter()
    engine = Engine(cfg.job, device)
    calls0 = ops.kernel_calls()
    clock = {"parse_s": 0.0, "model_load_s": time.perf_counter() - t_model}
    provenance = engine.provenance()
    provenance["disulfides"] = (f"{cfg.job.disulfides}: decided on each file's first row" if cfg.job.disulfides
                                == "auto" else cfg.job.disulfides)
    if cfg.job.hydrogens:
        provenance["hydrogens"] = ("standard protonation (HIS as HIE), OXT at segment ends; no HG on the Cys of "
                                   "disulfides")
    sink = _Sinks(StructureFileSink(fmt, provenance, cfg.overwrite), StreamSink(cfg.stdout or sys.stdout))

    def write(group, _data, _result):
        for p in group:
            _write(sink, p)
            if on_result is not None and p.result.status is not FileStatus.PRESENT:
                on_result(p.result)

    times = run_pipeline(_groups(cfg, mine, cfg.stdin or sys.stdin.buffer, clock), lambda g: g,
                         lambda g, _: _compute(cfg, engine, g), write, depth=2,
                         frames_of=lambda g: sum(p.result.frames for p in g))
    stats = {"rank": comm.rank, "files": len(mine), "parse_s": round(clock["parse_s"], 4),
             "model_load_s": round(clock["model_load_s"], 4), "compute_s": round(times.compute_s, 4),
             "write_s": round(times.write_s, 4), "device": str(device), "kernels": ops.backend(device),
             "kernel_calls": {k: n - calls0.get(k, 0) for k, n in sorted(ops.kernel_calls().items())
                              if n - calls0.get(k, 0)},
             "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    gathered = comm.gather((mine, stats))
    failed = comm.allreduce(sum(r.status is FileStatus.FAILED for r in mine), "sum")
    if comm.rank != 0:
        return BatchOutcome(failed)
    summary = StructuresSummary(
        outdir=cfg.outdir, format=fmt, files=[f for recs, _ in gathered for f in recs], failed=failed,
        samples=cfg.job.samples, model={"name": engine.name, "hash": engine.hash, "steps": engine.steps},
        seed=cfg.job.seed, batch_frames=cfg.job.batch_frames, ranks=comm.size, threads=threads,
        wall_s=round(time.perf_counter() - t0, 3), per_rank=[s for _, s in gathered])
    if cfg.outdir is not None:
        summary.summary_path = os.path.join(cfg.outdir, SUMMARY_NAME)
        write_json(os.path.abspath(summary.summary_path), summary.to_json())
    return BatchOutcome(failed, summary)


__all__ = ["BatchConfig", "BatchOutcome", "FileResult", "FileStatus", "StructuresSummary", "SUMMARY_NAME", "plan",
           "run_batch"]
