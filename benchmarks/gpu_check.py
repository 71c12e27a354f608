#!/usr/bin/env python
"""`make gpu-check`: is the GPU path right, and how fast is it? One script, < 8 minutes on one GPU, one verdict.

Seven parts, each PASS or FAIL (N/A where the device has no such figure) with its figure:

1. **triton tests**: tests/test_ops_triton.py in a subprocess with LDB_HPC_TRITON_DEVICE=<device> (the compiled
   kernels on the GPU against the torch reference on the CPU; no interpreter).
2. **ideal model**, `backmap --model ideal` on the device against the CPU (the bundled example and a synth
   trajectory): deterministic, so every row present and every atom within 1e-4 Å.
3. **default model** (or ``--model``) on a synth trajectory, device against CPU: ≥ 99 % of the atoms within
   0.01 Å, and every residue beyond it explained (gpu_compare.py: a side-chain choice that flipped on a near tie,
   or equivalent atoms with swapped names; a backbone off is unexplained and fails).
4. **--samples 4 --hydrogens** on the example, device against CPU: frames × 4 rows, hydrogens written, the same
   share within 0.01 Å and explanation as part 3 (the noise is counter-based: the same on both devices).
5. **throughput**: residue-frames/s at --batch-frames 64 … 4096 on an 8,192-frame synth trajectory, on the device
   and (on a GPU) on all the CPU cores of the node; PASS when every point ran (an out-of-memory run or the time
   budget ends a sweep, recorded) and the GPU beats the CPU at its best batch size.
6. **peak GPU memory**, torch.cuda.max_memory_allocated of each sweep run (gpu_probe.py); N/A on the CPU.
7. **host syncs per batch**: two runs of 2 and 6 batches counted (gpu_probe.py: CUDA's sync debug mode on a GPU,
   ldb_hpc.ops.audit.HostTraffic on the CPU); their difference per batch leaves start-up out.

Figures go to benchmarks/results.csv only with ``--append-results [PATH]``. ``--device cpu`` is the small variant
CI runs through `make gpu-check` (tests/test_gpu_check.py) so that the script cannot rot. Exit status: 0 every part
passed, 1 a part failed, 2 bad arguments or no such device.

    python benchmarks/gpu_check.py [--device cuda|cuda:N|cpu] [--append-results [PATH]] [--work DIR] [--model M]
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
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_all import EXAMPLE, REPO, Bench, BenchError, run  # noqa: E402
from gpu_compare import compare_outputs, explain  # noqa: E402
from results_csv import RESULTS, append_rows  # noqa: E402

GPU = {"compare_frames": 2000, "sweep_frames": 8192, "batches": [64, 256, 1024, 4096], "triton_tests": "all",
       "sync_batch": 64}
CPU = {"compare_frames": 64, "sweep_frames": 64, "batches": [32, 64], "triton_tests": "smoke", "sync_batch": 8}
# --triton-tests smoke: three quick tests, enough to prove the subprocess, the device switch and the parsing work
TRITON_SMOKE = "modules_are_the_source_files or gaussian_noise_keys or vq_nearest_ties"
COMPARE_BATCH = 64  # backmap's default --batch-frames
IDEAL_TOL_A, IDEAL_SHARE = 1e-4, 1.0
MODEL_TOL_A, MODEL_SHARE = 0.01, 0.99
SAMPLES = 4
SYNC_BATCHES = (2, 6)
BENCH = "gpu_check"


class ArgError(Exception):
    """Bad arguments or a device that is not there: one `error:` line, exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ArgError(message)


