"""The one module that imports mpi4py: a small communicator API with a serial fallback.

``get_comm()`` returns an :class:`MPIComm` when the process was launched by an MPI launcher (mpiexec,
mpirun, srun) with more than one task, and a :class:`SerialComm` otherwise, so the rest of the runtime
never branches on how it was started. mpi4py is imported lazily, only in the first case.

``detect_launch()`` says how the process was started (serial, an MPI launcher, or torchrun) with its rank,
world size and local rank: the one place that reads launcher variables (training uses it as well).

API (both classes): ``rank``, ``size``, ``local_rank``, ``barrier()``, ``bcast(obj, root=0)``,
``gather(obj, root=0)`` (list on root, None elsewhere), ``allgather(obj)``, ``allreduce(value, op)``
(op: "sum", "max", "min"), ``abort(code)`` (ends every rank of the job), and ``mpi`` (the mpi4py
communicator, or None) for h5py's collective ``driver="mpio"``.
"""

from __future__ import annotations

import array
import fcntl
import os
import stat
import sys
import termios
import time
import warnings
from dataclasses import dataclass

from ldb_hpc.errors import InputError

# (world size, rank) as set by the common launchers (MPICH/Hydra, Open MPI, PMIx, MVAPICH, SLURM srun).
_LAUNCH_VARS = (("PMI_SIZE", "PMI_RANK"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"), ("PMIX_SIZE", "PMIX_RANK"),
                ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"), ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID"))
_SIZE_VARS = tuple(size for size, _ in _LAUNCH_VARS)
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


def _launch_vars() -> tuple[int, int, str | None]:
    """(size, rank, name of the size variable) of the MPI launcher that set a world size; (1, 0, None) without."""
    if os.environ.get("LDB_HPC_MPI", "") == "0":
        return 1, 0, None
    if "PMIX_RANK" in os.environ and "PMIX_SIZE" not in os.environ:
        # Open MPI 5 with PMIx exports the world size only through OMPI_* variables; trust them.
        return (_env_int(("OMPI_COMM_WORLD_SIZE",), 1), _env_int(("OMPI_COMM_WORLD_RANK", "PMIX_RANK"), 0),
                "OMPI_COMM_WORLD_SIZE")
    for size_var, rank_var in _LAUNCH_VARS:
        size = _env_int((size_var,))
        if size is not None:
            return size, _env_int((rank_var,), 0), size_var
    return 1, 0, None


def _mpi_launch() -> tuple[int, int]:
    """(size, rank) from the variables of the MPI launcher that set a world size; (1, 0) without one."""
    return _launch_vars()[:2]


def check_world(world_size: int) -> None:
    """InputError when the launcher started several tasks but MPI's world has another size: the launcher and the
    MPI library mpi4py was built against do not talk to each other (e.g. srun's MPI plugin is not the library's),
    so every task would run alone as rank 0 of 1 and race the others over one output."""
    size, _, var = _launch_vars()
    if size > 1 and world_size != size:
        raise InputError(
            f"the launcher started {size} tasks ({var}={os.environ.get(var, '')}) but MPI sees a world of "
            f"{world_size}: the launcher does not match the MPI library of mpi4py; with srun use --mpi=pmi2 or "
            "--mpi=pmix (whichever the site MPI supports: srun --mpi=list), or build mpi4py against the site MPI "
            "(MPICC=mpicc pip install --no-binary=mpi4py mpi4py); nothing was written")


def launched_size() -> int:
    """Number of tasks the launcher started (1 when not launched by an MPI launcher)."""
    return _mpi_launch()[0]


def launched_rank() -> int:
    """Rank of this task as the MPI launcher numbered it (0 when not launched by an MPI launcher)."""
    size, rank = _mpi_launch()
    return rank if size > 1 else 0


def local_rank() -> int:
    """Rank of this process among the ranks of its node (0 when unknown)."""
    return _env_int(_LOCAL_RANK_VARS, 0)


def ranks_per_node() -> int:
    """Ranks on this node (1 when unknown)."""
    return max(1, _env_int(_LOCAL_SIZE_VARS, 1))


@dataclass(frozen=True)
class Launch:
    """How this process was started: ``kind`` "serial", "mpi" (mpiexec, mpirun, srun: use :func:`get_comm`) or
    "torchrun" (RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set: an env:// rendezvous is ready)."""

    kind: str
    rank: int = 0
    size: int = 1
    local_rank: int = 0


def detect_launch() -> Launch:
    """The launch of this process from the launcher's environment variables.

    torchrun wins over an MPI launcher (``srun torchrun …`` starts several torch ranks per SLURM task); a
    partial torchrun set (e.g. WORLD_SIZE alone) and SLURM_NTASKS (exported in a batch script outside any
    srun step) are not launches: the process is then serial.
    """
    world = _env_int(("WORLD_SIZE",), 1)
    rank = _env_int(("RANK",))
    if world > 1 and rank is not None and os.environ.get("MASTER_ADDR") and _env_int(("MASTER_PORT",)):
        return Launch("torchrun", rank, world, _env_int(("LOCAL_RANK",), 0))
    size, rank = _mpi_launch()
    if size > 1:
        return Launch("mpi", rank, size, local_rank())
    return Launch("serial")


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
            with warnings.catch_warnings():
                # mpi4py warns (several lines) when another MPI's launcher variables are set; check_world below
                # says what is wrong in one line.
                warnings.simplefilter("ignore", RuntimeWarning)
                from mpi4py import MPI
        except ImportError as exc:  # launched by mpiexec but mpi4py is missing
            raise InputError(f"launched with {launched_size()} MPI tasks but mpi4py cannot be imported "
                             f"({exc})") from None
        self._MPI = MPI
        self.mpi = MPI.COMM_WORLD
        self.rank = self.mpi.Get_rank()
        self.size = self.mpi.Get_size()
        self.local_rank = local_rank()
        check_world(self.size)

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
        # The launcher's I/O forwarder may act on the abort before it has read what this rank just wrote
        # (the error line was lost that way under load); let it read our pipes first.
        wait_until_read((sys.stdout, sys.stderr))
        self.mpi.Abort(code)
        os._exit(code)  # some MPI libraries return from Abort before the launcher kills the job


def wait_until_read(streams, limit_s: float = 10.0) -> None:
    """Wait (at most ``limit_s``) until the reader of each pipe in ``streams`` has taken all we wrote.

    Linux reports the unread bytes of a pipe on either end (FIONREAD). Streams that are not pipes
    (files, terminals, closed or replaced streams) are skipped: nothing upstream can lose them.
    """
    fds = []
    for stream in streams:
        try:
            fd = stream.fileno()
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                fds.append(fd)
        except (AttributeError, OSError, ValueError):
            continue
    deadline = time.monotonic() + limit_s
    unread = array.array("i", [0])
    while fds and time.monotonic() < deadline:
        try:
            fds = [fd for fd in fds if fcntl.ioctl(fd, termios.FIONREAD, unread, True) == 0 and unread[0] > 0]
        except OSError:
            return
        if fds:
            time.sleep(0.01)


_COMM = None


def get_comm():
    """The process-wide communicator: MPI when launched with more than one task, serial otherwise."""
    global _COMM
    if _COMM is None:
        _COMM = MPIComm() if launched_size() > 1 else SerialComm()
    return _COMM
