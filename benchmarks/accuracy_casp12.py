#!/usr/bin/env python
"""Accuracy and time of ldb-hpc models against PULCHRA on the CA traces of a structure set.

For every structure: `ldb-hpc coarsen` makes the CA trace; `ldb-hpc backmap --model M` rebuilds it;
PULCHRA (the C core through PyPI `pypulchra`, one process per structure as users run it) rebuilds the
same trace written as a CA-only PDB; `ldb-hpc evaluate` scores both against the original structure with
the DESIGN.md metrics. Results are appended to benchmarks/results.csv (long format) and printed as a
Markdown table.

    python benchmarks/accuracy_casp12.py [--data ../shared/data/test/casp12] [--models ideal] [--no-pulchra]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_csv import RESULTS, append_rows

REPO = Path(__file__).resolve().parents[1]
METRICS = [  # key in evaluate's JSON summary, label, unit, scale
    ("rmsd", "RMSD heavy", "Å", 1.0),
    ("rmsd_backbone", "RMSD backbone", "Å", 1.0),
    ("bond_outliers", "bond outliers", "%", 100.0),
    ("clash_1.2", "clashes <1.2 Å", "/1000 atoms", 1.0),
    ("clash_2.0", "clashes <2.0 Å", "/1000 atoms", 1.0),
    ("chi1_accuracy", "χ1 ≤40°", "%", 100.0),
    ("chi12_accuracy", "χ1+χ2 ≤40°", "%", 100.0),
    ("graph_valid", "valid graph", "%", 100.0),
    ("rows_clash_1.2", "rows with a pair <1.2 Å", "%", 100.0),
]
DIVERSITY = [("div", "DIV", "", 1.0), ("rmsd_gen", "pairwise RMSD", "Å", 1.0)]


def _cli(argv: list[str]) -> None:
    from ldb_hpc.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"ldb-hpc {' '.join(argv)} failed: {err.getvalue().strip()}")


def _evaluate(pred: str, ref: str, json_path: str) -> dict:
    _cli(["evaluate", pred, "--ref", ref, "--json", json_path, "--overwrite"])
    with open(json_path) as fh:
        data = json.load(fh)
    summary = data["summary"]
    rows = data.get("per_row", {}).get("clash_1.2")
    summary["rows_clash_1.2"] = float(np.mean(np.asarray(rows) > 0)) if rows is not None else float("nan")
    summary["by_residue_type"] = data.get("by_residue_type", {})
    return summary


def _by_type(per_structure: list[dict]) -> dict[str, tuple[int, float]]:
    """χ1 accuracy per residue type pooled over structures (and rows): {type: (n, share)}."""
    n, good = {}, {}
    for s in per_structure:
        for t, v in s["by_residue_type"].items():
            n[t] = n.get(t, 0) + v["n1"]
            good[t] = good.get(t, 0.0) + v["chi1"] * v["n1"]
    return {t: (n[t], good[t] / n[t]) for t in sorted(n) if n[t]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "test" / "casp12"))
    ap.add_argument("--models", nargs="+", default=["ideal"])
    ap.add_argument("--no-pulchra", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="only the first N structures (smoke runs)")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME",
                    help="only these structures (file names without extension); one name also names the data set")
    ap.add_argument("--samples", type=int, default=1, help="samples per structure for the ldb-hpc models")
    ap.add_argument("--backmap-args", default="", help="extra backmap options, e.g. '--steps 4 --temperature 0.5'")
    ap.add_argument("--cg", default="ca", choices=("ca", "com", "martini3"),
                    help="the coarse-grained mapping: coarsen and backmap with --cg (PULCHRA reads CA traces only)")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)

    import mdtraj as md

    files = sorted(p for p in Path(args.data).iterdir() if p.suffix in (".pdb", ".cif") or p.name.endswith(".gz"))
    if args.only:
        files = [p for p in files if p.name.split(".")[0] in args.only]
        if len(files) != len(args.only):
            raise SystemExit(f"error: --only {' '.join(args.only)}: found {[p.name for p in files]} in {args.data}")
    files = files[: args.limit] if args.limit else files
    pulchra = shutil.which("pypulchra") or str(Path(sys.executable).with_name("pypulchra"))
    use_pulchra = not args.no_pulchra and os.path.exists(pulchra) and args.cg == "ca"
    cg_opt = [] if args.cg == "ca" else ["--cg", args.cg]

    def label(m: str) -> str:
        return (f"ldb-hpc --model {m}" + " ".join([""] + cg_opt)
                + (f" --samples {args.samples}" if args.samples > 1 else "")
                + (f" {args.backmap_args}" if args.backmap_args else ""))

    methods = [label(m) for m in args.models] + (["PULCHRA"] if use_pulchra else [])
    per = {m: [] for m in methods}
    times = {m: 0.0 for m in methods}
    n_res_total = 0
    skipped = []  # structures ldb-hpc cannot take as a CA trace (e.g. a residue without CA): reported, not scored
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            stem = path.name.split(".")[0]
            cg = os.path.join(tmp, f"{stem}.cg." + ("gro" if args.cg == "martini3" else "h5"))
            try:
                _cli(["coarsen", str(path), "-o", cg, "--overwrite"] + cg_opt)
            except RuntimeError as exc:
                skipped.append(f"{stem} ({str(exc).split('failed: ', 1)[-1]})")
                print(f"{stem}: skipped, no CA trace: {skipped[-1]}", file=sys.stderr)
                continue
            traj = md.load(cg)
            n_res_total += traj.n_residues * traj.n_frames  # residue-frames: PED00151 is 60 frames
            for model in args.models:
                out = os.path.join(tmp, f"{stem}.{Path(model).name}.aa.h5")
                t0 = time.perf_counter()
                _cli(["backmap", cg, "-o", out, "--model", model, "--overwrite", "--no-progress",
                      "--samples", str(args.samples)] + cg_opt + args.backmap_args.split())
                times[label(model)] += time.perf_counter() - t0
                per[label(model)].append(_evaluate(out, str(path), out + ".json"))
            if use_pulchra:
                ca_pdb = os.path.join(tmp, f"{stem}.ca.pdb")
                md.load(cg).save_pdb(ca_pdb)
                out = os.path.join(tmp, f"{stem}.pulchra.pdb")
                t0 = time.perf_counter()
                subprocess.run([pulchra, "-i", ca_pdb, "-o", out], check=True, capture_output=True)
                times["PULCHRA"] += time.perf_counter() - t0
                per["PULCHRA"].append(_evaluate(out, str(path), out + ".json"))
            print(f"{stem}: " + "  ".join(f"{m}: {per[m][-1]['rmsd']:.3f} Å" for m in methods), file=sys.stderr)

    metrics = METRICS + (DIVERSITY if args.samples > 1 else [])
    dataset = args.only[0] if args.only and len(args.only) == 1 else Path(args.data).name
    dataset += "" if args.cg == "ca" else f"-{args.cg}"
    n_done = len(files) - len(skipped)
    if n_done == 0:
        raise SystemExit(f"error: no structure of {args.data} could be coarsened")
    rows = [("accuracy_set", dataset, "scored", n_done, "structures"),
            ("accuracy_set", dataset, "skipped", len(skipped), "structures")]
    for m in methods:
        for key, _, unit, scale in metrics:
            vals = [s[key] for s in per[m] if s.get(key) is not None]
            rows.append(("accuracy", f"{dataset}|{m}", key, scale * float(np.mean(vals)), unit))
        rows.append(("accuracy", f"{dataset}|{m}", "wall_time_per_structure", times[m] / n_done, "s"))
        rows.append(("accuracy", f"{dataset}|{m}", "residues_per_s", n_res_total / max(times[m], 1e-9),
                     "residues/s"))
        for t, (n, share) in _by_type(per[m]).items():  # the weakest residue types, visible
            rows.append(("accuracy_chi1_type", f"{dataset}|{m}|{t}", "chi1_accuracy", 100.0 * share, "%"))
            rows.append(("accuracy_chi1_type", f"{dataset}|{m}|{t}", "n", n, "residues"))
    append_rows(rows, args.results)

    header = "| method | " + " | ".join(f"{name} ({unit})" for _, name, unit, _ in metrics) + " | s/structure |"
    print(f"\n{dataset}: {n_done} structures scored, {n_res_total} residues, mean over structures"
          + (f"; {len(skipped)} skipped: {'; '.join(skipped)}" if skipped else "") + "\n")
    print(header)
    print("|" + "---|" * (len(metrics) + 2))
    for m in methods:
        vals = []
        for key, _, _, scale in metrics:
            v = [s[key] for s in per[m] if s.get(key) is not None]
            vals.append(f"{scale * float(np.mean(v)):.2f}")
        print(f"| {m} | " + " | ".join(vals) + f" | {times[m] / n_done:.3f} |")
    for m in methods:
        by = sorted(_by_type(per[m]).items(), key=lambda kv: kv[1][1])
        print(f"\nχ1 by residue type, {m} (weakest first): "
              + ", ".join(f"{t} {100 * share:.0f} % (n={n})" for t, (n, share) in by))
    return 0


if __name__ == "__main__":
    sys.exit(main())
