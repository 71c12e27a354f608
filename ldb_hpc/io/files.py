"""Small file helpers shared by the readers and writers of ldb_hpc.io (no ranks, no CLI).

Temporary files: a writer fills ``.NAME.tmp.HOST.PID`` beside ``NAME`` and renames it when complete, so
``NAME`` only ever appears whole. A process killed mid-write (``kill -9``, a node lost) leaves its
temporary behind; :func:`temp_name` removes those of dead processes of this host before handing out a
new one, and :func:`check_temporaries` lets a command refuse to start beside temporaries it cannot judge
(a live process, or another host of a shared file system), naming them. Names without a host
(``NAME.tmp.PID``, ``.NAME.tmp.PID``: older versions) count as this host's.
"""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass

from ldb_hpc.errors import InputError, OutputError

TEMP_MARK = ".tmp."


def check_readable(path: str, what: str = "input") -> None:
    """InputError unless ``path`` is an existing, readable, non-empty file; ``what`` names it in the message."""
    if not os.path.exists(path):
        raise InputError(f"{what} file not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{what} is a directory, not a file: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} file is not readable: {path}")
    if os.path.getsize(path) == 0:
        raise InputError(f"{what} file is empty: {path}")


def check_output_location(path: str, overwrite: bool = True) -> None:
    """OutputError unless the file ``path`` may be written: it exists only with ``overwrite``, it is not a
    directory, and its folder exists and is writable. The one policy of every output file; messages name
    ``path`` as given when it exists, else absolute paths."""
    if not overwrite and os.path.exists(path):
        raise OutputError(f"output exists: {path} (pass --overwrite to replace it)")
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise OutputError(f"output is a directory: {full}")
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory is not writable: {parent}")


def prepare_output(path: str, overwrite: bool) -> str:
    """Check that ``path`` may be written (:func:`check_output_location`, messages with the absolute path);
    return the temporary name to write first (then os.replace)."""
    path = os.path.abspath(path)
    check_output_location(path, overwrite)
    return temp_name(path)


def read_json_document(path: str, expected_format: str) -> dict | None:
    """The JSON object in ``path`` whose "format" field is ``expected_format``; None when the file does not exist.
    Raises ValueError (or OSError) when it cannot be read or is another document; callers name the file."""
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict) or doc.get("format") != expected_format:
        raise ValueError(f"format {doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}")
    return doc


def host_name() -> str:
    """This machine's short host name (no dots: it is one field of a temporary file's name)."""
    return (socket.gethostname().split(".")[0] or "localhost").replace(os.sep, "_")


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` of this host exists and is not a zombie (killed, not yet reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class Temporary:
    """A temporary file left beside its target: path, the target's base name, writer's host (None: old
    name without one) and PID."""

    path: str
    target: str
    host: str | None
    pid: int

    @property
    def local(self) -> bool:
        return self.host is None or self.host == host_name()

    @property
    def stale(self) -> bool:
        """Its writer is gone: a process of this host that is no longer alive (or this process itself,
        which writes one file at a time and only asks before starting a new one)."""
        return self.local and (self.pid == os.getpid() or not pid_alive(self.pid))

    def describe(self) -> str:
        if self.local:
            return f"{self.path} (written by process {self.pid}, still running on this host)"
        return f"{self.path} (written by process {self.pid} on host {self.host}, which this host cannot check)"


def parse_temporary(folder: str, name: str) -> Temporary | None:
    """The :class:`Temporary` that file ``name`` in ``folder`` is, or None when it is not one."""
    head, mark, tail = name.rpartition(TEMP_MARK)
    if not mark or not head:
        return None
    host, _, pid = tail.rpartition(".")
    if not pid.isdigit():
        return None
    target = head[1:] if head.startswith(".") else head
    return Temporary(os.path.join(folder, name), target, host or None, int(pid)) if target else None


def temporaries(path: str) -> list[Temporary]:
    """The temporary files of ``path`` (any writer, any host) that exist beside it."""
    folder, base = os.path.split(os.path.abspath(path))
    return [t for t in temporaries_in(folder) if t.target == base]


def temporaries_in(folder: str) -> list[Temporary]:
    """Every temporary file in ``folder`` (none when it does not exist)."""
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = (parse_temporary(folder, n) for n in names)
    return [t for t in found if t is not None and os.path.isfile(t.path)]


def remove_stale(temps: list[Temporary]) -> list[Temporary]:
    """Delete the stale ones of ``temps`` (their writer died on this host); returns the others."""
    left = []
    for t in temps:
        if t.stale:
            try:
                os.remove(t.path)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(t)
        else:
            left.append(t)
    return left


def check_temporaries(temps: list[Temporary], what: str) -> None:
    """Remove the stale ones of ``temps``; OutputError naming the others (a live or unknowable writer of
    ``what``), so a command never starts beside a half-written file it cannot account for."""
    left = remove_stale(temps)
    if left:
        names = "; ".join(t.describe() for t in left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
        raise OutputError(f"another process may be writing {what}: temporary file {names}; if no other run "
                          "writes there, remove it and rerun")


def temp_name(path: str) -> str:
    """The hidden temporary name beside ``path`` that a writer fills before renaming it to ``path``
    (``.NAME.tmp.HOST.PID``); stale temporaries of ``path`` (dead writers of this host) are removed first."""
    remove_stale(temporaries(path))
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}{TEMP_MARK}{host_name()}.{os.getpid()}")


@contextmanager
def replaced_when_done(path: str, what: str = ""):
    """Yield a temporary name to write; rename it to ``path`` when the block ends without an error.

    Any exception inside the block deletes the temporary file; an OSError becomes OutputError("cannot
    write {what}{path}: …"). So ``path`` appears only complete (or stays as it was).
    """
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {what}{path}: {exc}") from exc
        raise


class TempFileWriter:
    """Base of writers that write an open h5py file ``self._f`` at ``self._tmp`` and publish it by renaming
    to ``self.path`` in ``close()``: leaving the ``with`` block on an exception, or calling :meth:`abort`,
    deletes the temporary file, so a half-written output never appears under the final name."""

    _f = None
    _tmp: str = ""

    def abort(self) -> None:
        """Close and delete the temporary file; the final file is not created (or left as it was)."""
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - best effort on the error path
                pass
        if self._tmp and os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
