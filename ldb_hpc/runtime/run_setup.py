"""Phase 1 of ``backmap`` (rank 0): the run's options, and the run folder validated and prepared.

:func:`setup` validates options, input, model and the state of the output and its run folder (a fresh
run, ``--resume`` of an interrupted one, a ``--shard I/N`` task joining the run its siblings created,
``--overwrite``), then creates the folder and its ``run.json``. It returns the run record every rank
works from; it never computes frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ldb_hpc.engine.job import Job
from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.io import export
from ldb_hpc.io.files import check_temporaries, remove_stale, temporaries, temporaries_in
from ldb_hpc.runtime import output as out_mod
from ldb_hpc.runtime import resume
from ldb_hpc.runtime.comm import ranks_per_node
from ldb_hpc.runtime.records import Disulfides, Hydrogens, IOMode, RunRecord, RunState
from ldb_hpc.runtime.sharding import ChunkPlan

IO_MODES = tuple(m.value for m in IOMode)


@dataclass
class BackmapConfig:
    """One trajectory backmap run: the :class:`~ldb_hpc.engine.job.Job` (what is computed) and where it reads and
    writes (the CLI's arguments, validated by :func:`setup`)."""

    input: str
    output: str
    job: Job = field(default_factory=Job)
    top: str | None = None
    progress: bool | None = None  # None: only on a terminal
    overwrite: bool = False
    resume: bool = False
    io: str = "shards"
    shard: tuple[int, int] | None = None  # (I, N) of --shard I/N


def validate_options(job: Job, io: str = "shards", shard=None, overwrite: bool = False, resume: bool = False) -> None:
    """InputError naming the first option that is out of range or cannot be combined."""
    job.check_ranges()
    if io not in IO_MODES:
        raise InputError(f"--io must be one of {', '.join(IO_MODES)}, got {io!r}")
    if io == IOMode.MPIO.value:
        import h5py

        if not h5py.get_config().mpi:
            raise InputError("--io mpio needs h5py built with MPI (parallel HDF5); this h5py is serial "
                             "(h5py.get_config().mpi is False): use --io shards")
        if shard is not None:
            raise InputError("--io mpio writes one file collectively; it cannot be combined with --shard")
    if overwrite and resume:
        raise InputError("--overwrite and --resume exclude each other")
    # Before the output is touched: a GPU spec this node cannot meet (rank 0 checks its own node).
    job.check_device(0, ranks_per_node())


def _disulfides(engine, cg) -> tuple:
    """The output's disulfide bonds by the job's rule (Engine.topology: decided on frame 0's backbone, none, or
    the user's list) as a :class:`Disulfides` record, and the residues carrying them."""
    from ldb_hpc.io.topology import residue_labels

    res = engine.topology(cg.read(0, 1).ca, cg.residues)
    labels = residue_labels(res.chain_id, res.resseq, res.icode)
    rule = engine.job.disulfides if engine.job.disulfides in ("auto", "none") else "list"
    return Disulfides(res.disulfides, rule, tuple(f"{labels[i]}-{labels[j]}" for i, j in res.disulfides)), res


def _hydrogens(residues, disulfides) -> Hydrogens:
    """The run record's ``hydrogens`` entry: a note for the output's provenance (the disulfides, whose Cys get no
    HG, are the record's own). InputError when a residue has no standard protonation."""
    from ldb_hpc.chem.hydrogens import check_protonatable
    from ldb_hpc.io.topology import residue_labels

    problem = check_protonatable(residues.restype, residue_labels(residues.chain_id, residues.resseq))
    if problem:
        raise InputError(problem)
    names = ", ".join(disulfides.names) or "none"
    return Hydrogens(f"standard protonation (HIS as HIE), OXT at segment ends; disulfides ({disulfides.rule}): {names}")


def _clean_temporaries(output: str, folder: str, shard: tuple[int, int] | None) -> None:
    """Remove the temporary files that killed runs of this output left (their process is gone); OutputError
    naming any other (a live writer, or one on another host). A ``--shard I/N`` task answers only for the
    files of its shard: its sibling tasks may be writing theirs."""
    inside = temporaries_in(folder)
    if shard is None:
        beside = [t for p in (output, output + ".summary.json", *export.companions(output)) for t in temporaries(p)]
        check_temporaries(beside + inside, output)
        return
    mine = f"shard-{shard[0]:05d}"
    check_temporaries([t for t in inside if t.target.startswith(mine)], f"shard {shard[0]} of {output}")
    remove_stale([t for t in inside if not t.target.startswith(mine)])


def setup(cfg: BackmapConfig, size: int) -> RunState:
    """Validate the run and prepare its folder; returns the :class:`~ldb_hpc.runtime.records.RunState`."""
    from ldb_hpc.engine.compute import Engine
    from ldb_hpc.engine.sources import open_source
    from ldb_hpc.io.files import check_output_location, check_readable

    job = cfg.job
    validate_options(job, cfg.io, cfg.shard, cfg.overwrite, cfg.resume)
    check_readable(cfg.input, "input")
    if cfg.top:
        check_readable(cfg.top, "topology")
    output = os.path.abspath(cfg.output)
    fmt = export.output_format(output)  # by extension: None for MDTraj-HDF5; an unknown one is an error
    inputs = {os.path.abspath(cfg.input), os.path.abspath(cfg.top or cfg.input)}
    for path in [output, *export.companions(output)]:
        if path in inputs:
            raise InputError(f"output would overwrite the input: {path}")
    check_output_location(output)
    folder = out_mod.run_dir(output)
    engine = Engine(job)
    with open_source(cfg.input, job.cg, top=cfg.top, residue_map=job.residue_map) as cg:
        identity = resume.input_identity(cfg.input, cg)
        has_cell = cg.has_cell
        if job.hydrogens:  # a residue without a standard protonation fails before any model work
            _hydrogens(cg.residues, Disulfides((), "none", ()))
        disulfides, residues = _disulfides(engine, cg)
        hydrogens = _hydrogens(residues, disulfides) if job.hydrogens else None
        input_note = cg.note()
    n_shards = cfg.shard[1] if cfg.shard else size
    plan = ChunkPlan(identity.n_frames, job.batch_frames, n_shards)
    provenance = dict(engine.provenance(), input=os.path.basename(cfg.input))
    provenance["disulfides"] = ", ".join(disulfides.names) or "none"
    if hydrogens is not None:
        provenance["hydrogens"] = hydrogens.note
    if input_note:
        provenance["dropped"] = input_note
    current = RunRecord.create(identity, engine.model, job.seed, job.samples, IOMode(cfg.io), plan, has_cell,
                               provenance, hydrogens, input_note, disulfides)

    recorded = None
    if os.path.isdir(folder):
        if not out_mod.is_run_folder(folder):
            raise OutputError(f"{folder} exists and is not an ldb-hpc run folder; remove it or choose another output")
        if not cfg.overwrite:
            recorded = resume.read_run_record(folder)
    elif os.path.exists(folder):
        raise OutputError(f"{folder} exists and is not a folder; remove it or choose another output")
    _clean_temporaries(output, folder, cfg.shard)

    def mismatch(rec: RunRecord) -> None:
        diffs = rec.differences(current)
        if diffs:
            raise InputError(f"cannot resume {cfg.output}: the existing run differs in {'; '.join(diffs)}; "
                             "rerun with its options or pass --overwrite to start over")

    if os.path.exists(output) and not cfg.overwrite:
        converted = fmt is not None and recorded is None
        if cfg.resume and converted:  # a converted output keeps its run record in its manifest
            run = (export.read_manifest(output) or {}).get("run")
            recorded = None if run is None else RunRecord.from_json(run)
        if cfg.resume and recorded is not None:
            mismatch(recorded)
            if fmt is not None and not converted:  # killed after the conversion, before the folder went
                out_mod.remove_run_files(folder)
            return RunState(recorded, folder, True)
        raise OutputError(f"output exists: {cfg.output} (pass --overwrite to replace it)")

    if cfg.overwrite:
        if cfg.shard is None:
            for path in [output, *export.companions(output)]:
                if os.path.exists(path):
                    os.remove(path)
            out_mod.remove_run_files(folder)
        else:
            if os.path.exists(output):
                os.remove(output)
            out_mod.remove_run_files(folder, [cfg.shard[0]])
            old = resume.read_run_record(folder) if os.path.isdir(folder) else None
            if (old is not None and not old.differences(current) and old.plan == current.plan
                    and old.hydrogens == current.hydrogens):
                current = old  # keep the run id the other shards of this run record under
    elif recorded is not None:
        if cfg.resume or cfg.shard is not None:
            # An array task joins the run its sibling tasks created (and a retried task resumes its shard).
            mismatch(recorded)
            if cfg.shard is not None and recorded.plan.n_shards != cfg.shard[1]:
                raise InputError(f"--shard {cfg.shard[0]}/{cfg.shard[1]}: the existing run of {cfg.output} has "
                                 f"{recorded.plan.n_shards} shards; use the same N or --overwrite")
            current = recorded  # the recorded chunk plan is reused, whatever --batch-frames says now
        else:
            raise OutputError(f"an incomplete output of an interrupted run exists: {folder}; pass --resume to "
                              "finish it or --overwrite to start over")
    elif os.path.isdir(folder) and os.listdir(folder) and not cfg.overwrite and cfg.shard is None:
        raise OutputError(f"{folder} holds shard files without a run record; pass --overwrite to start over")
    if recorded is None and not cfg.overwrite:
        for path in export.companions(output):
            if os.path.exists(path):
                raise OutputError(f"output exists: {path} (written beside {os.path.basename(output)}; pass "
                                  "--overwrite to replace it)")

    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc}") from exc
    if resume.read_run_record(folder) is None or cfg.overwrite:
        resume.write_run_record(folder, current)
    return RunState(current, folder, False)
