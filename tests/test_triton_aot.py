"""scripts/gpu/triton_aot.py with the pinned triton: every @triton.jit kernel of kernels/_triton compiles for sm_90
(PTX and cubin, the ptxas of the triton wheel) in each specialisation a backmap launches; no GPU, no CUDA driver.

`make triton-aot` runs the same with triton 3.6 as well (a throwaway venv); CI covers the pinned version here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu" / "triton_aot.py"
sys.path.insert(0, str(SCRIPT.parent))

import triton_aot  # noqa: E402


def _ptxas() -> str | None:
    """The ptxas bundled with the installed triton, or None."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        path = get_ptxas(90).path
    except Exception:  # noqa: BLE001 - any failure to find it means "absent"
        return None
    return path if path and os.path.exists(path) else None


def _kernels_in_source() -> set[str]:
    """module.name of every ``@triton.jit`` function named *_kernel in kernels/_triton (read as text)."""
    found = set()
    for path in (REPO / "kernels" / "_triton").glob("*.py"):
        for name in re.findall(r"@triton\.jit[^\n]*\n\s*def (\w+_kernel)\(", path.read_text()):
            found.add(f"{path.stem}.{name}")
    return found


@pytest.mark.slow
@pytest.mark.skipif(_ptxas() is None, reason="the installed triton has no bundled ptxas (no NVIDIA backend)")
def test_every_kernel_compiles_for_sm90_as_launched(tmp_path):
    out = tmp_path / "aot.json"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "LDB_HPC_KERNELS",
                                                             "LDB_HPC_TRITON_DEVICE")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # proves the point on a GPU machine too: nothing here needs a device
    proc = subprocess.run([sys.executable, str(SCRIPT), "--arch", "90", "--json", str(out)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results and all(r["ok"] for r in results), [r for r in results if not r["ok"]]
    kernels = {r["kernel"] for r in results}
    assert _kernels_in_source() <= kernels, _kernels_in_source() - kernels
    assert any(r["source"].startswith("launched") for r in results)
    assert any(r["source"].startswith("listed") for r in results)  # the branches no backmap takes
    for r in results:
        assert r["registers"] and r["cubin_bytes"] > 0 and r["num_warps"] >= 1 and r["spill_stores"] is not None, r
    assert "FAIL" not in proc.stdout and re.search(r"^triton \S+ sm_90: ", proc.stdout, re.M)


def test_recorded_tensors_come_back_with_their_alignment():
    for align in (0, 4, 8, 12):
        t = triton_aot._decode({"tensor": "float32", "align": align})
        assert t.dtype.is_floating_point and t.data_ptr() % 16 == align and t.numel() >= 16
    assert triton_aot._decode({"tensor": "int64", "align": 8}).data_ptr() % 16 == 8
    assert triton_aot._decode({"int": 7}) == 7 and triton_aot._decode({"value": True}) is True


@pytest.mark.parametrize("encoded, constexpr, key", [
    ({"int": 1}, False, "1"),          # the JIT makes an int equal to 1 a constant
    ({"int": 48}, False, "d16"),       # ... and marks 16-divisible ints
    ({"int": 50}, False, "i32"),
    ({"int": 2**40}, False, "i64"),
    ({"int": 50}, True, '{"int": 50}'),  # a constexpr specialises on its value
    ({"float": 0.5}, False, "fp32"),
])
def test_launches_are_told_apart_as_the_jit_does(encoded, constexpr, key):
    assert triton_aot._key(encoded, constexpr) == key
