"""Small file helpers shared by the readers and writers of ldb_hpc.io (no ranks, no CLI)."""

from __future__ import annotations

import os

from ldb_hpc.errors import InputError


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
