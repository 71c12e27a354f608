"""Input paths: file extensions, glob patterns and folders expanded into structure files.

One expander (:func:`expand`) for the commands that take many structure files; how a folder is read is its
argument, because the commands differ there on purpose:

- ``recursive=True`` (``ldb-hpc prepare``: a data set is a tree of folders): a folder stands for the structure
  files at any depth below it (hidden ones too), sorted by path; a glob's matches that are folders are read the
  same way, and its matches that are files are taken when they have a structure extension;
- ``recursive=False`` (``ldb-hpc backmap`` of many files: one folder of snapshots): a folder stands for the
  structure files directly in it (not hidden), sorted by name; a glob's matches that are files are taken
  whatever their names, folders are not.

A glob is an argument with a glob character that names no existing path; it is expanded here in sorted order
(``**`` recurses; hidden files only when the pattern says so, as the shell does). Files are not opened here.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

GLOB_CHARS = "*?["
PDB_EXTENSIONS = (".pdb", ".pdb.gz", ".ent", ".ent.gz")
CIF_EXTENSIONS = (".cif", ".cif.gz", ".mmcif", ".mmcif.gz")
# The PDB/mmCIF files that gemmi reads (ldb_hpc.io.structure): what folders and globs of structure files give.
STRUCTURE_EXTENSIONS = PDB_EXTENSIONS + CIF_EXTENSIONS
# Text structure files that mdtraj reads whole (ldb_hpc.io.mdtraj_bridge): the above, PDBx and GROMACS .gro.
MDTRAJ_STRUCTURE_EXTENSIONS = STRUCTURE_EXTENSIONS + (".pdbx", ".pdbx.gz", ".gro")


def extension(path: str) -> str:
    """Lower-case extension including a trailing .gz (``x.pdb.gz`` → ``.pdb.gz``)."""
    base = os.path.basename(path).lower()
    stem, ext = os.path.splitext(base)
    if ext == ".gz":
        ext = os.path.splitext(stem)[1] + ext
    return ext


def is_glob(arg: str) -> bool:
    """True when ``arg`` holds a glob character (``*``, ``?``, ``[``)."""
    return any(c in arg for c in GLOB_CHARS)


def is_structure_name(name: str) -> bool:
    """True when the file name ends in one of :data:`STRUCTURE_EXTENSIONS` (any case)."""
    low = name.lower()
    return any(low.endswith(e) for e in STRUCTURE_EXTENSIONS)


def folder_files(folder: str, recursive: bool) -> list[str]:
    """The structure files of ``folder`` (see the module docstring for ``recursive``)."""
    if not recursive:
        names = sorted(os.listdir(folder))
        return [os.path.join(folder, n) for n in names
                if not n.startswith(".") and is_structure_name(n) and os.path.isfile(os.path.join(folder, n))]
    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        found.extend(os.path.join(root, n) for n in names if is_structure_name(n))
    return sorted(found)


@dataclass
class Expanded:
    """What one argument names: ``kind`` "folder", "glob" or "file" (an existing file, or a path that does not
    exist and is no glob); ``paths`` the files, in order; ``matches`` what a glob matched before the folder
    rule chose among them (0: it matches nothing at all)."""

    arg: str
    kind: str
    paths: list[str] = field(default_factory=list)
    matches: int = 0


def expand_one(arg: str, recursive: bool) -> Expanded:
    """The files that the argument ``arg`` names (see the module docstring)."""
    if os.path.isdir(arg):
        return Expanded(arg, "folder", folder_files(arg, recursive))
    if os.path.exists(arg) or not is_glob(arg):
        return Expanded(arg, "file", [arg])
    matches = sorted(glob.glob(arg, recursive=True))
    paths: list[str] = []
    for m in matches:
        if os.path.isdir(m):
            paths += folder_files(m, True) if recursive else []
        elif is_structure_name(m) if recursive else os.path.isfile(m):
            paths.append(m)
    return Expanded(arg, "glob", paths, len(matches))


def expand(args: list[str], recursive: bool) -> list[Expanded]:
    """:func:`expand_one` of every argument, in order (duplicates are the callers' to report or drop)."""
    return [expand_one(arg, recursive) for arg in args]
