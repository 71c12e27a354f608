#!/usr/bin/env python
"""CI's stand-in for a GPU node's python: a venv that has torch and triton (and what they need) and nothing else.

`make gpu-check PYTHON=…` must work from a python that brings only its own torch and triton; in CI the one at hand
(.venv) has the whole project installed. This makes, in seconds and with no download, a venv whose site-packages
holds links to the distributions of torch and triton of the running interpreter and to their dependencies
(numpy excluded: torch runs without it, and gpu-check must install it from the wheel folder like the rest).

    .venv/bin/python scripts/gpu/site_python.py DEST     # then: make gpu-check PYTHON=DEST/bin/python ...

Prints DEST's python. Exit status 0, or 1 when torch is not installed here.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import sysconfig
import venv
from importlib import metadata
from pathlib import Path

ROOTS = ("torch", "triton")
LEAVE_OUT = {"numpy"}  # the wheel folder provides it


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots=ROOTS) -> list[metadata.Distribution]:
    """The installed distributions ``roots`` need (requirements without extras or markers that apply here)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = _key(todo.pop())
        if name in seen or name in LEAVE_OUT:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[<>=!~\[; (]", req, maxsplit=1)[0])
    return list(seen.values())


def top_level(dist: metadata.Distribution) -> set[str]:
    """The first path parts of a distribution's files under site-packages (packages, modules, its dist-info)."""
    parts = set()
    for f in dist.files or []:
        first = f.parts[0]
        if first not in ("..", "__pycache__") and not first.endswith(".pth"):
            parts.add(first)
    return parts


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    dest = Path(argv[0]).resolve()
    dists = closure()
    if not any(_key(d.metadata["Name"]) == "torch" for d in dists):
        print(f"error: {sys.executable} has no torch", file=sys.stderr)
        return 1
    if dest.exists():
        shutil.rmtree(dest)
    venv.EnvBuilder(with_pip=False, symlinks=True).create(dest)
    site = dest / Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    for dist in dists:
        base = Path(dist.locate_file(""))
        for part in top_level(dist):
            if (base / part).exists() and not (site / part).exists():
                os.symlink(base / part, site / part)
    print(f"site_python: {', '.join(sorted(d.metadata['Name'] for d in dists))} linked into {site}",
          file=sys.stderr)
    print(dest / "bin" / "python")
    return 0


if __name__ == "__main__":
    sys.exit(main())
