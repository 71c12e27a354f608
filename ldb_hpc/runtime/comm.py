"""The one module that imports mpi4py: a small communicator API with a serial fallback.

``get_comm()`` returns an :class:`MPIComm` when the process was launched by an MPI launcher (mpiexec,
mpirun, srun) with more than one task, and a :class:`SerialComm` otherwise, so the rest of the runtime
never branches on how it was started. mpi4py is imported lazily, only in the first case.

API (both classes): ``rank``, ``size``, ``local_rank``, ``barrier()``, ``bcast(obj, root=0)``,
``gather(obj, root=0)`` (list on root, None elsewhere), ``allgather(obj)``, ``allreduce(value, op)``
(op: "sum", "max", "min"), ``abort(code)`` (ends every rank of the job), and ``mpi`` (the mpi4py
communicator, or None) for h5py's collective ``driver="mpio"``.
"""

from __future__ import annotations

import os
import sys

from ldb_hpc.errors import InputError

# World size and rank as set by the common launchers (MPICH/Hydra, Open MPI, PMIx, SLURM srun).
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
# (SLURM_NTASKS is also set in the batch script itself, outside any srun step: not a launch signal.)
_LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK",
                    "PMI_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK")
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE",
                    "PMI_LOCAL_SIZE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE", "LOCAL_WORLD_SIZE")


def _env_int(names, default=None):
    for name in names:
        value = os.environ.get(name, "")
        # SLURM writes e.g. SLURM_NTASKS_PER_NODE="2(x3)"; the leading number is what we need.
        digits = value.split("(")[0].split(",")[0].strip()
        if digits.isdigit():
            return int(digits)
    return default


def launched_size() -> int:
    """Number of tasks the launcher started (1 when not launched by an MPI launcher)."""
    if os.environ.get("LDB_HPC_MPI", "") == "0":
        return 1
    if "PMIX_RANK" in os.environ and "PMIX_SIZE" not in os.environ:
        # Open MPI 5 with PMIx exports the world size only through OMPI_* variables; trust them.
        return _env_int(("OMPI_COMM_WORLD_SIZE",), 1)
    return _env_int(_SIZE_VARS, 1)


def local_rank() -> int:
    """Rank of this process among the ranks of its node (0 when unknown)."""
    return _env_int(_LOCAL_RANK_VARS, 0)


def ranks_per_node() -> int:
    """Ranks on this node (1 when unknown)."""
    return max(1, _env_int(_LOCAL_SIZE_VARS, 1))


class SerialComm:
    """One process, no MPI: collectives are identities."""

    rank = 0
    size = 1
    local_rank = 0
    mpi = None

    def barrier(self) -> None:
        pass

    def bcast(self, obj, root: int = 0):
        return obj

    def gather(self, obj, root: int = 0):
        return [obj]

    def allgather(self, obj):
        return [obj]

    def allreduce(self, value, op: str = "sum"):
        return value

    def abort(self, code: int = 1) -> None:
        sys.stderr.flush()
        os._exit(code)


class MPIComm:
    """COMM_WORLD of mpi4py behind the same API as :class:`SerialComm`."""

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError as exc:  # launched by mpiexec but mpi4py is missing
            raise InputError(f"launched with {launched_size()} MPI tasks but mpi4py cannot be imported ({exc})")
        self._MPI = MPI
        self.mpi = MPI.COMM_WORLD
        self.rank = self.mpi.Get_rank()
        self.size = self.mpi.Get_size()
        self.local_rank = local_rank()

    def barrier(self) -> None:
        self.mpi.barrier()

    def bcast(self, obj, root: int = 0):
        return self.mpi.bcast(obj, root=root)

    def gather(self, obj, root: int = 0):
        return self.mpi.gather(obj, root=root)

    def allgather(self, obj):
        return self.mpi.allgather(obj)

    def allreduce(self, value, op: str = "sum"):
        ops = {"sum": self._MPI.SUM, "max": self._MPI.MAX, "min": self._MPI.MIN}
        return self.mpi.allreduce(value, op=ops[op])

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.mpi.Abort(code)
        os._exit(code)  # some MPI libraries return from Abort before the launcher kills the job


_COMM = None


def get_comm():
    """The process-wide communicator: MPI when launched with more than one task, serial otherwise."""
    global _COMM
    if _COMM is None:
        _COMM = MPIComm() if launched_size() > 1 else SerialComm()
    return _COMM
