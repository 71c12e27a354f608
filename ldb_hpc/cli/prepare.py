"""``ldb-hpc prepare``: PDB/mmCIF files → one training HDF5 of residues in atom14 slots."""

from __future__ import annotations

import argparse
import os

from ldb_hpc.cli import common

EPILOG = """examples:
  ldb-hpc prepare data/train -o train.h5 --manifest data/MANIFEST.tsv
  ldb-hpc prepare 'pdbs/**/*.cif.gz' extra/1abc.pdb -o train.h5 --overwrite
  ldb-hpc prepare data/train -o train.h5 --map-residue SEP=SER --map-residue TPO=THR

Only the first model of multi-model files is used. Unknown amino-acid-like residues are kept as UNK
(backbone only) and counted; files that cannot be parsed are skipped and listed with the reason
(pass --strict to stop at the first such file instead). See docs/DATA.md for the file layout.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("prepare", help="turn PDB/mmCIF files into a training HDF5 (atom14 residues)",
                       description="Parse PDB/mmCIF structures (plain or .gz; files, directories searched "
                                   "recursively, or glob patterns) and write one HDF5 with every protein "
                                   "residue in atom14 slots: positions (Å), masks, residue types, chain and "
                                   "segment ids, the source file and, with --manifest, the 95 % / 40 % "
                                   "sequence-identity clusters used to split training from validation.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="FILES",
                   help="structure files, directories (*.pdb, *.ent, *.cif, *.mmcif and their .gz) or globs")
    p.add_argument("-o", "--output", required=True, help="output training HDF5, e.g. train.h5")
    p.add_argument("--manifest", metavar="MANIFEST.tsv",
                   help="tab-separated file, chain, n_res, cluster95, cluster40 table; rows are matched "
                        "on file path (trailing components) + chain id")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="parser processes (default: min(2, CPU count)); output order does not depend on it")
    p.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip",
                   help="compression of the per-residue datasets (default gzip)")
    p.add_argument("--strict", action="store_true",
                   help="stop with an error at the first file that cannot be used or that has unknown "
                        "residue names (default: skip such files / keep unknown residues as UNK)")
    common.add_overwrite_option(p)
    common.add_residue_map_option(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import sys
    import time

    from tqdm import tqdm

    from ldb_hpc.errors import InputError
    from ldb_hpc.io.parsed_file import iter_parsed
    from ldb_hpc.io.sources import Manifest, collect_structure_files
    from ldb_hpc.io.training_set import write_training_h5

    t0 = time.perf_counter()
    workers = args.workers if args.workers is not None else min(2, os.cpu_count() or 1)
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    residue_map = common.parse_residue_map(args.map_residue)
    files = collect_structure_files(args.inputs)
    out_abs = os.path.abspath(args.output)
    if any(os.path.abspath(f) == out_abs for f in files):
        raise InputError(f"output would overwrite an input: {args.output}")
    common.check_output(args.output, args.overwrite)
    manifest = Manifest.read(args.manifest) if args.manifest else None

    with tqdm(total=len(files), unit="file", desc="prepare", file=sys.stderr, disable=None) as bar:
        summary = write_training_h5(
            iter_parsed(files, residue_map, workers=workers, strict=args.strict),
            args.output, manifest=manifest, n_files=len(files),
            compression=args.compression, progress=bar,
            attrs={"command": "ldb-hpc prepare " + " ".join(args.inputs)},
        )
    summary.seconds = time.perf_counter() - t0
    print(f"wrote {args.output}: {summary.residues:,} residues in {summary.chains:,} chains "
          f"from {summary.files_read:,} of {summary.files_in:,} files")
    print(summary.table())
    return 0
