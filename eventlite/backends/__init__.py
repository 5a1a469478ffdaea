"""Event store backends, one module per technology, all behind :class:`eventlite.store.EventStore`.

- :class:`InMemoryEventStore` (``eventlite.backends.memory``): a list in memory.
- :class:`SQLiteEventStore` (``eventlite.backends.sqlite``): one SQLite file.
"""

from __future__ import annotations

from .memory import InMemoryEventStore
from .sqlite import SQLiteEventStore

__all__ = ["InMemoryEventStore", "SQLiteEventStore"]
