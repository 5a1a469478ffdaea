"""Stream processors' state and status: what a durable stream keeps between batches.

A stream (:mod:`eventlite.streams`) keeps everything it needs to continue as JSON-ready
entries addressed by ``(operator, key)``: open windows, join buffers, watermarks, late
counts, and its checkpoint (the entry ``("$stream", "position")``). The
:class:`~eventlite.streams.StreamRunner` reads them through a :class:`StreamStateStore`
when it builds a stream's engine, and writes each batch's changes with the batch's outputs,
in one transaction. Beside the entries, the store keeps one :class:`StreamRecord` per
stream: its position and a summary (watermarks, open windows, late counts, last error) for
status pages and the CLI, written by the same :meth:`StreamStateStore.save`. The rows a
stream's ``to_table`` sinks make go to read-model tables through
:meth:`StreamStateStore.write_rows`, in the same transaction.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

__all__ = ["LIVE", "REBUILDING", "StreamProgress", "StreamRecord", "StreamStateStore"]

LIVE: Final = "live"
"""A stream following the log (:attr:`StreamRecord.state`)."""
REBUILDING: Final = "rebuilding"
"""A stream replaying the log after a reset, not yet at the head."""

Changes = Mapping[tuple[str, str], Any]
"""``{(operator, key): value}``; a value of None deletes the entry."""


@attrs.frozen
class StreamProgress:
    """Where a batch leaves a stream: what :meth:`StreamStateStore.save` records beside
    the entries."""

    position: int
    """The last log position the stream has processed (its checkpoint)."""
    watermarks: Mapping[str, int | None] = attrs.field(factory=dict)
    """Each source's watermark in microseconds since the epoch (None before its first
    event)."""
    open: Mapping[str, int] = attrs.field(factory=dict)
    """Each stateful operator's open windows or buffered values."""
    late: Mapping[str, int] = attrs.field(factory=dict)
    """Each stateful operator's late events counted so far."""


@attrs.frozen
class StreamRecord:
    """One stream's row, as a :class:`StreamStateStore` keeps it."""

    name: str
    """The stream's name."""
    position: int
    """Its checkpoint: the last log position processed (0: none)."""
    state: str
    """:data:`LIVE` or :data:`REBUILDING`."""
    watermarks: Mapping[str, int | None]
    """Each source's watermark (µs since the epoch, None before its first event), as the
    last saved batch left it."""
    open: Mapping[str, int]
    """Each stateful operator's open windows or buffered values, as last saved."""
    late: Mapping[str, int]
    """Each stateful operator's late events, as last saved."""
    error: str | None
    """The last failure recorded by :meth:`StreamStateStore.fail`, cleared by the next
    save."""
    updated_at: float
    """When the row was registered or last saved (seconds since the epoch)."""
    rebuilt_at: float | None
    """When the last rebuild began, or None."""


class StreamStateStore(abc.ABC):
    """Streams' state entries and status rows, in the same storage as the log.

    **Entries.** Each stream has entries ``(operator, key) -> value``: ``operator`` and
    ``key`` are strings, ``value`` is JSON-ready data (None, bool, int, float, str, lists,
    dicts with string keys); what is read back equals the value after ``json.dumps`` and
    ``json.loads``. The streams are independent: no call of one name touches another's
    entries.

    **Saving moves the checkpoint by compare-and-set.** :meth:`save` applies a batch of
    entry changes and moves the stream's row from position ``expected`` to the progress's
    position, atomically; when the row is not at ``expected`` (another writer moved it,
    or it was reset) it returns False and writes nothing, so a stale engine never
    overwrites newer state.

    **Transactions.** Every write joins the calling thread's open ``storage.transaction()``
    (else it commits on its own), so the runner commits a batch's outputs, its entries and
    its checkpoint together; every read inside such a transaction sees its writes.

    **Errors.** The storage failing raises :class:`~eventlite.exceptions.StorageError`.
    Names are compared exactly; an unknown name is not an error (reads give None or
    nothing, :meth:`save` returns False, the other writes change nothing).
    """

    @abc.abstractmethod
    def register(self, name: str, now: float) -> StreamRecord:
        """Create ``name``'s row at position 0, :data:`LIVE`, with no entries, unless it
        exists; returns the row."""

    @abc.abstractmethod
    def get(self, name: str) -> StreamRecord | None:
        """The row of ``name``, or None."""

    @abc.abstractmethod
    def list(self) -> builtins.list[StreamRecord]:
        """Every row, by name."""

    @abc.abstractmethod
    def entry(self, name: str, operator: str, key: str) -> Any | None:
        """The value of one entry of stream ``name``, or None."""

    @abc.abstractmethod
    def entries(self, name: str, operator: str) -> builtins.list[tuple[str, Any]]:
        """Every ``(key, value)`` entry of one operator of stream ``name``, in key order
        (by code point)."""

    @abc.abstractmethod
    def save(
        self,
        name: str,
        changes: Changes,
        progress: StreamProgress,
        *,
        expected: int,
        now: float,
        live: bool = False,
    ) -> bool:
        """Apply ``changes`` to ``name``'s entries (None deletes one; deleting a missing
        entry is no error) and move its row from position ``expected`` to
        ``progress.position`` with ``progress``'s summary, clearing its error, dated
        ``now``; when ``live``, mark it :data:`LIVE` (else its state stays). Returns False,
        writing nothing, when the row is missing or not at ``expected``."""

    @abc.abstractmethod
    def fail(self, name: str, error: str) -> None:
        """Record ``error`` (a one-line description) on ``name``'s row; nothing else
        changes."""

    @abc.abstractmethod
    def write_rows(
        self,
        table: str,
        pk: Sequence[str],
        upserts: Sequence[Mapping[str, Any]],
        deletes: Sequence[Sequence[Any]] = (),
    ) -> None:
        """Write rows of the read-model table ``table``, whose primary key is the columns
        ``pk``: first delete the rows whose key values are each of ``deletes`` (a missing
        one is no error), then upsert each row of ``upserts`` (insert it, or set the
        columns it names on the row with its key). Upserts name every ``pk`` column,
        with a value that is not None; one key appears once in ``upserts``.

        The table is created when missing (with ``pk`` as its primary key and the columns
        of the first row), and a column a row names that the table lacks is added.
        Values are stored as the read model's helper would store them (SQLite:
        sqlite-utils's conversions: ``datetime``/``date``/``time`` as ISO 8601 text,
        ``Decimal`` as a float, ``UUID`` and ``timedelta`` as text, lists, tuples and dicts
        as JSON text), so the rows read back through ``read_model()`` look the same
        whichever wrote them."""

    @abc.abstractmethod
    def clear_tables(self, tables: Iterable[str]) -> None:
        """Delete every row of each of the read-model ``tables`` that exists (a rebuild
        starts them over); the tables stay."""

    @abc.abstractmethod
    def reset(self, name: str, now: float) -> None:
        """Delete every entry of ``name`` and put its row back to position 0,
        :data:`REBUILDING`, with an empty summary and no error, ``updated_at`` and
        ``rebuilt_at`` ``now``. Nothing happens for an unknown name."""
