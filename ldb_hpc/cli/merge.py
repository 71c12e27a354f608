"""``ldb-hpc merge``: write the master file of a ``--shard I/N`` run once every shard is done."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  ldb-hpc backmap big.h5 -o big.aa.h5 --shard 0/2      # array task 0
  ldb-hpc backmap big.h5 -o big.aa.h5 --shard 1/2      # array task 1
  ldb-hpc merge big.aa.h5                              # after both: big.aa.h5 over big.aa.h5.d/shard-*.h5
"""


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="assemble the master file of a --shard I/N run",
                       description="Check that every chunk of every shard of OUT.h5.d is recorded and write the "
                                   "master OUT.h5 (virtual datasets over the shard files; nothing is copied). "
                                   "Fails naming the unfinished shards otherwise.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="the output the shard tasks wrote to (OUT.h5; its shards are in OUT.h5.d)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ldb_hpc.runtime.publish import merge

    info = merge(args.output)
    top = f" + topology {info['topology_pdb']}" if info.get("topology_pdb") else ""
    print(f"merged {info['n_shards']} shard(s): {info['frames']} frames x {info['samples']} sample(s) -> "
          f"{args.output}{top}")
    return 0
