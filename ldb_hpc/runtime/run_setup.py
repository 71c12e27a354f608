"""Phase 1 of ``backmap`` (rank 0): the run's options, and the run folder validated and prepared.

:func:`setup` validates options, input, model and the state of the output and its run folder (a fresh
run, ``--resume`` of an interrupted one, a ``--shard I/N`` task joining the run its siblings created,
``--overwrite``), then creates the folder and its ``run.json``. It returns the run record every rank
works from; it never computes frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.io import export
from ldb_hpc.io.files import check_temporaries, remove_stale, temporaries, temporaries_in
from ldb_hpc.runtime import devices, resume
from ldb_hpc.runtime import output as out_mod
from ldb_hpc.runtime.comm import ranks_per_node
from ldb_hpc.runtime.sharding import ChunkPlan

IO_MODES = ("shards", "mpio")


@dataclass
class BackmapConfig:
    """Options of one backmap run (the CLI's arguments, validated by :func:`setup`)."""

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
    device: str = "auto"  # auto | cpu | cuda | cuda:N (ldb_hpc.runtime.devices)
    hydrogens: bool = False  # add OXT and every hydrogen (docs/HYDROGENS.md)


def validate_options(cfg: BackmapConfig) -> None:
    """InputError naming the first option of ``cfg`` that is out of range or cannot be combined."""
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
    # Before the output is touched: a GPU spec this node cannot meet (rank 0 checks its own node).
    devices.gpu_index(cfg.device, 0, ranks_per_node(), devices.visible_gpus())


def _hydrogens(cfg: BackmapConfig, model, cg) -> dict:
    """The run record's ``hydrogens`` entry: the disulfides, found on the first frame's backmap (sample 0; CYS whose
    SG atoms are at most 2.5 Å apart), as residue index pairs, and a note for the output's provenance.
    InputError when a residue has no standard protonation."""
    import numpy as np
    import torch

    from ldb_hpc.chem.hydrogens import check_protonatable
    from ldb_hpc.chem.residues import RESTYPE_INDEX
    from ldb_hpc.geometry.hydrogens import DISULFIDE_MAX, disulfide_pairs
    from ldb_hpc.io.topology import residue_labels

    res = cg.residues
    labels = residue_labels(res.chain_id, res.resseq)
    problem = check_protonatable(res.restype, labels)
    if problem:
        raise InputError(problem)
    pairs = []
    ca = cg.read(0, 1).ca
    cys = ca[0, res.restype == RESTYPE_INDEX["CYS"]]
    # SG is less than CA–CB + CB–SG = 3.4 Å from its CA: CYS pairs with CA–CA > 2 × 3.4 + 2.5 Å cannot be bonded,
    # and without any closer pair the first frame's backmap is not needed.
    if len(cys) >= 2 and (np.linalg.norm(cys[:, None] - cys[None], axis=-1) + 99 * np.eye(len(cys))).min() <= 9.3:
        pos = model.backmap(torch.from_numpy(ca), res, torch.zeros(1, dtype=torch.int64), cfg.samples, cfg.seed)
        pairs = disulfide_pairs(pos[0, 0], res.restype)
    names = ", ".join(f"{labels[i]}-{labels[j]}" for i, j in pairs) or "none"
    return {"disulfides": [list(p) for p in pairs],
            "note": f"standard protonation (HIS as HIE), OXT at segment ends; disulfides (SG-SG <= {DISULFIDE_MAX} A "
                    f"in frame 0): {names}"}


def check_output_location(output: str) -> None:
    """OutputError unless ``output`` (an absolute path) can be created: not a directory, in an existing,
    writable directory."""
    parent = os.path.dirname(output)
    if os.path.isdir(output):
        raise OutputError(f"output is a directory: {output}")
    if not os.path.isdir(parent):
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory is not writable: {parent}")


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


def setup(cfg: BackmapConfig, size: int) -> dict:
    """Validate the run and prepare its folder; returns {"record": run record, "folder", "complete"}."""
    from ldb_hpc.io.cg import CGTrajectory
    from ldb_hpc.io.files import check_readable
    from ldb_hpc.model.backmappers import load_backmapper

    validate_options(cfg)
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
    model = load_backmapper(cfg.model, steps=cfg.steps, temperature=cfg.temperature)
    with CGTrajectory(cfg.input, top=cfg.top, residue_map=cfg.residue_map) as cg:
        identity = resume.input_identity(cfg.input, cg)
        has_cell = cg.has_cell
        hydrogens = _hydrogens(cfg, model, cg) if cfg.hydrogens else None
    n_shards = cfg.shard[1] if cfg.shard else size
    plan = ChunkPlan(identity["n_frames"], cfg.batch_frames, n_shards)
    provenance = {"model": model.name, "model_hash": model.hash, "seed": cfg.seed, "steps": model.steps,
                  "samples": cfg.samples, "input": os.path.basename(cfg.input)}
    if hydrogens is not None:
        provenance["hydrogens"] = hydrogens["note"]
    current = resume.make_run_record(identity, model, cfg.seed, cfg.samples, cfg.io, plan, has_cell, provenance)
    if hydrogens is not None:
        current["hydrogens"] = hydrogens

    recorded = None
    if os.path.isdir(folder):
        if not out_mod.is_run_folder(folder):
            raise OutputError(f"{folder} exists and is not an ldb-hpc run folder; remove it or choose another output")
        if not cfg.overwrite:
            recorded = resume.read_run_record(folder)
    elif os.path.exists(folder):
        raise OutputError(f"{folder} exists and is not a folder; remove it or choose another output")
    _clean_temporaries(output, folder, cfg.shard)

    def mismatch(rec) -> None:
        diffs = resume.differences(rec, current)
        if (rec.get("hydrogens") is None) != (hydrogens is None):
            diffs.append(f"--hydrogens ({'on' if rec.get('hydrogens') is not None else 'off'} vs "
                         f"{'on' if hydrogens is not None else 'off'})")
        if diffs:
            raise InputError(f"cannot resume {cfg.output}: the existing run differs in {'; '.join(diffs)}; "
                             "rerun with its options or pass --overwrite to start over")

    if os.path.exists(output) and not cfg.overwrite:
        converted = fmt is not None and recorded is None
        if cfg.resume and converted:  # a converted output keeps its run record in its manifest
            recorded = (export.read_manifest(output) or {}).get("run")
        if cfg.resume and recorded is not None:
            mismatch(recorded)
            if fmt is not None and not converted:  # killed after the conversion, before the folder went
                out_mod.remove_run_files(folder)
            return {"record": recorded, "folder": folder, "complete": True}
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
            if (old is not None and not resume.differences(old, current) and old["plan"] == current["plan"]
                    and old.get("hydrogens") == current.get("hydrogens")):
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
    return {"record": current, "folder": folder, "complete": False}
