"""Running torch code on fake CUDA tensors on a CPU-only torch (tests/test_device.py).

``torch._subclasses.fake_tensor.FakeTensorMode`` lets ``torch.randn(4, 3, device="cuda")`` exist without a GPU:
every op computes only shapes, dtypes and devices, and an op that mixes a CPU tensor (other than a 0-dim scalar)
with a CUDA one raises ``FakeTensorDeviceMismatchError``. Two things of this CPU-only build need help:

- Python indexing (``x[1:]``, ``x[idx] = v``), ``Tensor.copy_``, in-place operators (``x &= y``) and ``~x``
  enter a CUDA device guard in C++ before any dispatch, and the build has no CUDA guard. :class:`AtenIndexing`
  routes them through the equivalent aten ops (select, slice, unsqueeze, index, index_put_, copy_; the
  out-of-place operator then copy_), which do dispatch to the fake mode. Its semantics are checked against real
  indexing in the test module.
- ``module.to("cuda")`` copies real weights to a device that is not there: :func:`fake_cuda_module` puts fake CUDA
  tensors of the same shapes in place of every parameter and buffer (values do not matter for devices).

Data-dependent ops (``nonzero``, boolean masks, ``bool(t.any())``) cannot run on fake tensors at all.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode


def _basic_then_advanced(x: torch.Tensor, idx):
    """Apply the basic part of an index (ints, slices, None, Ellipsis) with view ops; return the view and the
    advanced (integer tensor) indices for aten.index, in the positions of the view (None where a dim is kept)."""
    if not isinstance(idx, tuple):
        idx = (idx,)

    def consumed(i):
        if i is None or i is Ellipsis:
            return 0
        if isinstance(i, torch.Tensor) and i.dtype == torch.bool:
            return i.dim()
        return 1

    rest = x.dim() - sum(consumed(i) for i in idx)
    out, d, advanced = x, 0, []
    for i in idx:
        if i is None:
            out = out.unsqueeze(d)
            d += 1
        elif i is Ellipsis:
            d += rest
        elif isinstance(i, int) and not isinstance(i, bool):
            out = out.select(d, i)
        elif isinstance(i, slice):
            start, stop, step = i.indices(out.shape[d])
            out = torch.ops.aten.slice.Tensor(out, d, start, stop, step)
            d += 1
        else:
            t = i if isinstance(i, torch.Tensor) else torch.as_tensor(i, device=out.device)
            if t.dtype == torch.bool:
                raise RuntimeError("boolean-mask indexing has a data-dependent shape")
            advanced.append((d, t))
            d += 1
    if not advanced:
        return out, None
    indices = [None] * (max(p for p, _ in advanced) + 1)
    for p, t in advanced:
        indices[p] = t
    return out, indices


class AtenIndexing(TorchFunctionMode):
    """Tensor indexing and copy_ through aten ops (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.__getitem__:
            view, indices = _basic_then_advanced(args[0], args[1])
            return view if indices is None else torch.ops.aten.index.Tensor(view, indices)
        if func is torch.Tensor.__setitem__:
            x, idx, value = args
            view, indices = _basic_then_advanced(x, idx)
            if not isinstance(value, torch.Tensor):
                value = torch.full((), value, dtype=x.dtype, device=x.device)
            if indices is None:
                torch.ops.aten.copy_.default(view, value)
            else:
                torch.ops.aten.index_put_.default(view, indices, value)
            return None
        if func is torch.Tensor.copy_:
            return torch.ops.aten.copy_.default(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "__invert__":
            return torch.ops.aten.bitwise_not.default(args[0])
        if name.startswith("__i") and name.endswith("__") and hasattr(torch.Tensor, "__" + name[3:]):
            # x &= y and friends: the out-of-place op, then an aten copy into x
            result = getattr(torch.Tensor, "__" + name[3:])(*args, **kwargs)
            return torch.ops.aten.copy_.default(args[0], result)
        return func(*args, **kwargs)


def fake_cuda_module(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every parameter and buffer of ``module`` (in place) by a fake CUDA tensor of the same shape and
    dtype. Call inside FakeTensorMode; returns the module."""
    for sub in module.modules():
        for table in (sub._parameters, sub._buffers):
            for name, value in table.items():
                if value is not None:
                    table[name] = torch.empty(value.shape, dtype=value.dtype, device="cuda")
    return module
