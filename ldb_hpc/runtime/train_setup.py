"""The set-up of a training run: the training set opened, the launch found, torch.distributed from the launcher,
collectives injected into the model layer (:mod:`ldb_hpc.model.train` is the loop).

``run_training(cfg, device)`` finds how the process was started (:func:`ldb_hpc.runtime.comm.detect_launch`):

- serial (one process; also SLURM_NTASKS or a lone WORLD_SIZE set by hand): no process group at all;
- torchrun: RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT are set, the rendezvous is ``env://``;
- an MPI launcher (mpiexec, mpirun, srun): ranks come from MPI (:func:`get_comm`); the rendezvous is
  MASTER_ADDR:MASTER_PORT when the job script exports both (slurm/train.sbatch does), else rank 0 publishes
  its host name and a free TCP port over MPI.

Each rank trains on its own device (``cpu``, or ``cuda``: GPU local_rank modulo the node's GPUs) with gloo on
the CPU and nccl on CUDA, and :func:`ldb_hpc.model.train.train` receives a :class:`TorchCollectives` and the
training set of ``cfg.data``, read by every rank with :func:`ldb_hpc.io.training_set.read_training_set`.
Under MPI a rank that fails prints ``error: rank R: …`` and aborts the job, so nobody waits in a collective.
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager

import torch
import torch.distributed as dist

from ldb_hpc.engine import devices
from ldb_hpc.errors import InputError
from ldb_hpc.io.training_set import read_training_set
from ldb_hpc.model.stages import Stage
from ldb_hpc.model.train import SerialCollectives, TrainConfig, TrainResult, train
from ldb_hpc.runtime.comm import Launch, detect_launch, get_comm, ranks_per_node


class TorchCollectives:
    """The collectives of :func:`ldb_hpc.model.train.train` over the default torch.distributed group.

    Tensors are reduced or broadcast in place (and returned); every rank must call with the same shapes and
    dtypes in the same order.
    """

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t)
        return t

    def all_reduce_mean(self, tensors: list) -> list:
        """One flat all-reduce per dtype (the gradients of a step travel together)."""
        for dtype in dict.fromkeys(t.dtype for t in tensors):
            group = [t for t in tensors if t.dtype == dtype]
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)
            flat /= self.world
            offset = 0
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()
        return tensors

    def broadcast(self, tensors: list, src: int = 0) -> list:
        for t in tensors:
            if t.is_contiguous():
                dist.broadcast(t, src)
            else:
                tmp = t.contiguous()
                dist.broadcast(tmp, src)
                t.copy_(tmp)
        return tensors


def load_validation(folder: str | None) -> list:
    """Validation structures (atom14, first model) from a folder of PDB/mmCIF files, or every chain of a training
    set HDF5 (e.g. thermal MD frames of the validation proteins): a list of
    (pos [1, L, 14, 3] Å, mask [1, L, 14], restype [L], segment [L])."""
    if not folder:
        return []
    if os.path.isfile(folder) and folder.endswith((".h5", ".hdf5")):
        data = read_training_set(folder)
        return [(torch.from_numpy(data.positions[o:o + n])[None], torch.from_numpy(data.mask[o:o + n])[None],
                 torch.from_numpy(data.restype[o:o + n]), torch.from_numpy(data.segment[o:o + n]))
                for o, n in zip(data.chains.offset, data.chains.count)]
    from ldb_hpc.io.sources import collect_structure_files
    from ldb_hpc.io.structure import read_structure

    out = []
    for path in collect_structure_files([folder]):
        prot = read_structure(path, keep_unknown=True)[0]
        out.append((torch.from_numpy(prot.positions)[None], torch.from_numpy(prot.mask)[None],
                    torch.from_numpy(prot.residues.restype), torch.from_numpy(prot.residues.segment)))
    return out


def training_device(device: str, local_rank: int = 0) -> torch.device:
    """The device of this rank for ``--device`` (auto, cpu, cuda, cuda:N; :mod:`ldb_hpc.engine.devices`, the
    same rule as backmap: one GPU per rank by local rank), made current."""
    return devices.select_device(device, local_rank, ranks_per_node())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def rendezvous(launch: Launch, comm=None) -> str:
    """The init_method of the process group: ``env://`` under torchrun; under MPI the job's MASTER_ADDR and
    MASTER_PORT when both are set, else rank 0's host name and a free port, broadcast over ``comm``."""
    if launch.kind == "torchrun":
        return "env://"
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not (addr and port):
        addr, port = comm.bcast((socket.gethostname(), _free_port()) if comm.rank == 0 else None, root=0)
    return f"tcp://{addr}:{port}"


def resolve_launch(comm=None) -> tuple[Launch, object]:
    """(launch, MPI communicator or None): ``comm`` when it has several ranks, else :func:`get_comm` under an
    MPI launcher (MPI's ranks are the truth there), else the torchrun or serial launch."""
    if comm is None and detect_launch().kind == "mpi":
        comm = get_comm()
    if comm is not None and comm.size > 1:
        return Launch("mpi", comm.rank, comm.size, comm.local_rank), comm
    return detect_launch(), None


@contextmanager
def process_group(launch: Launch, comm=None, device: str = "cpu"):
    """Yields (collectives, torch device) of this rank; a torch.distributed group lives inside the block when
    ``launch`` has more than one rank (gloo on the CPU, nccl on CUDA), none otherwise."""
    dev = training_device(device, launch.local_rank)
    if launch.size == 1:
        yield SerialCollectives(), dev
        return
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method=rendezvous(launch, comm),
                            rank=launch.rank, world_size=launch.size)
    try:
        yield TorchCollectives(launch.rank, launch.size), dev
    finally:
        dist.destroy_process_group()


def run_training(cfg: TrainConfig, device: str = "cpu", comm=None) -> TrainResult:
    """Train ``cfg`` on every launched rank (see the module docstring); returns this rank's result."""
    launch, comm = resolve_launch(comm)
    try:
        with process_group(launch, comm, device) as (coll, dev):
            valid = load_validation(cfg.valid) if coll.rank == 0 else None
            if cfg.stage is Stage.PLACEMENT:
                from ldb_hpc.model.train_placer import train_placer

                return train_placer(cfg, read_training_set(cfg.data), coll, dev, valid=valid)
            extra = read_training_set(cfg.extra_data) if cfg.extra_data else None
            return train(cfg, read_training_set(cfg.data), coll, dev, valid=valid, extra=extra)
    except BaseException as exc:  # noqa: BLE001 - under MPI the other ranks would wait forever
        if comm is None:
            raise
        what = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        print(f"error: rank {comm.rank}: {' '.join(what.split())}", file=sys.stderr, flush=True)
        comm.abort(2 if isinstance(exc, InputError) else 1)
        raise  # not reached under MPI


__all__ = ["TorchCollectives", "load_validation", "process_group", "rendezvous", "resolve_launch", "run_training",
           "training_device"]
