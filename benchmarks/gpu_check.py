#!/usr/bin/env python
"""`make gpu-check`: is the GPU path right, and how fast is it? One script, < 8 minutes on one GPU.

1. Triton tests on the device: tests/test_ops_triton.py in a subprocess with LDB_HPC_TRITON_DEVICE=<device>
   (the compiled kernels on the GPU against the torch reference on the CPU; no interpreter).
2. `backmap --device <device>` against `backmap --device cpu` on the bundled example and on an `ldb-hpc synth`
   trajectory (2,000 frames): every row present (row count, /ldb/cg_frame = 0..F-1), ≥ 99.9 % of atoms within
   1e-3 Å, and the run summary names the device and the kernels (cuda:N and triton on a GPU).
3. A `--batch-frames` sweep (64, 256, 1024, 4096 on an 8,192-frame synth trajectory) for residue-frames/s; an
   out-of-memory run ends the sweep there (recorded, not a failure), so does the time budget.
4. Rows (benchmark "gpu_check", the device's name in the configuration, git sha, machine, date) appended to
   benchmarks/results.csv through results_csv.append_rows; a short table on stdout.

``--device cpu`` is the small variant CI runs (tests/test_gpu_check.py) so that the script cannot rot: the
example and a 200-frame synth trajectory, cpu against cpu, a sweep of two batch sizes, three interpreter
Triton tests. Exit status: 0 every check passed, 1 a check failed, 2 bad arguments or no such device.

    python benchmarks/gpu_check.py [--device cuda|cuda:N|cpu] [--results PATH] [--work DIR] [--model M]
        [--compare-frames N] [--sweep-frames N] [--batches B ...] [--budget-s S] [--triton-tests all|smoke|none]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_all import BIN, EXAMPLE, REPO, Bench, BenchError, run  # noqa: E402
from results_csv import RESULTS, append_rows  # noqa: E402

GPU = {"compare_frames": 2000, "sweep_frames": 8192, "batches": [64, 256, 1024, 4096], "triton_tests": "all"}
CPU = {"compare_frames": 200, "sweep_frames": 200, "batches": [64, 200], "triton_tests": "smoke"}
# --triton-tests smoke: three quick tests, enough to prove the subprocess, the device switch and the parsing work
TRITON_SMOKE = "modules_are_the_source_files or gaussian_noise_keys or vq_nearest_ties"
COMPARE_BATCH = 64  # backmap's default --batch-frames
WITHIN_A, WITHIN_SHARE = 1e-3, 0.999
BENCH = "gpu_check"


class ArgError(Exception):
    """Bad arguments or a device that is not there: one `error:` line, exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ArgError(message)


