"""``ldb-hpc export``: convert a finished MDTraj-HDF5 output to another trajectory format, streamed."""

from __future__ import annotations

import argparse

from ldb_hpc.cli import common

EPILOG = """examples:
  ldb-hpc export big.aa.h5 -o big.aa.xtc     # + big.aa.top.pdb: mdtraj.load("big.aa.xtc", top="big.aa.top.pdb")
  ldb-hpc export big.aa.h5 -o big.aa.dcd     # CHARMM/NAMD DCD (+ big.aa.top.pdb)
  ldb-hpc export small.aa.h5 -o small.pdb    # one MODEL per row (PDB and mmCIF carry their topology)
  ldb-hpc verify big.aa.xtc                  # checks the file against big.aa.xtc.manifest.json
formats: .xtc .trr .dcd .nc (each with OUT.top.pdb beside it), .pdb .cif; .nc needs the netCDF4 package.
Every row of the input becomes one frame (row r = CG frame r // samples, sample r % samples); the
provenance that the format cannot hold is kept in OUT.manifest.json.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="convert an MDTraj-HDF5 output to xtc, trr, dcd, nc, pdb or cif",
                       description="Convert a finished all-atom MDTraj-HDF5 file (a backmap output, master and "
                                   "shards included) to the format of -o's extension through mdtraj's writers, "
                                   "a block of rows at a time. Formats without topology get OUT.top.pdb beside "
                                   "them; every file is written under a temporary name and appears complete, "
                                   "the trajectory last, with OUT.EXT.manifest.json (what it holds, checksums) "
                                   "for 'ldb-hpc verify'.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="all-atom MDTraj-HDF5 file (e.g. a backmap output OUT.h5)")
    p.add_argument("-o", "--output", required=True,
                   help="output file; its extension chooses the format: .xtc .trr .dcd .nc .pdb .cif")
    common.add_overwrite_option(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ldb_hpc.runtime.publish import export_output

    info = export_output(args.input, args.output, overwrite=args.overwrite)
    m = info["manifest_content"]
    top = f" + topology {info['topology_pdb']}" if info["topology_pdb"] else ""
    print(f"exported {m['rows']} rows x {m['atoms']} atoms ({m['kind']}) in {info['export_s']:.2f} s -> "
          f"{args.output}{top}")
    return 0
