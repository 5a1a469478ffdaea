"""The storage seam: one backend object holding every durable store, sharing transactions.

A :class:`Storage` is what an :class:`~eventlite.App` keeps its durable state in: the event
store, snapshots, checkpoints, the inbox, delayed retries, dead letters, work queues,
idempotency keys, saga and process state, projection checkpoints. Backends implement it
in a package of their own (``eventlite.sqlite``, ``eventlite.memory``, later
``eventlite.postgres``); the layers above never see a table or a connection.

**Transactions.** ``with storage.transaction() as tx:`` opens one write transaction. Every
write of every store of the same storage, made by the same thread inside the block, joins
it: they all commit together or roll back together. A ``transaction()`` opened inside
another one of the same thread is a savepoint of it: its failure rolls back only the inner
block, and nothing is durable before the outermost commit. ``tx.on_commit(callback)``
runs ``callback`` after the outermost commit (never after a rollback).

**Commits of other processes.** ``storage.watch_log(listener)`` calls ``listener()``
from a background thread soon after any process commits events to the log, when the
backend can hear it (:attr:`Storage.log_notifications`: PostgreSQL's ``LISTEN/NOTIFY``);
followers of the log wait on it and poll only as a fallback. Commits made through this
object are announced in the committing thread by :meth:`Storage.on_every_commit`.

**Stores a backend lacks.** A backend that cannot keep some kind of state (the in-memory
one keeps no dead letters) raises :class:`~eventlite.exceptions.StorageError` naming the
feature and the backend when that store is asked for; the rest works.
:meth:`Storage.keeps` says which stores a storage has, and :meth:`Storage.info` what it
holds.

**Read-only.** A backend may open a storage read-only (``SQLiteStorage(path,
readonly=True)``, ``PostgresStorage(url, readonly=True)``): it then never creates,
migrates or changes anything, every read method works, and :meth:`Storage.transaction`
(so every write) raises :class:`~eventlite.exceptions.StorageError`. Tools that only look
(the operator CLI) open storages so.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ..exceptions import StorageError

if TYPE_CHECKING:
    from .checkpoints import CheckpointStore
    from .claims import ClaimStore
    from .dead_letters import DeadLetterStore
    from .events import EventStore
    from .idempotency import IdempotencyStore
    from .inbox import InboxStore
    from .leases import LeaseStore
    from .processes import ProcessStore
    from .projections import ProjectionStore
    from .queues import QueueStore
    from .retries import RetryStore
    from .sagas import SagaStore
    from .snapshots import SnapshotStore
    from .streams import StreamStateStore

__all__ = ["STORES", "Storage", "StorageInfo", "Transaction"]

STORES: tuple[str, ...] = (
    "events",
    "snapshots",
    "checkpoints",
    "inbox",
    "retries",
    "dead_letters",
    "queues",
    "idempotency",
    "sagas",
    "processes",
    "projections",
    "leases",
    "claims",
    "streams",
)
"""The names of the stores of a :class:`Storage`, as its properties are named."""

_Self = TypeVar("_Self", bound="Storage")


@attrs.frozen
class StorageInfo:
    """What a storage holds, from :meth:`Storage.info` (what ``python -m eventlite info``
    prints)."""

    backend: str
    """``"sqlite"``, ``"postgres"``, ``"memory"``, or a third-party backend's name."""
    description: str
    """:attr:`Storage.description`: the path, or the URL with its password masked."""
    schema_version: int | None
    """The version of the stored schema; None for a backend without one (memory)."""
    latest_schema_version: int | None
    """The schema version this eventlite writes (a lower :attr:`schema_version`: an
    older eventlite made the store, and an app of this version migrates it)."""
    events: int
    """How many events the log holds."""
    head_position: int
    """The position of the last committed event (0: none)."""
    streams: int
    """How many streams there are."""
    stores: tuple[str, ...]
    """The stores it keeps (names from :data:`STORES`, in that order)."""
    details: Mapping[str, Any] = attrs.field(factory=dict)
    """The backend's own facts, JSON values by name (SQLite: ``path``, ``journal_mode``,
    ``file_size``, ``wal_size``, ``tables``; PostgreSQL: ``schema``, ``server_version``,
    ``tables``)."""


def _nothing() -> None:
    """What :meth:`Storage.watch_log` returns when it watches nothing."""


