"""Projections' checkpoints and status: where each read model stands in the log.

The :class:`~eventlite.projection.Projector` keeps one :class:`ProjectionRecord` per
projection through a :class:`ProjectionStore`, and hands projection handlers the backend's
read-model helper (:meth:`ProjectionStore.read_model`).
"""

from __future__ import annotations

import abc
import builtins
from typing import Any, Final

import attrs

__all__ = ["LIVE", "REBUILDING", "ProjectionRecord", "ProjectionStore"]

LIVE: Final = "live"
"""A projection following the log (``ProjectionRecord.state``)."""
REBUILDING: Final = "rebuilding"
"""A projection replaying the log after a reset, not yet at the head."""


@attrs.frozen
class ProjectionRecord:
    """One projection's row, as a :class:`ProjectionStore` keeps it."""

    name: str
    """The projection's stable name."""
    mode: str
    """``"inline"`` or ``"tracking"``, as last registered."""
    position: int
    """The log position its read model reflects (0: nothing applied)."""
    state: str
    """:data:`LIVE` or :data:`REBUILDING`."""
    error: str | None
    """The last failure recorded by :meth:`ProjectionStore.fail`, cleared by the next move."""
    updated_at: float
    """When the row was registered or its checkpoint last moved (seconds since the epoch)."""
    rebuilt_at: float | None
    """When the last rebuild began, or None."""


class ProjectionStore(abc.ABC):
    """Projections' checkpoints: one row per projection name, in the same storage as the log.

    **Checkpoints move by compare-and-set.** :meth:`advance` moves a checkpoint only from
    the position the caller read, so two threads or processes applying the same projection
    never both commit a batch: the loser's :meth:`advance` returns False, and the caller
    rolls its batch back. A read model and its checkpoint stay in step because the caller
    writes both inside one ``storage.transaction()``.

    **Transactions.** Every write joins the calling thread's open
    ``storage.transaction()`` (else it commits on its own); every read made inside one
    sees that transaction's writes.

    **The read model.** Projection handlers write their tables with the helper
    :meth:`read_model` returns, which is the backend's own (SQLite: a
    ``sqlite_utils.Database``); inside a transaction it writes in that transaction. This is
    the only backend-specific object the read side hands to user code.

    **Errors.** The storage failing raises :class:`~eventlite.exceptions.StorageError`.
    Names are compared exactly; an unknown name is not an error (``get`` gives None,
    writes change nothing).
    """

    @abc.abstractmethod
    def register(self, name: str, mode: str, now: float) -> ProjectionRecord:
        """Create ``name``'s row at position 0, :data:`LIVE`, unless it exists; set its
        ``mode`` either way (a known projection keeps its position). Returns the row."""

    @abc.abstractmethod
    def get(self, name: str) -> ProjectionRecord | None:
        """The row of ``name``, or None."""

    @abc.abstractmethod
    def list(self) -> builtins.list[ProjectionRecord]:
        """Every row, by name."""

    @abc.abstractmethod
    def advance(
        self, name: str, *, expected: int, position: int, now: float, live: bool = False
    ) -> bool:
        """Move ``name``'s checkpoint from ``expected`` to ``position``, clear its error,
        date it ``now``, and when ``live`` mark it :data:`LIVE` (else its state stays).
        Returns False, changing nothing, when the checkpoint is not at ``expected``."""

    @abc.abstractmethod
    def fail(self, name: str, error: str) -> None:
        """Record ``error`` (a one-line description) on ``name``'s row; nothing else moves."""

    @abc.abstractmethod
    def begin_rebuild(self, name: str, now: float) -> None:
        """Put ``name``'s checkpoint back to 0, :data:`REBUILDING`, with no error,
        ``updated_at`` and ``rebuilt_at`` ``now``."""

    @abc.abstractmethod
    def read_model(self) -> Any:
        """The backend's read-model helper, handed to projection handlers and query code:
        bound to the calling thread's open transaction when there is one (its writes join
        it), else to a reader that sees the last commit. SQLite: a
        ``sqlite_utils.Database``; other backends offer at least the portable part of its
        API (tables' ``create``, ``insert``, ``upsert``, ``update``, ``delete``, ``get``,
        ``rows_where``, ``count_where``..., with sqlite-utils' ``NotFoundError``; see
        ``docs/projections.md``), so a projection keeping to it runs on every backend."""

    @abc.abstractmethod
    def reserved_tables(self) -> frozenset[str]:
        """The names of the backend's own tables, which no read model may use."""
