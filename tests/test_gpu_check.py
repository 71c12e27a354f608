"""benchmarks/gpu_check.py (`make gpu-check`): its CPU variant end to end, its output comparison, its errors.

The GPU variant needs a GPU; this keeps the script from rotting where there is none: `--device cpu` runs the
same steps (interpreter Triton tests, backmap cpu against cpu on the example and a synth trajectory, a batch
sweep, rows appended to a results CSV) at small sizes.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def test_cpu_variant_appends_rows_and_passes(tmp_path):
    results = tmp_path / "results.csv"
    # --model ideal keeps this under a minute on 2 shared cores; the steps are those of the default model's run.
    proc = _run("--device", "cpu", "--model", "ideal", "--results", results, "--work", tmp_path / "work")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS" in proc.stdout
    with open(results, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["benchmark"] == "gpu_check" and r["git_sha"] and r["machine"] and r["date"] for r in rows)
    got = {(r["configuration"], r["metric"]): float(r["value"]) for r in rows}

    tests = "triton_tests|smoke|device=cpu"
    assert got[(tests, "passed")] == 3 and got[(tests, "failed")] == 0 and got[(tests, "errors")] == 0
    for label, frames in (("example", 40), ("synth", 200)):
        conf = f"compare|{label}|model=ideal|L=135|frames={frames}|device=cpu|reference=cpu"
        assert got[(conf, "atoms_within_1e-3_A")] == 100.0  # cpu against cpu: the same numbers
        assert got[(conf, "max_abs_diff")] == 0.0
        assert got[(conf, "rows_missing")] == 0
        assert got[(conf, "cg_frame_ok")] == got[(conf, "summary_ok")] == got[(conf, "ok")] == 1
    for batch in (64, 200):
        conf = f"sweep_batch|model=ideal|L=135|frames=200|batch={batch}|device=cpu"
        assert got[(conf, "residue_frames_per_s")] > 0 and got[(conf, "compute_residue_frames_per_s")] > 0
    assert got[("total|device=cpu", "ok")] == 1
    # the comparison's outputs are separate runs (the CPU reference is never the device run itself)
    outs = sorted(p.name for p in (tmp_path / "work").glob("out-*.h5"))
    assert outs == ["out-0-reference-cpu-b64.h5", "out-1-device-cpu-b64.h5", "out-2-reference-cpu-b64.h5",
                    "out-3-device-cpu-b64.h5"]


def _output(path: Path, coords: np.ndarray, cg_frame: np.ndarray) -> Path:
    """A file with the two datasets compare_outputs reads (nm, like backmap's)."""
    with h5py.File(path, "w") as f:
        f["coordinates"] = coords.astype(np.float32)
        f["ldb/cg_frame"] = cg_frame
    return path


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(10, 50, 3)).astype(np.float32)  # 500 atoms
    ref = _output(tmp_path / "ref.h5", xyz, np.arange(10))
    return tmp_path, xyz, ref


def test_compare_outputs_counts_atoms_within_1e3_angstrom(pair):
    tmp, xyz, ref = pair
    same = gpu_check.compare_outputs(ref, _output(tmp / "same.h5", xyz, np.arange(10)), 10, block=3)
    assert same["ok"] and same["within"] == 1.0 and same["max_diff_A"] == 0.0
    near = xyz.copy()
    near[3, 7, 1] += 5e-5  # nm: 5e-4 Å
    r = gpu_check.compare_outputs(ref, _output(tmp / "near.h5", near, np.arange(10)), 10, block=3)
    assert r["ok"] and r["within"] == 1.0 and r["max_diff_A"] == pytest.approx(5e-4, rel=0.05)
    far = xyz.copy()
    far[9, 49, 2] += 2e-4  # 2e-3 Å on one atom of 500: 99.8 % within, below 99.9 %
    r = gpu_check.compare_outputs(ref, _output(tmp / "far.h5", far, np.arange(10)), 10, block=3)
    assert not r["ok"] and r["within"] == pytest.approx(499 / 500) and r["max_diff_A"] == pytest.approx(2e-3, rel=0.05)


def test_compare_outputs_needs_every_row_once(pair):
    tmp, xyz, ref = pair
    short = gpu_check.compare_outputs(ref, _output(tmp / "short.h5", xyz[:9], np.arange(9)), 10)
    assert not short["ok"] and short["rows_dev"] == 9 and not short["cg_frame_ok"]
    dup = np.arange(10)
    dup[5] = 4
    r = gpu_check.compare_outputs(ref, _output(tmp / "dup.h5", xyz, dup), 10)
    assert not r["ok"] and not r["cg_frame_ok"] and r["within"] == 1.0


@pytest.mark.parametrize("spec, devices, kernels, ok", [
    ("cuda", ["cuda:0"], ["triton"], True),
    ("cuda:1", ["cuda:1"], ["triton"], True),
    ("cuda:1", ["cuda:0"], ["triton"], False),
    ("cuda", ["cuda:0"], ["reference"], False),  # on the GPU but not through the Triton kernels
    ("cuda", ["cpu"], ["cpu"], False),
    ("cpu", ["cpu"], ["cpu"], True),
    ("cpu", ["cpu"], ["reference"], False),
])
def test_summary_must_name_the_device_and_kernels(spec, devices, kernels, ok):
    assert gpu_check.summary_ok({"devices": devices, "kernels": kernels}, spec) is ok


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "--device must be cuda, cuda:N or cpu"),
    (["--device", "cpu", "--batches", "0"], "must be positive"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_error_line(args, message, tmp_path):
    proc = _run(*args, "--results", tmp_path / "r.csv", timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_cuda_without_a_gpu_is_one_error_line(tmp_path):
    proc = _run("--results", tmp_path / "r.csv", timeout=60)  # --device cuda is the default
    assert proc.returncode == 2 and proc.stderr.startswith("error: --device cuda: torch ")
    assert "sees no CUDA device" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
