"""Durable subscribers' checkpoints: up to where each one's events are settled."""

from __future__ import annotations

import abc
import builtins
import math
from typing import NamedTuple

from ..exceptions import StoreError

__all__ = [
    "Checkpoint",
    "CheckpointMoved",
    "CheckpointStore",
    "check_name",
    "check_position",
    "check_time",
]


class Checkpoint(NamedTuple):
    """One subscriber's checkpoint as stored."""

    name: str
    """The subscriber's stable name."""
    position: int
    """The log position up to which every event's fate is settled for it (0: none yet)."""
    updated_at: float
    """When it was created or last moved, in epoch seconds (as the writer gave it)."""


class CheckpointMoved(StoreError):
    """A compare-and-set move found the checkpoint elsewhere than expected: another writer
    (the same subscriber running in another process) moved it first, or it was deleted.

    ``name`` is the subscriber, ``expected`` the position the mover started from, ``actual``
    the stored position (None when the checkpoint does not exist). Nothing was changed.
    """

    def __init__(self, name: str, expected: int, actual: int | None) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        where = "does not exist" if actual is None else f"is at {actual}"
        super().__init__(
            f"the checkpoint of {name!r} was expected at {expected} but {where}: another "
            "writer moved it"
        )


class CheckpointStore(abc.ABC):
    """Durable subscribers' checkpoints: one position per subscriber name.

    A checkpoint says that the fate of every event of the log up to its position is
    settled for that subscriber (handled, skipped, waiting for a retry or dead-lettered).
    It is created once, at a start position, and afterwards only moved with a
    compare-and-set (:meth:`move`), so two processes running the same subscriber by
    mistake cannot both commit the same progress: the second move fails with
    :class:`CheckpointMoved` and the transaction it belongs to rolls back.

    **Transactions.** :meth:`create` and :meth:`move` join the calling thread's open
    :meth:`Storage.transaction() <eventlite.store.Storage.transaction>` (as a savepoint of
    it), so a move commits with the effects it records (an inbox mark, a dead letter, a
    retry row); outside one they commit on their own. Reads see the last commit, and
    inside a transaction its own writes.

    **Values.** Names are non-empty strings; positions are ints from 0 to 2**63 - 1; times
    are epoch seconds given by the caller (the store keeps no clock). Bad arguments raise
    ``ValueError``; the storage failing raises :class:`~eventlite.exceptions.StorageError`.
    """

    @abc.abstractmethod
    def create(self, name: str, position: int, at: float) -> Checkpoint:
        """Create the checkpoint of ``name`` at ``position`` unless it exists; return it as
        stored (an existing one is left unchanged and returned)."""

    @abc.abstractmethod
    def get(self, name: str) -> Checkpoint | None:
        """The checkpoint of ``name``, or None when there is none."""

    @abc.abstractmethod
    def list(self) -> builtins.list[Checkpoint]:
        """Every checkpoint, sorted by name."""

    @abc.abstractmethod
    def move(self, name: str, expected: int, position: int, at: float) -> None:
        """Move the checkpoint of ``name`` from ``expected`` to ``position`` (forwards or
        backwards), dated ``at``. Raises :class:`CheckpointMoved`, changing nothing, when
        it is not at ``expected`` or does not exist."""


_MAX_INT = (1 << 63) - 1


def check_name(name: object) -> str:
    """``name`` if it is a non-empty string; else ``ValueError`` (for backends)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a checkpoint name must be a non-empty str, got {name!r}")
    return name


def check_position(position: object, what: str = "position") -> int:
    """``position`` if it is an int from 0 to 2**63 - 1; else ``ValueError`` (for backends)."""
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= _MAX_INT:
        raise ValueError(f"{what} must be an int from 0 to 2**63 - 1, got {position!r}")
    return position


def check_time(value: object, what: str = "time") -> float:
    """``value`` as a float if it is a finite number of epoch seconds; else ``ValueError``
    (for backends)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of epoch seconds, got {value!r}")
    return float(value)
