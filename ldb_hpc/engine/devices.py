"""Which device a rank computes on: ``--device auto|cpu|cuda|cuda:N`` (backmap and train).

- ``cpu``: the CPU (the C++ kernels).
- ``cuda:N``: GPU N of those visible to the process (``CUDA_VISIBLE_DEVICES`` is respected: torch numbers the
  visible GPUs 0..n-1).
- ``cuda``: one GPU per rank, chosen by the rank's local rank on its node: local rank r takes visible GPU r.
  When a rank sees exactly one GPU (``srun --gpus-per-task=1`` or a site's binding gives each rank its own), it
  takes that one whatever its local rank. More ranks on a node than visible GPUs (each seeing several) is an
  error: GPUs are never silently shared, which would halve every rank's throughput.
- ``auto`` (the default): ``cuda`` when a GPU is visible, else ``cpu``.

A GPU spec on a machine without one is an :class:`~ldb_hpc.errors.InputError` (a one-line ``error:``).
"""

from __future__ import annotations

import os
import re

from ldb_hpc.errors import InputError

DEVICE_HELP = "auto (a GPU per rank when there are GPUs, else the CPU), cpu, cuda (a GPU per rank), or cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_spec(spec: str) -> str:
    """The spec, lower-cased, when it is one of auto, cpu, cuda, cuda:N; else an InputError."""
    norm = (spec or "").strip().lower()
    if not _SPEC.match(norm):
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    return norm


def visible_gpus() -> int:
    """CUDA devices this process can use (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_index(spec: str, local_rank: int, local_size: int, n_gpus: int) -> int | None:
    """The visible GPU index a rank uses, or None for the CPU (pure arithmetic; see the module docstring).

    spec: a :func:`check_spec` value; local_rank / local_size: the rank and the number of ranks on this node;
    n_gpus: visible GPUs. Raises InputError when the spec cannot be met."""
    spec = check_spec(spec)
    if spec == "cpu" or (spec == "auto" and n_gpus == 0):
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    if n_gpus == 0:
        raise InputError(f"--device {spec}: no CUDA device is visible to this process{seen}; use --device cpu")
    if spec.startswith("cuda:"):
        index = int(spec.split(":")[1])
        if index >= n_gpus:
            raise InputError(f"--device {spec}: only {n_gpus} CUDA device(s) are visible{seen}")
        return index
    if n_gpus == 1:
        return 0
    if local_size > n_gpus or local_rank >= n_gpus:
        raise InputError(f"{max(local_size, local_rank + 1)} ranks on this node but {n_gpus} GPUs visible{seen}: "
                         f"start one rank per GPU (e.g. srun --ntasks-per-node={n_gpus} --gpus-per-task=1) or use "
                         "--device cpu")
    return local_rank


def select_device(spec: str, local_rank: int = 0, local_size: int = 1):
    """The torch.device a rank computes on (see :func:`gpu_index`); makes it the current CUDA device."""
    import torch

    index = gpu_index(spec, local_rank, local_size, visible_gpus())
    if index is None:
        return torch.device("cpu")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
