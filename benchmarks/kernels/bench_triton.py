#!/usr/bin/env python
"""Triton kernels vs their torch reference on a CUDA device, at backmap's production sizes.

Per op and size: the torch reference (ldb_hpc.ops.reference, imported, never re-typed) and the Triton kernel
(ldb_hpc._triton.ops), timed with triton.testing.do_bench (p20/p50/p80 in ms), after a check that the two
agree (indices exactly, coordinates to float32 rounding, noise bit for bit); the check's figure is recorded
too. Rows go to benchmarks/results.csv through results_csv.append_rows, with the GPU's name
(torch.cuda.get_device_name()) in the configuration column.

    python benchmarks/kernels/bench_triton.py [--sizes 8x135 64x135 64x1000] [--flagged 0.12]

Needs a CUDA device (exits with a message otherwise); do not set TRITON_INTERPRET.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from results_csv import RESULTS, append_rows  # noqa: E402

sys.path.insert(0, str(HERE))
from scene import scene  # noqa: E402


def agreement(op: str, out, expected) -> list[tuple[str, float, str]]:
    """(metric, value, unit) rows saying how far the Triton output is from the reference's (0 is expected for
    indices, flags and noise; float32 rounding for coordinates and scores)."""
    if op == "vq_nearest":
        return [("index_mismatches", float((out[0] != expected[0]).sum()), "count"),
                ("max_abs_diff", float((out[1] - expected[1]).abs().max()), "1")]
    if op == "clash_flags":
        return [("flag_mismatches", float((out != expected).sum()), "count")]
    unit = {"build_atoms": "Å", "clash_score": "Å²"}.get(op, "1")
    return [("max_abs_diff", float((out.double() - expected.double()).abs().max()), unit)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python benchmarks/kernels/bench_triton.py --sizes 64x135 64x1000")
    ap.add_argument("--sizes", nargs="+", default=["8x135", "64x135", "64x1000"],
                    help="frames x residues per batch (default: 8x135 64x135 64x1000)")
    ap.add_argument("--flagged", type=float, default=0.12, help="share of residues clash_score scores (0.12)")
    ap.add_argument("--results", default=str(RESULTS), help="CSV to append to (benchmarks/results.csv)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_triton: no CUDA device here; the Triton kernels are benchmarked on a GPU only "
              "(their correctness on CPU is tested by tests/test_ops_triton.py under TRITON_INTERPRET=1)",
              file=sys.stderr)
        return 2
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("bench_triton: unset TRITON_INTERPRET (it would time the interpreter)", file=sys.stderr)
        return 2
    import triton.testing

    from ldb_hpc._triton import ops as tops
    from ldb_hpc.ops import reference

    dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name(dev)
    rows = []
    for size in args.sizes:
        B, L = (int(v) for v in size.lower().split("x"))
        for op, (op_args, label) in scene(B, L, args.flagged, dev).items():
            ref_fn, tri_fn = getattr(reference, op), getattr(tops, op)
            check = agreement(op, tri_fn(*op_args), ref_fn(*op_args))
            rows += [("kernels_triton", f"{op}|triton_vs_reference|{gpu}|{label}", metric, v, unit)
                     for metric, v, unit in check]
            p50 = {}
            for prov, fn in (("reference", ref_fn), ("triton", tri_fn)):
                q = triton.testing.do_bench(lambda fn=fn, op_args=op_args: fn(*op_args), quantiles=[0.2, 0.5, 0.8])
                p50[prov] = q[1]
                rows += [("kernels_triton", f"{op}|{prov}|{gpu}|{label}", f"time_{name}", v, "ms")
                         for name, v in zip(("p20", "p50", "p80"), q)]
                print(f"{op:15s} {prov:10s} {label:28s} p50 {q[1]:9.4f} ms  (p20 {q[0]:.4f}, p80 {q[2]:.4f})")
            sp = p50["reference"] / p50["triton"]
            rows.append(("kernels_triton", f"{op}|triton_vs_reference|{gpu}|{label}", "speedup", sp, "x"))
            print(f"{op:15s} speed-up {sp:6.1f}x   " + ", ".join(f"{m} {v:.3g} {u}" for m, v, u in check))
    sha, mach, date = append_rows(rows, args.results)
    print(f"{len(rows)} rows appended to {args.results} ({sha}, {mach}, {gpu}, {date})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
