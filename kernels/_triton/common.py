"""What every Triton op module shares: the interpreter switch, the launch options, the precise elementary
functions, the allocation and input checks of the launchers, and the device tables more than one op reads.

Numerics, chosen so that the three implementations (reference, C++, Triton) agree:

* every launch passes :data:`LAUNCH` (``enable_fp_fusion=False``): the reference rounds each product before
  adding it, so an FMA would change the last bit of a distance (and could flip a VQ index);
* divisions and square roots of float32 values use the IEEE round-to-nearest forms (``div_rn``, ``sqrt_rn``)
  and, on the GPU, sin / cos / log come from libdevice (Triton's default ``tl.sin`` / ``tl.cos`` / ``tl.log``
  lower to fast approximations on NVIDIA); in the interpreter they are numpy's. The one exception is the exp of
  message_mean's SiLU, which is ``tl.exp`` (ex2.approx on NVIDIA, a few ulps): it shapes network activations,
  not coordinates or indices, and keeps the kernel free of libdevice's fused multiply-adds;
* the noise hash is uint32 arithmetic (wrapping multiply, logical shifts) and Box–Muller runs in float64;
  2π is loaded from a float64 tensor because a Python float literal inside a kernel is a float32 constant.

Tables (Z-matrix, ideal geometry, slot masks) are tensors built once per device from
:mod:`ldb_hpc.chem.residues` and :func:`ldb_hpc.chem.ideal_geometry.ideal_geometry`; no geometry number is typed in
these modules.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
import triton
import triton.language as tl

from ldb_hpc.chem import residues as rc

# Triton picks interpreter or compiler when each @triton.jit is defined, from this same knob.
INTERPRET = bool(triton.knobs.runtime.interpret) if hasattr(triton, "knobs") else \
    os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")

LAUNCH = dict(enable_fp_fusion=False)  # keyword arguments of every kernel launch

NUM_SLOTS = rc.NUM_SLOTS
PRO = rc.RESTYPE_INDEX["PRO"]
CYS = rc.RESTYPE_INDEX["CYS"]


# ----------------------------------------------------------------------------------------------------
# Precise elementary functions (libdevice on the GPU, numpy in the interpreter)

if INTERPRET:
    @triton.jit
    def sin(x):
        return tl.sin(x)

    @triton.jit
    def cos(x):
        return tl.cos(x)

    @triton.jit
    def log(x):
        return tl.log(x)
else:  # pragma: no cover - needs a GPU
    from triton.language.extra import libdevice

    @triton.jit
    def sin(x):
        return libdevice.sin(x)

    @triton.jit
    def cos(x):
        return libdevice.cos(x)

    @triton.jit
    def log(x):
        return libdevice.log(x)


# ----------------------------------------------------------------------------------------------------
# Host side of the launchers


def alloc(shape, dtype, device) -> torch.Tensor:
    """Every output buffer comes from here; launchers call it as ``common.alloc`` (tests replace it to poison
    outputs)."""
    return torch.empty(shape, dtype=dtype, device=device)


def check_device(*tensors: torch.Tensor) -> torch.device:
    """The one device of ``tensors``: CUDA, or any device under the interpreter."""
    dev = tensors[0].device
    for t in tensors:
        if t.device != dev:
            raise ValueError(f"all tensors must be on one device, got {dev} and {t.device}")
    if dev.type != "cuda" and not INTERPRET:
        raise RuntimeError("ldb_hpc._triton kernels need CUDA tensors (or TRITON_INTERPRET=1 set before import)")
    return dev


def f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).contiguous()


def i64(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.int64).contiguous()


def table(values, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host table (numpy array or nested list) as a contiguous device tensor of ``dtype``."""
    return torch.as_tensor(np.asarray(values), dtype=dtype, device=device).contiguous()


@functools.lru_cache(maxsize=8)
def slot_mask(device: torch.device) -> torch.Tensor:
    """[restype, 14] int32: 1 where the residue type has an atom in the slot (rc.SLOT_MASK)."""
    return table(rc.SLOT_MASK, torch.int32, device)
