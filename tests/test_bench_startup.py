"""benchmarks/startup.py --smoke (make bench-startup STARTUP_ARGS=--smoke): start-up and folder rows, into a CSV of
its own; the committed results.csv is left alone. No timing assertions: only that every figure is there."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys

import pytest
from conftest import REPO

RESULTS = REPO / "benchmarks" / "results.csv"


@pytest.mark.slow
def test_startup_benchmark_smoke(tmp_path, shared_data):
    before = hashlib.sha256(RESULTS.read_bytes()).hexdigest()
    out = tmp_path / "results.csv"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "startup.py"), "--smoke", "--models", "ideal",
                           "--results", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LDB_HPC_SHARED_DATA": str(shared_data)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert hashlib.sha256(RESULTS.read_bytes()).hexdigest() == before
    with open(out, newline="") as fh:
        rows = {(r["benchmark"], r["configuration"].split("|")[0], r["metric"]): float(r["value"])
                for r in csv.DictReader(fh)}
    for name in ("backmap_trajectory", "backmap_stdin"):
        assert rows[("startup", name, "ratio_to_import_torch")] > 0
    assert rows[("startup", "import_torch", "wall_s_median")] > 0
    assert rows[("startup_import", "backmap_trajectory", "import_s")] > 0
    assert rows[("folder", "ideal", "residues_per_s_per_core")] > 0
    assert rows[("folder", "PULCHRA", "residues_per_s_per_core")] > 0
    assert rows[("folder", "ideal", "ratio_to_pulchra")] > 0
    assert "24 CA PDB files" in proc.stdout
