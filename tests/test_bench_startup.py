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


def test_synth_folder_moves_about_the_native_traces(tmp_path, shared_data, monkeypatch):
    """--source synth: CA files from ``ldb-hpc synth``'s CA model, near each target's trace but not on it, with
    virtual bonds kept; a small folder simulates only the targets it holds."""
    import importlib.util

    import numpy as np

    from ldb_hpc.io.structure import read_structure

    monkeypatch.setenv("LDB_HPC_SHARED_DATA", str(shared_data))
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # its results_csv
    spec = importlib.util.spec_from_file_location("startup_bench", REPO / "benchmarks" / "startup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    files, residues = mod.make_folder(tmp_path / "synth", 2, True, "synth")  # one frame of each of two targets
    assert files == 2 and residues > 0
    made = sorted((tmp_path / "synth").glob("*.pdb"))
    natives = sorted((shared_data / "test" / "casp12").glob("*.pdb"))[:2]
    for path, native_path in zip(made, natives):
        assert native_path.stem in path.name
        ca = read_structure(str(path))[0].positions[:, 1]
        native = read_structure(str(native_path))[0].positions[:, 1]
        shift = np.linalg.norm(ca - native, axis=-1)
        assert len(ca) == len(native) and 0.01 < np.median(shift) < 1.5  # moved about the trace, not away
        bonds = np.linalg.norm(np.diff(ca, axis=0), axis=-1)
        assert np.median(np.abs(bonds - 3.80)) < 0.1
