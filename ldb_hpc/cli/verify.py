"""``ldb-hpc verify``: is a backmap output complete? (exit 0 only when it is)."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  ldb-hpc verify big.aa.h5          # complete master + shards: exit 0
  ldb-hpc verify big.aa.h5.d        # the run folder of an interrupted run: reports what is missing, exit 1
  ldb-hpc verify big.aa.h5 --json   # the report as JSON
"""


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check that a backmap output is complete and consistent",
                       description="Check a backmap output: the file opens, every (frame, sample) row is present "
                                   "exactly once and in order, coordinates are finite, shapes match the topology, "
                                   "provenance is present, and every shard file of its virtual datasets exists. "
                                   "An interrupted run (shard folder without master) is reported incomplete. "
                                   "Exit 0: complete; 1: incomplete or invalid; 2: nothing to check.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="backmap output (OUT.h5) or its run folder (OUT.h5.d)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(run=run)


def run(args) -> int:
    import json

    from ldb_hpc.runtime.verify import verify

    report = verify(args.output)
    if args.json:
        print(json.dumps({"path": report.path, "state": report.state, "message": report.message, **report.info}))
    else:
        print(f"{report.state}: {args.output}: {report.message}")
    return 0 if report.ok else 1
