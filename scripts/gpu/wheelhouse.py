#!/usr/bin/env python
"""`make wheelhouse`: the wheel folder that `make gpu-check` installs from on a GPU node with no network.

Run it where there is network (a login node, a laptop): it calls ``pip download --only-binary=:all:`` for the
Python version, CPU architecture and glibc of the compute node, which need not be this machine's. The folder holds
what the project needs besides torch and triton (the node's own builds are used as they are): the runtime
dependencies of pyproject.toml, its build requirements (scikit-build-core, nanobind) with cmake and ninja, pytest
(gpu-check runs the Triton tests), pip itself, and the optional mpi4py (a generic wheel: for multi-node runs build
one against the site MPI, docs/HPC.md). Copy the folder to the cluster with the repository.

    python scripts/gpu/wheelhouse.py [--python 3.12] [--arch x86_64|aarch64] [--glibc 2.28] [--dest DIR]

Defaults: this interpreter's version, this machine's architecture and glibc, dest
build/wheelhouse/cp<XY>-<arch>. Exit status: 0 done, 1 pip failed (its output tail is printed).
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# what the node brings: never downloaded (a CPU torch from the registry would shadow the node's CUDA build)
NODE_PROVIDES = ("torch", "triton")
EXTRA = ["pip", "cmake>=3.18", "ninja", "pytest>=7"]  # pip for a bare venv; cmake/ninja: no system build tools needed
OPTIONAL_EXTRAS = ("mpi",)  # [project.optional-dependencies] groups whose wheels are fetched and installed if present


def _toml_list(text: str, table: str, key: str) -> list[str]:
    """The strings of ``key = [...]`` in ``[table]`` of a pyproject.toml (no tomllib: Python 3.10 has none)."""
    section = re.search(rf"^\[{re.escape(table)}\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if not section:
        return []
    match = re.search(rf"^{re.escape(key)}\s*=\s*\[(.*?)\]", section.group(1), re.M | re.S)
    if not match:
        return []
    body = re.sub(r"#[^\n]*", "", match.group(1))
    return re.findall(r'"([^"]+)"', body)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def requirements(pyproject: Path = REPO / "pyproject.toml") -> tuple[list[str], list[str]]:
    """(required, optional) requirement strings: the project's dependencies and build requirements less
    torch/triton, plus :data:`EXTRA`; optional: the :data:`OPTIONAL_EXTRAS` groups."""
    text = pyproject.read_text()
    required = _toml_list(text, "project", "dependencies") + _toml_list(text, "build-system", "requires") + EXTRA
    required = [r for r in required if _name(r) not in NODE_PROVIDES]
    optional = [r for group in OPTIONAL_EXTRAS for r in _toml_list(text, "project.optional-dependencies", group)]
    return list(dict.fromkeys(required)), optional


def platforms(arch: str, glibc: str) -> list[str]:
    """pip --platform tags a node with ``glibc`` (e.g. 2.28) on ``arch`` accepts: manylinux_2_17 … 2_<minor>
    and the legacy aliases (pip does not widen an explicit --platform by itself)."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)] + [f"manylinux2014_{arch}"]
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64", "manylinux_2_12_x86_64"]
    return tags


def download(reqs: list[str], dest: Path, version: str, arch: str, glibc: str) -> subprocess.CompletedProcess:
    nodot = version.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest),
           "--python-version", version, "--implementation", "cp", "--abi", f"cp{nodot}", "--abi", "abi3",
           "--abi", "none", *(f"--platform={p}" for p in platforms(arch, glibc)), "--platform=any", *reqs]
    return subprocess.run(cmd, capture_output=True, text=True)


def main(argv=None) -> int:
    here = ".".join(platform.python_version_tuple()[:2])
    libc = platform.libc_ver()[1] or "2.28"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=here, help=f"the node's Python version X.Y (default {here}, this one)")
    ap.add_argument("--arch", default=platform.machine(), help=f"x86_64 or aarch64 (default {platform.machine()})")
    ap.add_argument("--glibc", default=libc, help=f"the node's glibc X.Y (ldd --version; default {libc}, this one)")
    ap.add_argument("--dest", default=None, help="wheel folder (default build/wheelhouse/cp<XY>-<arch>)")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python) or not re.fullmatch(r"2\.\d+", args.glibc):
        print(f"error: --python X.Y and --glibc 2.Y, got {args.python!r} and {args.glibc!r}", file=sys.stderr)
        return 2
    dest = Path(args.dest or REPO / "build" / "wheelhouse" / f"cp{args.python.replace('.', '')}-{args.arch}")
    dest.mkdir(parents=True, exist_ok=True)
    required, optional = requirements()
    proc = download(required, dest, args.python, args.arch, args.glibc)
    if proc.returncode != 0:
        print(f"wheelhouse: pip download failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}",
              file=sys.stderr)
        return 1
    for req in optional:  # a missing optional wheel (no build for that Python yet) is a note, not a failure
        if download([req], dest, args.python, args.arch, args.glibc).returncode != 0:
            print(f"wheelhouse: no {req} wheel for Python {args.python} {args.arch}: the node runs single-rank only "
                  f"unless its python has mpi4py")
    wheels = sorted(dest.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"wheelhouse: {len(wheels)} wheels, {size:.0f} MiB in {dest} (Python {args.python}, {args.arch}, glibc "
          f"{args.glibc}); on the node: make gpu-check PYTHON=/path/to/python3 WHEELHOUSE={dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
