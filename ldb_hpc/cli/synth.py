"""``ldb-hpc synth``: a protein-like CG (CA) trajectory of any length around a structure, for scale tests and
benchmarks (the model: :mod:`ldb_hpc.synth`, docs/SYNTH.md)."""

from __future__ import annotations

import argparse
import os

from ldb_hpc.cli import common

EPILOG = """examples:
  ldb-hpc synth --frames 1000000 --from 1abc.pdb -o big.h5          # a million frames, streamed to disk
  ldb-hpc synth --frames 2000 --from examples/example.cg.h5 -o small.h5 --seed 7
  ldb-hpc synth --frames 50000 --from 1abc.cif -o big.h5 --chunk 5000 --steps 20 --overwrite   # frames further apart
"""


def add_parser(sub) -> None:
    p = sub.add_parser("synth", help="make a synthetic CA trajectory of any length (protein-like Brownian dynamics)",
                       description="Run overdamped Langevin dynamics of a CA model built on the CA trace of a "
                                   "structure and write the frames as an MDTraj-HDF5 CG trajectory. The model: an "
                                   "elastic network for the fold (springs between CAs closer than 10 Å, stiff "
                                   "springs between sequence neighbours so CA-CA stays about 3.8 Å); virtual bond "
                                   "angles held in 79.6-153.2° and within 13.6° of the structure's own; virtual "
                                   "dihedrals within 30° of the structure's own; CA(i)-CA(i+k) above 4.74, 4.48 and "
                                   "4.25 Å for k = 2, 3, 4; a 4.0 Å hard core between the other non-bonded CAs "
                                   "(|i-j| >= 3, or two chains/segments). The ranges were fitted on real structures "
                                   "(docs/SYNTH.md). Frames are written a chunk at a time: memory does not grow "
                                   "with --frames. The same --seed gives the same file for any --chunk.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, required=True, metavar="N", help="number of frames to write")
    p.add_argument("--from", dest="source", required=True, metavar="STRUCTURE",
                   help="PDB/mmCIF file (first model) or a CG MDTraj-HDF5 file (its frame 0)")
    p.add_argument("-o", "--output", required=True, help="output CG trajectory (.h5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--chunk", type=int, default=1000, metavar="K",
                   help="frames simulated and written at a time (default 1000)")
    p.add_argument("--steps", type=int, default=5,
                   help="Brownian steps between frames, D*dt = 0.002 Å² each (default 5)")
    p.add_argument("--dt-ps", type=float, default=10.0, help="time between frames written to /time, ps (default 10)")
    p.add_argument("--keep-unknown", action="store_true",
                   help="keep non-standard amino acids as UNK instead of stopping with an error")
    common.add_overwrite_option(p)
    common.add_residue_map_option(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ldb_hpc.errors import InputError
    from ldb_hpc.synth import load_reference, synthesize

    if args.frames < 1:
        raise InputError(f"--frames must be at least 1, got {args.frames}")
    if args.chunk < 1:
        raise InputError(f"--chunk must be at least 1, got {args.chunk}")
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    if not args.dt_ps > 0:
        raise InputError(f"--dt-ps must be positive, got {args.dt_ps}")
    common.existing_file(args.source, "structure")
    if os.path.abspath(args.output) == os.path.abspath(args.source):
        raise InputError(f"output would overwrite the input: {args.output}")
    common.check_output(args.output, args.overwrite)
    residue_map = common.parse_residue_map(args.map_residue)
    residues, ca0 = load_reference(args.source, residue_map, args.keep_unknown)
    s = synthesize(residues, ca0, args.output, args.frames, seed=args.seed, chunk=args.chunk, steps=args.steps,
                   dt_ps=args.dt_ps, overwrite=args.overwrite,
                   title=f"protein-like CA Brownian dynamics around {os.path.basename(args.source)} "
                         f"(ldb-hpc synth, seed {args.seed})")
    print(f"wrote {args.output}: {s.frames} frames, {s.residues} residues, {s.springs} springs; "
          f"CA-CA {s.ca_ca_mean:.2f} Å (min {s.ca_ca_min:.2f}, max {s.ca_ca_max:.2f}), CA(i)-CA(i+2) min "
          f"{s.ca_13_min:.2f} Å, virtual angles {s.theta_min:.1f}-{s.theta_max:.1f}°; {s.bytes} bytes; the reference "
          f"was regularised by {s.reference_shift_rmsd:.2f} Å RMSD (at most {s.reference_shift_max:.2f} Å)")
    return 0
