"""``ldb-hpc backmap``: CA trajectory → all-heavy-atom trajectory, on one process or many MPI ranks.

The work is done by :mod:`ldb_hpc.runtime` (sharding, read→compute→write pipeline, shard files + master,
resume) over the one engine (ldb_hpc.engine); this module only turns options into a job and a run config.
"""

from __future__ import annotations

import argparse
import os
import sys

from ldb_hpc.cli import common
from ldb_hpc.engine.devices import DEVICE_HELP

EPILOG = """examples:
  ldb-hpc backmap traj.cg.h5                        # writes traj.cg.aa.h5 (+ traj.cg.aa.h5.d/ shard folder)
  ldb-hpc backmap traj.cg.h5 -o out.h5 --model ideal --overwrite
  ldb-hpc backmap run.xtc --top ca.pdb -o run.aa.h5 --map-residue LRT=LYS
  mpiexec -n 8 ldb-hpc backmap big.h5 --batch-frames 256   # 8 ranks, one shard file each
  srun ldb-hpc backmap big.h5 --resume                      # finish an interrupted run
  ldb-hpc backmap big.h5 --shard 3/16                       # array task 3 of 16; then: ldb-hpc merge big.aa.h5
  mpiexec -n 4 ldb-hpc backmap big.h5 --io mpio             # one file written collectively (parallel h5py)
  ldb-hpc backmap traj.cg.h5 -o out.xtc             # XTC + out.top.pdb: mdtraj.load("out.xtc", top="out.top.pdb")
  ldb-hpc backmap a.pdb b.cif 'snapshots/*.pdb' -o out/     # one process, one out/STEM.aa.pdb per input
  ldb-hpc backmap - < ca.pdb > aa.pdb                       # standard input to standard output, PDB

output formats (by the extension of -o): .h5/.hdf5 (MDTraj-HDF5, the default), .xtc .trr .dcd .nc (each with
OUT.top.pdb beside it), .pdb .cif (one MODEL per row). Another format than HDF5 is computed as HDF5 into
OUT.EXT.d/ (shards + master.h5, kept for --resume), then converted by rank 0 after the last row, streamed;
OUT.EXT (written last, under a temporary name until complete) and OUT.EXT.manifest.json (rows, provenance,
checksums for 'ldb-hpc verify') appear and the folder is removed. Existing HDF5 outputs: 'ldb-hpc export'.

many structure files (several inputs, a quoted glob, a folder, or -o naming a folder): PDB/mmCIF files, CA-only
or all-atom (reduced to CA), every MODEL a frame, backmapped in one process (model loaded once, files of the same
protein batched) into DIR/STEM.aa.pdb (--format h5: DIR/STEM.aa.h5), each written complete or not at all; a file
that fails gets one 'error: FILE: ...' line, the others are still written, the exit code is 2. Summary in
DIR/backmap.summary.json; --resume skips inputs whose output exists. Under mpiexec/srun the files are dealt to
the ranks. '-' reads one PDB/mmCIF from standard input and writes PDB to standard output (the summary goes to
standard error). --top, --shard and --io mpio are for one trajectory input.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("backmap", help="rebuild all heavy atoms of a CA trajectory",
                       description="Rebuild every heavy atom of every residue of a C-alpha trajectory "
                                   "(termini and chain breaks included) and write an MDTraj-HDF5 file. Under "
                                   "mpiexec/srun the frames are sharded over the ranks; the output OUT.h5 is "
                                   "a master file of virtual datasets over per-shard files in OUT.h5.d/ (move "
                                   "both together), written only when every row is done.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="+",
                   help="CG trajectory: MDTraj-HDF5 with one CA per residue, or any mdtraj-readable file; or "
                        "several PDB/mmCIF files, quoted globs or folders (one output each in -o DIR/); or - "
                        "(standard input to standard output)")
    p.add_argument("--top", help="topology for inputs that carry none (xtc, dcd, ...)")
    p.add_argument("--cg", default=None, choices=("ca", "com", "martini3"),
                   help="what the beads are: ca (one per residue on its C-alpha), com (one per residue at the centre "
                        "of mass of its heavy atoms, e.g. CALVADOS; beads named CA) or martini3 (BB + SC1..SC5, e.g. "
                        "GROMACS .gro + .xtc; found from the bead names without the flag); default: martini3 when "
                        "the input has BB beads, else ca. The default model is the one shipped for the mapping")
    p.add_argument("-o", "--output",
                   help="output file; its extension chooses the format: .h5 .hdf5 .xtc .trr .dcd .nc .pdb .cif "
                        "(default: INPUT with .h5 replaced by .aa.h5); with several structure files an existing "
                        "folder DIR/")
    p.add_argument("--format", default=None, metavar="FMT",
                   help="many structure files: pdb (the default: DIR/STEM.aa.pdb, one MODEL per row) or h5 "
                        "(DIR/STEM.aa.h5, MDTraj-HDF5, e.g. for 'ldb-hpc export')")
    p.add_argument("--model", default=None,
                   help="'default' (the learned model shipped in the package; also when absent), 'ideal' (the "
                        "non-learned baseline), or a model directory")
    p.add_argument("--batch-frames", type=int, default=64, metavar="B",
                   help="frames per chunk/batch (default 64); fixed per output, a resume reuses the recorded one")
    p.add_argument("--samples", type=int, default=1, metavar="N", help="samples per frame (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--steps", type=int, default=None, metavar="S",
                   help="diffusion sampling steps (default: the model's, 8 for the shipped model)")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="sampling temperature: 0 = the most likely structure (default with one sample), "
                        "1 = the model's full distribution; several samples default to the model's ensemble "
                        "temperature (0.5 for ldb-default, see docs/MODEL.md)")
    p.add_argument("--device", default="auto", metavar="DEV",
                   help=f"compute device per rank: {DEVICE_HELP} (default auto)")
    p.add_argument("--hydrogens", action="store_true",
                   help="also write every hydrogen (standard protonation, HIS as HIE, PDB names) and OXT at every "
                        "segment end, so that OpenMM's amber14 takes the output as it is (docs/HYDROGENS.md)")
    p.add_argument("--disulfides", default="auto", metavar="RULE",
                   help="which Cys pairs are bonded SG-SG in every frame of the output: auto (decided from the "
                        "backbone built for the first frame, default), none, or a list A:12-A:40,B:3-B:77; the "
                        "bonds are written to every output's topology (docs/DISULFIDES.md)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per rank (default: SLURM_CPUS_PER_TASK, else cores / ranks per node)")
    p.add_argument("--io", choices=("shards", "mpio"), default="shards",
                   help="shards: one file per shard + master of virtual datasets (default); mpio: one file "
                        "written collectively (needs h5py built with MPI)")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted run of the same command (skips the chunks already recorded)")
    p.add_argument("--shard", metavar="I/N",
                   help="do only shard I of N (array jobs); no master is written: run 'ldb-hpc merge OUT' after")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show the progress bar even when stderr is not a terminal")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    common.add_overwrite_option(p)
    common.add_residue_map_option(p)
    p.set_defaults(run=run)


def default_output(path: str) -> str:
    root, ext = os.path.splitext(path)
    return root + ".aa.h5"


def many_structures(inputs: list[str], output: str | None) -> bool:
    """True when the inputs are for the many-files mode (ldb_hpc.runtime.batch): several of them, ``-``, a
    folder or a glob, or ``-o`` naming a folder; one trajectory or structure file with ``-o FILE`` or no ``-o``
    keeps the trajectory path (sharding, resume, output by extension)."""
    from ldb_hpc.io.paths import is_glob

    src = inputs[0]
    if len(inputs) > 1 or src == "-" or os.path.isdir(src):
        return True
    if is_glob(src) and not os.path.exists(src):
        return True
    return output is not None and (output.endswith(("/", os.sep)) or os.path.isdir(output))


def _job(args):
    """The :class:`~ldb_hpc.engine.job.Job` of the options (what is computed, wherever it is read and written)."""
    from ldb_hpc.engine.job import Job
    from ldb_hpc.engine.sources import detect_mapping

    if args.cg is None:
        one = len(args.input) == 1 and not many_structures(args.input, args.output)
        args.cg = detect_mapping(args.input[0], args.top) if one else "ca"

    return Job(model=args.model, samples=args.samples, seed=args.seed, steps=args.steps,
               temperature=args.temperature, residue_map=common.parse_residue_map(args.map_residue),
               hydrogens=args.hydrogens, device=args.device, batch_frames=args.batch_frames, threads=args.threads,
               cg=args.cg, disulfides=args.disulfides.strip())


def run(args) -> int:
    if many_structures(args.input, args.output):
        return run_many(args)
    from ldb_hpc.runtime.driver import BackmapConfig, RankExit, run_backmap
    from ldb_hpc.runtime.records import kernel_text
    from ldb_hpc.runtime.sharding import parse_shard_spec

    job = _job(args)
    args.input = args.input[0]
    cfg = BackmapConfig(input=args.input, output=args.output or default_output(args.input), job=job,
                        top=args.top, progress=args.progress, overwrite=args.overwrite, resume=args.resume,
                        io=args.io, shard=parse_shard_spec(args.shard))
    try:
        summary = run_backmap(cfg)
    except RankExit as exc:  # rank 0 reports the error; the other ranks exit with its code, silently
        return exc.code
    if summary is not None:
        where = (f"shard {cfg.shard[0]}/{cfg.shard[1]} of {cfg.output} (run 'ldb-hpc merge {cfg.output}' when "
                 "every shard is done)" if cfg.shard else cfg.output)
        if summary.topology_pdb:
            where += f" + topology {summary.topology_pdb}"
        print(f"backmapped {summary.frames} frames x {summary.samples} sample(s) = {summary.rows} rows, "
              f"{summary.residues} residues with model '{summary.model.name}' on {summary.ranks} rank(s) "
              f"({', '.join(summary.devices)}; {kernel_text(summary.kernels, summary.kernel_calls)}) in "
              f"{summary.wall_s:.2f} s ({summary.residue_frames_per_s:,.0f} residue-frames/s) -> {where}")
        if summary.input_note:
            print(f"note: {summary.input_note}", file=sys.stderr)
        note = summary.close_contacts.warning(summary.summary_path)
        if note:
            print(note, file=sys.stderr)
    return 0


def run_many(args) -> int:
    """Many structure files, or standard input: route to ldb_hpc.runtime.batch and print what became of them."""
    from ldb_hpc.errors import InputError
    from ldb_hpc.runtime.batch import BatchConfig, FileStatus, run_batch
    from ldb_hpc.runtime.messages import RankExit
    from ldb_hpc.runtime.records import kernel_text

    for flag, used in (("--top", args.top), ("--shard", args.shard), ("--io mpio", args.io == "mpio"),
                       ("--cg martini3", args.cg == "martini3")):
        if used:
            raise InputError(f"{flag} is for one trajectory input, not (yet) for several structure files or -")
    stream = args.input == ["-"]
    cfg = BatchConfig(inputs=args.input, job=_job(args), outdir=None if stream else args.output,
                      output=args.output if stream else None, fmt=args.format, overwrite=args.overwrite,
                      resume=args.resume)

    def report(result) -> None:
        if result.status is FileStatus.FAILED:
            print(f"error: {result.input}: {result.error}", file=sys.stderr, flush=True)
        elif result.status is FileStatus.SKIPPED:
            print(f"note: {result.input}: {result.note}", file=sys.stderr, flush=True)

    try:
        outcome = run_batch(cfg, report)
    except RankExit as exc:
        return exc.code
    code = 2 if outcome.failed else 0
    s = outcome.summary
    if s is None or (stream and code):  # not rank 0; or the one error line says it all
        return code
    where = (cfg.output or "standard output") if stream else (s.summary_path or cfg.outdir)
    more = "".join(f"; {n} {k}" for k, n in (("failed", s.failed), ("skipped", s.count(FileStatus.SKIPPED))) if n)
    present = s.count(FileStatus.PRESENT)
    more += f"; {present} already written (--resume)" if present else ""
    print(f"backmapped {len(s.done())} of {len(s.files)} structure file(s): {s.frames} frame(s) x {s.samples} "
          f"sample(s) = {s.rows} rows, {s.residues} residues with model '{s.model_name}' on {s.ranks} "
          f"rank(s) ({', '.join(s.devices)}; {kernel_text(s.kernels, s.kernel_calls)}) in {s.wall_s:.2f} s "
          f"({s.residue_rows_per_s:,.0f} residue-rows/s){more} -> {where}",
          file=sys.stderr if stream else sys.stdout)
    note = s.warning(None if stream else where)
    if note:
        print(note, file=sys.stderr)
    return code
