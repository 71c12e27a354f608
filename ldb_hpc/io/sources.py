"""The inputs of ``ldb-hpc prepare`` (and of training's validation set): structure files and their manifest.

:func:`collect_structure_files` expands files, folders (recursively) and glob patterns into structure files;
:class:`Manifest` reads a MANIFEST.tsv (one row per chain: file, chain, n_res, sequence-identity
clusters) and finds the row of an input path and chain. Nothing here parses a structure.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from ldb_hpc.errors import InputError
from ldb_hpc.io.paths import STRUCTURE_EXTENSIONS, expand

MANIFEST_COLUMNS = ("file", "chain", "n_res", "cluster95", "cluster40")


def collect_structure_files(items: list[str]) -> list[str]:
    """Expand files, directories (recursively) and glob patterns into structure files (ldb_hpc.io.paths.expand
    with ``recursive=True``).

    Directories and globs contribute files whose names end in one of STRUCTURE_EXTENSIONS
    (case-insensitive), in sorted order; a file named explicitly is taken whatever its name.
    Duplicates are dropped (first occurrence kept). Raises InputError for a path that does not
    exist, a glob that matches nothing, or when nothing is found at all.
    """
    out: list[str] = []
    seen: set[str] = set()
    for item in expand(items, recursive=True):
        if item.kind == "file" and not os.path.isfile(item.arg):
            raise InputError(f"input file not found: {item.arg}")
        if item.kind == "glob" and not item.matches:
            raise InputError(f"no files match {item.arg}")
        for path in item.paths:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                out.append(path)
    if not out:
        raise InputError(f"no structure files ({', '.join(STRUCTURE_EXTENSIONS)}) in {' '.join(items)}")
    return out


@dataclass
class ManifestEntry:
    file: str
    chain: str
    n_res: int
    cluster95: str
    cluster40: str


class Manifest:
    """MANIFEST.tsv rows (one per chain), looked up by structure path + chain id.

    The manifest's ``file`` column is relative to the data folder (``train/bm5/1A2K_l_b-matched.pdb.gz``);
    an input path matches the row whose path agrees with the most trailing components of the
    input path (at least the file name), so equal file names in different folders stay apart.
    """

    def __init__(self, entries: list[ManifestEntry], path: str = ""):
        self.path = path
        self.entries = entries
        self._by_file: dict[str, dict[str, ManifestEntry]] = {}
        self._by_base: dict[str, list[str]] = {}
        for e in entries:
            if e.file not in self._by_file:
                self._by_base.setdefault(os.path.basename(e.file), []).append(e.file)
            self._by_file.setdefault(e.file, {})[e.chain] = e

    @classmethod
    def read(cls, path: str) -> "Manifest":
        """Read a tab-separated manifest with at least the columns file, chain, n_res, cluster95, cluster40."""
        if not os.path.isfile(path):
            raise InputError(f"manifest not found: {path}")
        try:
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh, delimiter="\t")
                missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise InputError(f"manifest {path} lacks column(s) {', '.join(missing)} "
                                     f"(expected tab-separated {', '.join(MANIFEST_COLUMNS)}, ...)")
                entries = []
                for line, row in enumerate(reader, start=2):
                    try:
                        n_res = int(row["n_res"])
                    except (TypeError, ValueError):
                        raise InputError(f"manifest {path} line {line}: n_res is not an integer: "
                                         f"{row['n_res']!r}") from None
                    entries.append(ManifestEntry(row["file"], row["chain"] or "", n_res,
                                                 row["cluster95"] or "", row["cluster40"] or ""))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read manifest {path}: {exc}") from None
        return cls(entries, path)

    def match_file(self, path: str) -> str | None:
        """The manifest ``file`` value for an input path, or None."""
        cands = self._by_base.get(os.path.basename(path))
        if not cands:
            return None
        parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
        best, best_n, tie = None, 0, False
        for c in cands:
            cparts = c.split("/")
            n = 0
            while n < min(len(cparts), len(parts)) and cparts[-1 - n] == parts[-1 - n]:
                n += 1
            if n > best_n:
                best, best_n, tie = c, n, False
            elif n == best_n:
                tie = True
        return None if tie else best

    def lookup(self, manifest_file: str | None, chain: str) -> ManifestEntry | None:
        if manifest_file is None:
            return None
        return self._by_file.get(manifest_file, {}).get(chain)

    def chains_of(self, manifest_file: str) -> dict[str, ManifestEntry]:
        return self._by_file.get(manifest_file, {})
