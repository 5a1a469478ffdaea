"""The PostgreSQL backend: every durable store of eventlite in one PostgreSQL schema.

:class:`PostgresStorage` is the :class:`~eventlite.store.Storage` an
``App("postgresql://user@host/db")`` runs on (extra ``eventlite[postgres]``: psycopg 3
and psycopg_pool, imported only when a storage is opened). Underneath, one
:class:`PostgresDatabase` per URL and schema per process owns a connection pool and the
per-thread transactions, the schema lives in :mod:`eventlite.postgres.schema`, and each
store protocol has one module here. See ``docs/postgres.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from ..codec import Codec
from ..store.storage import Storage, StorageInfo
from . import _info
from ._database import PostgresDatabase, PostgresTransaction
from ._listener import LogListener
from ._url import is_postgres_url, mask_url
from .checkpoints import PostgresCheckpointStore
from .claims import PostgresClaimStore
from .dead_letters import PostgresDeadLetterStore
from .events import PostgresEventStore
from .idempotency import PostgresIdempotencyStore
from .inbox import PostgresInboxStore
from .leases import PostgresLeaseStore
from .processes import PostgresProcessStore
from .projections import PostgresProjectionStore
from .queues import PostgresQueueStore
from .retries import PostgresRetryStore
from .sagas import PostgresSagaStore
from .snapshots import PostgresSnapshotStore
from .streams import PostgresStreamStateStore

__all__ = [
    "PostgresCheckpointStore",
    "PostgresClaimStore",
    "PostgresDatabase",
    "PostgresDeadLetterStore",
    "PostgresEventStore",
    "PostgresIdempotencyStore",
    "PostgresInboxStore",
    "PostgresLeaseStore",
    "PostgresProcessStore",
    "PostgresProjectionStore",
    "PostgresQueueStore",
    "PostgresRetryStore",
    "PostgresSagaStore",
    "PostgresSnapshotStore",
    "PostgresStorage",
    "PostgresStreamStateStore",
    "PostgresTransaction",
    "is_postgres_url",
    "mask_url",
]


class PostgresStorage(Storage):
    """Every durable store in one PostgreSQL schema (created with its tables if missing).

    ``url`` is a ``postgresql://user:password@host:port/dbname`` URL (libpq's query
    parameters work too: ``?sslmode=require``; ``?schema=name`` is the same as
    ``schema=``); ``codec`` encodes the events
    (default: a :class:`~eventlite.Codec` over the default registry); ``schema`` names
    the schema holding the tables (created if missing; default: the first schema of the
    connection's ``search_path``, usually ``public``); ``pool_min_size`` and
    ``pool_max_size`` bound the connection pool (a thread inside a transaction holds one
    connection); ``pool_timeout`` is how many seconds a caller waits for a free
    connection; ``connect_timeout`` how long opening waits for the server.

    Raises :class:`~eventlite.exceptions.SchemaError`, changing nothing, when the schema
    holds tables that are not an eventlite store or was written by a newer eventlite;
    :class:`~eventlite.exceptions.StorageError` when the server cannot be reached. Error
    messages and :attr:`description` show the URL with its password masked.
    ``readonly=True`` opens an existing store for reading only (see
    :class:`PostgresDatabase`).
    """

    def __init__(
        self,
        url: str,
        *,
        codec: Codec | None = None,
        schema: str | None = None,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        pool_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        readonly: bool = False,
    ) -> None:
        self.database = PostgresDatabase(
            url,
            schema=schema,
            min_size=pool_min_size,
            max_size=pool_max_size,
            timeout=pool_timeout,
            connect_timeout=connect_timeout,
            readonly=readonly,
        )
        """The pool, the transactions and the schema."""
        self.events: PostgresEventStore = PostgresEventStore(self.database, codec=codec)
        self.snapshots: PostgresSnapshotStore = PostgresSnapshotStore(self.database)
        self._checkpoints = PostgresCheckpointStore(self.database)
        self._inbox = PostgresInboxStore(self.database)
        self._retries = PostgresRetryStore(self.database)
        self._leases = PostgresLeaseStore(self.database)
        self._dead_letters = PostgresDeadLetterStore(self.database)
        self._queues = PostgresQueueStore(self.database)
        self._idempotency = PostgresIdempotencyStore(self.database)
        self._projections = PostgresProjectionStore(self.database)
        self._sagas = PostgresSagaStore(self.database)
        self._processes = PostgresProcessStore(self.database)
        self._claims = PostgresClaimStore(self.database)
        self._streams = PostgresStreamStateStore(self.database)
        self._listener = LogListener(self.database)

    @property
    def description(self) -> str:
        """The URL with its password masked, and the schema if one was named."""
        return self.database.description

    @property
    def schema(self) -> str:
        """The schema holding the tables."""
        return self.database.schema

    @property
    def readonly(self) -> bool:
        """Whether the store was opened read-only."""
        return self.database.readonly

    def info(self) -> StorageInfo:
        """See :meth:`Storage.info`; ``details``: ``schema``, ``server_version`` and
        ``tables``."""
        return _info.info(self, self.database)

    @property
    def checkpoints(self) -> PostgresCheckpointStore:
        """See :attr:`Storage.checkpoints`: the ``subscriber_checkpoints`` table."""
        return self._checkpoints

    @property
    def inbox(self) -> PostgresInboxStore:
        """See :attr:`Storage.inbox`: the ``inbox`` table."""
        return self._inbox

    @property
    def retries(self) -> PostgresRetryStore:
        """See :attr:`Storage.retries`: the ``delivery_retries`` table."""
        return self._retries

    @property
    def leases(self) -> PostgresLeaseStore:
        """Leases in the schema (see :class:`PostgresLeaseStore`)."""
        return self._leases

    @property
    def dead_letters(self) -> PostgresDeadLetterStore:
        """See :attr:`Storage.dead_letters`: the ``dead_letters`` table, each line of
        entries written under its own advisory lock."""
        return self._dead_letters

    @property
    def queues(self) -> PostgresQueueStore:
        """See :attr:`Storage.queues`: ``queue_messages`` and ``queue_dedup``, received
        with ``FOR UPDATE SKIP LOCKED``."""
        return self._queues

    @property
    def idempotency(self) -> PostgresIdempotencyStore:
        """See :attr:`Storage.idempotency`: the ``idempotency_keys`` table."""
        return self._idempotency

    @property
    def projections(self) -> PostgresProjectionStore:
        """See :attr:`Storage.projections`: the ``projections`` table; read models are
        tables of the same schema."""
        return self._projections

    @property
    def sagas(self) -> PostgresSagaStore:
        """See :attr:`Storage.sagas`: the ``sagas`` table."""
        return self._sagas

    @property
    def processes(self) -> PostgresProcessStore:
        """See :attr:`Storage.processes`: ``process_instances`` and ``process_timeouts``."""
        return self._processes

    @property
    def claims(self) -> PostgresClaimStore:
        """See :attr:`Storage.claims`: the ``claims`` table."""
        return self._claims

    @property
    def streams(self) -> PostgresStreamStateStore:
        """See :attr:`Storage.streams`: ``stream_processors`` and
        ``stream_processor_state``; the tables streams write are tables of the schema."""
        return self._streams

    def transaction(self) -> AbstractContextManager[PostgresTransaction]:
        """See :meth:`Storage.transaction`: ``BEGIN`` on one pooled connection."""
        return self.database.transaction()

    def in_transaction(self) -> bool:
        """See :meth:`Storage.in_transaction`."""
        return self.database.in_transaction()

    def on_every_commit(self, listener: Callable[[], None]) -> None:
        """See :meth:`Storage.on_every_commit`."""
        self.database.on_every_commit(listener)

    @property
    def log_notifications(self) -> bool:
        """True: commits of every process are announced with ``NOTIFY``."""
        return True

    def watch_log(self, listener: Callable[[], None]) -> Callable[[], None]:
        """See :meth:`Storage.watch_log`: a ``LISTEN`` thread with a connection of its own
        (started by the first watcher) calls ``listener`` within milliseconds of a commit
        that appended events, in any process."""
        return self._listener.watch(listener)

    def close(self) -> None:
        """Stop listening, close the event store and the pool; idempotent."""
        self._listener.close()
        self.events.close()
        self.database.close()