def parse_args(argv) -> argparse.Namespace:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (GPU 0), cuda:N, or cpu (the small CI variant)")
    ap.add_argument("--append-results", nargs="?", const=str(RESULTS), default=None, metavar="PATH",
                    help="append the figures to PATH (default benchmarks/results.csv); without it nothing is written")
    ap.add_argument("--work", default=None, help="scratch folder, kept (default: a temporary folder under build/)")
    ap.add_argument("--model", default="default", help="the learned model of parts 3-5, 7 (default: the shipped one)")
    ap.add_argument("--compare-frames", type=int, default=None, help="frames of the synth trajectory compared "
                    f"(default {GPU['compare_frames']}; cpu {CPU['compare_frames']})")
    ap.add_argument("--sweep-frames", type=int, default=None, help="frames of the synth trajectory of the sweep "
                    f"(default {GPU['sweep_frames']}; cpu {CPU['sweep_frames']})")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="--batch-frames values of the sweep "
                    f"(default {' '.join(map(str, GPU['batches']))}; cpu {' '.join(map(str, CPU['batches']))})")
    ap.add_argument("--budget-s", type=float, default=360.0,
                    help="no new sweep point starts after this many seconds of the whole check (default 360: with the "
                         "venv build before it, the whole make gpu-check stays under 8 minutes)")
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
    args.sync_batch = defaults["sync_batch"]
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


def versions() -> str:
    import torch

    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = "none"
    cuda = torch.version.cuda or "none"
    return f"torch {torch.__version__} (CUDA {cuda}), triton {tv}, Python {sys.version.split()[0]}"


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def child_env(**extra) -> dict:
    """The environment of every command: the default kernel dispatch, no Triton interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "LDB_HPC_KERNELS")}
    env.update(extra)
    return env


@dataclass
class Part:
    """One line of the verdict: PASS / FAIL / N/A, its figure, and its CSV rows (configuration, metric, value,
    unit; the configuration is prefixed with the part's name and suffixed with the device's)."""
    name: str
    status: str = "FAIL"
    figure: str = ""
    rows: list = field(default_factory=list)


def triton_tests(device: str, which: str, work: Path) -> dict:
    """Run tests/test_ops_triton.py on ``device``; {passed, failed, errors, skipped, rc, ok, tail}."""
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


def summary_ok(summary: dict, device: str) -> bool:
    """The run summary says the run used ``device`` (cuda:N for cuda) and its kernels (triton on a GPU)."""
    if device == "cpu":
        return summary["devices"] == ["cpu"] and summary["kernels"] == ["cpu"]
    devices = summary["devices"]
    on_gpu = len(devices) == 1 and devices[0].startswith("cuda:") and (device == "cuda" or devices[0] == device)
    return on_gpu and summary["kernels"] == ["triton"]


class Check:
    """State of one check: arguments, work folder, the backmap runs made (cached by their arguments)."""

    def __init__(self, args: argparse.Namespace, work: Path):
        self.args, self.work = args, work
        self.synth = Bench({}, str(RESULTS), work, smoke=False).synth  # synth trajectories, made once each
        self._runs: dict = {}
        self.t0 = time.perf_counter()

    def backmap(self, src: Path, device: str, batch: int, model: str, extra: tuple = (), role: str = "device",
                syncs: bool = False, threads: int | None = None) -> dict:
        """`ldb-hpc backmap` through gpu_probe.py; the run summary plus ``out`` and the probe's figures.

        Cached by all arguments: the CPU reference (role "reference") is always a run of its own, also on cpu."""
        key = (str(src), device, batch, model, extra, role, syncs, threads)
        if key not in self._runs:
            tag = f"{len(self._runs)}-{role}-{device.replace(':', '')}-b{batch}"
            out, probe = self.work / f"out-{tag}.h5", self.work / f"probe-{tag}.json"
            cmd = [sys.executable, HERE / "gpu_probe.py", "--json", probe] + (["--syncs"] if syncs else []) + \
                ["--", "backmap", src, "-o", out, "--model", model, "--device", device, "--batch-frames", batch,
                 "--overwrite", "--no-progress", *extra] + (["--threads", threads] if threads else [])
            run(cmd, env=child_env())
            summary = json.loads(Path(f"{out}.summary.json").read_text())
            summary.update(json.loads(probe.read_text()), out=out)
            self._runs[key] = summary
        return self._runs[key]

    def drop(self, s: dict) -> None:
        """Delete a run's output (the sweep needs only its summary: keeps the work folder small)."""
        shutil.rmtree(f"{s['out']}.d", ignore_errors=True)
        Path(s["out"]).unlink(missing_ok=True)

    def compare(self, label: str, src: Path, model: str, tol: float, share: float, extra: tuple = (),
                samples: int = 1) -> dict:
        ref = self.backmap(src, "cpu", COMPARE_BATCH, model, extra, role="reference")
        dev = self.backmap(src, self.args.device, COMPARE_BATCH, model, extra)
        c = compare_outputs(ref["out"], dev["out"], ref["frames"], tol, share, samples=samples)
        c.update(label=label, frames=ref["frames"], residues=ref["residues"], devices=dev["devices"],
                 kernels=dev["kernels"], summary_ok=summary_ok(dev, self.args.device), out=dev["out"])
        c["ok"] = c["ok"] and c["summary_ok"]
        return c

    def sweep(self, device: str, src: Path, frames: int, residues: int, threads: int | None = None) -> list[dict]:
        """Throughput per --batch-frames value on ``src``, until out of memory or until the next point would end past
        the time budget at the last rate seen (the first point always runs)."""
        points, rate = [], None
        for batch in self.args.batches:
            # the first point always runs (the verdict needs a figure); later ones only within the budget
            if rate and time.perf_counter() - self.t0 + frames * residues / rate > self.args.budget_s:
                points.append({"batch": batch, "stopped": "time budget"})
                break
            try:
                s = self.backmap(src, device, batch, self.args.model, role=f"sweep{'-cpu' if threads else ''}",
                                 threads=threads)
            except BenchError as exc:
                if "out of memory" in str(exc).lower():
                    points.append({"batch": batch, "stopped": "out of memory"})
                    break
                raise
            rf = s["rows"] * s["residues"]
            compute = max(r["compute_s"] for r in s["per_rank"])
            points.append({"batch": batch, "wall_s": s["wall_s"], "rate": rf / s["wall_s"],
                           "compute_rate": rf / max(compute, 1e-9), "peak": s.get("peak_gpu_bytes"),
                           "total": s.get("gpu_total_bytes")})
            rate = points[-1]["rate"]
            self.drop(s)
        return points


