#!/usr/bin/env python
"""`make gpu-check` step 1: a venv for the check, on the python that is there, with no network.

Run it with the node's python (the one whose torch and triton are to be checked, e.g. a site module or a venv of
torch 2.11 + CUDA with triton 3.6): that python's torch and triton are used as they are, never reinstalled.

1. A venv (``--env``, default build/gpu-check-env) on that interpreter, plus one .pth file that adds that
   python's site-packages folders after the venv's own: torch, triton (and whatever else is there) stay visible
   and untouched, and the venv needs no write access to them.
2. pip (the wheel in the folder) and then the rest of the project's requirements, ``pip install --no-index
   --find-links WHEELHOUSE`` with pip's configuration files ignored: nothing is downloaded, and what that python
   already has (numpy, say) is kept when it satisfies the requirement. mpi4py only if the folder has its wheel.
3. The project itself, ``pip install --no-build-isolation --no-deps -e .`` (scikit-build-core + nanobind build
   the C++ extension with the cmake and ninja of the folder, or the node's own).
4. Checks that the venv imports the project from this repository with its C++ extension, and torch and triton
   from that python. Prints the venv's python on the last line of stdout.

A venv made for the same interpreter, torch, wheel folder and sources is reused (the stamp file in it); ``--fresh``
rebuilds it. Exit status: 0 ready, 1 a step failed (its output tail is printed), 2 that python has no torch or
the wheel folder is missing.

    python scripts/gpu/offline_env.py --wheelhouse DIR [--env DIR] [--fresh]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from wheelhouse import requirements  # noqa: E402

OVERLAY = "zz-ldb-hpc-gpu-check-site.pth"  # after the venv's own .pth files (they are read in name order)
STAMP = ".ldb-hpc-gpu-check.json"
# the sources whose change needs a rebuild of the extension (kernels/_triton and ldb_hpc are imported in place)
BUILD_INPUTS = ("pyproject.toml", "CMakeLists.txt", "kernels/cpu")


class StepError(Exception):
    """A step failed: one message, exit 1."""


def site_dirs() -> list[str]:
    """This interpreter's site-packages folders, in its sys.path order (a venv's own, then the system's if the
    venv includes them, then the user's)."""
    return [p for p in sys.path if os.path.isdir(p) and os.path.basename(p) in ("site-packages", "dist-packages")]


def node_torch() -> dict:
    """torch and triton of this interpreter: {torch, cuda, triton} versions (triton None when absent)."""
    import warnings

    with warnings.catch_warnings():  # torch without numpy warns at import: the venv brings numpy
        warnings.simplefilter("ignore")
        import torch
    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "triton": tv, "torch_file": torch.__file__}