class Transaction(abc.ABC):
    """An open write transaction of a :class:`Storage` (see the module doc).

    Backends add what their own code needs (the SQLite one: ``execute``, the raw
    connection, a ``sqlite_utils`` view); code above the backends uses only
    :meth:`on_commit`.
    """

    @abc.abstractmethod
    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after the outermost transaction commits, in the committing
        thread, in the order given; never if it rolls back (a savepoint rolled back drops
        the callbacks added inside it)."""


class Storage(abc.ABC):
    """Every durable store of one backend, sharing one transaction per thread.

    Subclasses set :attr:`events` and :attr:`snapshots`, and override the properties of
    the other stores they keep; the defaults raise :class:`StorageError` naming the
    missing feature. Every store, and every method, may be used from any thread.
    """

    events: EventStore
    """The event store and the log reader."""
    snapshots: SnapshotStore
    """Aggregate snapshots."""

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """What this storage is, for messages and logs: a file path, or a URL with any
        password masked."""

    @property
    def durable(self) -> bool:
        """Whether what is committed survives the process (False in memory)."""
        return True

    @property
    def readonly(self) -> bool:
        """Whether it was opened read-only (see the module doc); False by default."""
        return False

    def keeps(self, store: str) -> bool:
        """Whether this storage keeps the store named ``store`` (a name from
        :data:`STORES`): False when asking for it would raise :class:`StorageError` for a
        feature the backend lacks (or, read-only, that the stored schema is too old to
        hold). Raises ``ValueError`` for a name that is not a store's."""
        if store not in STORES:
            raise ValueError(f"no store is named {store!r} (known: {', '.join(STORES)})")
        try:
            getattr(self, store)
        except StorageError:
            return False
        return True

    def info(self) -> StorageInfo:
        """What this storage holds: schema version, counts, head position, the stores it
        keeps and the backend's own facts. The default counts through the event store;
        backends override it."""
        events = self.events
        name = type(self).__name__
        return StorageInfo(
            backend=(name[: -len("Storage")] if name.endswith("Storage") else name).lower(),
            description=self.description,
            schema_version=None,
            latest_schema_version=None,
            events=events.head_position(),
            head_position=events.head_position(),
            streams=events.count_streams(),
            stores=tuple(name for name in STORES if self.keeps(name)),
        )

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction (see the module doc); joins the thread's open one as a
        savepoint. Backend errors leave the block as :class:`StorageError`."""

    @abc.abstractmethod
    def in_transaction(self) -> bool:
        """Whether the calling thread is inside :meth:`transaction`."""

    @abc.abstractmethod
    def on_every_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every outermost commit made through this object, in
        the committing thread, after the transaction's own callbacks."""

    @property
    def log_notifications(self) -> bool:
        """Whether :meth:`watch_log` hears commits of other processes as they happen;
        False (the default, and SQLite) means a follower must poll for them."""
        return False

    def watch_log(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` from a background thread soon after any process (this one
        included) commits events to the log; returns a function that stops the calls.

        A call is a hint, never data: calls may be merged, may come for nothing new, and
        after a lost connection come once more for what may have been missed; read the
        log to see what is new. ``listener`` must be quick (set an event). The default
        calls nothing: without :attr:`log_notifications`, followers poll.
        """
        del listener
        return _nothing

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection; idempotent. Later calls raise :class:`StorageError`."""

    def unsupported(self, feature: str) -> StorageError:
        """The error for a store this backend does not keep (raise it)."""
        return StorageError(
            f"{feature} need durable storage, which {self.description} does not keep; "
            "give the App a SQLite file (App('app.db')) or a database URL"
        )

    @property
    def checkpoints(self) -> CheckpointStore:
        """Durable subscribers' checkpoints."""
        raise self.unsupported("durable subscribers")

    @property
    def inbox(self) -> InboxStore:
        """The message ids each consumer has handled."""
        raise self.unsupported("inboxes")

    @property
    def retries(self) -> RetryStore:
        """Deliveries waiting for a delayed retry, and the messages held behind them."""
        raise self.unsupported("delayed retries")

    @property
    def dead_letters(self) -> DeadLetterStore:
        """The sequenced dead-letter queue's entries."""
        raise self.unsupported("dead letters")

    @property
    def queues(self) -> QueueStore:
        """Work queues' messages."""
        raise self.unsupported("work queues")

    @property
    def idempotency(self) -> IdempotencyStore:
        """Idempotency keys and their results."""
        raise self.unsupported("idempotency keys")

    @property
    def sagas(self) -> SagaStore:
        """Orchestrated saga instances."""
        raise self.unsupported("sagas")

    @property
    def processes(self) -> ProcessStore:
        """Process-manager instances and their timeouts."""
        raise self.unsupported("process managers")

    @property
    def leases(self) -> LeaseStore:
        """Leases: which process owns each piece of background work."""
        raise self.unsupported("leases")

    @property
    def claims(self) -> ClaimStore:
        """Unique values claimed by owners across aggregates."""
        raise self.unsupported("unique claims")

    @property
    def projections(self) -> ProjectionStore:
        """Projections' checkpoints and status."""
        raise self.unsupported("projections")

    @property
    def streams(self) -> StreamStateStore:
        """Stream processors' state entries and status (not the event streams: those are
        :attr:`events`)."""
        raise self.unsupported("stream processors")

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"
