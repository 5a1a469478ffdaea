"""What a stream produces: window results, and the outputs the runner writes.

Operators pass values along the pipeline; a windowed aggregate passes
:class:`WindowResult` values. At the end of the pipeline a sink turns each value into an
*output*, which :meth:`~eventlite.streams.StreamEngine.process` returns, in order, for the
runner to write in the same transaction as the stream's state and checkpoint:

- :class:`AppendEvent`: an event to append to the log;
- :class:`UpsertRow` / :class:`DeleteRow`: a row of a read-model table;
- :class:`DeadLetterEvent`: an input event the stream refused (a late event whose policy
  is ``"dead_letter"``), for the dead-letter queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ..envelope import Envelope

__all__ = [
    "AppendEvent",
    "DeadLetterEvent",
    "DeleteRow",
    "Output",
    "UpsertRow",
    "WindowResult",
]


@attrs.frozen
class WindowResult:
    """The aggregate of one window of one key."""

    key: Any
    """The key the window belongs to (None for an unkeyed stream)."""
    start: datetime
    """The window's first instant (UTC)."""
    end: datetime
    """The instant after the window: ``start + size`` (for a session: last event + gap)."""
    value: Any
    """The aggregate's result."""
    final: bool = True
    """True when the window has closed and this is its last result; False for an update
    (``emit="update"``)."""
    retracted: bool = False
    """True when an earlier update of this window no longer holds: a session merged into
    another one, or whose start moved (``emit="update"`` only)."""


@attrs.frozen
class AppendEvent:
    """Append ``message`` to the log."""

    message: Any
    """The event (an instance of a registered event class)."""
    stream_id: str | None
    """The event stream to append it to; None leaves the choice to the runner."""
    position: int | None
    """The input position being processed when it was made (None before any input)."""


@attrs.frozen
class UpsertRow:
    """Insert ``row`` into ``table``, or update the row with the same primary key."""

    table: str
    """The read-model table."""
    row: Mapping[str, Any]
    """The row's columns."""
    pk: tuple[str, ...]
    """The primary-key columns (each one is in ``row``)."""
    position: int | None
    """The input position being processed when it was made."""


@attrs.frozen
class DeleteRow:
    """Delete the row of ``table`` whose primary key is ``key``."""

    table: str
    """The read-model table."""
    key: Mapping[str, Any]
    """The primary-key columns and their values."""
    position: int | None
    """The input position being processed when it was made."""


@attrs.frozen
class DeadLetterEvent:
    """An input event the stream refused, for the dead-letter queue."""

    envelope: Envelope
    """The input event, as it was read."""
    stream: str
    """The stream's name."""
    operator: str
    """The operator that refused it."""
    reason: str
    """Why, in words."""

    @property
    def position(self) -> int | None:
        """The refused event's position."""
        return self.envelope.position


Output = AppendEvent | UpsertRow | DeleteRow | DeadLetterEvent
"""Anything :meth:`~eventlite.streams.StreamEngine.process` returns for the runner to write."""
