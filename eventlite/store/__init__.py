"""The store protocols: what every storage backend implements, one module per concept.

Layers above (delivery, the read side, processes, the app) talk to these protocols only;
SQL lives in the backend packages (``eventlite.sqlite``, ``eventlite.postgres``), and each
protocol has a contract suite in ``eventlite.testing`` that every backend passes.

- :mod:`~eventlite.store.storage`: :class:`Storage` (one backend, every store, shared
  transactions) and :class:`Transaction`.
- :mod:`~eventlite.store.events`: :class:`EventStore`, expected versions, the log reader.
- :mod:`~eventlite.store.snapshots`: :class:`SnapshotStore`.
- checkpoints, inbox, retries, dead letters, queues, idempotency keys, sagas, processes,
  projections: a module each.
"""

from __future__ import annotations

from .events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    DuplicateEventError,
    EventStore,
    ExpectedVersion,
    LogRecord,
    StreamAppend,
    StreamInfo,
    StreamState,
)
from .snapshots import Snapshot, SnapshotStore
from .storage import STORES, Storage, StorageInfo, Transaction

__all__ = [
    "ANY",
    "NO_STREAM",
    "STORES",
    "STREAM_EXISTS",
    "DuplicateEventError",
    "EventStore",
    "ExpectedVersion",
    "LogRecord",
    "Snapshot",
    "SnapshotStore",
    "Storage",
    "StorageInfo",
    "StreamAppend",
    "StreamInfo",
    "StreamState",
    "Transaction",
]
