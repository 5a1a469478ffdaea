"""A durable subscriber's cursor over the log: where it stands in memory, and where its
checkpoint in the storage says it stands."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ..clock import Clock
from ..store.checkpoints import CheckpointStore

__all__ = ["Cursor"]

log = logging.getLogger("eventlite.relay")


class Cursor:
    """``position``: every event up to here is settled (in memory); ``committed``: up to
    here the stored checkpoint says so. Between the two lie events a subscriber without a
    unit of work handled and has not written yet (see :meth:`flush`).

    Every move of the stored checkpoint is a compare-and-set from ``committed``, so a move
    by another process (the same subscriber running twice) is noticed:
    :class:`~eventlite.store.checkpoints.CheckpointMoved`.
    """

    __slots__ = (
        "checkpoints",
        "clock",
        "committed",
        "flushed",
        "guard",
        "name",
        "position",
        "transaction",
    )

    def __init__(self, checkpoints: CheckpointStore, name: str, clock: Clock) -> None:
        self.checkpoints = checkpoints
        self.name = name
        self.clock = clock
        self.position = 0
        self.committed = 0
        self.flushed = time.monotonic()  # when the stored checkpoint last caught up
        # Run in the transaction of every checkpoint move (the lease check), and the
        # transaction a flush opens for it; none without leases.
        self.guard: Callable[[], None] | None = None
        self.transaction: Callable[[], AbstractContextManager[Any]] = nullcontext

    @property
    def unsaved(self) -> int:
        """How many log positions are settled in memory only."""
        return self.position - self.committed

    def start_at(self, position: int) -> None:
        """The stored checkpoint is at ``position``: start there."""
        self.position = self.committed = position
        self.flushed = time.monotonic()

    def reload(self) -> None:
        """Take the stored checkpoint again (after a failure, or another process's move):
        what was settled only in memory is looked at again. A checkpoint deleted from the
        storage is created again where this process last wrote it."""
        stored = self.checkpoints.get(self.name)
        if stored is None:
            log.warning(
                "durable subscriber %s: its checkpoint is gone from the storage; writing it "
                "again at position %d",
                self.name,
                self.committed,
            )
            stored = self.checkpoints.create(self.name, self.committed, self.clock.now())
        self.start_at(stored.position)

    def move(self, position: int) -> None:
        """Move the stored checkpoint to ``position`` in the open transaction (a
        compare-and-set from :attr:`committed`, after the :attr:`guard`); call
        :meth:`moved` after the commit."""
        guard = self.guard
        if guard is not None:
            guard()
        self.checkpoints.move(self.name, self.committed, position, self.clock.now())

    def moved(self, position: int) -> None:
        """A transaction that moved the stored checkpoint to ``position`` committed."""
        self.position = self.committed = position
        self.flushed = time.monotonic()

    def advance(self, position: int) -> None:
        """``position`` is settled in memory (skipped, or handled by a plain handler)."""
        self.position = position

    def flush(self) -> None:
        """Write the in-memory position to the stored checkpoint, if it moved."""
        if self.position > self.committed:
            position = self.position
            with self.transaction():
                self.move(position)
            self.moved(position)
        else:
            self.flushed = time.monotonic()

    def adopt(self, position: int) -> None:
        """The inbox skipped the message at ``position``: an earlier attempt's unit of work
        committed (inbox mark and checkpoint together) before an exception surfaced. If the
        stored checkpoint is at ``position``, that commit moved it: take it as ours, so the
        next compare-and-set does not take it for another process's move."""
        stored = self.checkpoints.get(self.name)
        if stored is not None and stored.position == position:
            self.committed = position
