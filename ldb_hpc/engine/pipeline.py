"""A three-stage pipeline per rank: a reader thread, compute on the calling thread, a writer thread.

The reader prefetches the next chunk while the current one is computed and the writer writes the previous
one, so IO overlaps compute. Queues hold at most ``depth`` chunks each, so memory is bounded by a few
chunks whatever the trajectory length. The first exception of any stage stops all three and is re-raised
in the calling thread.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

_END = object()


@dataclass
class StageTimes:
    """Seconds spent in each stage (read/write measured in their threads) and work done."""

    read_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    chunks: int = 0
    frames: int = 0


def run_pipeline(tasks: Iterable[Any], read: Callable[[Any], Any], compute: Callable[[Any, Any], Any],
                 write: Callable[[Any, Any, Any], None], depth: int = 1,
                 frames_of: Callable[[Any], int] = lambda t: 1) -> StageTimes:
    """Run ``write(task, data, compute(task, data))`` for ``data = read(task)`` over ``tasks`` in order.

    read runs in a reader thread, compute in the calling thread (torch releases the GIL in its kernels),
    write in a writer thread; each queue holds at most ``depth`` items. Returns the stage times.
    """
    times = StageTimes()
    stop = threading.Event()
    errors: list[BaseException] = []
    read_q: queue.Queue = queue.Queue(maxsize=depth)
    write_q: queue.Queue = queue.Queue(maxsize=depth)

    def put(q, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(q):
        while True:
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                if stop.is_set():
                    return _END

    def fail(exc: BaseException) -> None:
        errors.append(exc)
        stop.set()

    def reader() -> None:
        try:
            for task in tasks:
                if stop.is_set():
                    return
                t0 = time.perf_counter()
                data = read(task)
                times.read_s += time.perf_counter() - t0
                if not put(read_q, (task, data)):
                    return
            put(read_q, _END)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            fail(exc)

    def writer() -> None:
        try:
            while True:
                item = get(write_q)
                if item is _END:
                    return
                t0 = time.perf_counter()
                write(*item)
                times.write_s += time.perf_counter() - t0
                times.chunks += 1
                times.frames += frames_of(item[0])
        except BaseException as exc:  # noqa: BLE001
            fail(exc)

    threads = [threading.Thread(target=reader, name="ldb-reader", daemon=True),
               threading.Thread(target=writer, name="ldb-writer", daemon=True)]
    for t in threads:
        t.start()
    try:
        while not stop.is_set():
            item = get(read_q)
            if item is _END:
                break
            task, data = item
            t0 = time.perf_counter()
            result = compute(task, data)
            times.compute_s += time.perf_counter() - t0
            if not put(write_q, (task, data, result)):
                break
        put(write_q, _END)
    except BaseException as exc:  # noqa: BLE001
        fail(exc)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return times
