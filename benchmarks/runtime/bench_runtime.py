"""Runtime benchmark of ``ldb-hpc backmap``: peak memory per rank vs trajectory length, and MPI scaling.

One command (``make bench-runtime`` or ``.venv/bin/python benchmarks/runtime/bench_runtime.py``):

1. makes a small protein (the first ``--residues`` residues of examples/example.cg.h5) and two synthetic CG
   trajectories of it with ``ldb-hpc synth``: ``--small`` (2,000) and ``--large`` (50,000) frames, plus a
   ``--scale-frames`` (50,000) frame trajectory of the whole example protein (135 residues);
2. (a) memory: backmaps the two small-protein ones on 1 rank and records every rank's peak RSS
   (``getrusage`` in the rank itself, after the command finished: imports, model, buffers, everything) —
   it must not grow with the length;
3. (b) scaling: backmaps the 135-residue one with ``mpiexec -n 1`` and ``-n 2`` (1 thread per rank, so that
   ranks are what scales) and records frames/s over the whole command's wall time (start-up included) and,
   when the run summary JSON exists, the runtime's own frames/s;
4. appends the figures to benchmarks/results.csv (long format, append only) and rewrites
   benchmarks/runtime/README.md with them.

With a backmap that has no MPI sharding yet (no ``--io`` option), the 2-rank runs are skipped (two serial
processes would write the same file) and the README says so. Work files go to build/bench-runtime.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from results_csv import RESULTS, append_rows, git_sha  # noqa: E402
from results_csv import machine as machine_name  # noqa: E402

README = Path(__file__).resolve().parent / "README.md"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

# Runs `ldb-hpc ARGS` in this rank and writes the rank's peak RSS (MiB) as JSON into $LDB_BENCH_RSS_DIR.
RSS_WRAPPER = """
import json, os, resource, sys
from ldb_hpc.cli.main import main
code = main(sys.argv[1:])
rank = next((int(os.environ[v]) for v in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID") if v in os.environ), 0)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
with open(os.path.join(os.environ["LDB_BENCH_RSS_DIR"], f"rank-{rank}.json"), "w") as fh:
    json.dump({"rank": rank, "peak_rss_mib": rss, "exit": code}, fh)
sys.exit(code)
"""


def has_mpi_backmap() -> bool:
    """True when backmap shards frames over MPI ranks (its parser knows ``--io``)."""
    from ldb_hpc.cli.main import build_parser

    try:
        build_parser().parse_args(["backmap", "x.h5", "--io", "shards"])
    except SystemExit:
        return False
    return True


def make_small_protein(path: Path, residues: int) -> None:
    """A 1-frame CG file of the first ``residues`` residues of the bundled example."""
    from ldb_hpc.io.cg import CGTrajectory, CGWriter

    with CGTrajectory(str(REPO / "examples" / "example.cg.h5")) as cg:
        n = min(residues, cg.n_residues)
        frame = cg.read(0, 1)
        sub = cg.residues.select(slice(0, n))
    with CGWriter(str(path), sub, overwrite=True, title="benchmark protein") as w:
        w.append(frame.ca[:, :n], frame.time)


def run(cmd: list, env: dict | None = None) -> float:
    """Run ``cmd``; return its wall time in s; stop with the command's output when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return wall


def backmap(mpiexec: str, ranks: int, src: Path, out: Path, work: Path, threads: int, batch: int) -> dict:
    """One ``mpiexec -n RANKS`` backmap; returns wall_s, per-rank peak RSS (MiB) and the run summary (or {})."""
    rss_dir = work / f"rss-{out.stem}"
    shutil.rmtree(rss_dir, ignore_errors=True)
    rss_dir.mkdir(parents=True)
    env = dict(os.environ, LDB_BENCH_RSS_DIR=str(rss_dir), PYTHONPATH=str(REPO))
    cmd = [mpiexec, "-n", ranks, sys.executable, "-c", RSS_WRAPPER, "backmap", src, "-o", out, "--model", "ideal",
           "--overwrite", "--no-progress", "--threads", threads, "--batch-frames", batch]
    wall = run(cmd, env)
    rss = sorted((json.loads(p.read_text()) for p in rss_dir.glob("rank-*.json")), key=lambda r: r["rank"])
    if len(rss) != ranks:
        sys.exit(f"expected {ranks} rank reports in {rss_dir}, got {len(rss)}")
    summary_path = Path(f"{out}.summary.json")
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {"wall_s": wall, "rss": [r["peak_rss_mib"] for r in rss], "summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--residues", type=int, default=24, help="residues of the small protein (default 24)")
    ap.add_argument("--small", type=int, default=2000, help="frames of the short trajectory (default 2000)")
    ap.add_argument("--large", type=int, default=50000, help="frames of the long trajectory (default 50000)")
    ap.add_argument("--scale-frames", type=int, default=50000,
                    help="frames of the 135-residue trajectory for 1 vs 2 ranks (default 50000)")
    ap.add_argument("--batch-frames", type=int, default=64, help="backmap --batch-frames (default 64)")
    ap.add_argument("--mpiexec", default=os.environ.get("LDB_HPC_MPIEXEC", str(BIN / "mpiexec")),
                    help="MPI launcher (default: this venv's mpiexec)")
    ap.add_argument("--work", default=str(REPO / "build" / "bench-runtime"), help="folder for the files made")
    ap.add_argument("--no-csv", action="store_true", help="do not append to benchmarks/results.csv")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]  # other work on the machine skews the scaling figure: say so
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ldb = BIN / "ldb-hpc"
    ref = work / f"protein-{args.residues}.cg.h5"
    make_small_protein(ref, args.residues)
    full = REPO / "examples" / "example.cg.h5"
    inputs = {}
    for key, frames, src in (("small", args.small, ref), ("large", args.large, ref),
                             ("scale", args.scale_frames, full)):
        path = work / f"synth-{key}-{frames}.h5"
        if not path.exists():
            print(f"synth {frames} frames from {src.name} ...", flush=True)
            run([ldb, "synth", "--frames", frames, "--from", src, "-o", path, "--steps", 2, "--seed", 1,
                 "--chunk", 5000])
        inputs[key] = path
    mpi = has_mpi_backmap()
    print(f"MPI backmap: {'yes' if mpi else 'no (2-rank runs skipped)'}; launcher {args.mpiexec}", flush=True)

    results = {}
    plan = [("small-1", "small", args.small, 1, args.residues), ("large-1", "large", args.large, 1, args.residues),
            ("scale-1", "scale", args.scale_frames, 1, 135)]
    if mpi:
        plan.append(("scale-2", "scale", args.scale_frames, 2, 135))
    for name, key, frames, ranks, residues in plan:
        print(f"backmap {frames} frames of {residues} residues on {ranks} rank(s) ...", flush=True)
        r = backmap(args.mpiexec, ranks, inputs[key], work / f"out-{name}.h5", work, 1, args.batch_frames)
        r["frames"], r["ranks"], r["residues"] = frames, ranks, residues
        r["fps"] = frames / r["wall_s"]
        r["fps_runtime"] = r["summary"].get("frames_per_s")
        results[name] = r
        print(f"  {r['wall_s']:.1f} s, {r['fps']:.1f} frames/s, peak RSS per rank "
              f"{', '.join(f'{x:.0f}' for x in r['rss'])} MiB", flush=True)

    base = f"backmap --model ideal|batch {args.batch_frames}|1 thread/rank"
    rows = []
    for name, r in results.items():
        conf = f"{base}|{r['residues']} res|{r['frames']} frames|{r['ranks']} rank(s)"
        rows.append(("runtime", conf, "peak_rss_per_rank_max", max(r["rss"]), "MiB"))
        rows.append(("runtime", conf, "frames_per_s_wall", r["fps"], "frames/s"))
        if r["fps_runtime"]:
            rows.append(("runtime", conf, "frames_per_s_runtime", r["fps_runtime"], "frames/s"))
    small, large = results["small-1"], results["large-1"]
    growth = 100.0 * (max(large["rss"]) / max(small["rss"]) - 1.0)
    rows.append(("runtime", f"{base}|{args.residues} res|{args.large} vs {args.small} frames|1 rank",
                 "peak_rss_growth", growth, "%"))
    speedup = None
    if "scale-2" in results:
        one, two = results["scale-1"], results["scale-2"]
        conf = f"{base}|135 res|{args.scale_frames} frames|2 vs 1 ranks"
        speedup = two["fps"] / one["fps"]
        rows.append(("runtime", conf, "speedup_wall", speedup, "x"))
        if two["fps_runtime"] and one["fps_runtime"]:
            rows.append(("runtime", conf, "speedup_runtime", two["fps_runtime"] / one["fps_runtime"], "x"))
    if args.no_csv:
        sha, machine, date = git_sha(), machine_name(), datetime.date.today().isoformat()
    else:
        sha, machine, date = append_rows(rows, RESULTS)
    write_readme(args, results, growth, speedup, mpi, sha, machine, date, load_before)
    print(f"peak RSS growth {args.small} -> {args.large} frames: {growth:+.1f} %"
          + (f"; 2 ranks / 1 rank: {speedup:.2f}x" if speedup else ""))
    print(f"wrote {README.relative_to(REPO)}" + ("" if args.no_csv else f" and appended {len(rows)} rows to "
                                                  f"{RESULTS.relative_to(REPO)}"))
    return 0


def write_readme(args, results, growth, speedup, mpi, sha, machine, date, load_before) -> None:
    lines = [
        "# Runtime benchmark: memory per rank and MPI scaling of `ldb-hpc backmap`",
        "",
        "Made by `make bench-runtime` (= `.venv/bin/python benchmarks/runtime/bench_runtime.py`; the docstring "
        "of that script says exactly what it does). Figures of the last run; every run also appends its rows "
        "to `benchmarks/results.csv` (benchmark `runtime`).",
        "",
        f"- Machine: {machine}; git {sha}; {date}; 1-minute load average before the run {load_before:.2f} "
        "(anything well above 0 means other work shared the cores and the frames/s are low).",
        f"- Input: `ldb-hpc synth` trajectories of a {args.residues}-residue protein (the first residues of "
        f"examples/example.cg.h5), {args.small:,} and {args.large:,} frames (memory), and of the whole "
        f"135-residue example protein, {args.scale_frames:,} frames (scaling); `--model ideal`, "
        f"`--batch-frames {args.batch_frames}`, 1 thread per rank, launched with `mpiexec -n R`.",
        "- Peak RSS: `getrusage(RUSAGE_SELF).ru_maxrss` of each rank after the command (imports, model and "
        "buffers included). Frames/s: frames ÷ wall time of the whole command (start-up included); "
        "\"runtime\" is the run summary's own figure (compute loop only) where the runtime writes one.",
        "",
        "| residues | frames | ranks | wall (s) | frames/s (wall) | frames/s (runtime) | peak RSS per rank (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results.values():
        fr = f"{r['fps_runtime']:.1f}" if r["fps_runtime"] else "–"
        lines.append(f"| {r['residues']} | {r['frames']:,} | {r['ranks']} | {r['wall_s']:.1f} | "
                     f"{r['fps']:.1f} | {fr} | {', '.join(f'{x:.0f}' for x in r['rss'])} |")
    lines += [
        "",
        f"- **Memory vs length**: peak RSS at {args.large:,} frames is {growth:+.1f} % of that at "
        f"{args.small:,} frames (acceptance: within ±10 %).",
    ]
    if speedup is not None:
        lines.append(f"- **Scaling**: 2 ranks give {speedup:.2f}× the frames/s of 1 rank on this machine "
                     f"(135 residues, {args.scale_frames:,} frames, wall time; acceptance: ≥ 1.7× on 2 cores).")
    else:
        lines.append("- **Scaling**: not measured: this backmap has no MPI sharding yet (`--io`); rerun the "
                     "same command once it has.")
    README.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
