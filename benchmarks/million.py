#!/usr/bin/env python
"""`make bench-million`: a million frames, measured (issue 11 item 7).

What it runs (full size; ``--smoke`` is the same at 1/250 of the frames and ``--batch-frames 8``, into
build/bench-million-smoke/, in about a minute):

1. a small protein: the first ``--residues`` (24) residues of examples/example.cg.h5 (as bench_runtime.py);
2. ``ldb-hpc synth --frames F --from protein --seed 1 --steps 5 --chunk 10000`` for F = 1,000,000 and
   100,000 frames, timed, with the synth process's RSS sampled (synth streams: its memory must not grow either);
3. ``mpiexec -n 2 ldb-hpc backmap IN -o OUT --model ideal --threads 1 --batch-frames 64 --no-progress`` on the
   1,000,000-frame trajectory and on the 10× smaller one (100,000), and the same without ``--model`` (the
   learned default model) on the same two (``--models`` picks which of the two models run);
4. while each command runs, every ``--interval`` (1 s) this script reads /proc/<pid>/status (VmRSS, VmHWM) of
   each rank process (found under the launcher, rank from PMI_RANK) and the rank's shard log
   (OUT.h5.d/shard-0000R.log, one line per finished chunk), so that every RSS sample is tied to the frames
   that rank had finished; it also reads /proc/stat and the CPU time of its own process tree, to record how
   many cores *other* work used during the run;
5. ``ldb-hpc verify OUT --json`` on each output, then the output's size (master + shard files, apparent and on
   disk), then deletes it (``--keep`` keeps it); the run summary's ``close_contacts.rows`` (rows with a heavy-atom
   pair < 1.2 Å) is recorded as ``flagged_rows``, and each rank's RSS at every tenth of its frames (with the time
   it got there) as ``rss_mib_rankR_pNN`` / ``t_s_rankR_pNN``, which report.py plots;
6. the no-growth check, per model: RSS "start" = the highest sample while the rank had done ≤ 10 % of its
   frames, "end" = the highest sample in its last 10 %; VmHWM at 10 % vs the rank's peak (getrusage, run
   summary) at the end; and peak RSS of the big run vs the 10× smaller one. Pass when every one of these grows
   by less than ``--tolerance`` (10 %). The output is what grows: its bytes per extra row between the two
   runs and its fixed part are recorded;
7. appends the rows (benchmark ``million``) to benchmarks/results.csv and renders benchmarks/README.md with
   benchmarks/report.py (``--no-report`` skips it).

The learned model at a million frames takes about an hour of one core (24 M residue-frames). Each finished step
(a synth input, a backmap with its verify) leaves its record in the work folder (``rec-*.json``; a synth input
is kept until every backmap that reads it is done); ``--resume`` takes those records instead of running the step
again, so a run stopped part way goes on from the last finished step. The rows are appended only at the end.

``--ldb-hpc PATH`` measures another ``ldb-hpc`` command (its basename must be ``ldb-hpc``: that is how the rank
processes are found), e.g. a wrapper that imports a clean checkout of the commit measured.

Before the runs it checks the free disk space of the work folder (the 1M-frame output is ~2.2 GB; it stops if
there is less than twice the estimate) and, with ``--wait-quiet MIN``, polls the 1-minute load average every
60 s for up to MIN minutes until it has stayed below 1.0 for a minute (it runs anyway after that and records
the load). Every run records the load average before it and the mean number of cores other processes used
during it (``others_cores``): rates measured next to other work are low.

    python benchmarks/million.py [--smoke] [--frames 1000000] [--learned-frames 1000000] [--ratio 10]
                                 [--models ideal,default] [--residues 24] [--ranks 2] [--work DIR]
                                 [--results PATH] [--keep] [--resume] [--wait-quiet MIN] [--no-report]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "runtime"))
from bench_runtime import make_small_protein  # noqa: E402
from results_csv import RESULTS, append_rows  # noqa: E402

BIN = Path(sys.executable).parent
BENCH = "million"
FULL = {"frames": 1_000_000, "learned_frames": 1_000_000, "interval": 1.0, "batch_frames": 64}
SMOKE = {"frames": 4000, "learned_frames": 4000, "interval": 0.2, "batch_frames": 8}
MODELS = {"ideal": "ideal", "default": None}  # --models name → backmap --model (None: the learned default)
SYNTH_STEPS, SYNTH_CHUNK = 5, 10000
WINDOW = 0.10  # "start" = first 10 % of a rank's frames, "end" = last 10 %
HZ = os.sysconf("SC_CLK_TCK")


# -- /proc sampling -------------------------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(root: int) -> list[int]:
    """``root`` and all its descendants (pids alive now)."""
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of ``pid`` (clock ticks; 0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in f[11:15])
    except (OSError, IndexError, ValueError):
        return 0


def busy_ticks() -> int:
    """Busy clock ticks of all CPUs together (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return sum(v[:8]) - v[3] - v[4]  # user nice system idle iowait irq softirq steal (guest is inside user)


def ldb_rank(pid: int) -> int | None:
    """The rank of an ``ldb-hpc`` process (PMI_RANK, 0 without a launcher), None for any other process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
        if not any(os.path.basename(a) == b"ldb-hpc" for a in argv[:2]):
            return None
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
    except OSError:
        return None
    return int(env.get(b"PMI_RANK", env.get(b"OMPI_COMM_WORLD_RANK", b"0")))


def status_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of ``pid`` in MiB (the unit of the run summary's peak_rss_mb), None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            kb = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in fh if ln.startswith(("VmRSS", "VmHWM")))}
        return kb["VmRSS"] / 1024.0, kb["VmHWM"] / 1024.0
    except (OSError, KeyError, ValueError):
        return None


class ShardProgress:
    """Frames finished per shard, read incrementally from OUT.h5.d/shard-NNNNN.log (one JSON line per chunk)."""

    def __init__(self, out: Path):
        self.dir = Path(f"{out}.d")
        self.pos: dict[int, int] = {}
        self.done: dict[int, int] = {}

    def frames(self, shard: int) -> int:
        path = self.dir / f"shard-{shard:05d}.log"
        try:
            with open(path, "rb") as fh:
                fh.seek(self.pos.get(shard, 0))
                data = fh.read()
        except OSError:
            return self.done.get(shard, 0)
        end = data.rfind(b"\n") + 1  # only complete lines
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
                self.done[shard] = self.done.get(shard, 0) + int(rec["stop"]) - int(rec["start"])
            except (ValueError, KeyError):
                pass
        self.pos[shard] = self.pos.get(shard, 0) + end
        return self.done.get(shard, 0)


class Sampler(threading.Thread):
    """Samples every ``interval`` s the RSS of each ldb-hpc process under ``root`` (with the frames its shard
    has finished, when ``out`` is a backmap output) and the CPU used by other processes on the machine."""

    def __init__(self, root: int, interval: float, out: Path | None = None):
        super().__init__(daemon=True)
        self.root, self.interval, self.out = root, interval, out
        self.samples: list[dict] = []  # {"t", "rank", "rss_mb", "hwm_mb", "frames_done"}
        self.cpu: list[tuple[float, int, int]] = []  # (t, machine busy ticks, ticks of our process tree)
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        progress = ShardProgress(self.out) if self.out else None
        while True:
            t = time.monotonic() - self.t0
            pids = tree(self.root)
            self.cpu.append((t, busy_ticks(), sum(cpu_ticks(p) for p in pids)))
            for pid in pids:
                rank = ldb_rank(pid)
                st = status_mb(pid) if rank is not None else None
                if st is None:
                    continue
                done = progress.frames(rank) if progress else None
                self.samples.append({"t": t, "rank": rank, "rss_mb": st[0], "hwm_mb": st[1], "frames_done": done})
            if self.stop.wait(self.interval):
                return

    def others_cores(self) -> float | None:
        """Mean number of cores busy with processes outside this benchmark's tree over the sampled span."""
        if len(self.cpu) < 2:
            return None
        (t0, b0, o0), (t1, b1, o1) = self.cpu[0], self.cpu[-1]
        return max(0.0, (b1 - b0) - (o1 - o0)) / HZ / max(t1 - t0, 1e-9)


def run_sampled(cmd: list, interval: float, log: Path, out: Path | None = None) -> tuple[float, Sampler]:
    """Run ``cmd`` (output into ``log``) while sampling it; returns (wall s, sampler). Exits on failure."""
    cmd = [str(c) for c in cmd]
    sampler = Sampler(os.getpid(), interval, out)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
        sampler.start()
        code = proc.wait()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    if code != 0:
        sys.exit(f"failed ({code}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return wall, sampler


# -- the no-growth check (pure functions: tests/test_bench_million.py) ------------------------------------------
def rss_start_end(samples: list[dict], rank_frames: int, window: float = WINDOW) -> dict:
    """One rank's samples → RSS at the start and at the end of its work.

    start_mb: the highest VmRSS while the rank had finished ≤ ``window`` of its ``rank_frames`` (after its
    first chunk, so imports and model load are over); end_mb: the highest VmRSS once it had finished
    ≥ 1 - ``window``; hwm_start_mb: VmHWM (peak so far) at the last start-window sample. A window without a
    sample (very short runs) falls back to the nearest sample in time."""
    s = sorted((x for x in samples if x.get("frames_done") is not None), key=lambda x: x["t"])
    if not s:
        raise ValueError("no samples with progress")
    lo = [x for x in s if 0 < x["frames_done"] <= window * rank_frames]
    hi = [x for x in s if x["frames_done"] >= (1 - window) * rank_frames]
    if not lo:  # nearest: the first sample after the first chunk, else the first sample
        lo = [next((x for x in s if x["frames_done"] > 0), s[0])]
    if not hi:
        hi = [s[-1]]
    return {"start_mb": max(x["rss_mb"] for x in lo), "end_mb": max(x["rss_mb"] for x in hi),
            "hwm_start_mb": lo[-1]["hwm_mb"], "n_start": len(lo), "n_end": len(hi), "n": len(s)}


def growth_pct(before: float, after: float) -> float:
    return 100.0 * (after / before - 1.0)


def no_growth(big: dict, small: dict, tolerance: float = 10.0) -> dict:
    """The memory check for one model: ``big`` and ``small`` (fewer frames) are run records with ``per_rank``
    ({"start_mb", "end_mb", "hwm_start_mb", "peak_mb"} per rank). Returns each growth in % (worst rank) and
    ``pass``: all of them below ``tolerance`` %."""
    ranks = big["per_rank"]
    g = {
        "rss_start_to_end_pct": max(growth_pct(r["start_mb"], r["end_mb"]) for r in ranks),
        "hwm_start_to_peak_pct": max(growth_pct(r["hwm_start_mb"], r["peak_mb"]) for r in ranks),
        "peak_vs_small_pct": growth_pct(max(r["peak_mb"] for r in small["per_rank"]), max(r["peak_mb"] for r in ranks)),
    }
    return {**g, "pass": all(v < tolerance for v in g.values())}


def rss_deciles(samples: list[dict], rank_frames: int, parts: int = 10) -> list[tuple[int, float, float]]:
    """One rank's samples → [(percent, highest VmRSS MiB, time s of the first sample)] for each tenth of its
    frames (the samples with (p-1)/10 < frames_done/rank_frames ≤ p/10, p = 1..10; 0 %: before its first
    chunk); a tenth without a sample is left out. The RSS-over-time curve of the report."""
    out = []
    for p in range(parts + 1):
        lo, hi = (p - 1) / parts * rank_frames, p / parts * rank_frames
        s = [x for x in samples if x.get("frames_done") is not None
             and (x["frames_done"] == 0 if p == 0 else lo < x["frames_done"] <= hi)]
        if s:
            out.append((100 * p // parts, max(x["rss_mb"] for x in s), min(x["t"] for x in s)))
    return out


def output_growth(big: dict, small: dict) -> dict:
    """What the output costs: bytes per extra row between the two runs (the output's only growth) and the fixed
    part (master, topology, run folder) that is there at any length."""
    per_row = (big["out_bytes"] - small["out_bytes"]) / max(big["rows"] - small["rows"], 1)
    return {"bytes_per_row_marginal": per_row, "out_fixed_bytes": small["out_bytes"] - per_row * small["rows"]}


# -- runs -------------------------------------------------------------------------------------------------------
def output_size(out: Path) -> tuple[int, int]:
    """(apparent bytes of the master + shard .h5 files, bytes on disk of everything the run wrote)."""
    folder = Path(f"{out}.d")
    h5 = [out] + sorted(folder.glob("*.h5"))
    every = [out, Path(f"{out}.summary.json")] + sorted(p for p in folder.iterdir() if p.is_file())
    return sum(p.stat().st_size for p in h5), sum(p.stat().st_blocks * 512 for p in every if p.exists())


def remove_output(out: Path) -> None:
    shutil.rmtree(Path(f"{out}.d"), ignore_errors=True)
    for p in (out, Path(f"{out}.summary.json"), out.with_suffix(".cmd.log")):
        p.unlink(missing_ok=True)


def backmap(args, src: Path, frames: int, model: str | None, work: Path) -> dict:
    """One sampled ``mpiexec -n R ldb-hpc backmap`` + verify; returns its record (figures, per-rank RSS)."""
    label = model or "default"
    out = work / f"out-{label}-{frames}.h5"
    remove_output(out)
    cmd = ([args.mpiexec, "-n", args.ranks, args.ldb_hpc, "backmap", src, "-o", out]
           + (["--model", model] if model else [])
           + ["--threads", 1, "--batch-frames", args.batch_frames, "--no-progress", "--overwrite"])
    load = os.getloadavg()[0]
    print(f"backmap {frames:,} frames, model {label}, {args.ranks} ranks (load {load:.2f}) ...", flush=True)
    wall, sampler = run_sampled(cmd, args.interval, out.with_suffix(".cmd.log"), out)
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    t0 = time.perf_counter()
    proc = subprocess.run([args.ldb_hpc, "verify", out, "--json"], capture_output=True, text=True)
    verify_s = time.perf_counter() - t0
    report = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {"state": proc.stdout.strip()}
    apparent, disk = output_size(out)
    per_rank = []
    for r in summary["per_rank"]:
        rank = r["rank"]
        mine = [s for s in sampler.samples if s["rank"] == rank]
        if not mine:
            sys.exit(f"no RSS samples of rank {rank}: is the launcher's rank variable PMI_RANK?")
        se = rss_start_end(mine, r["frames"])
        per_rank.append({"rank": rank, "frames": r["frames"], **se, "peak_mb": r["peak_rss_mb"],
                         "hwm_last_mb": max(s["hwm_mb"] for s in mine),
                         "deciles": rss_deciles(mine, r["frames"])})
    rec = {"model": summary["model"]["name"], "label": label, "frames": frames, "rows": summary["rows"],
           "residues": summary["residues"], "ranks": summary["ranks"], "wall_s": wall,
           "runtime_wall_s": summary["wall_s"], "rf_per_s": summary["rows"] * summary["residues"] / wall,
           "per_rank": per_rank, "out_bytes": apparent, "out_disk_bytes": disk,
           "bytes_per_row": apparent / summary["rows"], "verify_exit": proc.returncode,
           "verify_state": report.get("state"), "verify_s": verify_s, "load_before": load,
           "others_cores": sampler.others_cores(), "n_samples": len(sampler.samples),
           "flagged_rows": int(summary.get("close_contacts", {}).get("rows", -1))}
    if args.keep:
        (work / f"rss-{label}-{frames}.json").write_text(json.dumps(sampler.samples))
    else:
        remove_output(out)
    rss = ", ".join(f"rank {p['rank']}: {p['start_mb']:.0f} → {p['end_mb']:.0f} MiB (peak {p['peak_mb']:.0f})"
                    for p in per_rank)
    print(f"  {wall:.1f} s, {rec['rf_per_s']:,.0f} residue-frames/s; RSS start → end {rss}; output "
          f"{apparent / 1e9:.3f} GB; verify: {rec['verify_state']} (exit {proc.returncode}, {verify_s:.1f} s); "
          f"{rec['flagged_rows']} rows flagged; other work {rec['others_cores'] or 0:.2f} cores", flush=True)
    return rec


def synth(args, protein: Path, frames: int, work: Path) -> dict:
    path = work / f"synth-{frames}.h5"
    cmd = [args.ldb_hpc, "synth", "--frames", frames, "--from", protein, "-o", path, "--seed", 1,
           "--steps", SYNTH_STEPS, "--chunk", SYNTH_CHUNK, "--overwrite"]
    print(f"synth {frames:,} frames ...", flush=True)
    wall, sampler = run_sampled(cmd, args.interval, path.with_suffix(".cmd.log"))
    path.with_suffix(".cmd.log").unlink()
    peak = max((s["hwm_mb"] for s in sampler.samples), default=float("nan"))
    rec = {"path": path, "frames": frames, "wall_s": wall, "bytes": path.stat().st_size, "peak_mb": peak,
           "others_cores": sampler.others_cores()}
    print(f"  {wall:.1f} s, {frames / wall:,.0f} frames/s, {rec['bytes'] / 1e6:.0f} MB, peak RSS {peak:.0f} MiB",
          flush=True)
    return rec


def wait_quiet(minutes: float, threshold: float = 1.0, poll: float = 60.0) -> tuple[bool, float]:
    """Poll the 1-minute load average every ``poll`` s until two polls in a row are below ``threshold`` (quiet
    for a minute) or ``minutes`` pass; returns (quiet, seconds waited)."""
    t0, below = time.monotonic(), 0
    while True:
        load = os.getloadavg()[0]
        below = below + 1 if load < threshold else 0
        waited = time.monotonic() - t0
        print(f"  load {load:.2f} after {waited:.0f} s" + (" (quiet)" if below >= 2 else ""), flush=True)
        if below >= 2:
            return True, waited
        if waited + poll > minutes * 60:
            return False, waited
        time.sleep(poll)


def conf(rec: dict, batch: int) -> str:
    return f"{rec['model']}|L={rec['residues']}|frames={rec['frames']}|ranks={rec['ranks']}|batch={batch}|threads=1"


def rows_of(rec: dict, batch: int) -> list:
    c = conf(rec, batch)
    rows = [(BENCH, c, "wall_s", rec["wall_s"], "s"), (BENCH, c, "runtime_wall_s", rec["runtime_wall_s"], "s"),
            (BENCH, c, "residue_frames_per_s", rec["rf_per_s"], "residue-frames/s"),
            (BENCH, c, "residue_frames_per_s_per_core", rec["rf_per_s"] / rec["ranks"], "residue-frames/s"),
            (BENCH, c, "out_bytes", rec["out_bytes"], "B"), (BENCH, c, "out_disk_bytes", rec["out_disk_bytes"], "B"),
            (BENCH, c, "bytes_per_row", rec["bytes_per_row"], "B"),
            (BENCH, c, "verify_ok", float(rec["verify_exit"] == 0 and rec["verify_state"] == "complete"), "bool"),
            (BENCH, c, "verify_s", rec["verify_s"], "s"), (BENCH, c, "load_before", rec["load_before"], ""),
            (BENCH, c, "rss_samples", rec["n_samples"], "samples"),
            (BENCH, c, "flagged_rows", rec["flagged_rows"], "rows")]
    if rec["others_cores"] is not None:
        rows.append((BENCH, c, "others_cores", rec["others_cores"], "cores"))
    for p in rec["per_rank"]:
        r = p["rank"]
        rows += [(BENCH, c, f"rss_start_mib_rank{r}", p["start_mb"], "MiB"),
                 (BENCH, c, f"rss_end_mib_rank{r}", p["end_mb"], "MiB"),
                 (BENCH, c, f"hwm_start_mib_rank{r}", p["hwm_start_mb"], "MiB"),
                 (BENCH, c, f"peak_rss_mib_rank{r}", p["peak_mb"], "MiB")]
        for pct, rss, t in p.get("deciles", []):
            rows += [(BENCH, c, f"rss_mib_rank{r}_p{pct:03d}", rss, "MiB"),
                     (BENCH, c, f"t_s_rank{r}_p{pct:03d}", t, "s")]
    return rows


def recorded(work: Path, name: str, step):
    """The record of one finished step: read from ``work/rec-NAME.json`` when ``step`` is None (None if there is
    none), else ``step()``'s record, written there first (paths as strings)."""
    path = work / f"rec-{name}.json"
    if step is None:
        return json.loads(path.read_text()) if path.exists() else None
    rec = step()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in rec.items()}))
    os.replace(tmp, path)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="1/250 of the frames, batch 8, into build/bench-million-smoke")
    ap.add_argument("--frames", type=int, help="frames of the --model ideal run (default 1,000,000)")
    ap.add_argument("--learned-frames", type=int, help="frames of the default-model run (default 1,000,000)")
    ap.add_argument("--models", default="ideal,default",
                    help="which backmap models run, comma-separated: ideal, default (the learned model); "
                         "default both")
    ap.add_argument("--ratio", type=int, default=10, help="the smaller comparison runs have frames / RATIO (10)")
    ap.add_argument("--residues", type=int, default=24, help="residues of the protein (default 24)")
    ap.add_argument("--ranks", type=int, default=2, help="MPI ranks (default 2)")
    ap.add_argument("--batch-frames", type=int, help="backmap --batch-frames (default 64; 8 with --smoke)")
    ap.add_argument("--interval", type=float, help="RSS sampling interval, s (default 1; 0.2 with --smoke)")
    ap.add_argument("--tolerance", type=float, default=10.0, help="allowed growth, %% (default 10)")
    ap.add_argument("--mpiexec", default=os.environ.get("LDB_HPC_MPIEXEC", str(BIN / "mpiexec")))
    ap.add_argument("--ldb-hpc", default=str(BIN / "ldb-hpc"),
                    help="the ldb-hpc command measured (default this venv's; a script named ldb-hpc that imports "
                         "another checkout pins the code measured while the working tree changes)")
    ap.add_argument("--work", help="work folder (default build/bench-million[-smoke]); outputs are deleted")
    ap.add_argument("--results", help="CSV to append to (default benchmarks/results.csv; "
                                      "with --smoke build/bench-million-smoke/results.csv)")
    ap.add_argument("--out", help="folder of the rendered report (default benchmarks/; with --smoke the "
                                  "smoke folder)")
    ap.add_argument("--keep", action="store_true", help="keep the outputs and the RSS samples (JSON)")
    ap.add_argument("--resume", action="store_true",
                    help="take the records of the steps a stopped run finished (WORK/rec-*.json) and run the rest")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="MIN",
                    help="first wait up to MIN minutes for a 1-minute load average below 1.0 for a minute")
    ap.add_argument("--no-report", action="store_true", help="only append rows")
    args = ap.parse_args(argv)
    size = SMOKE if args.smoke else FULL
    args.frames = args.frames or size["frames"]
    args.learned_frames = args.learned_frames or size["learned_frames"]
    args.interval = args.interval or size["interval"]
    args.batch_frames = args.batch_frames or size["batch_frames"]
    smoke_dir = REPO / "build" / "bench-million-smoke"
    work = Path(args.work or (smoke_dir if args.smoke else REPO / "build" / "bench-million"))
    results = Path(args.results or (smoke_dir / "results.csv" if args.smoke else RESULTS))
    out_dir = Path(args.out or (smoke_dir if args.smoke else HERE))
    work.mkdir(parents=True, exist_ok=True)
    results.parent.mkdir(parents=True, exist_ok=True)

    quiet_rows = []
    if args.wait_quiet > 0:
        print(f"waiting up to {args.wait_quiet:g} min for a quiet machine ...", flush=True)
        quiet, waited = wait_quiet(args.wait_quiet)
        quiet_rows = [(BENCH, "machine", "quiet_before", float(quiet), "bool"),
                      (BENCH, "machine", "waited_for_quiet_s", waited, "s")]
        if not quiet:
            print("  never quiet: running anyway (recorded as quiet_before = 0)", flush=True)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        sys.exit(f"--models takes a comma-separated list of {', '.join(MODELS)}, got {args.models!r}")
    if not args.resume:
        for old in work.glob("rec-*.json"):
            old.unlink()
    t_all = time.perf_counter()
    protein = work / f"protein-{args.residues}.cg.h5"
    make_small_protein(protein, args.residues)
    want = {"ideal": args.frames, "default": args.learned_frames}
    plan = [(MODELS[m], f) for m in models for f in (want[m] // args.ratio, want[m])]
    sizes = sorted({f for _, f in plan}, reverse=True)
    inputs, recs = {}, {}
    for model, frames in plan:
        rec = recorded(work, f"{model or 'default'}-{frames}", None) if args.resume else None
        if rec is not None:
            print(f"backmap {frames:,} frames, model {model or 'default'}: taken from the record of a previous run",
                  flush=True)
            recs[(model, frames)] = rec
            continue
        if frames not in inputs:
            old = recorded(work, f"synth-{frames}", None) if args.resume else None
            if old is not None and Path(old["path"]).exists():
                print(f"synth {frames:,} frames: taken from the record of a previous run", flush=True)
                inputs[frames] = {**old, "path": Path(old["path"])}
            else:
                inputs[frames] = recorded(work, f"synth-{frames}", lambda f=frames: synth(args, protein, f, work))
        if (model, frames // args.ratio) in recs:  # a big output: is there room for it?
            est = recs[(model, frames // args.ratio)]["bytes_per_row"] * frames
            free = shutil.disk_usage(work).free
            print(f"disk: {free / 1e9:.1f} GB free in {work}, the output needs ~{est / 1e9:.2f} GB", flush=True)
            if free < 2 * est:
                sys.exit(f"not enough disk space in {work}: {free / 1e9:.1f} GB free, need 2 × {est / 1e9:.2f} GB")
        recs[(model, frames)] = recorded(work, f"{model or 'default'}-{frames}",
                                         lambda m=model, f=frames: backmap(args, inputs[f]["path"], f, m, work))
    for f in sizes:  # the synth records of every input (also those a resumed run took over)
        if f not in inputs:
            old = recorded(work, f"synth-{f}", None)
            if old is not None:
                inputs[f] = {**old, "path": Path(old["path"])}
    if not args.keep:
        for rec in inputs.values():
            Path(rec["path"]).unlink(missing_ok=True)

    rows = list(quiet_rows)
    for rec in inputs.values():
        c = f"synth|L={args.residues}|frames={rec['frames']}|steps={SYNTH_STEPS}|chunk={SYNTH_CHUNK}"
        rows += [(BENCH, c, "wall_s", rec["wall_s"], "s"), (BENCH, c, "frames_per_s", rec["frames"] / rec["wall_s"],
                                                             "frames/s"),
                 (BENCH, c, "file_bytes", rec["bytes"], "B"), (BENCH, c, "peak_rss_mib", rec["peak_mb"], "MiB")]
    for rec in recs.values():
        rows += rows_of(rec, args.batch_frames)
    failed = []
    for m in models:
        model, big_f = MODELS[m], want[m]
        big, small = recs[(model, big_f)], recs[(model, big_f // args.ratio)]
        small_f = big_f // args.ratio
        chk = no_growth(big, small, args.tolerance)
        c = f"{big['model']}|L={big['residues']}|frames={big_f} vs {small_f}|ranks={big['ranks']}|check"
        rows += [(BENCH, c, k, v, "%") for k, v in chk.items() if k != "pass"]
        rows += [(BENCH, c, k, v, "B") for k, v in output_growth(big, small).items()]
        rows += [(BENCH, c, "tolerance_pct", args.tolerance, "%"), (BENCH, c, "pass", float(chk["pass"]), "bool")]
        print(f"no-growth check {big['model']} {big_f:,} vs {small_f:,} frames: "
              + ", ".join(f"{k} {v:+.1f}" for k, v in chk.items() if k != "pass")
              + f" -> {'pass' if chk['pass'] else 'FAIL'}", flush=True)
        if not chk["pass"]:
            failed.append(big["model"])
        if big["verify_exit"] != 0:
            failed.append(f"verify {big['model']}")
    total = time.perf_counter() - t_all
    if args.resume:  # the steps taken over ran in an earlier process: the whole wall is theirs plus this one's
        total = sum(r["wall_s"] + r.get("verify_s", 0.0) for r in [*inputs.values(), *recs.values()])
    rows += [(BENCH, "machine", "total_wall_s", total, "s"), (BENCH, "machine", "rss_interval_s", args.interval, "s")]
    append_rows(rows, results)
    for done in work.glob("rec-*.json"):  # appended: a later --resume must not append them again
        done.unlink()
    print(f"appended {len(rows)} rows to {results}; total {total / 60:.1f} min", flush=True)
    if not args.no_report:
        import report

        report.main(["--results", str(results), "--out", str(out_dir), "--readme", "", "--roofline-doc", ""])
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
