#!/usr/bin/env python
"""CPU kernels vs their torch reference at backmap's production sizes, at 1 and 2 threads, plus end to end.

Per op: the torch reference (ldb_hpc.ops.reference, imported, never re-typed), the C++ kernel (ldb_hpc.ops.cpu)
and, with --compile, torch.compile of the reference (skipped with a note where it fails or takes too long).
Timings are p20/p50/p80 over --repeats runs after a warm-up. End to end: `ldb-hpc backmap` of an `ldb-hpc synth`
trajectory (around examples/example.cg.h5, 135 residues) with the default kernels vs LDB_HPC_KERNELS=reference:
wall time of the whole command, speed-up and the largest coordinate difference (Å).
Rows go to benchmarks/results.csv through results_csv.append_rows.

    nice -n 10 python benchmarks/kernels/bench_cpu.py [--threads 1 2] [--repeats 5] [--e2e-frames 128] \\
        [--e2e-threads 1] [--compile]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from results_csv import RESULTS, append_rows  # noqa: E402

from ldb_hpc.ops import cpu, reference  # noqa: E402

sys.path.insert(0, str(HERE))
from scene import scene  # noqa: E402

REPO = HERE.parents[1]
B, L = 64, 135  # backmap: 64 frames × 135 residues


def _scene():
    """Inputs of every op at production size (64 frames of a 135-residue chain; 1000 residues re-scored)."""
    return scene(B, L, 1000 / (B * L), torch.device("cpu"))


def _time(fn, args, repeats: int) -> np.ndarray:
    fn(*args)  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t0)
    return np.array(ts) * 1e3


def bench_ops(threads: list[int], repeats: int, compile_ref: bool) -> list:
    rows = []
    scene = _scene()
    for nt in threads:
        torch.set_num_threads(nt)
        for label, (args, size) in scene.items():
            op = label.split("@")[0]
            providers = {"reference": getattr(reference, op), "cpu": getattr(cpu, op)}
            if compile_ref:
                providers["torch.compile"] = torch.compile(getattr(reference, op), dynamic=False)
            p50 = {}
            for prov, fn in providers.items():
                try:
                    t = _time(fn, args, repeats if prov != "reference" or op != "clash_score" else max(2, repeats // 2))
                except Exception as e:  # noqa: BLE001 - torch.compile may not handle an op: note it, go on
                    print(f"{label:19s} {prov:14s} threads={nt}: skipped ({type(e).__name__}: {str(e)[:80]})")
                    continue
                q = np.percentile(t, [20, 50, 80])
                p50[prov] = q[1]
                conf = f"{op}|{prov}|threads={nt}|{size}"
                rows += [("kernels_cpu", conf, f"time_{name}", v, "ms") for name, v in zip(("p20", "p50", "p80"), q)]
                print(f"{label:19s} {prov:14s} threads={nt}: p50 {q[1]:9.2f} ms  (p20 {q[0]:.2f}, p80 {q[2]:.2f})")
            if "cpu" in p50:
                sp = p50["reference"] / p50["cpu"]
                rows.append(("kernels_cpu", f"{op}|cpu_vs_reference|threads={nt}|{size}", "speedup", sp, "x"))
                print(f"{label:19s} speed-up C++ vs reference at {nt} thread(s): {sp:.1f}x")
    return rows


def bench_e2e(frames: int, threads: int, model: str | None) -> list:
    exe = str(Path(sys.executable).with_name("ldb-hpc"))
    label = model or "ldb-default"
    with tempfile.TemporaryDirectory() as tmp:
        cg = os.path.join(tmp, "in.cg.h5")
        subprocess.run([exe, "synth", "--frames", str(frames), "--from", str(REPO / "examples" / "example.cg.h5"),
                        "-o", cg], check=True, capture_output=True)
        out, wall = {}, {}
        for kernels in ("reference", "default"):
            env = dict(os.environ)
            env.pop("LDB_HPC_KERNELS", None)
            if kernels == "reference":
                env["LDB_HPC_KERNELS"] = "reference"
            path = os.path.join(tmp, f"{kernels}.h5")
            cmd = [exe, "backmap", cg, "-o", path, "--threads", str(threads), "--overwrite", "--no-progress"]
            if model:
                cmd += ["--model", model]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            wall[kernels] = time.perf_counter() - t0
            import mdtraj

            out[kernels] = mdtraj.load(path).xyz * 10.0  # nm → Å
        diff = float(np.abs(out["default"] - out["reference"]).max())
    sp = wall["reference"] / wall["default"]
    conf = f"backmap|{label}|frames={frames}|threads={threads}"
    print(f"e2e {label}: reference {wall['reference']:.1f} s, default kernels {wall['default']:.1f} s "
          f"→ {100 * (sp - 1):.0f} % faster ({sp:.2f}x); max coordinate difference {diff:.2e} Å")
    return [("kernels_cpu_e2e", conf + "|kernels=reference", "wall", wall["reference"], "s"),
            ("kernels_cpu_e2e", conf + "|kernels=default", "wall", wall["default"], "s"),
            ("kernels_cpu_e2e", conf, "speedup", sp, "x"),
            ("kernels_cpu_e2e", conf, "max_coordinate_difference", diff, "Å")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the reference (slow to build)")
    ap.add_argument("--e2e-frames", type=int, default=128, help="frames of the end-to-end run (0: skip it)")
    ap.add_argument("--e2e-models", nargs="+", default=["default", "ideal"])
    ap.add_argument("--e2e-threads", type=int, default=1)
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    rows = bench_ops(args.threads, args.repeats, args.compile)
    if args.e2e_frames:
        for model in args.e2e_models:
            rows += bench_e2e(args.e2e_frames, args.e2e_threads, None if model == "default" else model)
    append_rows(rows, args.results)
    print(f"{len(rows)} rows → {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
