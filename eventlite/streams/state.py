"""Where a stream keeps its state: JSON-ready values by (operator, key).

A :class:`~eventlite.streams.StreamEngine` keeps everything it needs to continue in a
:class:`StreamState`: open windows and their accumulators, join buffers, watermarks, late
counts and the last input position. Entries are addressed by an *operator* name (the
stateful step of the pipeline, or ``"$stream"`` for the engine's own entries) and a *key*
text; values are JSON-ready data (``None`` is never stored: it means "deleted").

**Changes and flushes.** Writes (:meth:`~StreamState.put`, :meth:`~StreamState.delete`)
are *pending* until :meth:`~StreamState.flush`: :meth:`~StreamState.changes` lists them,
reads see them. A durable runner writes the pending changes in the same transaction as the
stream's outputs and checkpoint, then calls ``flush()``; after a crash it builds the state
again from what was committed, and the engine continues from the position stored in it, as
if nothing had happened. Nothing pending ever needs to survive a crash.

:class:`MemoryState` keeps committed entries as JSON text, exactly what a table would hold,
so a test that restores from :meth:`MemoryState.snapshot` sees every value make the same
round trip as in a real store.

This module imports nothing from the rest of eventlite, so the store protocol of a durable
backend can implement it without reaching upwards.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["MemoryState", "StateKey", "StreamState"]

StateKey = tuple[str, str]
"""``(operator, key)``: the address of one state entry."""


class StreamState(abc.ABC):
    """The state of one stream: JSON-ready values by ``(operator, key)``.

    Contract:

    - :meth:`get` and :meth:`scan` see the pending writes over the committed entries.
    - :meth:`put` and :meth:`delete` are pending until :meth:`flush`; the last write of an
      entry wins. Deleting an entry that does not exist is not an error.
    - :meth:`changes` maps every entry written since the last flush to its new value, or to
      None when it was deleted; :meth:`flush` makes them committed and empties the list.
    - Values are JSON-ready: what is read back equals what was written once it has gone
      through ``json.dumps`` and ``json.loads``. ``put`` of None raises ``ValueError``.

    A durable implementation writes :meth:`changes` in the caller's transaction and then
    flushes; it never writes on its own between flushes.
    """

    @abc.abstractmethod
    def get(self, operator: str, key: str) -> Any | None:
        """The value of an entry, or None when there is none."""

    @abc.abstractmethod
    def put(self, operator: str, key: str, value: Any) -> None:
        """Set an entry (pending until :meth:`flush`)."""

    @abc.abstractmethod
    def delete(self, operator: str, key: str) -> None:
        """Remove an entry (pending until :meth:`flush`)."""

    @abc.abstractmethod
    def scan(self, operator: str) -> Iterator[tuple[str, Any]]:
        """Every ``(key, value)`` entry of one operator, in key order."""

    @abc.abstractmethod
    def changes(self) -> Mapping[StateKey, Any | None]:
        """The entries written since the last flush: new value, or None for deleted."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Mark the pending changes as committed: the runner has written them."""


class MemoryState(StreamState):
    """A :class:`StreamState` in memory, for tests and for streams that need not survive.

    ``MemoryState(snapshot)`` starts from a :meth:`snapshot` of another one: the state a
    restarted process would load after a crash, since the snapshot holds only what was
    flushed. Committed values are kept as JSON text.
    """

    def __init__(self, snapshot: Mapping[StateKey, str] | None = None) -> None:
        self._committed: dict[StateKey, str] = dict(snapshot) if snapshot else {}
        self._pending: dict[StateKey, Any | None] = {}

    def get(self, operator: str, key: str) -> Any | None:
        """The value of an entry, or None when there is none."""
        address = (operator, key)
        if address in self._pending:
            return self._pending[address]
        text = self._committed.get(address)
        return None if text is None else json.loads(text)

    def put(self, operator: str, key: str, value: Any) -> None:
        """Set an entry (pending until :meth:`flush`)."""
        if value is None:
            raise ValueError(f"state entry {operator!r}/{key!r}: None means deleted")
        self._pending[(operator, key)] = value

    def delete(self, operator: str, key: str) -> None:
        """Remove an entry (pending until :meth:`flush`)."""
        self._pending[(operator, key)] = None

    def scan(self, operator: str) -> Iterator[tuple[str, Any]]:
        """Every ``(key, value)`` entry of one operator, in key order."""
        keys = {k for (op, k) in self._committed if op == operator}
        keys.update(k for (op, k) in self._pending if op == operator)
        for key in sorted(keys):
            value = self.get(operator, key)
            if value is not None:
                yield key, value

    def changes(self) -> Mapping[StateKey, Any | None]:
        """The entries written since the last flush: new value, or None for deleted."""
        return dict(self._pending)

    def flush(self) -> None:
        """Commit the pending changes (each value goes through ``json.dumps``)."""
        committed = self._committed
        dumps = json.dumps
        for address, value in self._pending.items():
            if value is None:
                committed.pop(address, None)
            else:
                committed[address] = dumps(value, separators=(",", ":"))
        self._pending.clear()

    def snapshot(self) -> dict[StateKey, str]:
        """The committed entries as JSON text: what a store would hold after the last flush."""
        return dict(self._committed)

    def __len__(self) -> int:
        return sum(1 for _ in self._entries())

    def _entries(self) -> Iterator[StateKey]:
        for address in {*self._committed, *self._pending}:
            if self._pending.get(address, self._committed.get(address)) is not None:
                yield address
