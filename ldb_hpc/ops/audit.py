"""Host traffic of the compute path, counted: every point where the host waits for the device, every tensor built
from host data.

On a GPU each of these costs a round trip (a synchronisation: the host stops until the device has drained its
queue) or a copy over the bus; on the CPU they are free, which is why they must be counted rather than timed. The
count works on any device, CPU included, so a test on a CPU-only machine can hold the GPU path to its budget:

- **syncs**: aten ops whose result the host must read or whose output size depends on data
  (``_local_scalar_dense`` — ``.item()``, ``int(t)``, ``bool(t)``, ``if t`` —, ``nonzero``, ``masked_select``,
  ``unique``, indexing with a boolean mask, ``repeat_interleave`` without an output size, ``equal``,
  ``is_nonzero``) and the Python-level reads ``Tensor.tolist`` and ``Tensor.cpu`` (a no-op on a CPU tensor, a
  sync on a CUDA one: counted as the latter; ``Tensor.numpy`` needs a host tensor, so a CUDA tensor goes through
  ``.cpu()`` first and is counted there);
- **uploads**: ``torch.as_tensor`` of host data onto a named device, and ``torch.tensor`` (it reaches the
  dispatcher as ``aten.lift_fresh``): host data made a tensor, one copy per call once the tensor is on a GPU
  (``torch.from_numpy`` and ``torch.as_tensor`` without a device only wrap host memory: the copy is the
  ``.to(device)`` that follows, counted below). A 0-dim result is not counted: a GPU kernel takes it as an
  argument, with no copy. And every ``Tensor.to`` that names a device (``x.to(dev)``, ``x.to(device=dev)``): on
  the CPU it is a no-op, on a GPU it copies a host tensor (a table kept on the host) over the bus, so it is
  counted as the latter.

Each event is tallied by the first frame of ``ldb_hpc`` code on the stack (``file:line``), so a budget failure
names the lines to fix. Work marked :func:`ldb_hpc.geometry.resident.host_side` (on rows already read back,
which a GPU run does on its CPU) is not counted. Meant for tests and gpu-check, never the production path (it
slows every op down).
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ldb_hpc.geometry.resident import on_host_side

_aten = torch.ops.aten
_SYNC_OPS = {
    _aten._local_scalar_dense.default, _aten.nonzero.default, _aten.masked_select.default,
    _aten.equal.default, _aten.is_nonzero.default, _aten.unique_dim.default,
    _aten._unique2.default, _aten._unique.default, _aten.unique_consecutive.default,
    _aten.repeat_interleave.Tensor,
}
_INDEXING = {_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default, _aten._index_put_impl_.default}
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_THIS = os.path.abspath(__file__)


def _site() -> str:
    """file:line of the innermost ldb_hpc frame below this module (``?`` when none)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if path.startswith(_PACKAGE) and path != _THIS:
            return f"{os.path.relpath(path, os.path.dirname(_PACKAGE))}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else None
    return isinstance(indices, (list, tuple)) and any(
        isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices)


class HostTraffic(TorchDispatchMode):
    """``with HostTraffic() as t: ...`` → ``t.syncs``, ``t.uploads`` (counts) and ``t.sync_sites``,
    ``t.upload_sites`` (Counter of ``file:line``). :meth:`reset` zeroes them (e.g. after a warm-up batch)."""

    def __init__(self):
        super().__init__()
        self.sync_sites: collections.Counter = collections.Counter()
        self.upload_sites: collections.Counter = collections.Counter()
        self._stack = contextlib.ExitStack()

    @property
    def syncs(self) -> int:
        return sum(self.sync_sites.values())

    @property
    def uploads(self) -> int:
        return sum(self.upload_sites.values())

    def reset(self) -> None:
        self.sync_sites.clear()
        self.upload_sites.clear()

    def report(self, top: int = 12) -> str:
        """The busiest sites, one per line."""
        lines = [f"syncs {self.syncs}, uploads {self.uploads}"]
        lines += [f"  sync   {n:4d}  {s}" for s, n in self.sync_sites.most_common(top)]
        lines += [f"  upload {n:4d}  {s}" for s, n in self.upload_sites.most_common(top)]
        return "\n".join(lines)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if on_host_side():
            return func(*args, **kwargs)
        if func in _SYNC_OPS and not (func is _aten.repeat_interleave.Tensor and kwargs.get("output_size")):
            self.sync_sites[_site()] += 1
        elif func in _INDEXING and _bool_index(args):
            self.sync_sites[_site()] += 1
        elif func is _aten.lift_fresh.default and args[0].dim() > 0:  # a 0-dim tensor acts as a kernel argument
            self.upload_sites[_site()] += 1
        return func(*args, **kwargs)

    def _wrap(self, owner, name: str, sites: collections.Counter, skip_tensors: bool = False) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            out = original(*args, **kwargs)
            if on_host_side():
                return out
            if name == "as_tensor" and ("device" not in kwargs or out.dim() == 0):
                return out  # a wrap of host memory, or a scalar argument
            if not (skip_tensors and args and isinstance(args[0], torch.Tensor)):
                sites[_site()] += 1
            return out

        setattr(owner, name, counted)
        self._stack.callback(setattr, owner, name, original)

    def _wrap_to(self) -> None:
        original = torch.Tensor.to
        sites = self.upload_sites

        def to(t, *args, **kwargs):
            if not on_host_side() and ("device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args)):
                sites[_site()] += 1
            return original(t, *args, **kwargs)

        torch.Tensor.to = to
        self._stack.callback(setattr, torch.Tensor, "to", original)

    def __enter__(self):
        for name in ("tolist", "cpu"):
            self._wrap(torch.Tensor, name, self.sync_sites)
        self._wrap_to()
        self._wrap(torch, "as_tensor", self.upload_sites, skip_tensors=True)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._stack.close()
