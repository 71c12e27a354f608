#!/usr/bin/env python
"""Backmap throughput per core: `ldb-hpc backmap --threads 1` on one rank, default settings, per model.

The input is an `ldb-hpc synth` trajectory around the bundled example (135 residues); with ``--cg com|martini3`` it
is first backmapped by the default model (not timed) and coarsened to that mapping, then backmapped with ``--cg``.
The figure is the run summary's residue-frames/s (the whole run's wall time, start-up included), appended to
benchmarks/results.csv.

    python benchmarks/throughput.py [--frames 400] [--models ideal ldb_hpc/weights/ldb-default] [--samples 1]
                                    [--cg ca|com|martini3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from results_csv import RESULTS, append_rows

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--models", nargs="+", default=["ideal"])
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--cg", default="ca", choices=("ca", "com", "martini3"))
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    exe = str(Path(sys.executable).with_name("ldb-hpc"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cg = os.path.join(tmp, "in.cg.h5")
        subprocess.run([exe, "synth", "--frames", str(args.frames), "--from", str(REPO / "examples" / "example.cg.h5"),
                        "-o", cg], check=True, capture_output=True)
        cg_opt = []
        if args.cg != "ca":  # all atoms of the synth frames, coarsened to the mapping
            aa = os.path.join(tmp, "aa.h5")
            subprocess.run([exe, "backmap", cg, "-o", aa, "--no-progress"], check=True, capture_output=True)
            # Martini as GROMACS writes it: .xtc + .gro (coarsen writes in.gro beside in.xtc)
            cg = os.path.join(tmp, "in." + ("xtc" if args.cg == "martini3" else "com.h5"))
            subprocess.run([exe, "coarsen", aa, "--cg", args.cg, "-o", cg], check=True, capture_output=True)
            cg_opt = ["--cg", args.cg] + (["--top", os.path.join(tmp, "in.gro")] if args.cg == "martini3" else [])
        for model in args.models:
            out = os.path.join(tmp, "out.h5")
            subprocess.run([exe, "backmap", cg, "-o", out, "--model", model, "--threads", "1", "--overwrite",
                            "--no-progress", "--samples", str(args.samples)] + cg_opt, check=True, capture_output=True)
            summary = json.loads(Path(out + ".summary.json").read_text())
            rate = summary["residue_frames_per_s"]  # whole run, start-up included
            label = Path(model).name + ("" if args.cg == "ca" else f"|cg={args.cg}")
            print(f"{label}: {rate:,.0f} residue-frames/s on one core ({args.frames} frames x {args.samples} "
                  f"sample(s))")
            rows.append(("throughput", f"{label}|samples={args.samples}|threads=1|frames={args.frames}",
                         "residue_frames_per_s_per_core", rate, "residue-frames/s"))
    append_rows(rows, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