def _compare_part(name: str, cs: list[dict], tol: float, what: str) -> Part:
    part = Part(name)
    for c in cs:
        if "error" in c:
            part.figure = f"{c['label']}: {c['error']}"
            part.rows.append((c["label"], "ok", 0, "bool"))
            return part
        pre = f"{c['label']}|frames={c['frames']}|L={c['residues']}"
        part.rows += [(pre, f"atoms_within_{tol:g}_A", 100 * c["within"], "%"),
                      (pre, "max_abs_diff", c["max_diff_A"], "Å"), (pre, "rows_ok", int(c["rows_ok"]), "bool"),
                      (pre, "summary_ok", int(c["summary_ok"]), "bool")] + \
                     [(pre, f"flips_{k.replace(' ', '_')}", v, "residue-rows") for k, v in c["flips"].items()]
    worst = min(cs, key=lambda c: c["within"])
    bad = [c["label"] for c in cs if not c["rows_ok"]] + [c["label"] + " ran elsewhere" for c in cs
                                                         if not c["summary_ok"]]
    part.status = "PASS" if all(c["ok"] for c in cs) else "FAIL"
    top = max(c["max_diff_A"] for c in cs)
    part.figure = (f"{100 * worst['within']:.3f} % of atoms within {tol:g} Å (max {top:.2g} Å); {what}; "
                   + "; ".join((f"{c['label']}: " if len(cs) > 1 else "") + explain(c) for c in cs)
                   + (f"; WRONG: {', '.join(bad)}" if bad else ""))
    return part


def run_compare(check: Check, name: str, jobs: list, tol: float, what: str) -> Part:
    cs = []
    for label, make, model, share, extra, samples in jobs:
        try:
            cs.append(check.compare(label, make(), model, tol, share, extra, samples))
        except BenchError as exc:
            print(str(exc), flush=True)
            cs.append({"label": label, "error": str(exc).splitlines()[0]})
    return _compare_part(name, cs, tol, what)


def n_residues(cg: Path) -> int:
    """Residues of a CA trajectory (one bead each)."""
    import h5py

    with h5py.File(cg, "r") as f:
        return int(f["coordinates"].shape[1])


