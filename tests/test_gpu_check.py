"""`make gpu-check` (scripts/gpu/offline_env.py + benchmarks/gpu_check.py) end to end on the CPU, offline, and its
parts: the atom comparison and its explanation of flips, the run-summary check, the argument errors, the wheel list.

The GPU variant needs a GPU; this keeps the whole path from rotting where there is none. The end-to-end test does
what a cluster user does on a GPU node: a python that has only torch and triton (scripts/gpu/site_python.py links
.venv's), the wheel folder made beforehand (`make wheelhouse`, run by `make test`'s install step), then `make
gpu-check PYTHON=…` with pip --no-index, the C++ build, and `--device cpu` (every part at small sizes). Where
``unshare`` can take the network away (root, as in CI) the check runs without one.
"""

from __future__ import annotations

import csv
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import mdtraj as md
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts" / "gpu"))

import gpu_check  # noqa: E402
import wheelhouse  # noqa: E402
from gpu_compare import compare_outputs  # noqa: E402

WHEELHOUSE = REPO / "build" / "wheelhouse" / f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}"


def _offline_prefix() -> list[str]:
    """``unshare --net`` when it works here (a namespace with no network), else nothing."""
    if shutil.which("unshare") and subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0:
        return ["unshare", "--net"]
    return []


