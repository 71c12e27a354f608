"""Small file helpers shared by the readers and writers of ldb_hpc.io (no ranks, no CLI)."""

from __future__ import annotations

import os
from contextlib import contextmanager

from ldb_hpc.errors import InputError, OutputError


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


def temp_name(path: str) -> str:
    """The hidden temporary name beside ``path`` that a writer fills before renaming it to ``path``."""
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp.{os.getpid()}")


@contextmanager
def replaced_when_done(path: str, what: str = ""):
    """Yield a temporary name to write; rename it to ``path`` when the block ends without an error.

    An OSError inside the block deletes the temporary file and becomes OutputError("cannot write
    {what}{path}: …"), so ``path`` appears only complete (or stays as it was).
    """
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OutputError(f"cannot write {what}{path}: {exc}") from exc


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
