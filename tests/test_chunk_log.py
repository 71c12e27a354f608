"""The chunk log (the resume record of each shard): one format, written by ChunkLog and read through
resume.log_records by both resume and the progress bar."""

from __future__ import annotations

from ldb_hpc.runtime.output import shard_log_path
from ldb_hpc.runtime.progress import ProgressMonitor
from ldb_hpc.runtime.resume import ChunkLog, log_records, read_log


def test_resume_and_progress_read_the_same_chunks(tmp_path, capsys):
    folder = str(tmp_path)
    path = shard_log_path(folder, 0)
    log = ChunkLog(path, "run-a")
    log.record(0, 0, 10, seconds=1.0)
    log.record(1, 10, 16)
    log.close()
    with open(path, "ab") as fh:  # another run's chunk, garbage, and a line torn by a kill
        fh.write(b'{"chunk": 2, "start": 16, "stop": 30, "run": "run-b"}\nnot json\n{"chunk": 3, "start": 3')
    again = ChunkLog(path, "run-a")  # reopening ends the torn line, so the next record parses
    again.record(2, 16, 20)
    again.close()
    assert read_log(path, "run-a") == {0: (0, 10), 1: (10, 16), 2: (16, 20)}
    assert read_log(path, "run-b") == {2: (16, 30)}
    assert list(log_records([b'{"chunk": "x", "start": 0, "stop": 1, "run": "run-a"}'], "run-a")) == []
    monitor = ProgressMonitor(folder, "run-a", [0], total=40, n_residues=5, interval=60)
    try:
        assert monitor.bar.n == 20  # the frames recorded before it started, as resume counts them
        with open(path, "ab") as fh:
            fh.write(b'{"chunk": 4, "start": 20, "stop": 24, "run": "run-a"}\n{"chunk": 5, "sta')
        monitor._poll()
        assert monitor.bar.n == 24  # the finished line counted once, the half-written one not yet
        monitor._poll()
        assert monitor.bar.n == 24
    finally:
        monitor.close()
    capsys.readouterr()
