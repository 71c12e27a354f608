#!/usr/bin/env python
"""Render benchmarks/results.csv: PNG plots, the Markdown tables of benchmarks/README.md, the accuracy table of
README.md (between ``<!-- bench:table -->`` and ``<!-- /bench:table -->``) and the numbers of docs/ROOFLINE.md
(between ``<!-- roofline:table -->`` and ``<!-- /roofline:table -->``).

Every figure is the latest row (in file order: the CSV is append-only) of its (benchmark, configuration,
metric); a sweep shows the points of its most recent run (the rows whose other settings equal those of the
last row appended). Nothing is measured here; `make bench` (benchmarks/bench_all.py) runs the benchmarks first.

    python benchmarks/report.py [--results benchmarks/results.csv] [--out benchmarks] [--readme README.md]
                                [--roofline-doc docs/ROOFLINE.md]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import simulation_ready  # noqa: E402
from results_csv import RESULTS  # noqa: E402

TABLE_START, TABLE_END = "<!-- bench:table -->", "<!-- /bench:table -->"
ROOF_START, ROOF_END = "<!-- roofline:table -->", "<!-- /roofline:table -->"
DEFAULT_LABEL = "ldb-hpc --model ldb_hpc/weights/ldb-default"
METHODS = [  # (accuracy label in the CSV, throughput model label, name in the README table)
    (DEFAULT_LABEL, "ldb-default", "ldb-hpc (default model, 1 sample)"),
    ("ldb-hpc --model ideal", "ideal", "ldb-hpc `--model ideal`"),
    ("PULCHRA", None, "PULCHRA (pypulchra, one process per structure)"),
]
ACC_COLUMNS = [  # metric, header, format
    ("rmsd", "RMSD heavy (Å)", "{:.2f}"), ("rmsd_backbone", "RMSD backbone (Å)", "{:.2f}"),
    ("bond_outliers", "bond outliers (%)", "{:.2f}"), ("clash_1.2", "clashes <1.2 Å /1000", "{:.1f}"),
    ("clash_2.0", "clashes <2.0 Å /1000", "{:.1f}"), ("chi1_accuracy", "χ1 ≤40° (%)", "{:.1f}"),
    ("chi12_accuracy", "χ1+χ2 ≤40° (%)", "{:.1f}"), ("graph_valid", "valid graph (%)", "{:.0f}"),
    ("div", "DIV", "{:.2f}"), ("rmsd_gen", "pairwise RMSD (Å)", "{:.2f}"),
    ("wall_time_per_structure", "s/structure", "{:.3f}"), ("wall_time_per_frame", "s/frame", "{:.3f}"),
    ("residues_per_s", "residues/s (as run)", "{:,.0f}"),
]
SWEEPS = [  # benchmark, axis parameter, parameters that vary with it, title, x label, log x
    ("sweep_batch", "batch", (), "Throughput vs batch size (--batch-frames)", "frames per batch", True),
    ("sweep_steps", "steps", (), "Throughput vs DDIM steps (--steps)", "steps", True),
    ("sweep_samples", "samples", (), "Throughput vs samples per frame (--samples)", "samples", True),
    ("sweep_ranks", "ranks", (), "Throughput vs MPI ranks (1 thread each)", "ranks", False),
    ("sweep_size", "L", ("frames",), "Throughput vs protein size", "residues", True),
    ("memory_length", "frames", (), "Peak memory vs trajectory length", "frames", True),
]


class Row(dict):
    """One CSV row: benchmark, configuration, metric, value (float), unit, git_sha, machine, date."""


def read_latest(path: str | os.PathLike) -> tuple[dict, list]:
    """{(benchmark, configuration, metric): Row} keeping the last row of each key, and the keys in order of
    their last appearance. SystemExit with a clear message if the file is missing or has no header."""
    if not os.path.exists(path):
        raise SystemExit(f"error: {path} not found (run `make bench` first)")
    latest, order = {}, {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "benchmark" not in reader.fieldnames:
            raise SystemExit(f"error: {path} is not a benchmark results CSV (no header)")
        for i, r in enumerate(reader):
            try:
                r["value"] = float(r["value"])
            except (TypeError, ValueError):
                continue
            key = (r["benchmark"], r["configuration"], r["metric"])
            latest[key] = Row(r)
            order[key] = i
    return latest, sorted(latest, key=order.get)


def params(conf: str) -> dict:
    """``a|k=v|x=y`` → {"k": "v", "x": "y", "_": "a"} (the parts without '=' joined under "_")."""
    out, plain = {}, []
    for part in conf.split("|"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
        else:
            plain.append(part)
    out["_"] = "|".join(plain)
    return out


def num(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return float("nan")


def esc(text: str) -> str:
    """A Markdown table cell: '|' escaped."""
    return str(text).replace("|", "\\|")


def fmt(v, f="{:,.0f}") -> str:
    return "–" if v is None or v != v else f.format(v)


def provenance(rows) -> str:
    """'git abc1234, 2026-11-25, vm (2 cores)' of the newest of ``rows`` (several shas are listed)."""
    rows = [r for r in rows if r is not None]
    if not rows:
        return "no rows"
    shas = sorted({r["git_sha"] for r in rows})
    dates = sorted({r["date"] for r in rows})
    when = dates[-1] if len(dates) == 1 else dates[0] + '…' + dates[-1]
    return f"git {', '.join(shas)}; {when}; {rows[-1]['machine']}"


def replace_between(text: str, start: str, end: str, body: str, where: str) -> str:
    """``text`` with everything between the markers ``start`` and ``end`` replaced by ``body``."""
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"error: {where} has no {start} … {end} markers")
    return text[: i + len(start)] + "\n" + body.rstrip("\n") + "\n" + text[j:]


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Report:
    def __init__(self, latest: dict, order: list):
        self.latest, self.order = latest, order

    def get(self, bench: str, conf: str, metric: str):
        r = self.latest.get((bench, conf, metric))
        return None if r is None else r

    def val(self, bench: str, conf: str, metric: str):
        r = self.get(bench, conf, metric)
        return None if r is None else r["value"]

    def confs(self, bench: str) -> list[str]:
        seen = []
        for b, c, _ in self.order:
            if b == bench and c not in seen:
                seen.append(c)
        return seen

    def last_throughput(self, model: str):
        """The latest one-thread, one-sample residue-frames/s per core row of ``model`` (throughput.py)."""
        rows = [self.latest[k] for k in self.order if k[0] == "throughput" and k[2] == "residue_frames_per_s_per_core"
                and params(k[1])["_"] == model and params(k[1]).get("samples") == "1"
                and params(k[1]).get("threads") == "1"]
        return rows[-1] if rows else None

    def sweep(self, bench: str, axis: str, also: tuple) -> list[tuple[float, str]]:
        """[(axis value, configuration)] of the most recent run of a sweep, sorted by the axis."""
        confs = [c for c in self.confs(bench) if axis in params(c)]
        if not confs:
            return []
        ignore = {axis, *also}
        fixed = {k: v for k, v in params(confs[-1]).items() if k not in ignore}
        pts = {}
        for c in confs:
            p = params(c)
            if {k: v for k, v in p.items() if k not in ignore} == fixed:
                pts[num(p[axis])] = c
        return sorted(pts.items())

    # -- README.md table ----------------------------------------------------------------------------------
    def readme_table(self) -> str:
        pulchra = self.get("accuracy", "casp12|PULCHRA", "residues_per_s")
        lines = ["| method | RMSD heavy | bond outliers | clashes < 2.0 Å / 1000 atoms | χ1 within 40° | "
                 "residue-frames/s per core | × PULCHRA per core |", "|---|---|---|---|---|---|---|"]
        used = []
        for acc, model, name in METHODS:
            conf = f"casp12|{acc}"
            v = {m: self.val("accuracy", conf, m) for m in ("rmsd", "bond_outliers", "clash_2.0", "chi1_accuracy")}
            used += [self.get("accuracy", conf, "rmsd")]
            if model is None:
                rate_row = pulchra
                per_struct = self.val("accuracy", conf, "wall_time_per_structure")
                rate = fmt(rate_row["value"] if rate_row else None) + (
                    f" ({per_struct:.3f} s per structure)" if per_struct is not None else "")
                ratio = "1" if rate_row else "–"
            else:
                rate_row = self.last_throughput(model)
                rate = fmt(rate_row["value"] if rate_row else None)
                ratio = (f"{rate_row['value'] / pulchra['value']:.1f}×" if rate_row and pulchra else "–")
            used.append(rate_row)
            lines.append(f"| {name} | {fmt(v['rmsd'], '{:.2f} Å')} | {fmt(v['bond_outliers'], '{:.2f} %')} | "
                         f"{fmt(v['clash_2.0'], '{:.1f}')} | {fmt(v['chi1_accuracy'], '{:.1f} %')} | "
                         f"{rate} | {ratio} |")
        n = self.val("accuracy_set", "casp12", "structures")
        lines += ["", f"Accuracy: mean over {'the' if n is None else f'{n:.0f}'} CASP12 targets "
                  "(`ldb-hpc evaluate`, DESIGN.md metrics). ldb-hpc "
                  "residue-frames/s: `backmap --threads 1` on one rank, a 135-residue synthetic trajectory, start-up "
                  "included (benchmarks/throughput.py); PULCHRA: residues/s over the CASP12 runs, one process per "
                  "structure on one core. Regenerated by `make bench` from benchmarks/results.csv "
                  f"({provenance(used)}); more in [benchmarks/README.md](benchmarks/README.md)."]
        return "\n".join(lines) + "\n"

    # -- benchmarks/README.md -------------------------------------------------------------------------------
    def accuracy_tables(self) -> list[str]:
        confs = self.confs("accuracy")
        datasets = []
        for c in confs:
            d = c.split("|", 1)[0]
            if d not in datasets:
                datasets.append(d)
        out = []
        for d in datasets:
            methods = [c for c in confs if c.split("|", 1)[0] == d]
            cols = [col for col in ACC_COLUMNS if any(self.val("accuracy", c, col[0]) is not None for c in methods)]
            rows = [self.get("accuracy", c, "rmsd") for c in methods]
            n = self.val("accuracy_set", d, "structures")
            skipped = self.val("accuracy_set", d, "skipped")
            size = "" if n is None else f"{n:.0f} structures, mean over structures; "
            if n is not None and skipped:
                size = (f"{n - skipped:.0f} of {n:.0f} structures scored ({skipped:.0f} cannot be coarsened to a CA "
                        "trace, e.g. a residue without CA), mean over them; ")
            out += [f"### {d}", "", f"{size + 'rows' if size else 'Rows'}: {provenance(rows)}.", "",
                    "| method | " + " | ".join(h for _, h, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
            for c in methods:
                out.append(f"| {esc(c.split('|', 1)[1])} | " + " | ".join(fmt(self.val("accuracy", c, m), f)
                                                                    for m, _, f in cols) + " |")
            out.append("")
        return out

    def chi1_type_tables(self) -> list[str]:
        """χ1 accuracy per residue type (rows accuracy_chi1_type, conf "set|method|TYPE"), one table per data set:
        methods as rows, types as columns, weakest first by the default model (or the first method)."""
        keys = [k for k in self.order if k[0] == "accuracy_chi1_type" and k[2] == "chi1_accuracy"]
        if not keys:
            return []
        table: dict = {}  # set → method → type → (share, n)
        for _, conf, _ in keys:
            d, method, rtype = conf.rsplit("|", 2)
            n = self.val("accuracy_chi1_type", conf, "n")
            table.setdefault(d, {}).setdefault(method, {})[rtype] = (self.val("accuracy_chi1_type", conf,
                                                                               "chi1_accuracy"), n)
        out = ["## χ1 accuracy by residue type", "",
               "χ1 within 40° per residue type, pooled over the structures (and frames, samples) of each set; "
               "types ordered weakest first for the default model. Rows: "
               f"{provenance([self.latest[k] for k in keys])}.", ""]
        for d, methods in table.items():
            ref = methods.get(DEFAULT_LABEL) or next(iter(methods.values()))
            types = sorted(ref, key=lambda t: ref[t][0])
            types += sorted(t for m in methods.values() for t in m if t not in types)
            types = list(dict.fromkeys(types))
            out += [f"### {d}", "", "| method | " + " | ".join(types) + " |", "|---" * (len(types) + 1) + "|"]
            for method, vals in methods.items():
                out.append(f"| {esc(method)} | " + " | ".join(fmt(vals.get(t, (None, None))[0], "{:.0f}")
                                                             for t in types) + " |")
            counts = [fmt(ref.get(t, (None, None))[1], "{:.0f}") for t in types]
            out += ["| residues (n) | " + " | ".join(counts) + " |", ""]
        return out

    def sweep_tables(self, plots: Path, rel: str) -> list[str]:
        out = []
        for bench, axis, also, title, xlabel, logx in SWEEPS:
            pts = self.sweep(bench, axis, also)
            if not pts:
                continue
            rows = [self.get(bench, c, "wall_s") for _, c in pts]
            fixed = params(pts[-1][1])
            setting = ", ".join(f"{k} {v}" for k, v in fixed.items() if k not in (axis, "_", *also))
            out += [f"### {title}", "", f"{fixed['_']}; {setting}. Rows: {provenance(rows)}.", "",
                    f"| {xlabel} | residue-frames/s per core (whole run) | per core (compute loop) | "
                    "residue-frames/s (all ranks) | peak RSS (MB) | wall (s) |", "|---:|---:|---:|---:|---:|---:|"]
            for x, c in pts:
                g = lambda m, c=c, bench=bench: self.val(bench, c, m)  # noqa: E731
                extra = f" ({params(c)['frames']} frames)" if "frames" in also else ""
                out.append(f"| {x:g}{extra} | {fmt(g('residue_frames_per_s_per_core'))} | "
                           f"{fmt(g('compute_residue_frames_per_s_per_core'))} | {fmt(g('residue_frames_per_s'))} | "
                           f"{fmt(g('peak_rss_mb_max'))} | {fmt(g('wall_s'), '{:.1f}')} |")
            if bench == "sweep_ranks":
                sp = [c for c in self.confs(bench) if c.endswith("2 vs 1 ranks")]
                if sp:
                    out += ["", f"2 ranks / 1 rank (wall time of the run): {self.val(bench, sp[-1], 'speedup'):.2f}×."]
            png = self.plot_sweep(bench, pts, title, xlabel, logx, plots)
            if png:
                out += ["", f"![{title}]({rel}/{png.name})"]
            out.append("")
        return out

    def write_table(self) -> list[str]:
        confs = self.confs("write_rate")
        if not confs:
            return []
        c = confs[-1]
        g = lambda m: self.val("write_rate", c, m)  # noqa: E731
        p = params(c)
        return ["### Output write rate", "",
                f"`backmap --model ideal`, {p['frames']} frames of {p['L']} residues, {int(p['bytes']) / 1e6:.1f} MB "
                f"written (master + shard files). Rows: {provenance([self.get('write_rate', c, 'dd_MB_per_s')])}.", "",
                "| writer | MB/s |", "|---|---:|",
                "| backmap writer thread (bytes ÷ its write time, fsync per chunk) | "
                f"{fmt(g('backmap_write_MB_per_s'))} |",
                f"| `dd bs=1M` same bytes | {fmt(g('dd_MB_per_s'))} |",
                f"| `dd bs=1M conv=fsync` same bytes | {fmt(g('dd_fsync_MB_per_s'))} |", "",
                f"backmap ÷ dd conv=fsync: {fmt(g('backmap_vs_dd_fsync'), '{:.2f}')}×; the writer thread was busy "
                f"{fmt(100 * (g('backmap_write_share_of_wall') or float('nan')), '{:.0f}')} % of the run's wall time "
                "(it overlaps compute).", ""]

    def million_tables(self, plots: Path | None = None, rel: str = "plots") -> list[str]:
        """benchmarks/million.py (`make bench-million`): the runs of its latest configuration (protein size, batch;
        any number of ranks), the synth runs, the no-growth checks, the machine's state and (into ``plots``) RSS over
        time."""
        bench = "million"
        confs = self.confs(bench)
        runs = [c for c in confs if not c.startswith(("synth|", "machine")) and not c.endswith("|check")]
        if not runs:
            return []
        g = lambda c, m: self.val(bench, c, m)  # noqa: E731
        last = params(runs[-1])
        same = lambda c: all(params(c).get(k) == last.get(k) for k in ("L", "batch", "threads"))  # noqa: E731
        runs = sorted((c for c in runs if same(c)),
                      key=lambda c: (params(c)["_"] != "ideal", num(params(c)["ranks"]), num(params(c)["frames"])))
        out = ["### A million frames (`make bench-million`)", "",
               "`mpiexec -n RANKS ldb-hpc backmap IN -o OUT [--model ideal] --threads 1 --batch-frames "
               f"{last['batch']}` on `ldb-hpc synth` trajectories of a {last['L']}-residue protein (the first residues "
               "of examples/example.cg.h5); benchmarks/million.py says exactly what runs. RSS is sampled every "
               f"{fmt(g('machine', 'rss_interval_s'), '{:g}')} s from /proc/PID/status of each rank and tied to the "
               "frames that rank had finished (its shard log): start = highest sample in the rank's first 10 % of "
               "frames, end = highest in its last 10 %; peak = the "
               "rank's getrusage figure in the run summary. Wall time and residue-frames/s are of the whole command "
               "(start-up included). Load before: the 1-minute load average as the run started (the benchmark's "
               "previous step included); other work: the mean number of cores that processes outside the benchmark "
               "used during the run (/proc/stat less the benchmark's own CPU time). Flagged rows: the run summary's "
               "`close_contacts.rows`, rows with a heavy-atom pair closer than 1.2 Å. "
               f"Rows: {provenance([self.get(bench, c, 'wall_s') for c in runs])}.", "",
               "| model | frames | ranks | wall (s) | residue-frames/s (all ranks) | per core | RSS start → end per "
               "rank (MiB) | peak RSS per rank (MiB) | output (GB) | verify | verify (s) | flagged rows | "
               "load before | other work (cores) |",
               "|---|---:|---:|---:|---:|---:|---|---|---:|---|---:|---:|---:|---:|"]
        for c in runs:
            ranks = int(num(params(c)["ranks"]))
            rss = " / ".join(f"{fmt(g(c, f'rss_start_mib_rank{r}'))} → {fmt(g(c, f'rss_end_mib_rank{r}'))}"
                             for r in range(ranks))
            peak = " / ".join(fmt(g(c, f"peak_rss_mib_rank{r}")) for r in range(ranks))
            ok = g(c, "verify_ok")
            verify = "–" if ok is None else ("complete" if ok else "**not complete**")
            out.append(f"| {params(c)['_']} | {num(params(c)['frames']):,.0f} | {ranks} | "
                       f"{fmt(g(c, 'wall_s'), '{:.1f}')} | "
                       f"{fmt(g(c, 'residue_frames_per_s'))} | {fmt(g(c, 'residue_frames_per_s_per_core'))} | {rss} | "
                       f"{peak} | {fmt((g(c, 'out_bytes') or float('nan')) / 1e9, '{:.3f}')} | {verify} | "
                       f"{fmt(g(c, 'verify_s'), '{:.1f}')} | {fmt(g(c, 'flagged_rows'))} | "
                       f"{fmt(g(c, 'load_before'), '{:.2f}')} | {fmt(g(c, 'others_cores'), '{:.2f}')} |")
        png = self.plot_million_rss(runs, plots) if plots is not None else None
        if png:
            out += ["", f"![RSS over time]({rel}/{png.name})"]
        checks = [c for c in confs if c.endswith("|check") and params(c).get("L") == last["L"]]
        if checks:
            out += ["", "No growth with the number of frames (worst rank; pass: every figure below the tolerance):",
                    "",
                    "| model | frames | RSS start → end | VmHWM at 10 % → peak | peak vs the smaller run | tolerance | "
                    "result | output bytes per extra row | output fixed part |",
                    "|---|---|---:|---:|---:|---:|---|---:|---:|"]
            for c in checks:
                ok = g(c, "pass")
                fr = " vs ".join(f"{num(x):,.0f}" for x in params(c)["frames"].split(" vs "))
                out.append(f"| {c.split('|')[0]} | {fr} | "
                           f"{fmt(g(c, 'rss_start_to_end_pct'), '{:+.1f} %')} | "
                           f"{fmt(g(c, 'hwm_start_to_peak_pct'), '{:+.1f} %')} | "
                           f"{fmt(g(c, 'peak_vs_small_pct'), '{:+.1f} %')} | "
                           f"{fmt(g(c, 'tolerance_pct'), '{:.0f} %')} | "
                           f"{'–' if ok is None else ('pass' if ok else '**FAIL**')} | "
                           f"{fmt(g(c, 'bytes_per_row_marginal'), '{:,.1f} B')} | "
                           f"{fmt((g(c, 'out_fixed_bytes') or float('nan')) / 1e3, '{:,.0f} kB')} |")
        synth = sorted((c for c in confs if c.startswith("synth|") and params(c).get("L") == last["L"]),
                       key=lambda c: num(params(c)["frames"]))
        if synth:
            p = params(synth[-1])
            out += ["", f"`ldb-hpc synth --frames N --steps {p.get('steps')} --chunk {p.get('chunk')}` (the inputs):",
                    "",
                    "| frames | wall (s) | frames/s | file (MB) | peak RSS (MiB) |", "|---:|---:|---:|---:|---:|"]
            out += [f"| {num(params(c)['frames']):,.0f} | {fmt(g(c, 'wall_s'), '{:.1f}')} | "
                    f"{fmt(g(c, 'frames_per_s'))} | {fmt((g(c, 'file_bytes') or float('nan')) / 1e6, '{:,.1f}')} | "
                    f"{fmt(g(c, 'peak_rss_mib'))} |"
                    for c in synth]
        quiet, waited, total = g("machine", "quiet_before"), g("machine", "waited_for_quiet_s"), g("machine",
                                                                                                    "total_wall_s")
        sha = lambda m: (self.get(bench, "machine", m) or {}).get("git_sha")  # noqa: E731
        note = []
        if quiet is not None and sha("quiet_before") != sha("total_wall_s"):
            note.append("the last run did not wait for a quiet machine (other work during each run: last column)")
        elif quiet is not None:
            note.append(f"waited {fmt(waited / 60, '{:.0f}')} min for a quiet machine (1-minute load < 1.0 for a "
                        "minute) before the first step: " + ("it was quiet then (other work during each run: last "
                                                            "column)" if quiet else "**it never was; run anyway**"))
        if total is not None:
            note.append(f"whole benchmark {total / 60:.1f} min")
        if note:
            out += ["", "; ".join(note).capitalize() + "."]
        return out + [""]

    def roofline(self) -> tuple[dict, str | None]:
        confs = self.confs("roofline")
        if not confs:
            return {}, None
        c = confs[-1]
        return {m: r["value"] for (b, cc, m), r in self.latest.items() if b == "roofline" and cc == c}, c

    def roofline_table(self) -> str:
        r, conf = self.roofline()
        if not r:
            return "No roofline rows yet: run `make bench` (or `python benchmarks/roofline.py`).\n"
        meas = self.last_throughput("ldb-default")
        ms = meas["value"] if meas else None
        row = self.get("roofline", conf, "flops_total")
        other = r.get("flops_linear", 0) - sum(r.get(f"flops_{g}", 0) for g in ("encoder", "denoiser", "decoder"))
        lines = [f"Configuration `{conf}`; {provenance([row])}.", "",
                 "| per residue-frame | value |", "|---|---:|",
                 f"| ConditionEncoder (once per frame) | {r.get('flops_encoder', 0) / 1e3:,.0f} kFLOP |",
                 f"| Denoiser ({r.get('flops_denoiser', 0) / max(r.get('flops_denoiser_per_step', 1), 1):.0f} steps × "
                 f"{r.get('flops_denoiser_per_step', 0) / 1e3:,.0f} kFLOP) | "
                 f"{r.get('flops_denoiser', 0) / 1e3:,.0f} kFLOP |",
                 f"| Decoder (once) | {r.get('flops_decoder', 0) / 1e3:,.0f} kFLOP |",
                 f"| other Linear layers | {other / 1e3:,.0f} kFLOP |",
                 f"| VQ snap (2·K·d) | {r.get('flops_vq', 0) / 1e3:,.0f} kFLOP |",
                 f"| element-wise (estimate) | {r.get('flops_elementwise', 0) / 1e3:,.0f} kFLOP |",
                 f"| atom builder (estimate) | {r.get('flops_builder_est', 0) / 1e3:,.1f} kFLOP |",
                 f"| **total** | **{r.get('flops_total', 0) / 1e6:,.2f} MFLOP** |",
                 f"| compulsory bytes (CA in, {r.get('heavy_atoms_per_residue', 0):.2f} heavy atoms out, "
                 f"weights ÷ batch) | {r.get('bytes_compulsory', 0):,.0f} B |",
                 "| activation bytes of the unfused torch Linear layers | "
                 f"{r.get('bytes_unfused_activations', 0) / 1e3:,.0f} kB |",
                 f"| arithmetic intensity: compulsory / unfused | {r.get('intensity_compulsory', 0):,.0f} / "
                 f"{r.get('intensity_unfused', 0):,.1f} FLOP/B |",
                 f"| time share of clash repair (1 thread) | {100 * r.get('time_share_repair', 0):.0f} % |", "",
                 "| machine | peak used | floor (residue-frames/s) |", "|---|---|---:|",
                 f"| this CPU, 1 core | {r.get('cpu_matmul_gflops_1thread', 0):,.0f} GFLOP/s matmul, "
                 f"{r.get('cpu_copy_gbs_1thread', 0):,.1f} GB/s copy | {fmt(r.get('floor_cpu_core'))} |",
                 f"| this CPU, {r.get('cpu_threads', 0):.0f} threads | "
                 f"{r.get('cpu_matmul_gflops_all', 0):,.0f} GFLOP/s, "
                 f"{r.get('cpu_copy_gbs_all', 0):,.1f} GB/s | {fmt(r.get('floor_cpu_all'))} |",
                 f"| H100 SXM5, FP32 | 67 TFLOP/s, 3.35 TB/s | {fmt(r.get('floor_h100_fp32'))} |",
                 "| H100 SXM5, TF32 tensor cores (dense) | 495 TFLOP/s, 3.35 TB/s | "
                 f"{fmt(r.get('floor_h100_tf32'))} |",
                 f"| H100 SXM5, TF32, unfused activation traffic | 495 TFLOP/s, 3.35 TB/s | "
                 f"{fmt(r.get('floor_h100_tf32_unfused'))} |", "",
                 "| measured (this CPU, 1 core) | residue-frames/s | share of the 1-core floor |", "|---|---:|---:|",
                 f"| `LDBModel.sample`, in process, batch {params(conf).get('B', '?')}, no I/O "
                 f"| {fmt(r.get('sample_rf_per_s_1thread'))} | "
                 f"{fmt(100 * r.get('sample_rf_per_s_1thread', 0) / r['floor_cpu_core'], '{:.0f} %')} |"]
        if ms:
            lines.append(f"| `ldb-hpc backmap --threads 1` (whole command, throughput.py) | {fmt(ms)} | "
                         f"{fmt(100 * ms / r['floor_cpu_core'], '{:.0f} %')} |")
        return "\n".join(lines) + "\n"

    # -- plots ----------------------------------------------------------------------------------------------
    def plot_sweep(self, bench, pts, title, xlabel, logx, plots: Path):
        plt = _pyplot()
        if plt is None:
            return None
        xs = [x for x, _ in pts]
        fig, ax = plt.subplots(figsize=(5, 3.4))
        if bench == "memory_length":
            ax.plot(xs, [self.val(bench, c, "peak_rss_mb_max") for _, c in pts], "o-")
            ax.set_ylabel("peak RSS (MB)")
            ax.set_ylim(bottom=0)
        else:
            metric = "residue_frames_per_s" if bench == "sweep_ranks" else "residue_frames_per_s_per_core"
            ax.plot(xs, [self.val(bench, c, metric) for _, c in pts], "o-",
                    label="all ranks, whole run" if bench == "sweep_ranks" else "per core, whole run")
            ax.plot(xs, [self.val(bench, c, "compute_residue_frames_per_s_per_core") for _, c in pts], "s--",
                    label="per core, compute loop")
            ax.set_ylabel("residue-frames/s")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)
        if logx and len(xs) > 1 and min(xs) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        return _save(fig, plots / f"{bench}.png")

    def plot_million_rss(self, runs: list[str], plots: Path):
        """RSS of each rank against the run's elapsed time, one line per run and rank (the rows
        rss_mib_rankR_pNN / t_s_rankR_pNN: each tenth of the rank's frames)."""
        bench = "million"
        curves = []
        for c in runs:
            for r in range(int(num(params(c)["ranks"]))):
                pts = [(self.val(bench, c, f"t_s_rank{r}_p{p:03d}"), self.val(bench, c, f"rss_mib_rank{r}_p{p:03d}"))
                       for p in range(0, 101, 10)]
                pts = [(t, v) for t, v in pts if t is not None and v is not None]
                if pts:
                    p = params(c)
                    curves.append((f"{p['_']}, {num(p['frames']):,.0f} frames, rank {r}", pts))
        plt = _pyplot() if curves else None
        if plt is None:
            return None
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, pts in curves:
            ax.plot([t / 60 for t, _ in pts], [v for _, v in pts], "o-", ms=3, label=label)
        ax.set_xlabel("elapsed (min)")
        ax.set_ylabel("RSS (MiB)")
        ax.set_ylim(bottom=0)
        ax.set_title("A million frames: RSS per rank at each tenth of its frames", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
        return _save(fig, plots / "million_rss.png")

    def plot_accuracy(self, plots: Path):
        plt = _pyplot()
        if plt is None:
            return None
        metrics = [("rmsd", "RMSD heavy (Å)"), ("clash_2.0", "clashes <2.0 Å /1000"),
                   ("bond_outliers", "bond outliers (%)"), ("chi1_accuracy", "χ1 ≤40° (%)")]
        short = {DEFAULT_LABEL: "ldb-hpc default", "ldb-hpc --model ideal": "ldb-hpc ideal", "PULCHRA": "PULCHRA"}
        labels = [(acc, short[acc]) for acc, _, _ in METHODS
                  if self.val("accuracy", f"casp12|{acc}", "rmsd") is not None]
        if not labels:
            return None
        fig, axes = plt.subplots(1, 4, figsize=(11, 3))
        for ax, (m, title) in zip(axes, metrics):
            vals = [self.val("accuracy", f"casp12|{acc}", m) or 0.0 for acc, _ in labels]
            ax.bar(range(len(vals)), vals, color=["C0", "C1", "C2"][: len(vals)])
            ax.set_xticks(range(len(vals)), [n for _, n in labels], rotation=20, fontsize=7, ha="right")
            ax.set_title(title, fontsize=9)
        fig.suptitle("CASP12 CA traces: ldb-hpc vs PULCHRA", fontsize=10)
        return _save(fig, plots / "accuracy_casp12.png")

    def plot_write(self, plots: Path):
        plt = _pyplot()
        confs = self.confs("write_rate")
        if plt is None or not confs:
            return None
        c = confs[-1]
        names = [("backmap_write_MB_per_s", "backmap writer"), ("dd_MB_per_s", "dd"), ("dd_fsync_MB_per_s", "dd fsync")]
        fig, ax = plt.subplots(figsize=(4.5, 3))
        ax.bar([n for _, n in names], [self.val("write_rate", c, m) or 0.0 for m, _ in names], color=["C0", "C7", "C7"])
        ax.set_ylabel("MB/s")
        ax.set_title("Output write rate vs dd of the same bytes", fontsize=9)
        return _save(fig, plots / "write_rate.png")

    def other_tables(self) -> list[str]:
        """bench_runtime.py rows, the kernel and end-to-end rows: configuration / metric / value as they are."""
        out = []
        for bench, title in (("runtime", "Runtime: memory per rank and MPI scaling "
                                          "(`make bench-runtime`, --model ideal; "
                                          "details in [runtime/README.md](runtime/README.md))"),
                             ("throughput", "Throughput per core (benchmarks/throughput.py)"),
                             ("startup", "Start-up: one-frame backmap against `python -c 'import torch'` "
                                         "(`make bench-startup`, benchmarks/startup.py)"),
                             ("folder", "A folder of CA PDBs in one call against PULCHRA one process per "
                                        "structure (`make bench-startup`)"),
                             ("hydrogens", "`--hydrogens`: OpenMM amber14 on CASP12, throughput with and without "
                                           "(benchmarks/hydrogens.py)"),
                             ("gpu_check", "`make gpu-check` (a GPU against the CPU, batch sweep)"),
                             ("kernels_cpu_e2e", "End-to-end with the fused CPU kernels (benchmarks/kernels)")):
            keys = [k for k in self.order if k[0] == bench]
            if not keys:
                continue
            out += [f"### {title}", "", f"Rows: {provenance([self.latest[k] for k in keys])}.", "",
                    "| configuration | metric | value | unit |", "|---|---|---:|---|"]
            out += [f"| {esc(c)} | {m} | {self.latest[(b, c, m)]['value']:,.6g} | {self.latest[(b, c, m)]['unit']} |"
                    for b, c, m in keys]
            out.append("")
        keys = [k for k in self.order if k[0] == "bench_time"]
        if keys:
            out += ["### Time of each part of `make bench`", "", "| run | part | s |", "|---|---|---:|"]
            out += [f"| {c.split('|')[0]} | {esc(c.split('|', 1)[1])} | {self.latest[(b, c, m)]['value']:.1f} |"
                    for b, c, m in keys if m == "wall_time"]
            out.append("")
        return out

    def bench_readme(self, out_dir: Path, roofline_link: str) -> str:
        plots = out_dir / "plots"
        acc_png = self.plot_accuracy(plots)
        write_png = self.plot_write(plots)
        lines = [
            "# Benchmarks",
            "",
            "Regenerated by one command, `make bench` (= `.venv/bin/python benchmarks/bench_all.py`; ≤ 30 min on "
            "2 cores; `make bench BENCH_ARGS=--smoke` is the < 2 min size CI runs, written to build/bench-smoke/). "
            "Every run appends long-format rows (benchmark, configuration, metric, value, unit, git sha, machine, "
            "date) to [results.csv](results.csv); this page, the plots in [plots/](plots/), the table in the top "
            "README and the numbers in [docs/ROOFLINE.md](" + roofline_link + ") are rendered from it by "
            "`benchmarks/report.py` (the latest row of each benchmark/configuration/metric). The docstring of "
            "bench_all.py says exactly what each part runs.",
            "",
            "Rates with other work on the machine are low: each run records the load average before it "
            "(`bench_time` rows). \"Whole run\" rates include start-up (imports, model load); \"compute loop\" is "
            "the runtime's own compute time. One thread per rank throughout, so per-core figures compare directly "
            "with PULCHRA, which is single-threaded.",
            "",
            "## ldb-hpc against PULCHRA (CASP12)",
            "",
            self.readme_table().replace("](benchmarks/README.md)", "](README.md)"),
        ]
        if acc_png:
            lines += [f"![accuracy](plots/{acc_png.name})", ""]
        lines += ["## Accuracy on every data set", ""] + self.accuracy_tables() + self.chi1_type_tables()
        lines += ["## Throughput, memory and output", ""] + self.sweep_tables(plots, "plots") + self.write_table()
        if write_png:
            lines += [f"![write rate](plots/{write_png.name})", ""]
        lines += self.million_tables(plots, "plots")
        lines += ["## Roofline", "", f"How the numbers are counted: [docs/ROOFLINE.md]({roofline_link}).", "",
                  self.roofline_table()]
        lines += simulation_ready.readme_section(self.latest, self.order)  # issue 20
        lines += ["## Other rows", ""] + self.other_tables()
        return "\n".join(lines).rstrip("\n") + "\n"


_PLT = None


def _pyplot():
    """matplotlib.pyplot with the Agg backend, or None (plots are skipped with a note) when it is missing."""
    global _PLT
    if _PLT is None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            _PLT = plt
        except ImportError:
            print("report: matplotlib is not installed; no plots (`make bench` installs it)", file=sys.stderr)
            _PLT = False
    return _PLT or None


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    _PLT.close(fig)
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(RESULTS), help="the results CSV (default benchmarks/results.csv)")
    ap.add_argument("--out", default=str(HERE), help="folder for README.md and plots/ (default benchmarks/)")
    ap.add_argument("--readme", default=str(REPO / "README.md"),
                    help="file whose bench:table markers get the CASP12 table ('' to skip)")
    ap.add_argument("--roofline-doc", default=str(REPO / "docs" / "ROOFLINE.md"),
                    help="file whose roofline:table markers get the roofline numbers ('' to skip)")
    args = ap.parse_args(argv)
    latest, order = read_latest(args.results)
    rep = Report(latest, order)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    roof = Path(args.roofline_doc) if args.roofline_doc else REPO / "docs" / "ROOFLINE.md"
    link = os.path.relpath(roof, out)
    write_atomic(out / "README.md", rep.bench_readme(out, link))
    done = [str(out / "README.md"), str(out / "plots")]
    if args.readme:
        p = Path(args.readme)
        write_atomic(p, replace_between(p.read_text(), TABLE_START, TABLE_END, rep.readme_table(), str(p)))
        done.append(str(p))
    if args.roofline_doc:
        p = Path(args.roofline_doc)
        write_atomic(p, replace_between(p.read_text(), ROOF_START, ROOF_END, rep.roofline_table(), str(p)))
        done.append(str(p))
    print("report: wrote " + ", ".join(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
