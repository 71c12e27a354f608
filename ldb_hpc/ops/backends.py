"""Backend selection for the fused ops: which implementation (reference, cpu, triton) runs a call, whether a
device's run gets the kernels it needs, and the per-process count of calls by implementation (see
:mod:`ldb_hpc.ops` for the contract; the ops themselves dispatch through :func:`implementation`)."""

from __future__ import annotations

import collections
import functools
import importlib
import os

import torch

from ldb_hpc.errors import InputError
from ldb_hpc.ops import reference

ENV_VAR = "LDB_HPC_KERNELS"
BACKENDS = ("reference", "cpu", "triton")
_CALLS: collections.Counter = collections.Counter()  # fused-op calls of this process by the implementation that ran
_TRITON_ERROR: list[str] = []  # why ldb_hpc._triton did not import (the first error)


def count_call(name: str) -> None:
    """Count one fused-op call run by ``name`` outside :func:`implementation` (an op's own torch path)."""
    _CALLS[name] += 1


def kernel_calls() -> dict[str, int]:
    """Fused-op calls made by this process so far, by implementation ("cpu", "triton", "reference")."""
    return dict(_CALLS)


@functools.lru_cache(maxsize=1)
def _cpu_ops():
    """ldb_hpc.ops.cpu when the extension ldb_hpc._cpu imports, else None."""
    try:
        from ldb_hpc.ops import cpu

        cpu.module()
        return cpu
    except (ImportError, OSError):
        return None


@functools.lru_cache(maxsize=1)
def _triton_ops():
    """ldb_hpc._triton.ops (every Triton launcher) when triton and the Triton kernels import, else None."""
    try:
        import triton  # noqa: F401

        return importlib.import_module("ldb_hpc._triton.ops")  # kernels/_triton, mapped as ldb_hpc._triton
    except Exception as exc:  # noqa: BLE001 - a broken triton install means "not available", never a crash
        _TRITON_ERROR.append(" ".join(f"{type(exc).__name__}: {exc}".split())[:200])
        return None


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


def available_backends() -> list[str]:
    """The backends that can run here: always "reference"; "cpu" when ldb_hpc._cpu was built; "triton" when
    ldb_hpc._triton imports and either a CUDA device is present or TRITON_INTERPRET=1."""
    out = ["reference"]
    if _cpu_ops() is not None:
        out.append("cpu")
    if (torch.cuda.is_available() or _interpreted()) and _triton_ops() is not None:
        out.append("triton")
    return out


def backend(device: torch.device | str | None = None) -> str:
    """The implementation the ops run for tensors on ``device`` (default CPU): "reference", "cpu" or "triton".

    Raises InputError when LDB_HPC_KERNELS names an unknown backend or one that cannot run on ``device``."""
    dev = torch.device(device if device is not None else "cpu")
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise InputError(f"{ENV_VAR}={forced!r} is not a kernel backend; use one of {', '.join(BACKENDS)}")
        if forced == "cpu" and (_cpu_ops() is None or dev.type != "cpu"):
            why = "ldb_hpc._cpu is not built (reinstall the package)" if _cpu_ops() is None else \
                f"the C++ kernels run on CPU tensors only, not {dev.type}"
            raise InputError(f"{ENV_VAR}=cpu cannot run: {why}")
        if forced == "triton" and _triton_ops() is None:
            raise InputError(f"{ENV_VAR}=triton cannot run: triton or ldb_hpc._triton does not import")
        return forced
    if dev.type == "cuda":
        return "triton" if _triton_ops() is not None else "reference"
    if dev.type == "cpu":
        return "cpu" if _cpu_ops() is not None else "reference"
    return "reference"


def require_kernels(device: torch.device | str) -> str:
    """The backend a run on ``device`` will use, after checking that a GPU run gets the Triton kernels: an
    InputError when they do not import or when TRITON_INTERPRET is set (the interpreter on a GPU is orders of
    magnitude slower), unless LDB_HPC_KERNELS=reference asks for the torch reference ops."""
    dev = torch.device(device)
    name = backend(dev)
    if dev.type != "cuda" or os.environ.get(ENV_VAR, "").strip().lower() == "reference":
        return name
    if _interpreted():
        raise InputError(f"TRITON_INTERPRET={os.environ['TRITON_INTERPRET']} is set: Triton would run its interpreter "
                         f"on the GPU; unset it (or set {ENV_VAR}=reference for the torch reference ops)")
    if name != "triton":
        why = _TRITON_ERROR[0] if _TRITON_ERROR else "triton or ldb_hpc._triton does not import"
        raise InputError(f"--device {dev.type}: the Triton kernels cannot run ({why}); install the triton that "
                         f"matches this torch, or set {ENV_VAR}=reference to run the torch reference ops on the GPU")
    return name


def implementation(dev: torch.device, *floats: torch.Tensor):
    """The module implementing the ops for tensors on dev (float32 coordinates only go to the kernels); the call
    is counted under the implementation that runs it (:func:`kernel_calls`)."""
    name = backend(dev)
    if name != "reference" and any(t.dtype != torch.float32 for t in floats):
        name = "reference"
    _CALLS[name] += 1
    # only the chosen backend is loaded: a CPU run never imports triton
    return reference if name == "reference" else _cpu_ops() if name == "cpu" else _triton_ops()
