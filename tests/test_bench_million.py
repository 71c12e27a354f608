"""`make bench-million` (benchmarks/million.py): the no-growth check on hand-made RSS samples (flat passes, growth
fails, every figure counts, short runs fall back to the nearest sample), and the ``--smoke`` run end to end into a
temporary folder: its rows, the check's rows consistent with its figures, verify, the report's table, and no
committed file touched. Never a speed."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))
import million  # noqa: E402

COMMITTED = [BENCH / "results.csv", BENCH / "README.md", REPO / "README.md", REPO / "docs" / "ROOFLINE.md"]


def _samples(rss_of_done, frames=1000, step=50):
    """Samples every ``step`` frames: rss_of_done(frames_done) MiB, VmHWM the running maximum."""
    out, hwm = [], 0.0
    for i, done in enumerate(range(0, frames + 1, step)):
        rss = rss_of_done(done)
        hwm = max(hwm, rss)
        out.append({"t": float(i), "rank": 0, "rss_mb": rss, "hwm_mb": hwm, "frames_done": done})
    return out


def _record(samples, frames, peak):
    return {"per_rank": [{**million.rss_start_end(samples, frames), "peak_mb": peak}]}


def test_rss_start_end_windows():
    s = _samples(lambda d: 300.0 if d == 0 else 400.0 + d / 100)  # start-up (0 frames done) is left out
    r = million.rss_start_end(s, 1000)
    assert r["start_mb"] == pytest.approx(401.0)  # highest sample with 0 < done <= 100
    assert r["end_mb"] == pytest.approx(410.0)  # highest sample with done >= 900
    assert r["hwm_start_mb"] == pytest.approx(401.0)
    assert (r["n_start"], r["n_end"]) == (2, 3)
    # A run too short for the windows: the first sample after a chunk and the last sample.
    short = [{"t": 0.0, "rank": 0, "rss_mb": 100.0, "hwm_mb": 100.0, "frames_done": 0},
             {"t": 1.0, "rank": 0, "rss_mb": 380.0, "hwm_mb": 380.0, "frames_done": 500},
             {"t": 2.0, "rank": 0, "rss_mb": 390.0, "hwm_mb": 390.0, "frames_done": 700}]
    r = million.rss_start_end(short, 1000)
    assert (r["start_mb"], r["end_mb"]) == (380.0, 390.0)
    with pytest.raises(ValueError):
        million.rss_start_end([{"t": 0.0, "rank": 0, "rss_mb": 1.0, "hwm_mb": 1.0, "frames_done": None}], 10)


def test_no_growth_passes_flat_and_fails_each_kind_of_growth():
    flat = _samples(lambda d: 400.0)
    small = _record(_samples(lambda d: 400.0, frames=100, step=5), 100, 402.0)
    chk = million.no_growth(_record(flat, 1000, 402.0), small, tolerance=10.0)
    assert chk["pass"] and abs(chk["rss_start_to_end_pct"]) < 1e-9 and chk["peak_vs_small_pct"] == 0.0

    growing = _samples(lambda d: 400.0 + 0.1 * d)  # +25 % over the run
    chk = million.no_growth(_record(growing, 1000, 500.0), small, tolerance=10.0)
    assert not chk["pass"] and chk["rss_start_to_end_pct"] > 10
    # A transient peak after the start that the 1-s samples missed: the getrusage peak catches it.
    chk = million.no_growth(_record(flat, 1000, 480.0), small, tolerance=10.0)
    assert not chk["pass"] and chk["hwm_start_to_peak_pct"] == pytest.approx(20.0)
    # Flat within the run, but the 10x longer run needs more memory from the start.
    big = _record(_samples(lambda d: 460.0), 1000, 462.0)
    chk = million.no_growth(big, small, tolerance=10.0)
    assert not chk["pass"] and chk["rss_start_to_end_pct"] == 0 and chk["peak_vs_small_pct"] > 10
    # The worst rank decides.
    two = {"per_rank": big["per_rank"] + [{**million.rss_start_end(growing, 1000), "peak_mb": 500.0}]}
    assert million.no_growth(two, small, tolerance=50.0)["rss_start_to_end_pct"] > 20


def test_output_growth_separates_fixed_part_from_rows():
    g = million.output_growth({"out_bytes": 60_000 + 2_000 * 1000, "rows": 1000},
                              {"out_bytes": 60_000 + 2_000 * 100, "rows": 100})
    assert g == {"bytes_per_row_marginal": 2000.0, "out_fixed_bytes": 60000.0}


def _digest(paths):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths}


@pytest.mark.slow
def test_million_smoke_rows_check_and_report(tmp_path):
    before = _digest(COMMITTED)
    results, out, work = tmp_path / "results.csv", tmp_path / "report", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(BENCH / "million.py"), "--smoke", "--results", str(results),
                           "--out", str(out), "--work", str(work)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    # exit 1 only if the check failed (a loaded machine can push RSS): the rows say which, checked below.
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _digest(COMMITTED) == before, "the smoke run changed a committed file"
    with open(results, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["benchmark"] == "million"]
    assert rows and all(r["git_sha"] and r["machine"] and r["date"] for r in rows)
    by = {(r["configuration"], r["metric"]): float(r["value"]) for r in rows}
    runs = {r["configuration"] for r in rows if r["metric"] == "wall_s" and not r["configuration"].startswith("synth")}
    want = {f"{m}|L=24|frames={f}|ranks=2|batch=8|threads=1" for m, f in
            (("ideal", 4000), ("ideal", 400), ("ldb-default", 4000), ("ldb-default", 400))}
    assert runs == want
    for c in runs:
        for m in ("residue_frames_per_s", "out_bytes", "rss_start_mib_rank0", "rss_end_mib_rank1",
                  "peak_rss_mib_rank0", "peak_rss_mib_rank1", "hwm_start_mib_rank1"):
            assert by[(c, m)] > 0, (c, m)
        assert by[(c, "verify_ok")] == 1.0, c
    assert {r["configuration"] for r in rows if r["configuration"].startswith("synth")} == {
        f"synth|L=24|frames={f}|steps=5|chunk=10000" for f in (4000, 400)}
    checks = sorted({r["configuration"] for r in rows if r["configuration"].endswith("|check")})
    assert checks == [f"{m}|L=24|frames=4000 vs 400|ranks=2|check" for m in ("ideal", "ldb-default")]
    failed = False
    for c in checks:
        growth = [by[(c, m)] for m in ("rss_start_to_end_pct", "hwm_start_to_peak_pct", "peak_vs_small_pct")]
        assert by[(c, "pass")] == float(all(g < by[(c, "tolerance_pct")] for g in growth)), c
        assert 2000 < by[(c, "bytes_per_row_marginal")] < 2400  # 181 atoms x 12 B + time, index rows
        failed |= by[(c, "pass")] == 0.0
    assert (proc.returncode == 1) == failed
    table = (out / "README.md").read_text().split("### A million frames")[1].split("\n## ")[0]
    assert "| ideal | 4,000 |" in table and "| ldb-default | 4,000 |" in table and "complete" in table
    assert not list(work.glob("out-*")) and not list(work.glob("synth-*")), "outputs left behind"