def parse_args(argv) -> argparse.Namespace:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (GPU 0), cuda:N, or cpu (the small CI variant)")
    ap.add_argument("--results", default=str(RESULTS), help="CSV to append to (default benchmarks/results.csv)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary folder under build/)")
    ap.add_argument("--model", default="default", help="backmap --model (default: the shipped learned model)")
    ap.add_argument("--compare-frames", type=int, default=None, help="frames of the synth trajectory compared "
                    f"(default {GPU['compare_frames']}; cpu {CPU['compare_frames']})")
    ap.add_argument("--sweep-frames", type=int, default=None, help="frames of the synth trajectory of the sweep "
                    f"(default {GPU['sweep_frames']}; cpu {CPU['sweep_frames']})")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="--batch-frames values of the sweep "
                    f"(default {' '.join(map(str, GPU['batches']))}; cpu {' '.join(map(str, CPU['batches']))})")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="no new sweep point starts after this many seconds of the whole check (default 420)")
    ap.add_argument("--triton-tests", choices=("all", "smoke", "none"), default=None,
                    help="tests/test_ops_triton.py on the device: all (default on a GPU), smoke (three tests; "
                         "default on cpu, where they run in the interpreter), none")
    args = ap.parse_args(argv)
    args.device = args.device.strip().lower()
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        raise ArgError(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    defaults = CPU if args.device == "cpu" else GPU
    for key in ("compare_frames", "sweep_frames", "batches", "triton_tests"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    if args.compare_frames < 1 or args.sweep_frames < 1 or min(args.batches) < 1:
        raise ArgError("--compare-frames, --sweep-frames and --batches must be positive")
    return args


def device_name(spec: str) -> str:
    """The device's name ("NVIDIA H200", or "cpu"); ArgError when the GPU is not there or triton is missing."""
    if spec == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise ArgError(f"--device {spec}: torch {torch.__version__} sees no CUDA device (CUDA build: "
                       f"{torch.version.cuda or 'none'}); install the CUDA build of torch or use --device cpu")
    index = int(spec.split(":")[1]) if ":" in spec else 0
    if index >= torch.cuda.device_count():
        raise ArgError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        raise ArgError(f"--device {spec}: triton does not import ({exc}); pip install triton") from exc
    return torch.cuda.get_device_name(index)


def child_env(**extra) -> dict:
    """The environment of every command: the default kernel dispatch, no Triton interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "LDB_HPC_KERNELS")}
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------------------
# 1. Triton tests


def triton_tests(device: str, which: str, work: Path) -> dict:
    """Run tests/test_ops_triton.py on ``device``; {passed, failed, errors, skipped, rc, tail}."""
    xml = work / "triton-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
           str(REPO / "tests" / "test_ops_triton.py")] + (["-k", TRITON_SMOKE] if which == "smoke" else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=child_env(LDB_HPC_TRITON_DEVICE=device))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in counts}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"passed": passed, "failed": counts["failures"], "errors": counts["errors"], "skipped": counts["skipped"],
            "rc": proc.returncode, "ok": proc.returncode == 0 and passed > 0,
            "tail": (proc.stdout + proc.stderr)[-3000:]}


# ---------------------------------------------------------------------------------------------------------
# 2. backmap on the device against the CPU


def compare_outputs(ref: str | os.PathLike, dev: str | os.PathLike, frames: int, block: int = 256) -> dict:
    """Two backmap outputs of the same ``frames``-frame input (one sample): rows, /ldb/cg_frame, atom distances.

    Returns rows_ref, rows_dev, cg_frame_ok (both files' /ldb/cg_frame equal 0..frames-1), within (share of
    atoms of the common rows whose two positions are < 1e-3 Å apart; 0 when the atom counts differ),
    max_diff_A and ok (every row present in both, cg_frame_ok, within ≥ 99.9 %). Reads ``block`` rows at a time.
    """
    import h5py
    import numpy as np

    with h5py.File(ref, "r") as fr, h5py.File(dev, "r") as fd:
        xr, xd = fr["coordinates"], fd["coordinates"]
        out = {"rows_ref": int(xr.shape[0]), "rows_dev": int(xd.shape[0])}
        expected = np.arange(frames)
        out["cg_frame_ok"] = all(f["ldb/cg_frame"].shape == (frames,) and np.array_equal(f["ldb/cg_frame"][:], expected)
                                 for f in (fr, fd))
        close, total, worst = 0, 0, 0.0
        if xr.shape[1:] == xd.shape[1:]:
            for start in range(0, min(xr.shape[0], xd.shape[0]), block):
                stop = min(start + block, xr.shape[0], xd.shape[0])
                diff = np.linalg.norm(xr[start:stop].astype(np.float64) - xd[start:stop], axis=-1) * 10.0  # nm → Å
                close += int((diff < WITHIN_A).sum())
                total += diff.size
                worst = max(worst, float(diff.max()) if diff.size else 0.0)
        else:
            worst = float("inf")
    out["within"] = close / total if total else 0.0
    out["max_diff_A"] = worst
    out["ok"] = bool(out["rows_ref"] == out["rows_dev"] == frames and out["cg_frame_ok"]
                     and out["within"] >= WITHIN_SHARE)
    return out


def summary_ok(summary: dict, device: str) -> bool:
    """The run summary says the run used ``device`` (cuda:N for cuda) and its kernels (triton on a GPU)."""
    if device == "cpu":
        return summary["devices"] == ["cpu"] and summary["kernels"] == ["cpu"]
    devices = summary["devices"]
    on_gpu = len(devices) == 1 and devices[0].startswith("cuda:") and (device == "cuda" or devices[0] == device)
    return on_gpu and summary["kernels"] == ["triton"]


class Check:
    """State of one check: arguments, work folder, device, the backmap runs made (cached by their arguments)."""

    def __init__(self, args: argparse.Namespace, work: Path):
        self.args, self.work = args, work
        self.synth = Bench({}, args.results, work, smoke=False).synth  # synth trajectories, made once each
        self._runs: dict = {}
        self.compared: set = set()  # outputs a comparison reads
        self.t0 = time.perf_counter()

    def backmap(self, src: Path, device: str, batch: int, role: str = "device") -> dict:
        """`ldb-hpc backmap src --device device --batch-frames batch`; its run summary plus ``out`` (kept).

        Runs are cached by (src, device, batch, role): the sweep reuses the comparison's device run of the same
        batch, while the CPU reference (role "reference") is always a run of its own, also when device is cpu."""
        key = (str(src), device, batch, role)
        if key not in self._runs:
            out = self.work / f"out-{len(self._runs)}-{role}-{device.replace(':', '')}-b{batch}.h5"
            run([BIN / "ldb-hpc", "backmap", src, "-o", out, "--model", self.args.model, "--device", device,
                 "--batch-frames", batch, "--overwrite", "--no-progress"], env=child_env())
            summary = json.loads(Path(f"{out}.summary.json").read_text())
            summary["out"] = out
            self._runs[key] = summary
        return self._runs[key]

    def compare(self, label: str, src: Path) -> dict:
        """backmap ``src`` on the CPU and on the device, then :func:`compare_outputs` and :func:`summary_ok`."""
        ref = self.backmap(src, "cpu", COMPARE_BATCH, role="reference")
        dev = self.backmap(src, self.args.device, COMPARE_BATCH)
        self.compared |= {ref["out"], dev["out"]}
        result = compare_outputs(ref["out"], dev["out"], ref["frames"])
        result.update(label=label, frames=ref["frames"], residues=ref["residues"], wall_s=dev["wall_s"],
                      devices=dev["devices"], kernels=dev["kernels"], summary_ok=summary_ok(dev, self.args.device))
        result["ok"] = result["ok"] and result["summary_ok"]
        return result

    def sweep(self, src: Path, frames: int, residues: int, rate: float | None) -> list[dict]:
        """Throughput per --batch-frames value on ``src`` (``frames`` × ``residues``), until out of memory or until
        the next point would end past the time budget at the last rate seen (``rate`` residue-frames/s before
        the first point: the comparison's device run; None: no prediction)."""
        points = []
        for batch in self.args.batches:
            predicted = frames * residues / rate if rate else 0.0
            if time.perf_counter() - self.t0 + predicted > self.args.budget_s:
                points.append({"batch": batch, "stopped": "time budget"})
                break
            try:
                s = self.backmap(src, self.args.device, batch)
            except BenchError as exc:
                if "out of memory" in str(exc).lower():
                    points.append({"batch": batch, "stopped": "out of memory"})
                    break
                raise
            rf = s["rows"] * s["residues"]
            compute = max(r["compute_s"] for r in s["per_rank"])
            points.append({"batch": batch, "frames": s["frames"], "residues": s["residues"], "wall_s": s["wall_s"],
                           "rate": rf / s["wall_s"], "compute_rate": rf / max(compute, 1e-9)})
            rate = points[-1]["rate"]
            if s["out"] not in self.compared:  # the sweep needs only the summary: keep the work folder small
                shutil.rmtree(f"{s['out']}.d", ignore_errors=True)
                for path in (s["out"], Path(f"{s['out']}.summary.json")):
                    path.unlink()
        return points


# ---------------------------------------------------------------------------------------------------------
# rows and the table


def rows_for(dev: str, model: str, tests: dict | None, compares: list[dict], points: list[dict]) -> list:
    rows = []
    if tests is not None:
        conf = f"triton_tests|{tests['which']}|{dev}"
        rows += [(BENCH, conf, m, tests[m], "tests") for m in ("passed", "failed", "errors", "skipped")]
    for c in compares:
        conf = f"compare|{c['label']}|model={model}|L={c.get('residues', 0)}|frames={c['frames']}|{dev}|reference=cpu"
        if "error" in c:
            rows.append((BENCH, conf, "ok", 0, "bool"))
            continue
        rows += [(BENCH, conf, "atoms_within_1e-3_A", 100.0 * c["within"], "%"),
                 (BENCH, conf, "max_abs_diff", c["max_diff_A"], "Å"),
                 (BENCH, conf, "rows_missing", max(0, c["frames"] - min(c["rows_ref"], c["rows_dev"])), "rows"),
                 (BENCH, conf, "cg_frame_ok", int(c["cg_frame_ok"]), "bool"),
                 (BENCH, conf, "summary_ok", int(c["summary_ok"]), "bool"),
                 (BENCH, conf, "ok", int(c["ok"]), "bool")]
    for p in points:
        conf = (f"sweep_batch|model={model}|L={p.get('residues', 0)}|frames={p.get('frames', 0)}|batch={p['batch']}"
                f"|{dev}")
        if "stopped" in p:
            if p["stopped"] == "out of memory":
                rows.append((BENCH, conf, "out_of_memory", 1, "bool"))
            continue
        rows += [(BENCH, conf, "residue_frames_per_s", p["rate"], "residue-frames/s"),
                 (BENCH, conf, "compute_residue_frames_per_s", p["compute_rate"], "residue-frames/s"),
                 (BENCH, conf, "wall_s", p["wall_s"], "s")]
    return rows


def table(tests: dict | None, compares: list[dict], points: list[dict]) -> str:
    lines = []
    if tests is not None:
        verdict = "ok" if tests["ok"] else f"FAILED (pytest exit {tests['rc']})"
        lines.append(f"{'triton tests (' + tests['which'] + ')':34s} {tests['passed']} passed, {tests['failed']} "
                     f"failed, {tests['errors']} errors, {tests['skipped']} skipped  {verdict}")
    for c in compares:
        name = f"{c['label']} ({c['frames']} frames)"
        if "error" in c:
            lines.append(f"{name:34s} FAILED: {c['error']}")
            continue
        lines.append(f"{name:34s} {100 * c['within']:.3f} % atoms within 1e-3 Å (max {c['max_diff_A']:.2g} Å), "
                     f"rows {c['rows_dev']}/{c['frames']}, cg_frame {'ok' if c['cg_frame_ok'] else 'WRONG'}, "
                     f"on {','.join(c['devices'])} with {','.join(c['kernels'])} kernels  "
                     f"{'ok' if c['ok'] else 'FAILED'}")
    if points:
        lines.append(f"{'--batch-frames':>14s} {'residue-frames/s':>18s} {'compute only':>14s} {'wall s':>8s}")
        for p in points:
            if "stopped" in p:
                lines.append(f"{p['batch']:>14d}  stopped: {p['stopped']}")
            else:
                lines.append(f"{p['batch']:>14d} {p['rate']:>18,.0f} {p['compute_rate']:>14,.0f} {p['wall_s']:>8.1f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        gpu = device_name(args.device)
    except ArgError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    (REPO / "build").mkdir(exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-", dir=REPO / "build"))
    work.mkdir(parents=True, exist_ok=True)
    dev = f"device={gpu}"
    print(f"gpu_check: --device {args.device} ({gpu}), model {args.model}, work {work}, results -> {args.results}",
          flush=True)
    check = Check(args, work)
    tests, compares, points, failed = None, [], [], []

    if args.triton_tests != "none":
        t0 = time.perf_counter()
        tests = triton_tests(args.device, args.triton_tests, work)
        tests["which"] = args.triton_tests
        print(f"[triton tests] {tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if not tests["ok"]:
            failed.append("triton tests")
            print(tests["tail"], flush=True)

    for label, make in (("example", lambda: EXAMPLE),
                        ("synth", lambda: check.synth("example", args.compare_frames))):
        t0 = time.perf_counter()
        try:
            c = check.compare(label, make())
        except BenchError as exc:
            c = {"label": label, "frames": args.compare_frames if label == "synth" else 0,
                 "error": str(exc).splitlines()[0]}
            print(str(exc), flush=True)
        compares.append(c)
        if not c.get("ok"):
            failed.append(f"compare {label}")
        print(f"[compare {label}] {'ok' if c.get('ok') else 'FAILED'} ({time.perf_counter() - t0:.0f} s)", flush=True)

    t0 = time.perf_counter()
    last = compares[-1]  # the synth comparison (same protein): its device run's rate predicts the first point
    rate = last["frames"] * last["residues"] / last["wall_s"] if last.get("wall_s") else None
    try:
        points = check.sweep(check.synth("example", args.sweep_frames), args.sweep_frames, last.get("residues", 0),
                             rate)
    except BenchError as exc:
        failed.append("sweep")
        print(str(exc), flush=True)
    print(f"[sweep] {len([p for p in points if 'stopped' not in p])} points ({time.perf_counter() - t0:.0f} s)",
          flush=True)

    wall = time.perf_counter() - check.t0
    rows = rows_for(dev, Path(args.model).name, tests, compares, points)
    rows += [(BENCH, f"total|{dev}", "ok", int(not failed), "bool"), (BENCH, f"total|{dev}", "wall_time", wall, "s")]
    sha, mach, date = append_rows(rows, args.results)
    print(f"\ngpu_check on {gpu} (git {sha}, {mach}, {date}): {'PASS' if not failed else 'FAIL: ' + ', '.join(failed)}"
          f" in {wall:.0f} s; {len(rows)} rows appended to {args.results}")
    print(table(tests, compares, points))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
