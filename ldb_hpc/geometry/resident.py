"""Keeping the compute path on its device: host tables uploaded once, and row subsets chosen without reading the
device back.

**Tables.** :func:`on_device` turns a host array that does not change (a residue table of ldb_hpc.chem, a job's
residue types) into a tensor on a device once and hands out the same tensor afterwards (a small LRU cache keyed by
the array's identity, device and dtype). Callers index it, never write to it.

**Subsets.** The repair stages work on the rows a mask selects (residues that clash, peptide units to settle).
On the CPU, reading how many rows were selected costs nothing, so a stage compacts them exactly
(``mask.nonzero()``). On a GPU every such read stops the host until the device has drained its queue, which is
what paced the GPU path (issue 21). A :class:`Selector` makes the choice once per batch:

- ``exact`` (the default): :meth:`Selector.select` returns exactly the selected rows; :meth:`Subset.keep` compacts
  further. Shapes follow the data.
- ``static`` (the GPU's): :meth:`Selector.select` fills a fixed number of slots (the capacity) with
  ``torch.nonzero_static``, in the same order; spare slots repeat the first slot, so every write they make is the
  same write as that slot's (a repeat computes from the same inputs, hence the same values). :meth:`Subset.keep`
  narrows a validity mask instead of compacting, and :meth:`Subset.put` writes only valid slots. Shapes do not
  depend on the data and nothing is read back. A mask that selects more rows than the capacity sets the
  selector's ``overflow`` flag on the device; the engine reads it with the batch's output and computes that batch
  again with an exact selector (and more capacity for the next), so a row is never silently left out.

Both give the same rows bit for bit: every computation here is per row, so which other rows share a call does not
change a row's numbers (tests/test_gpu_path.py runs both on one batch and compares). A stage picks up the
batch's selector with :func:`current`; :func:`use` installs one (the engine does, per batch).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools

import numpy as np
import torch

_TABLES: collections.OrderedDict = collections.OrderedDict()
_TABLES_MAX = 256


def on_device(array, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``array`` (a host array or list that is never modified) as a tensor on ``device`` with ``dtype``, uploaded on
    the first call and cached: the same tensor object afterwards. Do not write to the result."""
    device = torch.device(device)
    if torch.is_tensor(array) and array.device == device:  # already there (a model's own buffer)
        return array if dtype is None else array.to(dtype)
    key = (id(array), device, dtype)
    hit = _TABLES.get(key)
    if hit is not None and hit[0] is array:
        _TABLES.move_to_end(key)
        return hit[1]
    if torch.is_tensor(array):
        tensor = array.detach().to(device=device, dtype=dtype, copy=True)
    else:
        tensor = torch.as_tensor(np.asarray(array), dtype=dtype, device=device)
    if type(tensor) is not torch.Tensor:  # a tensor subclass (a fake tensor of a device test): never cached
        return tensor
    _TABLES[key] = (array, tensor)  # the array is kept alive with its entry, so its id stays its own
    if len(_TABLES) > _TABLES_MAX:
        _TABLES.popitem(last=False)
    return tensor


def table_cache(maxsize: int):
    """functools.lru_cache for functions that build small tables (tensors, or tuples and dicts of them), except that
    a result holding a tensor subclass is returned uncached: a table first built inside a device test's
    FakeTensorMode must not stand in for a real one afterwards (one process runs both under pytest)."""

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(plain(v) for v in value.values())
        if isinstance(value, (tuple, list)):
            return all(plain(v) for v in value)
        return not torch.is_tensor(value) or type(value) is torch.Tensor

    def wrap(fn):
        cache: collections.OrderedDict = collections.OrderedDict()

        @functools.wraps(fn)
        def cached(*args):
            key = tuple((type(a), id(a), a) if torch.is_tensor(a) else a for a in args)
            hit = cache.get(key)
            if hit is not None:
                cache.move_to_end(key)
                return hit
            value = fn(*args)
            if plain(value):
                cache[key] = value
                if len(cache) > maxsize:
                    cache.popitem(last=False)
            return value

        cached.cache_clear = cache.clear
        return cached

    return wrap


def unravel(idx: torch.Tensor, shape) -> tuple:
    """Flat indices ``idx`` → one index tensor per dimension of ``shape`` (torch.unravel_index without its upload
    of the shape)."""
    out = []
    for size in reversed(tuple(shape)):
        out.append(idx % size)
        idx = idx // size
    return tuple(reversed(out))