@pytest.mark.slow
def test_make_gpu_check_offline_on_a_bare_python(tmp_path):
    if not any(WHEELHOUSE.glob("pip-*.whl")):
        pytest.skip(f"no wheel folder at {WHEELHOUSE}: `make wheelhouse PYTHON=.venv/bin/python` (make test does it)")
    site = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu" / "site_python.py"), str(tmp_path / "site")],
                          capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    results, offline = tmp_path / "results.csv", _offline_prefix()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "TRITON_INTERPRET",
                                                             "LDB_HPC_KERNELS", "LDB_HPC_TRITON_DEVICE")}
    proc = subprocess.run([*offline, "make", "--no-print-directory", "gpu-check", f"PYTHON={site}",
                           f"WHEELHOUSE={WHEELHOUSE}", f"GPU_ENV={tmp_path / 'env'}",
                           f"GPU_CHECK_ARGS=--device cpu --append-results {results} --work {tmp_path / 'work'}"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    # the venv is the bare python's torch plus the wheel folder, and the project built from this checkout
    assert f"offline_env: {site} (Python" in out and f"torch {torch.__version__} " in out
    assert f"wheels from {WHEELHOUSE}" in out
    assert f"ldb_hpc from {REPO / 'ldb_hpc'}" in out and "build " in out
    assert "gpu_check on cpu: PASS" in out
    for part in ("triton tests (smoke)", "ideal model vs cpu", "default model vs cpu", "--samples 4 --hydrogens vs cpu",
                 "host syncs per batch", "throughput (residue-frames/s)"):
        assert f"  PASS  {part}" in out, part
    assert "  N/A   peak GPU memory" in out
    with open(results, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["benchmark"] == "gpu_check" and r["git_sha"] and r["machine"] and r["date"] for r in rows)
    got = {(r["configuration"], r["metric"]): float(r["value"]) for r in rows}
    assert got[("triton tests (smoke)|device=cpu", "passed")] == 3
    assert got[("ideal model vs cpu|synth|frames=64|L=135|device=cpu", "atoms_within_0.0001_A")] == 100.0
    assert got[("default model vs cpu|synth|frames=64|L=135|device=cpu", "max_abs_diff")] == 0.0
    assert got[("--samples 4 --hydrogens vs cpu|example|frames=40|L=135|device=cpu", "rows_ok")] == 1
    assert got[("--samples 4 --hydrogens vs cpu|example|device=cpu", "hydrogen_atoms")] > 0
    assert got[("throughput (residue-frames/s)|batch=32|device=cpu", "device")] > 0
    assert any(c.startswith("host syncs per batch|batch=8|") and m == "per_batch" for c, m in got)
    assert got[("total|device=cpu", "ok")] == 1
    if offline:
        assert "unshare" in offline  # ran with no network at all


def test_results_are_appended_only_when_asked(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert gpu_check.parse_args(["--device", "cpu"]).append_results is None
    assert gpu_check.parse_args(["--append-results"]).append_results == str(gpu_check.RESULTS)


# ---------------------------------------------------------------------------------------------------------------
# the comparison


def _output(path: Path, xyz_nm: np.ndarray, top: md.Topology, frames: np.ndarray, samples=None) -> Path:
    md.Trajectory(xyz_nm.astype(np.float32), top).save_hdf5(str(path), force_overwrite=True)
    with h5py.File(path, "a") as f:
        f["ldb/cg_frame"] = frames
        if samples is not None:
            f["ldb/sample"] = samples
    return path


@pytest.fixture
def asp_phe(tmp_path):
    """Two residues (ASP, PHE), 6 rows, random coordinates in nm."""
    top = md.Topology()
    chain = top.add_chain()
    for name, atoms in (("ASP", "N CA C O CB CG OD1 OD2"), ("PHE", "N CA C O CB CG CD1 CD2 CE1 CE2 CZ")):
        res = top.add_residue(name, chain)
        for a in atoms.split():
            top.add_atom(a, md.element.get_by_symbol(a[0]), res)
    xyz = np.random.default_rng(0).normal(size=(6, top.n_atoms, 3))
    return tmp_path, top, xyz, _output(tmp_path / "ref.h5", xyz, top, np.arange(6))


def test_within_tolerance_and_flips_explained(asp_phe):
    tmp, top, xyz, ref = asp_phe
    same = compare_outputs(ref, _output(tmp / "same.h5", xyz, top, np.arange(6)), 6, 1e-4, 1.0)
    assert same["ok"] and same["within"] == 1.0 and same["max_diff_A"] == 0.0 and not same["flips"]
    dev = xyz.copy()
    dev[1, 6], dev[1, 7] = xyz[1, 7], xyz[1, 6]  # ASP OD1/OD2 exchanged: the same structure
    dev[2, 18] += 0.1  # PHE CZ moved 1 Å: a side-chain flip
    dev[4, 3] += 0.05  # ASP O moved 0.5 Å: the backbone, unexplained
    r = compare_outputs(ref, _output(tmp / "dev.h5", dev, top, np.arange(6)), 6, 0.01, 0.9)
    assert r["flips"] == {"swap": 1, "side chain": 1, "backbone": 1} and r["flip_residues"] == {"PHE": 1}
    assert not r["explained"] and not r["ok"] and r["within"] == pytest.approx(1 - 4 / xyz[..., 0].size)
    dev[4, 3] = xyz[4, 3]
    r = compare_outputs(ref, _output(tmp / "dev2.h5", dev, top, np.arange(6)), 6, 0.01, 0.9)
    assert r["explained"] and r["ok"]
    assert not compare_outputs(ref, tmp / "dev2.h5", 6, 0.01, 0.99)["ok"]  # 3 of 114 atoms off: below 99 %


def test_every_row_and_sample_once(asp_phe):
    tmp, top, xyz, ref = asp_phe
    short = compare_outputs(ref, _output(tmp / "short.h5", xyz[:5], top, np.arange(5)), 6, 0.01, 0.99)
    assert not short["ok"] and short["rows_dev"] == 5 and not short["rows_ok"]
    dup = np.arange(6)
    dup[5] = 4
    assert not compare_outputs(ref, _output(tmp / "dup.h5", xyz, top, dup), 6, 0.01, 0.99)["rows_ok"]
    frames, samples = np.repeat(np.arange(3), 2), np.tile(np.arange(2), 3)
    a = _output(tmp / "a.h5", xyz, top, frames, samples)
    b = _output(tmp / "b.h5", xyz, top, frames, samples)
    assert compare_outputs(a, b, 3, 0.01, 0.99, samples=2)["ok"]
    assert not compare_outputs(a, b, 6, 0.01, 0.99)["rows_ok"]  # 6 frames of 1 sample is not 3 × 2


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


def _run(*args, timeout=60):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "--device must be cuda, cuda:N or cpu"),
    (["--device", "cpu", "--batches", "0"], "must be positive"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_error_line(args, message, tmp_path):
    proc = _run(*args, "--append-results", tmp_path / "r.csv")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_cuda_without_a_gpu_is_one_error_line(tmp_path):
    proc = _run("--append-results", tmp_path / "r.csv")  # --device cuda is the default
    assert proc.returncode == 2 and proc.stderr.startswith("error: --device cuda: torch ")
    assert "sees no CUDA device" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cuda_syncs_are_counted_and_other_warnings_shown(monkeypatch):
    """gpu_probe's counter on CUDA's sync debug mode (the mode itself is stubbed: this torch has no CUDA)."""
    import warnings

    import gpu_probe

    modes, shown = [], []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kwargs: shown.append(str(message)))
    counter = [0]
    with gpu_probe.count_cuda_syncs(counter):
        for _ in range(3):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)  # one per sync
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert counter == [3] and modes == ["warn", "default"]
    assert shown == ["something else"]


def test_throughput_and_memory_verdicts():
    gib = 2**30
    dev = [{"batch": 64, "rate": 5e5, "compute_rate": 6e5, "wall_s": 2.0, "peak": 1 * gib, "total": 140 * gib},
           {"batch": 4096, "rate": 2e6, "compute_rate": 3e6, "wall_s": 1.0, "peak": 30 * gib, "total": 140 * gib}]
    cpu = [{"batch": 64, "rate": 1e5, "compute_rate": 1e5, "wall_s": 9.0},
           {"batch": 4096, "stopped": "time budget"}]
    speed, mem = gpu_check.throughput_parts(dev, cpu, on_gpu=True, threads=16)
    assert speed.status == "PASS" and "64: 500,000 vs cpu 100,000 (5.0×)" in speed.figure
    assert mem.status == "PASS" and mem.figure.startswith("30.00 GiB at batch 4096 (of 140 GiB)")
    slow = [dict(p, rate=p["rate"] / 100) for p in dev]
    assert gpu_check.throughput_parts(slow, cpu, on_gpu=True, threads=16)[0].status == "FAIL"  # slower than the CPU
    oom = dev[:1] + [{"batch": 4096, "stopped": "out of memory"}]
    speed, mem = gpu_check.throughput_parts(oom, cpu, on_gpu=True, threads=16)
    assert speed.status == "PASS" and "4096: stopped (out of memory)" in speed.figure and mem.status == "PASS"
    full = [dict(dev[1], peak=139 * gib)]
    assert gpu_check.throughput_parts(full, cpu, on_gpu=True, threads=16)[1].status == "FAIL"
    speed, mem = gpu_check.throughput_parts([dict(p, peak=None) for p in dev], None, on_gpu=False, threads=2)
    assert speed.status == "PASS" and mem.status == "N/A"


# ---------------------------------------------------------------------------------------------------------------
# the wheel folder


def test_wheel_folder_has_the_project_less_torch_and_triton():
    required, optional = wheelhouse.requirements()
    names = {wheelhouse._name(r) for r in required}
    assert {"numpy", "h5py", "mdtraj", "tables", "gemmi", "safetensors", "tqdm", "vermouth", "scikit-build-core",
            "nanobind", "cmake", "ninja", "pytest", "pip"} <= names
    assert not names & {"torch", "triton"}
    assert [wheelhouse._name(r) for r in optional] == ["mpi4py"]
    tags = wheelhouse.platforms("x86_64", "2.28")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags
    assert wheelhouse.platforms("aarch64", "2.34")[-1] == "manylinux2014_aarch64"
