"""Keyed tables a stream looks values up in (stream-table joins).

A :class:`Table` answers one question, the row of a key, as of now. The durable runner
backs it with a projection's read model; tests and scripts use :class:`MemoryTable`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

__all__ = ["MemoryTable", "Table"]


class Table(abc.ABC):
    """A keyed table a stream joins against: ``get(key)`` is the row, or None.

    A lookup sees the table as it is when the event is processed, not as it was at the
    event's time: a replay over a table that changed since gives other results (use a
    stream-stream join, whose both sides come from the log, when that matters).
    """

    @abc.abstractmethod
    def get(self, key: Any) -> Any | None:
        """The row of ``key``, or None when the table has none."""


class MemoryTable(Table):
    """A :class:`Table` over a dict (a copy of ``rows``; :meth:`put` changes it)."""

    def __init__(self, rows: Mapping[Any, Any] | None = None) -> None:
        self._rows: dict[Any, Any] = dict(rows) if rows else {}

    def get(self, key: Any) -> Any | None:
        """The row of ``key``, or None."""
        return self._rows.get(key)

    def put(self, key: Any, row: Any) -> None:
        """Set the row of ``key``."""
        self._rows[key] = row
