"""The ``ldb-hpc`` command: one module per subcommand, each with ``add_parser`` and ``run``.

Subcommand modules keep heavy imports (torch, h5py, mdtraj) inside ``run`` so that ``--help`` is quick.
Every :class:`ldb_hpc.errors.InputError` becomes one ``error: …`` line on stderr and exit code 2; any other
exception becomes one line too (exit 1), with the traceback only when ``LDB_HPC_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ldb_hpc.version import __version__

# Subcommand name → module under ldb_hpc.cli (defines add_parser(subparsers) and run(args) -> int).
SUBCOMMANDS = ("coarsen", "prepare", "backmap", "export", "evaluate", "train", "synth", "verify", "merge")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldb-hpc",
        description="Backmap coarse-grained (C-alpha) protein trajectories to all heavy atoms.",
        epilog="Run 'ldb-hpc COMMAND --help' for the options and examples of a command.",
    )
    parser.add_argument("--version", action="version", version=f"ldb-hpc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"ldb_hpc.cli.{name}")
        module.add_parser(sub)
    return parser



def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    from ldb_hpc.errors import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI promises no traceback
        if os.environ.get("LDB_HPC_DEBUG"):
            raise
        print(f"error: internal error ({type(exc).__name__}: {_one_line(exc)}); "
              "rerun with LDB_HPC_DEBUG=1 for a traceback", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
