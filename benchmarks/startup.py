#!/usr/bin/env python
"""Start-up and folder throughput (issue 13, item 3), measured side by side in one run; rows to results.csv.

(a) start-up: the median wall time of ``python -c "import torch"`` and of a one-frame ``ldb-hpc backmap`` of a
    135-residue CA trace (frame 0 of examples/example.cg.h5 written as a CA PDB by mdtraj), both as a trajectory
    (``backmap ca.pdb -o out.h5``) and as a classic tool (``backmap - < ca.pdb > aa.pdb``), ``--reps`` times each,
    interleaved; the ratio backmap / import torch (target ≤ 1.5). Where the time goes: ``python -X importtime``
    of one backmap, summed per top-level package.
(b) a folder of ``--files`` CASP-sized CA PDBs, made in a temporary folder (never kept) from the CA traces of
    the 24 targets of ../shared/data/test/casp12: each target's own trace repeated (``--source native``, the
    default), or frames of ``ldb-hpc synth``'s CA model around it (``--source synth``); file names
    interleave the targets (consecutive files are different proteins, so nothing is batched across files;
    ``--grouped`` adds a run with one protein's files consecutive, where ldb-hpc batches them). Then one
    ``ldb-hpc backmap DIR/*.pdb -o out/ --threads 1`` call against PULCHRA (pypulchra) run one process per
    structure, as users run it: residues/s per core (wall clock; both use one compute thread; ldb-hpc's reader
    and writer threads also run, so its CPU seconds are recorded too) and their ratio (target ≥ 3×).

    python benchmarks/startup.py [--reps 5] [--files 1000] [--models ldb_hpc/weights/ldb-default ideal]
                                 [--grouped] [--source native|synth] [--smoke] [--results PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from results_csv import RESULTS, append_rows

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LDB_HPC_SHARED_DATA", REPO.parent / "shared" / "data"))
BIN = Path(sys.executable).parent
DEFAULT_MODEL = "ldb_hpc/weights/ldb-default"


def timed(cmd: list, stdin: str | None = None, stdout=subprocess.DEVNULL) -> tuple[float, float]:
    """(wall s, CPU s of the child: user + sys) of one command; SystemExit with its stderr when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as fin:
        proc = subprocess.run([str(c) for c in cmd], stdin=fin, stdout=stdout, stderr=subprocess.PIPE, cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


WATCH = ("torch", "mdtraj", "h5py", "gemmi", "numpy", "scipy", "safetensors", "tables", "ldb_hpc._cpu", "triton",
         "sympy")


def import_profile(cmd: list, stdin: Path | None = None) -> dict[str, float]:
    """Seconds of ``-X importtime``: the cumulative time of the first import of each package of WATCH (at any
    depth: torch is imported inside ldb_hpc) and the total of the outermost imports ("all")."""
    with open(stdin or os.devnull, "rb") as fin:
        proc = subprocess.run([sys.executable, "-X", "importtime", *map(str, cmd)], stdin=fin, capture_output=True,
                              cwd=REPO)
    per: dict[str, float] = {"all": 0.0}
    for line in proc.stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if not cumulative.strip().isdigit():
            continue
        seconds = int(cumulative) / 1e6
        if not name.startswith("  "):
            per["all"] += seconds
        if name.strip() in WATCH:
            per[name.strip()] = max(per.get(name.strip(), 0.0), seconds)
    return per


def part_startup(reps: int, tmp: Path) -> list:
    import mdtraj as md

    ca = tmp / "ca135.pdb"
    traj = md.load(str(REPO / "examples" / "example.cg.h5"))
    traj[0].save_pdb(str(ca))
    L = traj.n_residues
    ldb = BIN / "ldb-hpc"
    cmds = {
        "import_torch": ([sys.executable, "-c", "import torch"], None),
        "backmap_trajectory": ([ldb, "backmap", ca, "-o", tmp / "one.h5", "--overwrite", "--no-progress", "--threads",
                                1], None),
        "backmap_stdin": ([ldb, "backmap", "-", "--threads", 1], ca),
    }
    walls = defaultdict(list)
    timed(cmds["import_torch"][0])  # warm the page cache once, for both
    for _ in range(reps):
        for name, (cmd, stdin) in cmds.items():
            walls[name].append(timed(cmd, stdin)[0])
    med = {k: statistics.median(v) for k, v in walls.items()}
    rows = [("startup", f"import_torch|reps={reps}", "wall_s_median", med["import_torch"], "s"),
            ("startup", f"import_torch|reps={reps}", "wall_s_min", min(walls["import_torch"]), "s")]
    print(f"python -c 'import torch': median {med['import_torch']:.2f} s over {reps} "
          f"({', '.join(f'{w:.2f}' for w in walls['import_torch'])})")
    for name in ("backmap_trajectory", "backmap_stdin"):
        conf = f"{name}|L={L}|frames=1|model=ldb-default|threads=1|reps={reps}"
        ratio = med[name] / med["import_torch"]
        rows += [("startup", conf, "wall_s_median", med[name], "s"),
                 ("startup", conf, "wall_s_min", min(walls[name]), "s"),
                 ("startup", conf, "ratio_to_import_torch", ratio, "x")]
        print(f"{name}: median {med[name]:.2f} s ({', '.join(f'{w:.2f}' for w in walls[name])}) = {ratio:.2f}x "
              f"import torch (target <= 1.5)")
    for name, (cmd, stdin) in cmds.items():
        if name == "import_torch":
            continue
        prof = import_profile(["-m", "ldb_hpc", *cmd[1:]], stdin)
        top = sorted(prof.items(), key=lambda kv: -kv[1])
        print(f"imports of {name} (python -X importtime, s): " + ", ".join(f"{k} {v:.2f}" for k, v in top))
        rows += [("startup_import", f"{name}|{k}", "import_s", v, "s") for k, v in top]
    return rows


def make_folder(folder: Path, n_files: int, grouped: bool, source: str) -> tuple[int, int]:
    """``n_files`` CA PDBs made from the CASP12 targets; returns (files, residues).

    source "native": each target's own CA trace, repeated (the input PULCHRA is fastest on); "synth": frames of
    each target's CA model as ``ldb-hpc synth`` makes them (``ldb_hpc.synth``: the trace regularised, then
    Brownian dynamics 5 steps apart), moving about the native trace like snapshots of a CG simulation (the
    elastic network alone, used here before, let angles collapse and beads overlap over long runs). Files are
    named so that consecutive files are different targets, or (``grouped``) the files of one target are
    consecutive.
    """
    import numpy as np

    from ldb_hpc.chem.protein import Protein
    from ldb_hpc.io.pdb import protein_to_pdb_string
    from ldb_hpc.synth import ca_model, load_reference, regularise, simulate_frames

    targets = sorted((DATA / "test" / "casp12").glob("*.pdb"))
    if not targets:
        raise SystemExit(f"error: no CASP12 PDB files in {DATA / 'test' / 'casp12'} (set LDB_HPC_SHARED_DATA)")
    per = math.ceil(n_files / len(targets))
    folder.mkdir(parents=True, exist_ok=True)
    made = residues = 0
    for t, path in enumerate(targets):
        names = [(f, t * per + f if grouped else f * len(targets) + t) for f in range(per)]
        names = [(f, i) for f, i in names if i < n_files]
        if not names:  # a small folder: this target has no file in it
            continue
        res, ca0 = load_reference(str(path))
        if source == "synth":
            frames = simulate_frames(ca_model(regularise(ca0, res), res), per, steps=5, seed=t)  # as `ldb-hpc synth`
        else:
            frames = np.repeat(ca0[None].astype(np.float32), per, axis=0)
        mask = np.zeros((len(res), 14), bool)
        mask[:, 1] = True
        for f, i in names:
            pos = np.zeros((len(res), 14, 3), np.float32)
            pos[:, 1] = frames[f]
            (folder / f"{i:05d}_{path.stem}.pdb").write_text(protein_to_pdb_string(Protein(res, pos, mask)))
            made += 1
            residues += len(res)
    return made, residues


def part_folder(n_files: int, models: list[str], grouped: bool, source: str, tmp: Path) -> list:
    orders = ["mixed"] + (["grouped"] if grouped else [])
    rows, rates = [], {}
    for order in orders:
        folder = tmp / f"folder-{order}"
        t0 = time.perf_counter()
        n, n_res = make_folder(folder, n_files, order == "grouped", source)
        print(f"folder ({source} CA traces, {order} order): {n} CA PDB files, {n_res:,} residues "
              f"({n_res / n:.0f} per file), made in {time.perf_counter() - t0:.1f} s")
        for model in models:
            out = tmp / f"out-{order}-{Path(model).name}"
            out.mkdir()
            wall, cpu = timed([BIN / "ldb-hpc", "backmap", f"{folder}/*.pdb", "-o", out, "--threads", 1, "--model",
                               model])
            summary = json.loads((out / "backmap.summary.json").read_text())
            if summary["written"] != n or summary["residues"] != n_res:
                raise SystemExit(f"error: ldb-hpc wrote {summary['written']} of {n} files")
            label = f"{Path(model).name}|files={n}|source={source}|order={order}|threads=1|one call"
            rate = n_res / wall
            rates[(order, model)] = rate
            per_rank = summary["per_rank"][0]
            rows += [("folder", label, "residues_per_s_per_core", rate, "residues/s"),
                     ("folder", label, "wall_s", wall, "s"), ("folder", label, "cpu_s", cpu, "s"),
                     ("folder", label, "residues_per_cpu_s", n_res / cpu, "residues/s"),
                     ("folder", label, "compute_s", per_rank["compute_s"], "s"),
                     ("folder", label, "parse_s", per_rank["parse_s"], "s"),
                     ("folder", label, "write_s", per_rank["write_s"], "s"),
                     ("folder", label, "model_load_s", per_rank["model_load_s"], "s")]
            print(f"  ldb-hpc --model {Path(model).name}: {wall:.1f} s wall, {cpu:.1f} s CPU -> {rate:,.0f} residues/s "
                  f"per core ({n_res / cpu:,.0f} per CPU-second); compute {per_rank['compute_s']:.1f} s, parse "
                  f"{per_rank['parse_s']:.1f} s, write {per_rank['write_s']:.1f} s, model load "
                  f"{per_rank['model_load_s']:.2f} s")
    pulchra = BIN / "pypulchra"
    if not pulchra.exists():
        print("pypulchra not installed: no PULCHRA figures (pip install pypulchra)")
        return rows
    folder = tmp / "folder-mixed"
    files = sorted(folder.glob("*.pdb"))
    n_res = sum(1 for f in files for line in f.open() if line.startswith("ATOM"))
    out = tmp / "out-pulchra"
    out.mkdir()
    wall = cpu = 0.0
    for f in files:
        w, c = timed([pulchra, "-i", f, "-o", out / f"{f.stem}.pulchra.pdb"])
        wall, cpu = wall + w, cpu + c
    if len(list(out.glob("*.pdb"))) != len(files):
        raise SystemExit("error: PULCHRA did not write every file")
    base = n_res / wall
    label = f"PULCHRA|files={len(files)}|source={source}|one process per structure"
    rows += [("folder", label, "residues_per_s_per_core", base, "residues/s"), ("folder", label, "wall_s", wall, "s"),
             ("folder", label, "cpu_s", cpu, "s"), ("folder", label, "residues_per_cpu_s", n_res / cpu, "residues/s"),
             ("folder", label, "wall_s_per_structure", wall / len(files), "s")]
    print(f"  PULCHRA, one process per structure: {wall:.1f} s wall ({wall / len(files):.3f} s per structure), "
          f"{cpu:.1f} s CPU -> {base:,.0f} residues/s per core")
    for (order, model), rate in rates.items():
        label = f"{Path(model).name}|files={len(files)}|source={source}|order={order}|threads=1|one call"
        rows.append(("folder", label, "ratio_to_pulchra", rate / base, "x"))
        print(f"  ldb-hpc --model {Path(model).name} ({order}) / PULCHRA: {rate / base:.2f}x (target >= 3)")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each start-up command (median)")
    ap.add_argument("--files", type=int, default=1000, help="CA PDB files in the folder")
    ap.add_argument("--models", nargs="+", default=[DEFAULT_MODEL, "ideal"])
    ap.add_argument("--grouped", action="store_true", help="also a folder with one protein's files consecutive")
    ap.add_argument("--source", choices=["native", "synth"], default="native",
                    help="the folder's CA traces: the CASP12 targets' own (default) or elastic-network Brownian frames")
    ap.add_argument("--parts", nargs="+", choices=["startup", "folder"], default=["startup", "folder"])
    ap.add_argument("--smoke", action="store_true", help="2 repetitions, 24 files (a minute)")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.smoke:
        args.reps, args.files = 2, 24
    rows = [("startup_load", "start", "loadavg_1min", os.getloadavg()[0], "load")]
    with tempfile.TemporaryDirectory(prefix="ldb-bench-startup-") as tmp:
        if "startup" in args.parts:
            rows += part_startup(args.reps, Path(tmp))
        if "folder" in args.parts:
            rows += part_folder(args.files, args.models, args.grouped, args.source, Path(tmp))
    rows.append(("startup_load", "end", "loadavg_1min", os.getloadavg()[0], "load"))
    append_rows(rows, args.results)
    print(f"{len(rows)} rows -> {args.results} (1-min load average {rows[0][3]:.2f} at the start, "
          f"{rows[-1][3]:.2f} at the end; other work on the machine slows both sides)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