class Subset:
    """Rows ``idx`` [C] int64 of a flat row axis; ``valid`` [C] bool (static selectors) or None (every slot is a
    selected row); ``spare`` [C] bool (static): the slots that repeat another (never counted twice)."""

    __slots__ = ("idx", "valid", "spare")

    def __init__(self, idx: torch.Tensor, valid: torch.Tensor | None, spare: torch.Tensor | None = None):
        self.idx, self.valid, self.spare = idx, valid, spare

    def __len__(self) -> int:
        return self.idx.shape[0]

    @property
    def surely_empty(self) -> bool:
        """True only when no slot can hold a selected row (known on the host, without reading the device)."""
        return self.idx.shape[0] == 0

    def keep(self, mask: torch.Tensor) -> "Subset":
        """The slots whose ``mask`` [C] (computed per slot) is True: compacted (exact) or masked (static)."""
        if self.valid is None:
            return Subset(self.idx[mask], None)
        return Subset(self.idx, self.valid & mask, self.spare)

    def blend(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """``new`` where the slot is valid, else ``old`` (both [C, ...])."""
        if self.valid is None:
            return new
        return torch.where(self.valid.reshape(-1, *[1] * (new.dim() - 1)), new, old)

    def put(self, target: torch.Tensor, new: torch.Tensor) -> None:
        """target[idx] = new for valid slots (in place; target's first axis is the row axis)."""
        target[self.idx] = self.blend(new, target[self.idx])


class Selector:
    """How a batch's stages select rows (see the module docstring). ``static``: fixed capacities, no read-back.
    ``caps``: the slots of each static choice (:meth:`select`, :meth:`steps`) by key, learned from earlier
    batches (:meth:`next_caps`); a choice without one takes its ``first``. ``counts``: what each choice needed
    (device scalars); ``overflow`` (static only): a device bool, True once a choice needed more than its slots."""

    def __init__(self, static: bool = False, caps: dict[str, int] | None = None, minimum: int = 16):
        self.static = static
        self.minimum = minimum
        self.caps = dict(caps or {})
        self.keys: list[str] = []  # the key of each static choice made, in order (a key recurs inside loops)
        self.counts: list[torch.Tensor] = []  # what each needed (device scalars), in the same order
        self._floors: dict[str, int] = {}  # the least slots a key keeps (minimum for rows, 1 for steps)
        self.overflow: torch.Tensor | None = None

    def _choose(self, key: str, needed: torch.Tensor, first: int, most: int, floor: int) -> int:
        """The slots of a static choice ``key`` (learned, or ``first``; at most ``most``); records what it needed
        and flags an overflow."""
        cap = min(most, self.caps.get(key, first))
        self.keys.append(key)
        self.counts.append(needed)
        self._floors[key] = floor
        self.flag(needed > cap)
        return cap

    def steps(self, key: str, needed: torch.Tensor, first: int = 16) -> int:
        """How many steps a loop runs whose work needs ``needed`` (a device int scalar) of them: exactly that
        (read back) when exact; a fixed number when static (an overflow when ``needed`` exceeds it)."""
        if not self.static:
            return int(needed)
        return self._choose(key, needed, first, 1 << 30, 1)

    def select(self, key: str, mask: torch.Tensor, first: int | None = None) -> Subset:
        """The rows where ``mask`` (any shape; flattened) is True, as a :class:`Subset` of flat indices. key: names
        the choice (its slots are learned per key); first: the slots of a static choice not yet learned (default:
        ``minimum``; an overflow then costs that batch one exact recomputation and teaches the next)."""
        flat = mask.reshape(-1)
        if not self.static:
            return Subset(flat.nonzero()[:, 0], None)
        n = flat.sum()
        cap = self._choose(key, n, self.minimum if first is None else max(self.minimum, first), flat.shape[0],
                           self.minimum)
        if cap == 0:
            none = flat.new_zeros(0, dtype=torch.bool)
            return Subset(flat.new_zeros(0, dtype=torch.long), none, none)
        idx = torch.nonzero_static(flat, size=cap, fill_value=-1)[:, 0]
        # spare slots repeat the last selected row (the order stays non-decreasing; a repeat computes and writes
        # exactly what that row's slot does); with nothing selected, every slot is row 0, invalid
        last = idx.gather(0, (n - 1).clamp(0, cap - 1).reshape(1)).clamp(min=0)
        spare = idx < 0
        idx = torch.where(spare, last, idx)
        return Subset(idx, flat[idx], spare)

    def within(self, key: str, rows: Subset, mask: torch.Tensor) -> Subset:
        """The slots of ``rows`` where ``mask`` [len(rows)] is True (and the slot is valid), selected again: a
        smaller set of slots (static) or a compaction (exact)."""
        if not self.static:
            return rows.keep(mask)
        inner = self.select(key, mask & rows.valid & ~rows.spare)
        return Subset(rows.idx[inner.idx], inner.valid, inner.spare)

    def next_caps(self, counts: list[int], overflowed: bool, seen: dict[str, int]) -> dict[str, int]:
        """Capacities for the next batch from this batch's ``counts`` (one per choice, read back by the engine
        with its output). ``seen`` (updated in place): the most each key needed in a batch that fitted. A batch
        that fitted: every key gets twice its most seen (at least its floor). A batch that overflowed (computed
        again exactly; what it needed after the overflow is not to be trusted): only the keys that ran out of
        slots grow, to twice what they needed."""
        most: dict[str, int] = {}
        for key, n in zip(self.keys, counts):
            most[key] = max(most.get(key, 0), int(n))
        new = dict(self.caps)
        for key, n in most.items():
            cap = self.caps.get(key)
            if not overflowed:
                seen[key] = max(seen.get(key, 0), n)
                new[key] = max(self._floors[key], 2 * seen[key])
            elif cap is None or n > cap:
                new[key] = max(self._floors[key], 2 * n, cap or 0)
        return new

    def flag(self, overflow: torch.Tensor) -> None:
        """Record a device bool that says a static choice left something out."""
        self.overflow = overflow if self.overflow is None else self.overflow | overflow


_CURRENT: contextvars.ContextVar[Selector | None] = contextvars.ContextVar("ldb_hpc_selector", default=None)


def current() -> Selector:
    """The batch's selector (an exact one outside :func:`use`)."""
    sel = _CURRENT.get()
    return Selector() if sel is None else sel


@contextlib.contextmanager
def use(selector: Selector):
    token = _CURRENT.set(selector)
    try:
        yield selector
    finally:
        _CURRENT.reset(token)


_HOST_SIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("ldb_hpc_host_side", default=False)


@contextlib.contextmanager
def host_side():
    """Marks work on data already copied to the host (numpy rows read back), which a GPU run does on the CPU: the
    host-traffic audit (ldb_hpc.ops.audit) does not count it as device traffic."""
    token = _HOST_SIDE.set(True)
    try:
        yield
    finally:
        _HOST_SIDE.reset(token)


def on_host_side() -> bool:
    return _HOST_SIDE.get()