def hydrogen_atoms(path) -> int:
    import mdtraj as md

    return sum(a.element.symbol == "H" for a in md.load_topology(str(path)).atoms)


def throughput_parts(dev_points: list, cpu_points: list | None, on_gpu: bool, threads: int) -> tuple[Part, Part]:
    ran = [p for p in dev_points if "stopped" not in p]
    part = Part("throughput (residue-frames/s)", rows=[])
    cpu = {p["batch"]: p for p in cpu_points or [] if "stopped" not in p}
    bits = []
    for p in dev_points:
        if "stopped" in p:
            bits.append(f"{p['batch']}: stopped ({p['stopped']})")
            part.rows.append((f"batch={p['batch']}", f"stopped_{p['stopped'].replace(' ', '_')}", 1, "bool"))
            continue
        part.rows += [(f"batch={p['batch']}", "device", p["rate"], "residue-frames/s"),
                      (f"batch={p['batch']}", "device_compute_only", p["compute_rate"], "residue-frames/s")]
        c = cpu.get(p["batch"])
        if c:
            part.rows.append((f"batch={p['batch']}", f"cpu_{threads}_threads", c["rate"], "residue-frames/s"))
        bits.append(f"{p['batch']}: {p['rate']:,.0f}" + (f" vs cpu {c['rate']:,.0f} ({p['rate'] / c['rate']:.1f}×)"
                                                          if c else ""))
    faster = not on_gpu or (cpu and ran and max(p["rate"] for p in ran) > max(c["rate"] for c in cpu.values()))
    part.status = "PASS" if ran and faster else "FAIL"
    part.figure = "batch " + "; ".join(bits) + (f" (cpu: {threads} threads)" if cpu else "") if bits else "none ran"
    mem = Part("peak GPU memory", status="N/A", figure="n/a on the CPU")
    peaks = [p for p in ran if p.get("peak") is not None]
    if on_gpu:
        if peaks:
            top = max(peaks, key=lambda p: p["peak"])
            mem.status = "PASS" if top["peak"] < 0.95 * top["total"] else "FAIL"
            mem.figure = (f"{top['peak'] / 2**30:.2f} GiB at batch {top['batch']} (of {top['total'] / 2**30:.0f} GiB); "
                          + ", ".join(f"{p['batch']}: {p['peak'] / 2**30:.2f}" for p in peaks))
            mem.rows = [(f"batch={p['batch']}", "max_memory_allocated", p["peak"] / 2**20, "MiB") for p in peaks]
        else:
            mem.status, mem.figure = "FAIL", "no sweep run measured it"
    return part, mem


def syncs_part(check: Check, device: str) -> Part:
    """Syncs per batch: runs of SYNC_BATCHES[0] and [1] batches, the difference divided by the extra batches."""
    part = Part("host syncs per batch")
    b, (n1, n2) = check.args.sync_batch, SYNC_BATCHES
    try:
        runs = [check.backmap(check.synth("example", b * n), device, b, check.args.model, role=f"syncs{n}", syncs=True)
                for n in (n1, n2)]
    except BenchError as exc:
        print(str(exc), flush=True)
        part.figure = str(exc).splitlines()[0]
        return part
    s1, s2 = (r["syncs"] for r in runs)
    per = (s2 - s1) / (n2 - n1)
    part.status = "PASS"
    part.figure = (f"{per:.1f} ({s1} in {n1} batches, {s2} in {n2} of {b} frames; {runs[0]['sync_method']}"
                   + (": ops that would sync on a GPU" if device == "cpu" else "") + ")")
    part.rows = [(f"batch={b}|{runs[0]['sync_method']}", "per_batch", per, "syncs"),
                 (f"batch={b}|batches={n1}", "total", s1, "syncs"), (f"batch={b}|batches={n2}", "total", s2, "syncs")]
    return part


