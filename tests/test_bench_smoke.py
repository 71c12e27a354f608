"""`make bench --smoke`: the benchmark driver runs every part at a tiny size into a temporary folder, appends the
expected rows to its own results CSV and renders the report, without touching the committed files; the report
alone is checked on a hand-made CSV (latest row wins, sweeps show their last run, markers are replaced)."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
COMMITTED = [BENCH / "results.csv", BENCH / "README.md", REPO / "README.md", REPO / "docs" / "ROOFLINE.md"]


def _digest(paths):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_bench_smoke_writes_rows_report_and_leaves_committed_files(tmp_path):
    before = _digest(COMMITTED)
    results, out = tmp_path / "results.csv", tmp_path / "report"
    proc = subprocess.run([sys.executable, str(BENCH / "bench_all.py"), "--smoke", "--results", str(results),
                           "--out", str(out), "--work", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _digest(COMMITTED) == before, "the smoke run changed a committed file"

    rows = _rows(results)
    assert rows and all(r["git_sha"] and r["machine"] and r["date"] for r in rows)
    found = {(r["benchmark"], r["metric"]) for r in rows}
    for key in [("throughput", "residue_frames_per_s_per_core"),
                ("sweep_batch", "residue_frames_per_s_per_core"), ("sweep_steps", "residue_frames_per_s_per_core"),
                ("sweep_samples", "residue_frames_per_s_per_core"), ("sweep_ranks", "residue_frames_per_s"),
                ("sweep_ranks", "speedup"), ("sweep_size", "residue_frames_per_s_per_core"),
                ("memory_length", "peak_rss_mb_max"), ("write_rate", "backmap_write_MB_per_s"),
                ("write_rate", "dd_MB_per_s"), ("roofline", "flops_total"), ("roofline", "floor_cpu_core"),
                ("roofline", "floor_h100_tf32"), ("bench_time", "wall_time")]:
        assert key in found, key
    # Every sweep has its two smoke points, each with a positive rate.
    for bench, n in (("sweep_batch", 2), ("sweep_steps", 2), ("sweep_samples", 2), ("memory_length", 2)):
        vals = [float(r["value"]) for r in rows if r["benchmark"] == bench
                and r["metric"] == "residue_frames_per_s_per_core"]
        assert len(vals) == n and all(v > 0 for v in vals), (bench, vals)
    ranks = {r["configuration"].split("ranks=")[1].split("|")[0] for r in rows if r["benchmark"] == "sweep_ranks"
             and "ranks=" in r["configuration"]}
    assert ranks == {"1", "2"}
    # The roofline is self-consistent: the total covers the networks; a floor is the lower of the compute floor
    # and the bandwidth floor (which one binds depends on how busy the machine was when the peaks were measured).
    roof = {r["metric"]: float(r["value"]) for r in rows if r["benchmark"] == "roofline"}
    assert roof["flops_total"] > roof["flops_encoder"] + roof["flops_denoiser"] + roof["flops_decoder"] > 0
    assert roof["floor_cpu_core_compute"] == pytest.approx(
        roof["cpu_matmul_gflops_1thread"] * 1e9 / roof["flops_total"], rel=1e-4)
    assert roof["floor_cpu_core"] == pytest.approx(
        min(roof["floor_cpu_core_compute"], roof["floor_cpu_core_bandwidth_unfused"]), rel=1e-4)
    assert 0 < roof["floor_cpu_core"] <= roof["floor_cpu_core_compute"]
    shared = REPO.parent / "shared" / "data"
    if shared.is_dir():
        confs = {r["configuration"] for r in rows if r["benchmark"] == "accuracy"}
        for conf in ("casp12|PULCHRA", "casp12|ldb-hpc --model ldb_hpc/weights/ldb-default",
                     "casp12|ldb-hpc --model ideal", "pfam40|ldb-hpc --model ideal"):
            assert conf in confs, conf
        assert any(c.startswith("lysozyme_1am7") and c.endswith("|PULCHRA") for c in confs), confs

    readme = (out / "README.md").read_text()
    assert "## ldb-hpc against PULCHRA (CASP12)" in readme and "Throughput vs batch size" in readme
    for png in ("sweep_batch", "sweep_steps", "sweep_samples", "sweep_ranks", "sweep_size", "memory_length",
                "write_rate"):
        path = out / "plots" / f"{png}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"plots/{png}.png" in readme
    root = (out / "README.root.md").read_text()
    table = root.split("<!-- bench:table -->")[1].split("<!-- /bench:table -->")[0]
    assert "× PULCHRA per core" in table and "ldb-hpc `--model ideal`" in table
    roofline = (out / "ROOFLINE.md").read_text().split("<!-- roofline:table -->")[1]
    assert "H100 SXM5" in roofline.split("<!-- /roofline:table -->")[0]


def _write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["benchmark", "configuration", "metric", "value", "unit", "git_sha", "machine", "date"])
        for r in rows:
            w.writerow(list(r) + ["abc1234", "box (2 cores)", "2026-01-01"])


def test_report_latest_rows_table_and_markers(tmp_path):
    sys.path.insert(0, str(BENCH))
    import report

    acc = lambda method, rmsd, rate: [  # noqa: E731
        ("accuracy", f"casp12|{method}", "rmsd", rmsd, "Å"),
        ("accuracy", f"casp12|{method}", "bond_outliers", 1.5, "%"),
        ("accuracy", f"casp12|{method}", "clash_2.0", 3.0, "/1000 atoms"),
        ("accuracy", f"casp12|{method}", "chi1_accuracy", 60.0, "%"),
        ("accuracy", f"casp12|{method}", "residues_per_s", rate, "residues/s")]
    rows = (acc("PULCHRA", 9.0, 500.0) + acc("PULCHRA", 1.61, 1000.0)  # the second PULCHRA row is the latest
            + acc(report.DEFAULT_LABEL, 1.39, 1.0) + acc("ldb-hpc --model ideal", 1.63, 1.0)
            + [("throughput", "ldb-default|samples=1|threads=1|frames=400", "residue_frames_per_s_per_core",
                2500.0, ""),
               ("throughput", "ideal|samples=1|threads=1|frames=400", "residue_frames_per_s_per_core", 30000.0, "")]
            # an old sweep at another size, then the last run: only the last run's points are shown
            + [("sweep_batch", f"ldb-default|L=135|frames=16|batch={b}|steps=model|samples=1|ranks=1|threads=1",
                "residue_frames_per_s_per_core", 111.0, "") for b in (8, 16)]
            + [("sweep_batch", f"ldb-default|L=135|frames=256|batch={b}|steps=model|samples=1|ranks=1|threads=1",
                "residue_frames_per_s_per_core", 1000.0 + b, "") for b in (8, 32, 64)])
    results = tmp_path / "r.csv"
    _write_csv(results, rows)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- bench:table -->\nold table\n<!-- /bench:table -->\nafter\n")
    roof = tmp_path / "ROOFLINE.md"
    roof.write_text("a\n<!-- roofline:table -->\n<!-- /roofline:table -->\nb\n")
    assert report.main(["--results", str(results), "--out", str(tmp_path / "out"), "--readme", str(readme),
                        "--roofline-doc", str(roof)]) == 0

    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n<!-- bench:table -->\n") and text.endswith("<!-- /bench:table -->\nafter\n")
    assert "old table" not in text
    lines = {ln.split("|")[1].strip(): ln for ln in text.splitlines() if ln.startswith("| ")}
    assert "1.61 Å" in lines["PULCHRA (pypulchra, one process per structure)"]
    assert "2.5×" in lines["ldb-hpc (default model, 1 sample)"]  # 2500 / 1000 per core
    assert "30.0×" in lines["ldb-hpc `--model ideal`"]
    bench = (tmp_path / "out" / "README.md").read_text()
    sweep = bench.split("### Throughput vs batch size")[1].split("###")[0]
    assert "| 32 |" in sweep and "| 1,064 |" in sweep and "111" not in sweep
    assert "No roofline rows yet" in roof.read_text()

    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="markers"):
        report.main(["--results", str(results), "--out", str(tmp_path / "out"), "--readme", str(readme),
                     "--roofline-doc", ""])
    with pytest.raises(SystemExit, match="not found"):
        report.main(["--results", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "out"), "--readme", ""])
