"""The GPU path without a GPU (issue 21): fallbacks are loud, fused-kernel calls are counted, and one batch costs a
bounded number of host–device synchronisations and host uploads.

A GPU run that would silently fall back to the torch reference ops (triton missing or broken, or
``TRITON_INTERPRET=1`` left in the environment) is an ``error:`` line before any output is touched; the run
summary counts the fused-op calls by implementation. The sync budget is counted on the CPU with
:class:`ldb_hpc.ops.audit.HostTraffic` (aten ops that read device data back or size their output by it, and the
Python-level reads and uploads), the same code path a GPU runs.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import REPO, assert_one_line_error

from ldb_hpc import ops
from ldb_hpc.engine import devices
from ldb_hpc.errors import InputError
from ldb_hpc.runtime.records import kernel_text

EXAMPLE = REPO / "examples" / "example.cg.h5"


@pytest.fixture
def no_triton(monkeypatch):
    """triton cannot be imported (as on a node whose torch has none): ldb_hpc._triton does not load."""
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.setattr(ops, "_TRITON_ERROR", [])
    ops._triton_ops.cache_clear()
    yield
    ops._triton_ops.cache_clear()


def test_cuda_without_triton_is_one_error_line(run_cli, tmp_path, monkeypatch, no_triton):
    monkeypatch.setattr(devices, "visible_gpus", lambda: 1)  # a GPU node, as far as device selection goes
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    out = tmp_path / "out.h5"
    code, _, err = run_cli("backmap", EXAMPLE, "-o", out, "--device", "cuda", "--no-progress")
    assert_one_line_error(code, err, "Triton kernels cannot run")
    assert "import of triton halted" in err and f"{ops.ENV_VAR}=reference" in err  # the reason, named
    assert not list(tmp_path.iterdir())  # nothing written


def test_reference_kernels_on_cuda_only_when_asked(monkeypatch, no_triton):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    with pytest.raises(InputError, match="Triton kernels cannot run"):
        ops.require_kernels("cuda")
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert ops.require_kernels("cuda") == "reference"
    assert ops.require_kernels("cpu") == "reference"  # forced everywhere, the CPU included


def test_triton_interpreter_on_cuda_is_refused(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(InputError, match="TRITON_INTERPRET=1 is set"):
        ops.require_kernels("cuda")
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert ops.require_kernels("cuda") == "reference"


def test_summary_counts_fused_kernel_calls(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    out = tmp_path / "out.h5"
    code, stdout, err = run_cli("backmap", EXAMPLE, "-o", out, "--no-progress", "--model", "ideal")
    assert code == 0, err
    summary = json.loads((tmp_path / "out.h5.summary.json").read_text())
    name = ops.backend("cpu")
    calls = summary["kernel_calls"]
    assert set(calls) == {name} and calls[name] > 0, calls
    assert summary["per_rank"][0]["kernel_calls"] == calls
    assert kernel_text([name], calls) in stdout

    monkeypatch.setenv(ops.ENV_VAR, "reference")  # every op on the torch reference: counted as such
    code, stdout, err = run_cli("backmap", EXAMPLE, "-o", out, "--no-progress", "--model", "ideal", "--overwrite")
    assert code == 0, err
    calls = json.loads((tmp_path / "out.h5.summary.json").read_text())["kernel_calls"]
    assert set(calls) == {"reference"} and calls["reference"] > 0


def test_kernel_text_names_reference_fallbacks():
    assert kernel_text(["triton"], {"triton": 800}) == "triton kernels, 800 calls"
    assert kernel_text(["triton"], {"triton": 800, "reference": 12}) == \
        "triton kernels, 800 calls + 12 on the torch reference"
    assert kernel_text(["reference"], {"reference": 5}) == "reference kernels, 5 calls"
    assert kernel_text(["cpu"], {}) == "cpu kernels, 0 calls"


def test_float64_input_is_counted_as_reference():
    before = ops.kernel_calls().get("reference", 0)
    z = torch.randn(5, 8, dtype=torch.float64)
    ops.vq_nearest(z, torch.randn(16, 8, dtype=torch.float64))
    assert ops.kernel_calls().get("reference", 0) == before + 1