def verdict(parts: list[Part]) -> str:
    return "\n".join(f"  {p.status:4s}  {p.name:30s} {p.figure}" for p in parts)


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        gpu = device_name(args.device)
    except ArgError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    (REPO / "build").mkdir(exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-", dir=REPO / "build"))
    work.mkdir(parents=True, exist_ok=True)
    on_gpu, threads = args.device != "cpu", cpu_cores()
    print(f"gpu_check: --device {args.device} ({gpu}), {versions()}, model {args.model}, work {work}", flush=True)
    check, parts = Check(args, work), []

    def step(name, fn):
        t0 = time.perf_counter()
        got = fn()
        for p in got if isinstance(got, tuple) else (got,):
            parts.append(p)
            print(f"[{p.name}] {p.status}: {p.figure} ({time.perf_counter() - t0:.0f} s)", flush=True)

    def tests_part():
        if args.triton_tests == "none":
            return Part("triton tests", "N/A", "not run (--triton-tests none)")
        t = triton_tests(args.device, args.triton_tests, work)
        if not t["ok"]:
            print(t["tail"], flush=True)
        return Part(f"triton tests ({args.triton_tests})", "PASS" if t["ok"] else "FAIL",
                    f"{t['passed']} passed, {t['failed']} failed, {t['errors']} errors, {t['skipped']} skipped",
                    [("", m, t[m], "tests") for m in ("passed", "failed", "errors", "skipped")])

    synth = lambda frames: (lambda: check.synth("example", frames))  # noqa: E731
    n = args.compare_frames
    step("triton", tests_part)
    step("ideal", lambda: run_compare(check, "ideal model vs cpu", [
        ("example", lambda: EXAMPLE, "ideal", IDEAL_SHARE, (), 1),
        ("synth", synth(n), "ideal", IDEAL_SHARE, (), 1)], IDEAL_TOL_A, f"example + synth {n} frames"))
    step("default", lambda: run_compare(check, f"{args.model} model vs cpu", [
        ("synth", synth(n), args.model, MODEL_SHARE, (), 1)], MODEL_TOL_A, f"synth {n} frames"))

    def samples_part():
        extra = ("--samples", str(SAMPLES), "--hydrogens")
        part = run_compare(check, f"--samples {SAMPLES} --hydrogens vs cpu",
                           [("example", lambda: EXAMPLE, args.model, MODEL_SHARE, extra, SAMPLES)], MODEL_TOL_A,
                           f"example × {SAMPLES} samples")
        runs = [s for k, s in check._runs.items() if k[4] == extra and k[5] == "device"]
        if runs:
            h = hydrogen_atoms(runs[0]["out"])
            part.figure = f"{h} H atoms per row; " + part.figure
            part.rows.append(("example", "hydrogen_atoms", h, "atoms"))
            part.status = part.status if h > 0 else "FAIL"
        return part

    step("samples", samples_part)
    step("syncs", lambda: syncs_part(check, args.device))

    def sweeps():
        src = check.synth("example", args.sweep_frames)
        residues = n_residues(src)
        dev = check.sweep(args.device, src, args.sweep_frames, residues)
        cpu = check.sweep("cpu", src, args.sweep_frames, residues, threads=threads) if on_gpu else None
        return throughput_parts(dev, cpu, on_gpu, threads)

    try:
        step("sweep", sweeps)
    except BenchError as exc:
        print(str(exc), flush=True)
        parts.append(Part("throughput (residue-frames/s)", figure=str(exc).splitlines()[0]))

    wall = time.perf_counter() - check.t0
    failed = [p.name for p in parts if p.status == "FAIL"]
    head = f"gpu_check on {gpu}: {'PASS' if not failed else 'FAIL (' + ', '.join(failed) + ')'} in {wall:.0f} s"
    if args.append_results:
        dev = f"device={gpu}"
        rows = [(BENCH, f"{p.name}|{dev}", "pass", int(p.status != "FAIL"), "bool") for p in parts]
        rows += [(BENCH, "|".join(x for x in (p.name, conf, dev) if x), metric, value, unit)
                 for p in parts for conf, metric, value, unit in p.rows]
        rows += [(BENCH, f"total|{dev}", "ok", int(not failed), "bool"),
                 (BENCH, f"total|{dev}", "wall_time", wall, "s")]
        sha, mach, date = append_rows(rows, args.append_results)
        head += f"; {len(rows)} rows appended to {args.append_results} (git {sha}, {mach}, {date})"
    print(f"\n{head}\n{versions()}\n{verdict(parts)}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
