"""What rank 0 tells the other ranks after a step only it runs (set-up, planning): the result, or how it failed.

:func:`broadcast_outcome` runs the step on rank 0 and broadcasts a typed :class:`Outcome`; a failure is classified
by the exception's type (an :class:`~ldb_hpc.errors.InputError` is the user's: exit code 2; anything else is a
crash: exit code 1), never by its text. Rank 0 re-raises its own exception; the other ranks raise
:class:`RankExit` with the code and exit quietly (only rank 0 prints).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

from ldb_hpc.errors import InputError


class RankExit(Exception):
    """Raised on ranks other than 0 when rank 0 has already reported an error: exit quietly with ``code``."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class Failure(Enum):
    NONE = 0
    INPUT = 2  # the exit code
    CRASH = 1


@dataclass(frozen=True)
class Outcome:
    failure: Failure
    value: Any = None


def broadcast_outcome(comm, step: Callable[[], Any]) -> Any:
    """``step()`` on rank 0, its result on every rank. A failure is re-raised on rank 0 and becomes
    :class:`RankExit` elsewhere."""
    outcome, error = None, None
    if comm.rank == 0:
        try:
            outcome = Outcome(Failure.NONE, step())
        except Exception as exc:  # noqa: BLE001 - every rank must learn about it
            error = exc
            outcome = Outcome(Failure.INPUT if isinstance(exc, InputError) else Failure.CRASH)
    outcome = comm.bcast(outcome)
    if outcome.failure is Failure.NONE:
        return outcome.value
    if comm.rank == 0:
        raise error
    raise RankExit(outcome.failure.value)
