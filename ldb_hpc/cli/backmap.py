"""``ldb-hpc backmap``: CA trajectory → all-heavy-atom trajectory (serial; MPI sharding comes with the runtime)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ldb_hpc.cli import common

EPILOG = """examples:
  ldb-hpc backmap traj.cg.h5                        # writes traj.cg.aa.h5 with the default model
  ldb-hpc backmap traj.cg.h5 -o out.h5 --model ideal --overwrite
  ldb-hpc backmap run.xtc --top ca.pdb -o run.aa.h5 --map-residue LRT=LYS
"""


def add_parser(sub) -> None:
    p = sub.add_parser("backmap", help="rebuild all heavy atoms of a CA trajectory",
                       description="Rebuild every heavy atom of every residue of a C-alpha trajectory "
                                   "(termini and chain breaks included) and write an MDTraj-HDF5 file.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="CG trajectory: MDTraj-HDF5 with one CA per residue, or any mdtraj-readable file")
    p.add_argument("--top", help="topology for inputs that carry none (xtc, dcd, ...)")
    p.add_argument("-o", "--output", help="output file (default: INPUT with .h5 replaced by .aa.h5)")
    p.add_argument("--model", default=None,
                   help="'ideal' (the non-learned baseline), a model directory, or the default model when absent")
    p.add_argument("--batch-frames", type=int, default=64, metavar="B", help="frames per batch (default 64)")
    p.add_argument("--samples", type=int, default=1, metavar="N", help="samples per frame (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    common.add_overwrite_option(p)
    common.add_residue_map_option(p)
    p.set_defaults(run=run)


def default_output(path: str) -> str:
    root, ext = os.path.splitext(path)
    return root + ".aa.h5"


def run(args) -> int:
    from ldb_hpc.errors import InputError

    common.existing_file(args.input, "input")
    if args.top:
        common.existing_file(args.top, "topology")
    if args.batch_frames < 1:
        raise InputError(f"--batch-frames must be at least 1, got {args.batch_frames}")
    if args.samples < 1:
        raise InputError(f"--samples must be at least 1, got {args.samples}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    output = args.output or default_output(args.input)
    if os.path.abspath(output) == os.path.abspath(args.input):
        raise InputError(f"output would overwrite the input: {output}")
    common.check_output(output, args.overwrite)
    residue_map = common.parse_residue_map(args.map_residue)
    from ldb_hpc.model.api import load_model

    model = load_model(args.model)

    import torch

    from ldb_hpc.io.aa import AllAtomWriter
    from ldb_hpc.io.cg import CGTrajectory

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    with CGTrajectory(args.input, top=args.top, residue_map=residue_map) as cg:
        residues = cg.residues
        n_frames, n_res = cg.n_frames, cg.n_residues
        provenance = {"model": model.name, "model_hash": model.hash, "seed": args.seed, "steps": model.steps,
                      "samples": args.samples, "input": os.path.basename(args.input)}
        progress = _progress(n_frames, args.no_progress)
        with AllAtomWriter(output, residues, n_frames=n_frames, samples=args.samples, provenance=provenance,
                           has_cell=cg.has_cell, overwrite=args.overwrite) as writer:
            for start in range(0, n_frames, args.batch_frames):
                stop = min(start + args.batch_frames, n_frames)
                chunk = cg.read(start, stop)
                frames = torch.arange(start, stop, dtype=torch.int64)
                pos = model.backmap(torch.from_numpy(chunk.ca), residues, frames, args.samples, args.seed)
                writer.write(start, pos.numpy(), chunk.time, chunk.cell_lengths, chunk.cell_angles)
                progress.update(stop - start)
            progress.close()
    elapsed = time.perf_counter() - t0
    n_atoms = int(residues.atom_mask().sum())
    print(f"backmapped {n_frames} frames x {args.samples} sample(s), {n_res} residues, {n_atoms} heavy atoms "
          f"per frame with model '{model.name}' in {elapsed:.2f} s "
          f"({n_frames * n_res / max(elapsed, 1e-9):,.0f} residue-frames/s) -> {output}")
    return 0


def _progress(total: int, disabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", disable=disabled or not sys.stderr.isatty(), file=sys.stderr,
                dynamic_ncols=True)
