"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
import os

from ldb_hpc.errors import InputError


def existing_file(path: str, what: str = "input") -> str:
    """Return ``path`` if it is a readable, non-empty file, else raise InputError naming it."""
    from ldb_hpc.io.files import check_readable

    check_readable(path, what)
    return path


def check_output(path: str, overwrite: bool) -> str:
    """Refuse an existing output without --overwrite, a directory and an unwritable output directory
    (ldb_hpc.io.files.check_output_location)."""
    from ldb_hpc.io.files import check_output_location

    check_output_location(path, overwrite)
    return path


def parse_residue_map(items: list[str] | None) -> dict[str, str]:
    """Parse ``--map-residue OLD=NEW`` options into {OLD: NEW} (3-letter names, upper-case)."""
    from ldb_hpc.chem.residues import RESTYPE_INDEX

    out: dict[str, str] = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        old, new = old.strip().upper(), new.strip().upper()
        if not sep or not old or not new:
            raise InputError(f"--map-residue expects OLD=NEW (e.g. LRT=LYS), got {item!r}")
        if new not in RESTYPE_INDEX:
            raise InputError(f"--map-residue {item}: {new} is not a standard residue name")
        out[old] = new
    return out


def add_residue_map_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--map-residue", action="append", metavar="OLD=NEW", default=[],
        help="treat residue name OLD as standard residue NEW (repeatable), e.g. --map-residue LRT=LYS",
    )


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")


def temp_path_for(path: str) -> str:
    """A temporary name beside ``path``; write there, then os.replace, so no half file looks complete.
    Temporaries of ``path`` that killed runs left behind are removed first (ldb_hpc.io.files.temp_name)."""
    from ldb_hpc.io.files import temp_name

    return temp_name(os.path.abspath(path))