def fingerprint(wheelhouse: Path, node: dict) -> str:
    h = hashlib.sha256(json.dumps([sys.executable, sys.version, node, site_dirs()]).encode())
    h.update("\n".join(sorted(p.name for p in wheelhouse.glob("*.whl"))).encode())
    for name in BUILD_INPUTS:
        path = REPO / name
        for f in sorted(path.rglob("*") if path.is_dir() else [path]):
            if f.is_file():
                h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def env_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(step: str, cmd: list, timings: dict, **kw) -> str:
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    timings[step] = time.perf_counter() - t0
    if proc.returncode != 0:
        raise StepError(f"{step} failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                        f"{proc.stdout[-2500:]}{proc.stderr[-2500:]}")
    return proc.stdout


def pip_env() -> dict:
    """pip with no configuration file (a site's index or find-links must not apply) and no network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1", PIP_ROOT_USER_ACTION="ignore")
    return env


def build(env: Path, wheelhouse: Path, timings: dict) -> None:
    """Steps 1–3 into a new ``env``."""
    t0 = time.perf_counter()
    if env.exists():
        shutil.rmtree(env)
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(env)
    py = env_python(env)
    purelib = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           text=True).strip())
    lines = [f"import site; site.addsitedir({d!r})" for d in site_dirs()]
    (purelib / OVERLAY).write_text("\n".join(lines) + "\n")
    timings["venv"] = time.perf_counter() - t0

    pip_wheels = sorted(wheelhouse.glob("pip-*.whl"))
    find = ["--no-index", "--find-links", wheelhouse]
    if pip_wheels:  # a wheel is importable: pip installs itself from its own wheel, no ensurepip needed
        _run("pip", [py, pip_wheels[-1] / "pip", "install", "--quiet", *find, "pip"], timings, env=pip_env())
    elif subprocess.run([str(py), "-m", "pip", "--version"], capture_output=True).returncode != 0:
        raise StepError(f"no pip wheel in {wheelhouse} and no pip in {sys.executable}: remake the wheel folder")
    required, optional = requirements()
    _run("requirements", [py, "-m", "pip", "install", "--quiet", *find, *required], timings, env=pip_env())
    have = {p.name.split("-")[0].lower() for p in wheelhouse.glob("*.whl")}
    for req in optional:
        if req.split(">")[0].split("=")[0].strip().lower().replace("-", "_") in have:
            _run(f"optional {req}", [py, "-m", "pip", "install", "--quiet", *find, req], timings, env=pip_env())
    _run("build", [py, "-m", "pip", "install", "--quiet", *find, "--no-build-isolation", "--no-deps", "-e", REPO],
         timings, env=pip_env(), cwd=REPO)


def verify(env: Path, node: dict) -> dict:
    """Step 4: what the venv imports, from where. StepError when it is not this repository and that torch."""
    code = ("import json, torch, ldb_hpc, ldb_hpc._cpu as c\n"
            "try:\n import triton; tv = triton.__version__\nexcept ImportError:\n tv = None\n"
            "print(json.dumps({'torch': torch.__version__, 'torch_file': torch.__file__, 'triton': tv,"
            " 'ldb_hpc': ldb_hpc.__file__, 'cpu_ext': c.__file__}))")
    proc = subprocess.run([str(env_python(env)), "-c", code], capture_output=True, text=True, cwd="/")
    if proc.returncode != 0:
        raise StepError(f"the venv does not import torch, ldb_hpc and its C++ extension:\n{proc.stderr[-2500:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(got["ldb_hpc"]).resolve().parent != (REPO / "ldb_hpc").resolve():
        raise StepError(f"the venv imports ldb_hpc from {got['ldb_hpc']}, not from {REPO} (an ldb-hpc installed "
                        f"in {sys.executable}'s environment shadows it: uninstall it there)")
    if got["torch_file"] != node["torch_file"] or got["triton"] != node["triton"]:
        raise StepError(f"the venv's torch/triton ({got['torch_file']}, {got['triton']}) are not those of "
                        f"{sys.executable} ({node['torch_file']}, {node['triton']})")
    return got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheelhouse", required=True, help="the wheel folder of `make wheelhouse`")
    ap.add_argument("--env", default=str(REPO / "build" / "gpu-check-env"),
                    help="the venv (default build/gpu-check-env)")
    ap.add_argument("--fresh", action="store_true", help="rebuild the venv even when its stamp matches")
    args = ap.parse_args(argv)
    wheelhouse, env = Path(args.wheelhouse).resolve(), Path(args.env).resolve()
    try:
        node = node_torch()
    except ImportError as exc:
        print(f"error: {sys.executable} has no torch ({exc}); pass PYTHON= the node's python with torch "
              f"(and triton) installed", file=sys.stderr)
        return 2
    if not any(wheelhouse.glob("*.whl")):
        print(f"error: no wheels in {wheelhouse}: run `make wheelhouse PY={sysconfig.get_python_version()}` where "
              f"there is network and copy the folder here", file=sys.stderr)
        return 2
    print(f"offline_env: {sys.executable} (Python {sysconfig.get_python_version()}): torch {node['torch']} "
          f"(CUDA {node['cuda'] or 'none'}), triton {node['triton'] or 'none'}; wheels from {wheelhouse}", flush=True)
    stamp, key = env / STAMP, fingerprint(wheelhouse, node)
    timings: dict = {}
    try:
        reuse = not args.fresh and stamp.exists() and json.loads(stamp.read_text()).get("key") == key
        if not reuse:
            build(env, wheelhouse, timings)
        got = verify(env, node)
    except StepError as exc:
        print(f"offline_env: {exc}", file=sys.stderr)
        return 1
    stamp.write_text(json.dumps({"key": key, **got}))
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) or "reused (stamp matches)"
    print(f"offline_env: ready in {env}: {spent}; ldb_hpc from {Path(got['ldb_hpc']).parent}, "
          f"extension {Path(got['cpu_ext']).name}")
    print(env_python(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
