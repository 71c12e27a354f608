"""Progress over all ranks, shown by rank 0: it tails every shard's chunk log (the resume record).

Ranks never talk to each other for progress: each appends a line per finished chunk to its shard log
(which it does anyway for resume), and a thread on rank 0 sums the frames of all logs twice a second.
This works across nodes on a shared file system and costs no collective.
"""

from __future__ import annotations

import sys
import threading
import time

from ldb_hpc.runtime.output import shard_log_path
from ldb_hpc.runtime.resume import log_records


def progress_enabled(flag: bool | None) -> bool:
    """--progress (True) forces the bar, --no-progress (False) turns it off, None: only on a terminal."""
    if flag is not None:
        return flag
    return sys.stderr.isatty()


class ProgressMonitor:
    """A tqdm bar (stderr) of frames done over all shards, with frames/s, residues/s and ETA.

    folder: run folder; run_id: lines of other runs are ignored; n_shards: logs to tail; total: frames of
    the whole output; n_residues: for residues/s; initial: frames already done before this run (resume).
    """

    def __init__(self, folder: str, run_id: str, shards, total: int, n_residues: int, interval: float = 0.5):
        from tqdm import tqdm

        self.folder, self.run_id, self.shards = folder, run_id, list(shards)
        self.n_residues = n_residues
        self._offsets = {s: 0 for s in self.shards}
        self._seen: set = set()
        initial = self._read_new()  # chunks recorded before this run (a resume) are not this run's speed
        self._done = 0
        self._t0 = time.perf_counter()
        self.bar = tqdm(total=total, initial=initial, unit="frame", file=sys.stderr, dynamic_ncols=True,
                        smoothing=0.1, desc="backmap")
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._loop, name="ldb-progress", daemon=True)
        self._thread.start()

    def _read_new(self) -> int:
        """Frames of the chunks recorded since the last call."""
        new = 0
        for s in self.shards:
            try:
                with open(shard_log_path(self.folder, s), "rb") as fh:
                    fh.seek(self._offsets[s])
                    data = fh.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # a line being written is read next time
            self._offsets[s] += end
            for chunk, start, stop in log_records(data[:end].splitlines(), self.run_id):
                if (s, chunk) not in self._seen:
                    self._seen.add((s, chunk))
                    new += stop - start
        return new

    def _poll(self) -> None:
        new = self._read_new()
        if new:
            self._done += new
            self.bar.update(new)
            rate = self._done / max(time.perf_counter() - self._t0, 1e-9)
            self.bar.set_postfix_str(f"{rate * self.n_residues:,.0f} res/s", refresh=False)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._poll()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()
        self.bar.close()
