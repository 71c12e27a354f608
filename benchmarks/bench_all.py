#!/usr/bin/env python
"""`make bench`: every benchmark of ldb-hpc in one command, rows appended to benchmarks/results.csv, then the
report (benchmarks/README.md, benchmarks/plots/, the table in README.md, the numbers in docs/ROOFLINE.md).

Parts (``--parts`` picks some; each prints its wall time and records it as a ``bench_time`` row):

- throughput  benchmarks/throughput.py: residue-frames/s per core of `--model ideal` and the default model
              (`backmap --threads 1`, one rank, the 135-residue example), the figure of the README table; and of
              the shipped COM and Martini 3 models on the same frames coarsened (`--cg com|martini3`).
- startup     benchmarks/startup.py --parts startup: a one-frame backmap of the example as a CA PDB against
              `python -c "import torch"` (median of 5); the folder-vs-PULCHRA part is `make bench-startup`.
- sweeps      the default model on `ldb-hpc synth` trajectories, one thread per rank: batch size
              (--batch-frames), DDIM steps, samples per frame, 1 vs 2 MPI ranks, protein size (CASP12 T0922
              74 res., the example 135, T0912 599; the CASP12 PDBs are coarsened on the fly by synth), and
              peak RSS against trajectory length (the runtime's own getrusage figure).
- write       output write rate: bytes of the output ÷ the writer thread's time (`--model ideal`, so that
              the writer is busy), against `dd` of the same number of bytes into the same folder, with and
              without conv=fsync (backmap fsyncs every chunk before recording it done).
- accuracy    benchmarks/accuracy_casp12.py on test/casp12 (default model, --model ideal, PULCHRA; and the
              default model with 10 samples for diversity) and on valid/pfam40; the COM and Martini 3 rows
              (inputs coarsened from the references by `coarsen --cg`, the shipped model of each mapping, one
              sample; CASP12 also with 10 samples); and the lysozyme 1AM7 MD
              trajectory: `coarsen` the frames, backmap, `evaluate` against the all-atom frames; PULCHRA
              runs once per frame (one process each, as users run it). Needs ../shared/data (else skipped).
- roofline    benchmarks/roofline.py: FLOPs and bytes per residue-frame, this CPU's peaks, the floors.
- runtime     benchmarks/runtime/bench_runtime.py (memory at 2,000 vs 50,000 frames, 1 vs 2 ranks with
              --model ideal); it writes only the committed results.csv, so it runs only when --results is
              that file (not in --smoke).

Full size is chosen to finish in about 15 minutes on 2 idle cores (≤ 30 min allowed); ``--smoke`` is a tiny
size (< 2 min) that CI runs; by default it writes into build/bench-smoke/ (results.csv, README.md, plots/,
copies of README.md and docs/ROOFLINE.md with the tables filled in) and never touches committed files.

    python benchmarks/bench_all.py [--smoke] [--parts sweeps write] [--results PATH] [--out DIR] [--no-report]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_csv import RESULTS, append_rows  # noqa: E402

REPO = HERE.parent
BIN = Path(sys.executable).parent
DATA = Path(os.environ.get("LDB_HPC_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_MODEL = "ldb_hpc/weights/ldb-default"  # relative to REPO: the accuracy rows are labelled with it
EXAMPLE = REPO / "examples" / "example.cg.h5"

FULL = {
    "throughput_frames": 400,
    "sweep_frames": 256, "batches": [8, 16, 32, 64, 128, 256], "steps": [1, 2, 4, 8, 16],
    "samples": [1, 2, 4, 10], "samples_frames": 64,
    "ranks": [1, 2], "ranks_frames": 512, "ranks_batch": 64,
    "sizes": ["T0922", "example", "T0912"], "size_residue_frames": 40000,
    "memory_protein": "T0922", "memory_frames": [256, 1024, 4096],
    "write_frames": 8000,
    "accuracy_limit": None, "casp12_samples10": True, "md_frames": None,  # None: every frame
    "roofline_args": [],
}
SMOKE = {
    "throughput_frames": 16,
    "sweep_frames": 16, "batches": [8, 16], "steps": [1, 8], "samples": [1, 2], "samples_frames": 8,
    "ranks": [1, 2], "ranks_frames": 16, "ranks_batch": 8,
    "sizes": ["example", "T0922"], "size_residue_frames": 2000,
    "memory_protein": "example", "memory_frames": [16, 64],
    "write_frames": 64,
    "accuracy_limit": 1, "casp12_samples10": False, "md_frames": 3,
    "roofline_args": ["--smoke"],
}
PARTS = ["throughput", "startup", "sweeps", "write", "accuracy", "roofline", "runtime"]


class BenchError(RuntimeError):
    """A benchmark command failed; the message carries the command and the tail of its output."""


def run(cmd: list, env: dict | None = None, cwd: Path = REPO) -> tuple[float, str]:
    """Run ``cmd`` (paths may be Path); returns (wall time s, stdout). BenchError with its output on failure."""
    cmd = [str(c) for c in cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return wall, proc.stdout


class Bench:
    """State of one `bench_all` run: sizes, work folder, results file, cache of backmap runs."""

    def __init__(self, cfg: dict, results: str, work: Path, smoke: bool):
        self.cfg, self.results, self.work, self.smoke = cfg, results, work, smoke
        self.ldb = BIN / "ldb-hpc"
        self.mpiexec = os.environ.get("LDB_HPC_MPIEXEC", str(BIN / "mpiexec"))
        self._inputs: dict = {}
        self._runs: dict = {}

    def rows(self, rows: list) -> None:
        append_rows(rows, self.results)

    # -- inputs -----------------------------------------------------------------------------------------
    def protein(self, name: str) -> Path | None:
        """The structure a synth trajectory starts from: the bundled example or a CASP12 PDB (None if absent)."""
        if name == "example":
            return EXAMPLE
        path = DATA / "test" / "casp12" / f"{name}.pdb"
        return path if path.exists() else None

    def synth(self, name: str, frames: int) -> Path | None:
        """An `ldb-hpc synth` CG trajectory of ``frames`` frames around protein ``name`` (made once per run)."""
        key = (name, frames)
        if key not in self._inputs:
            src = self.protein(name)
            if src is None:
                return None
            path = self.work / f"synth-{name}-{frames}.h5"
            run([self.ldb, "synth", "--frames", frames, "--from", src, "-o", path, "--seed", 1, "--steps", 5,
                 "--overwrite"])
            self._inputs[key] = path
        return self._inputs[key]

    # -- one backmap --------------------------------------------------------------------------------------
    def backmap(self, src: Path, model: str = DEFAULT_MODEL, batch: int = 64, steps: int | None = None,
                samples: int = 1, ranks: int = 1) -> dict:
        """`ldb-hpc backmap` with 1 thread per rank; returns the run summary plus ``cmd_wall_s`` and
        ``out_bytes`` (the master file and its shard folder). Cached per argument set within this run."""
        key = (str(src), model, batch, steps, samples, ranks)
        if key in self._runs:
            return self._runs[key]
        out = self.work / f"out-{len(self._runs)}.h5"
        cmd = [self.ldb, "backmap", src, "-o", out, "--model", model, "--batch-frames", batch, "--samples", samples,
               "--threads", 1, "--overwrite", "--no-progress"]
        if steps is not None:
            cmd += ["--steps", steps]
        if ranks > 1:
            cmd = [self.mpiexec, "-n", ranks] + cmd
        wall, _ = run(cmd)
        summary = json.loads(Path(f"{out}.summary.json").read_text())
        shard_dir = Path(f"{out}.d")
        files = [out] + (sorted(p for p in shard_dir.glob("*.h5")) if shard_dir.is_dir() else [])
        summary["out_bytes"] = sum(p.stat().st_size for p in files)
        summary["cmd_wall_s"] = wall
        # Outputs are not needed after the figures are taken; keep the work folder small.
        Path(f"{out}.summary.json").unlink()
        out.unlink()
        shutil.rmtree(shard_dir, ignore_errors=True)
        self._runs[key] = summary
        return summary

    def rate_rows(self, bench: str, conf: str, s: dict) -> list:
        """Per-core rates of one backmap summary: the whole run (start-up included) and the compute loop."""
        ranks, threads = s["ranks"], s["threads"]
        cores = ranks * threads
        rf = s["rows"] * s["residues"]  # every sample is a rebuilt frame
        compute = sum(r["compute_s"] for r in s["per_rank"])
        return [
            (bench, conf, "residue_frames_per_s_per_core", rf / s["wall_s"] / cores, "residue-frames/s"),
            (bench, conf, "residue_frames_per_s", rf / s["wall_s"], "residue-frames/s"),
            (bench, conf, "frames_per_s", s["frames"] / s["wall_s"], "frames/s"),
            (bench, conf, "compute_residue_frames_per_s_per_core", rf / max(compute * threads, 1e-9),
             "residue-frames/s"),
            (bench, conf, "peak_rss_mb_max", s["peak_rss_mb_max"], "MB"),
            (bench, conf, "wall_s", s["wall_s"], "s"),
        ]

    @staticmethod
    def conf(model: str, L: int, frames: int, batch: int, steps, samples: int, ranks: int) -> str:
        steps = "model" if steps is None else steps
        return (f"{Path(model).name}|L={L}|frames={frames}|batch={batch}|steps={steps}|samples={samples}"
                f"|ranks={ranks}|threads=1")

    # -- parts --------------------------------------------------------------------------------------------
    def part_throughput(self) -> None:
        c = self.cfg
        _, out = run([sys.executable, HERE / "throughput.py", "--frames", c["throughput_frames"], "--models", "ideal",
                      DEFAULT_MODEL, "--results", self.results])
        print("".join(f"  {line}\n" for line in out.splitlines()), end="", flush=True)
        for cg in ("com", "martini3"):  # the shipped model of each other mapping (issue 19)
            _, out = run([sys.executable, HERE / "throughput.py", "--frames", c["throughput_frames"], "--models",
                          "default", "--cg", cg, "--results", self.results])
            print("".join(f"  {line}\n" for line in out.splitlines()), end="", flush=True)

    def part_sweeps(self) -> None:
        c, rows = self.cfg, []
        L0 = 135
        src = self.synth("example", c["sweep_frames"])
        for b in c["batches"]:
            s = self.backmap(src, batch=b)
            rows += self.rate_rows("sweep_batch", self.conf(DEFAULT_MODEL, L0, c["sweep_frames"], b, None, 1, 1), s)
            print(f"  batch {b}: {rows[-6][3]:,.0f} residue-frames/s per core", flush=True)
        for n in c["steps"]:
            s = self.backmap(src, steps=n)
            rows += self.rate_rows("sweep_steps", self.conf(DEFAULT_MODEL, L0, c["sweep_frames"], 64, n, 1, 1), s)
            print(f"  steps {n}: {rows[-6][3]:,.0f} residue-frames/s per core", flush=True)
        src_s = self.synth("example", c["samples_frames"])
        for n in c["samples"]:
            s = self.backmap(src_s, samples=n)
            rows += self.rate_rows("sweep_samples", self.conf(DEFAULT_MODEL, L0, c["samples_frames"], 64, None, n, 1),
                                   s)
            print(f"  samples {n}: {rows[-6][3]:,.0f} residue-frames/s per core", flush=True)
        src_r = self.synth("example", c["ranks_frames"])
        by_ranks = {}
        for r in c["ranks"]:
            s = self.backmap(src_r, batch=c["ranks_batch"], ranks=r)
            by_ranks[r] = s
            rows += self.rate_rows("sweep_ranks",
                                   self.conf(DEFAULT_MODEL, L0, c["ranks_frames"], c["ranks_batch"], None, 1, r), s)
            print(f"  ranks {r}: {rows[-5][3]:,.0f} residue-frames/s in all", flush=True)
        if 1 in by_ranks and 2 in by_ranks:
            one, two = by_ranks[1], by_ranks[2]
            rows.append(("sweep_ranks", f"{Path(DEFAULT_MODEL).name}|L={L0}|frames={c['ranks_frames']}|2 vs 1 ranks",
                         "speedup", one["wall_s"] / two["wall_s"], "x"))
        for name in c["sizes"]:
            src0 = self.protein(name)
            if src0 is None:
                print(f"  size {name}: skipped ({DATA} not found)", flush=True)
                continue
            L = self._residues(src0)
            frames = max(8, c["size_residue_frames"] // L)
            s = self.backmap(self.synth(name, frames))
            rows += self.rate_rows("sweep_size", self.conf(DEFAULT_MODEL, L, frames, 64, None, 1, 1), s)
            print(f"  {name} ({L} residues): {rows[-6][3]:,.0f} residue-frames/s per core", flush=True)
        name = c["memory_protein"] if self.protein(c["memory_protein"]) else "example"
        L = self._residues(self.protein(name))
        for f in c["memory_frames"]:
            s = self.backmap(self.synth(name, f))
            rows += self.rate_rows("memory_length", self.conf(DEFAULT_MODEL, L, f, 64, None, 1, 1), s)
            print(f"  {f} frames of {L} residues: peak RSS {s['peak_rss_mb_max']:.0f} MB", flush=True)
        self.rows(rows)

    def _residues(self, path: Path) -> int:
        from ldb_hpc.io.cg import CGTrajectory

        if path.suffix == ".h5":
            with CGTrajectory(str(path)) as cg:
                return cg.n_residues
        # A PDB: synth coarsens it; a 1-frame synth file tells its residue count.
        with CGTrajectory(str(self.synth(path.stem, 1))) as cg:
            return cg.n_residues

    def part_write(self) -> None:
        c = self.cfg
        src = self.synth("example", c["write_frames"])
        s = self.backmap(src, model="ideal")
        nbytes = s["out_bytes"]
        write_s = sum(r["write_s"] for r in s["per_rank"])
        conf = f"ideal|L=135|frames={c['write_frames']}|bytes={nbytes}"
        rows = [("write_rate", conf, "backmap_write_MB_per_s", nbytes / max(write_s, 1e-9) / 1e6, "MB/s"),
                ("write_rate", conf, "backmap_write_share_of_wall", write_s / s["wall_s"], "fraction")]
        for label, extra in (("dd", []), ("dd_fsync", ["conv=fsync"])):
            target = self.work / "dd.bin"
            best = float("inf")
            for _ in range(3):
                wall, _ = run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={nbytes}", "iflag=count_bytes",
                               "status=none"] + extra)
                best = min(best, wall)
            target.unlink()
            rows.append(("write_rate", conf, f"{label}_MB_per_s", nbytes / best / 1e6, "MB/s"))
        by = {r[2]: r[3] for r in rows}
        rows.append(("write_rate", conf, "backmap_vs_dd_fsync", by["backmap_write_MB_per_s"] / by["dd_fsync_MB_per_s"],
                     "x"))
        print(f"  {nbytes / 1e6:.1f} MB: backmap writer {by['backmap_write_MB_per_s']:.0f} MB/s, dd "
              f"{by['dd_MB_per_s']:.0f} MB/s, dd conv=fsync {by['dd_fsync_MB_per_s']:.0f} MB/s", flush=True)
        self.rows(rows)

    def part_accuracy(self) -> None:
        c = self.cfg
        if not DATA.is_dir():
            print(f"  skipped: {DATA} not found (set LDB_HPC_SHARED_DATA)", flush=True)
            return
        limit = ["--limit", c["accuracy_limit"]] if c["accuracy_limit"] else []
        script = HERE / "accuracy_casp12.py"
        # PED00151: a disordered ensemble, 60 all-atom models = 60 CA frames; PULCHRA rebuilds one model per call,
        # so it is compared on CASP12, pfam40 and the MD frames only.
        ped = [DATA / "test" / "ped", "--only", "PED00151", "--no-pulchra", "--models", DEFAULT_MODEL]
        jobs = [("casp12", [DATA / "test" / "casp12", "--models", DEFAULT_MODEL, "ideal"]),
                ("pfam40", [DATA / "valid" / "pfam40", "--models", DEFAULT_MODEL, "ideal"]),
                ("PED00151", ped + ["ideal"])]
        for cg in ("com", "martini3"):  # inputs coarsened from the references by `coarsen --cg` (issue 19)
            for name, folder in (("casp12", DATA / "test" / "casp12"), ("pfam40", DATA / "valid" / "pfam40")):
                jobs.append((f"{name} {cg}", [folder, "--models", "default", "--cg", cg, "--no-pulchra"]))
        if c["casp12_samples10"]:
            jobs.append(("casp12 ×10 samples", [DATA / "test" / "casp12", "--models", DEFAULT_MODEL, "--samples", 10,
                                                "--no-pulchra"]))
            jobs.append(("PED00151 ×10 samples", ped + ["--samples", 10]))
            for cg in ("com", "martini3"):
                jobs.append((f"casp12 {cg} ×10 samples", [DATA / "test" / "casp12", "--models", "default", "--cg", cg,
                                                           "--samples", 10, "--no-pulchra"]))
        sets = []
        for name in ("casp12", "pfam40"):
            folder = DATA / ("test" if name == "casp12" else "valid") / name
            n = sum(1 for p in folder.iterdir() if p.suffix in (".pdb", ".cif") or p.name.endswith(".gz"))
            sets.append(("accuracy_set", name, "structures", min(n, c["accuracy_limit"] or n), "structures"))
        self.rows(sets)
        for label, args in jobs:
            t0 = time.perf_counter()
            _, out = run([sys.executable, script, "--data"] + args + limit + ["--results", self.results])
            print(f"  {label}: {time.perf_counter() - t0:.0f} s" + out.rstrip().split("\n\n", 1)[-1].join(["\n", ""]),
                  flush=True)
        self.accuracy_md()
        print(run([sys.executable, HERE / "simulation_ready.py", "--results", self.results] + limit)[1], flush=True)

    def accuracy_md(self) -> None:
        """The lysozyme 1AM7 MD frames: coarsen, backmap (default model, ideal), PULCHRA per frame, evaluate."""
        import mdtraj as md
        from accuracy_casp12 import METRICS, _cli, _evaluate

        folder = DATA / "md" / "lysozyme_1am7"
        xtc, pdb = folder / "1am7_corrected.xtc", folder / "1am7_protein.pdb"
        traj = md.load(str(xtc), top=str(pdb))
        n = traj.n_frames if self.cfg["md_frames"] is None else min(self.cfg["md_frames"], traj.n_frames)
        dataset = "lysozyme_1am7" + ("" if n == traj.n_frames else f" ({n} of {traj.n_frames} frames)")
        tmp = self.work / "md"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        ref = tmp / "ref.h5"
        traj[:n].save_hdf5(str(ref))
        cg = tmp / "ref.cg.h5"
        _cli(["coarsen", str(ref), "-o", str(cg), "--overwrite"])
        L = traj.topology.n_residues
        per, times = {}, {}
        for model in (DEFAULT_MODEL, "ideal"):
            label = f"ldb-hpc --model {model}"
            out = tmp / f"{Path(model).name}.aa.h5"
            t0 = time.perf_counter()
            _cli(["backmap", str(cg), "-o", str(out), "--model", model, "--overwrite", "--no-progress"])
            times[label] = time.perf_counter() - t0
            per[label] = _evaluate(str(out), str(ref), f"{out}.json")
        pulchra = shutil.which("pypulchra") or str(BIN / "pypulchra")
        if os.path.exists(pulchra):
            ca = md.load(str(cg))
            models, elapsed = [], 0.0
            for i in range(n):
                ca_pdb, out = tmp / f"ca-{i}.pdb", tmp / f"pulchra-{i}.pdb"
                ca[i].save_pdb(str(ca_pdb))
                elapsed += run([pulchra, "-i", ca_pdb, "-o", out])[0]
                atoms = [ln for ln in out.read_text().splitlines() if ln.startswith(("ATOM", "HETATM", "TER"))]
                models.append("\n".join([f"MODEL     {i + 1:4d}"] + atoms + ["ENDMDL"]))
            multi = tmp / "pulchra.pdb"
            multi.write_text("\n".join(models) + "\nEND\n")
            times["PULCHRA"] = elapsed
            per["PULCHRA"] = _evaluate(str(multi), str(ref), f"{multi}.json")
        else:
            print("  lysozyme: PULCHRA skipped (pypulchra not installed)", flush=True)
        rows = []
        for label, summary in per.items():
            conf = f"{dataset}|{label}"
            for key, _, unit, scale in METRICS:
                if summary.get(key) is not None:
                    rows.append(("accuracy", conf, key, scale * float(summary[key]), unit))
            rows.append(("accuracy", conf, "wall_time_per_frame", times[label] / n, "s"))
            rows.append(("accuracy", conf, "residues_per_s", n * L / max(times[label], 1e-9), "residues/s"))
            print(f"  {dataset} {label}: RMSD {summary['rmsd']:.3f} Å, clashes<2.0 {summary['clash_2.0']:.1f}, "
                  f"{times[label]:.1f} s", flush=True)
        self.rows(rows)

    def part_startup(self) -> None:
        """One-frame backmap against `import torch` (benchmarks/startup.py; its folder-vs-PULCHRA part is long:
        `make bench-startup`)."""
        _, out = run([sys.executable, HERE / "startup.py", "--parts", "startup", "--results", self.results]
                     + (["--smoke"] if self.smoke else []))
        print("  " + "\n  ".join(out.strip().splitlines()[-3:]), flush=True)

    def part_roofline(self) -> None:
        _, out = run([sys.executable, HERE / "roofline.py", "--results", self.results] + self.cfg["roofline_args"])
        keep = ("flops_total", "bytes_compulsory", "cpu_matmul_gflops_1thread", "floor_cpu_core ", "floor_h100_tf32 ")
        for line in out.splitlines():
            if line.startswith(keep) or any(line.startswith(k.strip() + " ") for k in keep):
                print("  " + " ".join(line.split()), flush=True)

    def part_runtime(self) -> None:
        if self.smoke or os.path.abspath(self.results) != os.path.abspath(RESULTS):
            print("  skipped: bench_runtime.py appends only to the committed benchmarks/results.csv", flush=True)
            return
        run([sys.executable, HERE / "runtime" / "bench_runtime.py", "--work", self.work / "runtime"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (< 2 min); CI runs this")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS, help="run only these parts")
    ap.add_argument("--results", default=None,
                    help="CSV to append to (default: benchmarks/results.csv; "
                         "with --smoke build/bench-smoke/results.csv)")
    ap.add_argument("--out", default=None,
                    help="folder for the report (default: benchmarks/, which also updates README.md and "
                         "docs/ROOFLINE.md; with --smoke build/bench-smoke/, which fills in copies of them)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary folder under build/)")
    ap.add_argument("--no-report", action="store_true", help="only append rows; do not render the report")
    args = ap.parse_args(argv)

    smoke_dir = REPO / "build" / "bench-smoke"
    results = args.results or str(smoke_dir / "results.csv" if args.smoke else RESULTS)
    out = Path(args.out) if args.out else (smoke_dir if args.smoke else HERE)
    Path(results).parent.mkdir(parents=True, exist_ok=True)
    (REPO / "build").mkdir(exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-", dir=REPO / "build"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = SMOKE if args.smoke else FULL
    bench = Bench(cfg, results, work, args.smoke)
    mode = "smoke" if args.smoke else "full"
    load = os.getloadavg()[0]
    print(f"bench ({mode}): results -> {results}; 1-minute load average {load:.2f}"
          + (" (other work shares the cores: rates are low)" if load > 0.5 else ""), flush=True)
    failed, t_all = [], time.perf_counter()
    for part in [p for p in PARTS if p in args.parts]:
        print(f"[{part}]", flush=True)
        t0 = time.perf_counter()
        try:
            getattr(bench, f"part_{part}")()
        except Exception as exc:  # noqa: BLE001 - one failed part must not lose the others' rows
            failed.append(part)
            print(f"  FAILED: {exc}" if isinstance(exc, BenchError) else traceback.format_exc(), flush=True)
        wall = time.perf_counter() - t0
        append_rows([("bench_time", f"{mode}|{part}", "wall_time", wall, "s")], results)
        print(f"[{part}] {wall:.1f} s", flush=True)
    total = time.perf_counter() - t_all
    append_rows([("bench_time", f"{mode}|all parts", "wall_time", total, "s"),
                 ("bench_time", f"{mode}|all parts", "load_average_before", load, "")], results)
    print(f"all parts: {total:.1f} s", flush=True)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_report:
        import report

        out.mkdir(parents=True, exist_ok=True)
        report_args = ["--results", results, "--out", str(out)]
        if out.resolve() != HERE.resolve():  # a smoke / test report fills in copies, never the committed files
            for src, name in ((REPO / "README.md", "README.root.md"), (REPO / "docs" / "ROOFLINE.md", "ROOFLINE.md")):
                if src.exists():
                    shutil.copyfile(src, out / name)
            report_args += ["--readme", str(out / "README.root.md"), "--roofline-doc", str(out / "ROOFLINE.md")]
        report.main(report_args)
    if failed:
        print(f"failed parts: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
