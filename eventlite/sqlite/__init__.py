"""The SQLite backend: every durable store of eventlite in one file.

:class:`SQLiteStorage` is the :class:`~eventlite.store.Storage` an ``App("shop.db")``
runs on. Underneath, one :class:`Database` per file per process owns the connections and
transactions (WAL, ``BEGIN IMMEDIATE``, one writer and many readers), the schema lives in
:mod:`eventlite.sqlite.schema`, and each store protocol has one module here. This package
is the only place, with the other backends, where eventlite writes SQL.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager

from ..codec import Codec
from ..store.storage import Storage, StorageInfo
from . import _info
from ._database import Database, Synchronous, Transaction
from .checkpoints import SQLiteCheckpointStore
from .claims import SQLiteClaimStore
from .dead_letters import SQLiteDeadLetterStore
from .events import SQLiteEventStore
from .idempotency import SQLiteIdempotencyStore
from .inbox import SQLiteInboxStore
from .leases import SQLiteLeaseStore
from .processes import SQLiteProcessStore
from .projections import SQLiteProjectionStore
from .queues import SQLiteQueueStore
from .retries import SQLiteRetryStore
from .sagas import SQLiteSagaStore
from .snapshots import SQLiteSnapshotStore
from .streams import SQLiteStreamStateStore

__all__ = [
    "Database",
    "SQLiteCheckpointStore",
    "SQLiteClaimStore",
    "SQLiteDeadLetterStore",
    "SQLiteEventStore",
    "SQLiteIdempotencyStore",
    "SQLiteInboxStore",
    "SQLiteLeaseStore",
    "SQLiteProcessStore",
    "SQLiteProjectionStore",
    "SQLiteQueueStore",
    "SQLiteRetryStore",
    "SQLiteSagaStore",
    "SQLiteSnapshotStore",
    "SQLiteStorage",
    "SQLiteStreamStateStore",
    "Synchronous",
    "Transaction",
]


class SQLiteStorage(Storage):
    """Every durable store in one SQLite file (created with its tables if missing).

    ``path`` is the file, or an open :class:`Database` to share; ``codec`` encodes the
    events (default: a :class:`~eventlite.Codec` over the default registry);
    ``synchronous`` is ``"full"`` (default: a commit survives power loss) or ``"normal"``
    (faster; the last commits may be lost on power loss, never on a crash);
    ``busy_timeout``: seconds a writer waits for another process's lock. Raises
    :class:`~eventlite.exceptions.SchemaError` for a file that is not an eventlite store or
    is newer than this eventlite, changing nothing. ``readonly=True`` opens an existing
    store for reading only (see :class:`Database`): nothing is created, migrated or
    written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Database,
        *,
        codec: Codec | None = None,
        synchronous: Synchronous = "full",
        busy_timeout: float = 10.0,
        readonly: bool = False,
    ) -> None:
        if isinstance(path, Database):
            self.database = path
            self._owns_database = False
        else:
            self.database = Database(
                path, synchronous=synchronous, busy_timeout=busy_timeout, readonly=readonly
            )
            self._owns_database = True
        """The file's connections and transactions."""
        self.events: SQLiteEventStore = SQLiteEventStore(self.database, codec=codec)
        self.snapshots: SQLiteSnapshotStore = SQLiteSnapshotStore(self.database)
        self._dead_letters = SQLiteDeadLetterStore(self.database)
        self._queues = SQLiteQueueStore(self.database)
        self._idempotency = SQLiteIdempotencyStore(self.database)
        self._projections = SQLiteProjectionStore(self.database)
        self._sagas = SQLiteSagaStore(self.database)
        self._processes = SQLiteProcessStore(self.database)
        self._leases: SQLiteLeaseStore | None = None
        self._claims = SQLiteClaimStore(self.database)
        self._checkpoints = SQLiteCheckpointStore(self.database)
        self._inbox = SQLiteInboxStore(self.database)
        self._retries = SQLiteRetryStore(self.database)
        self._streams = SQLiteStreamStateStore(self.database)

    @property
    def description(self) -> str:
        """The file's path."""
        return self.database.path

    @property
    def readonly(self) -> bool:
        """Whether the file was opened read-only."""
        return self.database.readonly

    def keeps(self, store: str) -> bool:
        """See :meth:`Storage.keeps`: every store, but read-only only those the file's
        schema version has the tables of."""
        return super().keeps(store) and _info.has_store(self.database, store)

    def info(self) -> StorageInfo:
        """See :meth:`Storage.info`; ``details``: ``path``, ``journal_mode``,
        ``file_size``, ``wal_size`` (bytes) and ``tables``."""
        return _info.info(self, self.database)

    @property
    def dead_letters(self) -> SQLiteDeadLetterStore:
        """See :attr:`Storage.dead_letters`: the ``dead_letters`` table."""
        return self._dead_letters

    @property
    def queues(self) -> SQLiteQueueStore:
        """See :attr:`Storage.queues`: the ``queue_messages`` and ``queue_dedup`` tables."""
        return self._queues

    @property
    def idempotency(self) -> SQLiteIdempotencyStore:
        """See :attr:`Storage.idempotency`: the ``idempotency_keys`` table."""
        return self._idempotency

    @property
    def projections(self) -> SQLiteProjectionStore:
        """See :attr:`Storage.projections`: the ``projections`` table."""
        return self._projections

    @property
    def sagas(self) -> SQLiteSagaStore:
        """See :attr:`Storage.sagas`: the ``sagas`` table."""
        return self._sagas

    @property
    def processes(self) -> SQLiteProcessStore:
        """See :attr:`Storage.processes`: ``process_instances`` and ``process_timeouts``."""
        return self._processes

    @property
    def leases(self) -> SQLiteLeaseStore:
        """Leases in the file (see :class:`SQLiteLeaseStore`)."""
        if self._leases is None:
            self._leases = SQLiteLeaseStore(self.database)
        return self._leases

    @property
    def claims(self) -> SQLiteClaimStore:
        """See :attr:`Storage.claims`: the ``claims`` table."""
        return self._claims

    @property
    def streams(self) -> SQLiteStreamStateStore:
        """See :attr:`Storage.streams`: ``stream_processors`` and ``stream_processor_state``."""
        return self._streams

    def transaction(self) -> AbstractContextManager[Transaction]:
        """See :meth:`Storage.transaction`: ``BEGIN IMMEDIATE`` on the file."""
        return self.database.transaction()

    def in_transaction(self) -> bool:
        """See :meth:`Storage.in_transaction`."""
        return self.database.in_transaction()

    def on_every_commit(self, listener: Callable[[], None]) -> None:
        """See :meth:`Storage.on_every_commit`."""
        self.database.on_every_commit(listener)

    @property
    def checkpoints(self) -> SQLiteCheckpointStore:
        """Durable subscribers' checkpoints (``subscriber_checkpoints``)."""
        return self._checkpoints

    @property
    def inbox(self) -> SQLiteInboxStore:
        """Handled message ids per consumer (``inbox``)."""
        return self._inbox

    @property
    def retries(self) -> SQLiteRetryStore:
        """Delayed retries and held messages (``delivery_retries``)."""
        return self._retries

    def close(self) -> None:
        """Close the event store, and the file if this object opened it."""
        self.events.close()
        if self._owns_database:
            self.database.close()
