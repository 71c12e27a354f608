"""The sinks of a trajectory run: the rows of each chunk go to this rank's shard files (``--io shards``; the
master of virtual datasets is written by ldb_hpc.runtime.publish) or into the one file every rank writes
collectively (``--io mpio``), and each chunk is recorded in its shard's resume log only once its rows are flushed.
The generic sinks (memory, structure files, standard output) are in ldb_hpc.engine.sinks.
"""

from __future__ import annotations

import os

from ldb_hpc.chem.hydrogens import Protonation
from ldb_hpc.io import aa
from ldb_hpc.io.cg import CGFrames
from ldb_hpc.runtime import output as out_mod
from ldb_hpc.runtime import resume
from ldb_hpc.runtime.records import IOMode, RunRecord


def _forget_chunks(folder: str, shard: int) -> dict:
    """A shard whose rows file is being created anew has no finished chunks: delete its log; returns {}."""
    if os.path.exists(out_mod.shard_log_path(folder, shard)):
        os.remove(out_mod.shard_log_path(folder, shard))
    return {}


class RunSink:
    """Rows of this rank's ``shards`` of the run ``record`` in ``folder`` (context manager).

    ``done[s]``: the chunks of shard ``s`` already recorded ({chunk: (start, stop)}; emptied for a shard whose file
    is created anew); :meth:`write` writes a chunk's rows and records it. comm: the communicator (every rank opens
    and closes the collective file of ``--io mpio`` together).
    """

    def __init__(self, record: RunRecord, folder: str, shards: list[int], residues, comm,
                 protonation: Protonation | None = None):
        self.record, self.folder, self.comm = record, folder, comm
        self.mpio = record.io is IOMode.MPIO
        self.files, self.writers, self.logs = {}, {}, {}
        self.collective = None
        self.done = {s: resume.read_log(out_mod.shard_log_path(folder, s), record.run_id) for s in shards}
        try:
            self._open(shards, residues, protonation)
        except BaseException:
            self._close_files()
            raise

    def _open(self, shards, residues, protonation) -> None:
        rec, folder, plan, S = self.record, self.folder, self.record.plan, self.record.samples
        if self.mpio:
            data = os.path.join(folder, out_mod.MPIO_FILE)
            fresh = self.comm.allreduce(int(not os.path.exists(data)), "max") > 0
            if fresh:
                for s in shards:
                    self.done[s] = _forget_chunks(folder, s)
                self.collective = aa.create_collective(data, self.comm.mpi, residues, S, rec.has_cell,
                                                       rec.provenance, plan.n_frames, protonation)
            else:
                self.collective = aa.open_rows(data, self.comm.mpi)
            for s in shards:
                self.writers[s] = aa.RowWriter(self.collective, residues, 0, S, rec.has_cell, protonation)
        else:
            for s in shards:
                a, b = plan.shard_frames(s)
                if a == b:
                    continue
                path = out_mod.shard_path(folder, s)
                if not os.path.exists(path):
                    self.done[s] = _forget_chunks(folder, s)
                    aa.create_shard(path, residues, a, b, S, rec.has_cell, rec.provenance, plan.n_frames,
                                    rec.run_id, protonation)
                self.files[s] = aa.open_rows(path)
                self.writers[s] = aa.RowWriter(self.files[s], residues, a, S, rec.has_cell, protonation)
        for s in shards:
            self.logs[s] = resume.ChunkLog(out_mod.shard_log_path(folder, s), rec.run_id)

    def pending(self, shard: int, chunk: int) -> bool:
        """Whether ``chunk`` of ``shard`` still has to be computed."""
        return self.done[shard].get(chunk) != self.record.plan.chunk_frames(chunk)

    def write(self, shard: int, chunk: int, frames: CGFrames, rows) -> None:
        """The rows [n, S, L, K, 3] Å of ``frames`` (chunk ``chunk`` of ``shard``), flushed, then recorded."""
        writer = self.writers[shard]
        writer.write(frames.start, rows, frames.time, frames.cell_lengths, frames.cell_angles)
        writer.sync(durable=not self.mpio)
        self.logs[shard].record(chunk, frames.start, frames.stop)

    def _close_files(self) -> None:
        for log in self.logs.values():
            log.close()
        for f in self.files.values():  # shard files; the collective file is closed by every rank together
            f.close()
        self.logs, self.files = {}, {}

    def __enter__(self) -> RunSink:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._close_files()
        if self.collective is not None and exc_type is None:
            self.collective.close()  # collective: every rank gets here unless one failed (then the job aborts)
