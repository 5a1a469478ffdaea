"""The SQLite file every durable part of eventlite shares: connections, transactions, schema.

One :class:`Database` per file per process. It owns one write connection, used by one
thread at a time under a lock and always inside ``BEGIN IMMEDIATE``, and one read
connection per thread. The file runs in WAL mode, so readers see the last commit while a
writer works, and writers in other processes wait on SQLite's own lock (the busy timeout).

Later modules write in the same transaction as the events they belong to::

    with database.transaction() as tx:          # BEGIN IMMEDIATE
        store.append("order-1", [OrderPaid(...)], expected_version=3)  # joins tx
        tx.execute("INSERT INTO outbox ...", (...))
    # COMMIT here; any exception rolls everything back

The schema is versioned with ``PRAGMA user_version`` and marked as eventlite's with
``PRAGMA application_id``. :data:`MIGRATIONS` is the ordered list of steps; step ``n``
(1-based) brings a file from version ``n - 1`` to ``n``. To add tables, append a
:class:`Migration` to the list: never edit or reorder a step that has shipped.

Every ``sqlite3.Error`` that crosses this module becomes a :class:`StorageError` (or a
:class:`SchemaError` when the file is not an eventlite store), the original kept as
``__cause__``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from .exceptions import SchemaError, StorageError

if TYPE_CHECKING:
    import sqlite_utils

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Database",
    "Migration",
    "Synchronous",
    "Transaction",
    "storage_error",
    "where_equal",
]

APPLICATION_ID: Final = 0x45564C54
"""``PRAGMA application_id`` of an eventlite file (the bytes ``EVLT``)."""

Synchronous = Literal["full", "normal"]
"""``"full"``: a commit survives power loss (fsync per commit). ``"normal"``: a commit
survives a crash of the process but the last commits may be lost on power loss."""


@attrs.frozen
class Migration:
    """One step of the schema: what it adds, and the function that adds it."""

    name: str
    """A short name, shown in errors and logs."""
    apply: Callable[[sqlite_utils.Database], None]
    """Creates tables and indexes, inside the migration's transaction."""


def _create_event_store(db: sqlite_utils.Database) -> None:
    db.table("events").create(
        {
            "position": int,
            "stream_id": str,
            "version": int,
            "id": str,
            "type": str,
            "schema_version": int,
            "data": str,
            "correlation_id": str,
            "causation_id": str,
            "user_id": str,
            "headers": str,
            "timestamp": int,
        },
        pk="position",
        not_null=[
            "stream_id",
            "version",
            "id",
            "type",
            "schema_version",
            "data",
            "correlation_id",
            "timestamp",
        ],
    )
    db.table("events").create_index(
        ["stream_id", "version"], index_name="events_stream_version", unique=True
    )
    db.table("events").create_index(["id"], index_name="events_id", unique=True)
    db.table("streams").create(
        {"stream_id": str, "version": int}, pk="stream_id", not_null=["version"]
    )


def _create_snapshots(db: sqlite_utils.Database) -> None:
    db.table("snapshots").create(
        {"stream_id": str, "version": int, "fingerprint": str, "state": str},
        pk="stream_id",
        not_null=["version", "fingerprint", "state"],
    )


def _create_delivery(db: sqlite_utils.Database) -> None:
    # Durable subscribers: one checkpoint per subscriber over the events table; the
    # inbox of message ids handled through a unit of work; deliveries waiting for a
    # delayed retry (due_at set) or parked behind one (due_at NULL); idempotency keys.
    db.table("subscriber_checkpoints").create(
        {"name": str, "position": int, "updated_at": float},
        pk="name",
        not_null=["position", "updated_at"],
    )
    db.table("inbox").create(
        {"subscriber": str, "message_id": str, "handled_at": float},
        pk=("subscriber", "message_id"),
        not_null=["handled_at"],
    )
    db.table("inbox").create_index(["handled_at"], index_name="inbox_handled_at")
    db.table("delivery_retries").create(
        {
            "subscriber": str,
            "position": int,
            "key": str,
            "attempts": int,
            "due_at": float,
            "first_failed_at": float,
            "error": str,
        },
        pk=("subscriber", "position"),
        not_null=["key", "attempts"],
    )
    db.table("delivery_retries").create_index(
        ["subscriber", "key", "position"], index_name="delivery_retries_key"
    )
    db.table("delivery_retries").create_index(
        ["subscriber", "due_at"], index_name="delivery_retries_due"
    )
    db.table("idempotency_keys").create(
        {
            "key": str,
            "state": str,
            "result": str,
            "owner": str,
            "started_at": float,
            "lease_until": float,
            "expires_at": float,
        },
        pk="key",
        not_null=["state", "owner", "started_at"],
    )
    db.table("idempotency_keys").create_index(
        ["expires_at"], index_name="idempotency_keys_expires_at"
    )


def _create_dead_letters_and_queues(db: sqlite_utils.Database) -> None:
    # AUTOINCREMENT: a dead letter id shown to an operator, and a queue row's seq inside
    # a receipt, must never be handed out again after the row is deleted.
    db.execute(
        """
        CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,
            key TEXT,
            queue_group TEXT,
            status TEXT NOT NULL,
            message NOT NULL,
            type_name TEXT,
            message_id TEXT,
            position INTEGER,
            error_type TEXT,
            error_message TEXT,
            traceback TEXT,
            attempts INTEGER NOT NULL,
            first_failed_at REAL,
            last_failed_at REAL,
            created_at REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX dead_letters_key ON dead_letters (source, key, id)")
    db.execute("CREATE INDEX dead_letters_status ON dead_letters (source, status, id)")
    db.execute(
        """
        CREATE TABLE queue_messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            id TEXT NOT NULL,
            body NOT NULL,
            queue_group TEXT,
            not_before REAL NOT NULL,
            visible_at REAL,
            expires_at REAL,
            sent_at REAL NOT NULL,
            receives INTEGER NOT NULL DEFAULT 0,
            in_flight INTEGER NOT NULL DEFAULT 0,
            error_type TEXT,
            error_message TEXT,
            traceback TEXT,
            first_failed_at REAL,
            last_failed_at REAL
        )
        """
    )
    # visible_at is NULL for a message waiting behind the head of its FIFO group
    db.execute(
        "CREATE INDEX queue_messages_ready ON queue_messages (queue, visible_at, seq) "
        "WHERE visible_at IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX queue_messages_group ON queue_messages (queue, queue_group, seq) "
        "WHERE queue_group IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX queue_messages_expiry ON queue_messages (queue, expires_at) "
        "WHERE expires_at IS NOT NULL"
    )
    db.execute("CREATE INDEX queue_messages_sent ON queue_messages (queue, sent_at)")
    db.execute(
        """
        CREATE TABLE queue_dedup (
            queue TEXT NOT NULL,
            dedup_id TEXT NOT NULL,
            message_id TEXT NOT NULL,
            until REAL NOT NULL,
            PRIMARY KEY (queue, dedup_id)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX queue_dedup_until ON queue_dedup (queue, until)")


def _create_projections_and_sagas(db: sqlite_utils.Database) -> None:
    # One row per projection: the position its read model reflects (moved in the same
    # transaction as the read-model writes) and whether a rebuild is under way. One row per
    # saga instance, rewritten after every step; ``revision`` lets a writer notice that
    # another one moved the saga first.
    db.table("projections").create(
        {
            "name": str,
            "mode": str,
            "position": int,
            "status": str,
            "error": str,
            "updated_at": float,
            "rebuilt_at": float,
        },
        pk="name",
        not_null=["mode", "position", "status", "updated_at"],
    )
    db.table("sagas").create(
        {
            "id": str,
            "name": str,
            "status": str,
            "data": str,
            "step_index": int,
            "completed": str,
            "compensated": str,
            "compensation_errors": str,
            "failed_step": str,
            "error": str,
            "revision": int,
            "started_at": float,
            "updated_at": float,
            "finished_at": float,
        },
        pk="id",
        not_null=[
            "name",
            "status",
            "data",
            "step_index",
            "completed",
            "compensated",
            "compensation_errors",
            "revision",
            "started_at",
            "updated_at",
        ],
    )
    db.table("sagas").create_index(["status", "name"], index_name="sagas_status")


def _create_processes(db: sqlite_utils.Database) -> None:
    # One row per process-manager instance (a manager's name and a correlation key): its
    # state as JSON, running or done, and a revision a writer checks. One row per scheduled
    # timeout: the message to record in the log when it falls due (fired_at set then); the
    # row is deleted when the process handles the fired message, cancels it, or completes.
    db.table("process_instances").create(
        {
            "process": str,
            "key": str,
            "status": str,
            "state": str,
            "revision": int,
            "started_at": float,
            "updated_at": float,
            "finished_at": float,
        },
        pk=("process", "key"),
        not_null=["status", "state", "revision", "started_at", "updated_at"],
    )
    db.table("process_instances").create_index(
        ["process", "status"], index_name="process_instances_status"
    )
    db.table("process_timeouts").create(
        {
            "id": str,
            "process": str,
            "key": str,
            "name": str,
            "type": str,
            "schema_version": int,
            "data": str,
            "correlation_id": str,
            "causation_id": str,
            "due_at": float,
            "fired_at": float,
            "created_at": float,
        },
        pk="id",
        not_null=[
            "process",
            "key",
            "type",
            "schema_version",
            "data",
            "correlation_id",
            "due_at",
            "created_at",
        ],
    )
    db.execute(
        "CREATE INDEX process_timeouts_due ON process_timeouts (process, due_at) "
        "WHERE fired_at IS NULL"
    )
    db.execute("CREATE INDEX process_timeouts_key ON process_timeouts (process, key)")
    db.execute(
        "CREATE UNIQUE INDEX process_timeouts_name ON process_timeouts (process, key, name) "
        "WHERE name IS NOT NULL"
    )


MIGRATIONS: list[Migration] = [
    Migration("event store: events, streams", _create_event_store),
    Migration("aggregate snapshots", _create_snapshots),
    Migration("durable delivery: checkpoints, inbox, retries, idempotency keys", _create_delivery),
    Migration("dead letters and work queues", _create_dead_letters_and_queues),
    Migration("projection checkpoints and saga instances", _create_projections_and_sagas),
    Migration("process managers: instances and timeouts", _create_processes),
]
"""Every schema step, in order. Append new steps at the end; never change a shipped one."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The ``user_version`` this eventlite writes; a file with a higher one is refused."""

_SQLITE_NOTADB = 26
_SYNC_PRAGMA = {"full": "FULL", "normal": "NORMAL"}


def where_equal(**columns: object) -> tuple[str, list[Any]]:
    """`` WHERE a = ? AND b = ?`` over the columns whose value is not None, with its
    parameters; ``("", [])`` when every value is None. Column names come from the caller's
    code, never from data."""
    names = [name for name, value in columns.items() if value is not None]
    if not names:
        return "", []
    return " WHERE " + " AND ".join(f"{n} = ?" for n in names), [columns[n] for n in names]


def storage_error(exc: sqlite3.Error, action: str, path: str) -> StorageError:
    """The :class:`StorageError` for a ``sqlite3`` error met while doing ``action``.

    Raise it ``from exc`` so the original stays the ``__cause__``.
    """
    return StorageError(f"{action} failed on {path}: {type(exc).__name__}: {exc}")


class Transaction:
    """An open write transaction, yielded by :meth:`Database.transaction`.

    Everything run through it commits or rolls back together. ``conn`` is the raw
    ``sqlite3`` connection, valid only inside the block and only in the thread that opened
    it.
    """

    __slots__ = ("_callbacks", "conn", "database")

    def __init__(self, database: Database, conn: sqlite3.Connection) -> None:
        self.database = database
        """The database this transaction writes to."""
        self.conn = conn
        """The write connection, in ``BEGIN IMMEDIATE``."""
        self._callbacks: list[Callable[[], None]] = []

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        """Run one statement in the transaction."""
        return self.conn.execute(sql, parameters)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        """Run one statement for each row of parameters in the transaction."""
        return self.conn.executemany(sql, rows)

    def sqlite_utils(self) -> sqlite_utils.Database:
        """A ``sqlite_utils.Database`` over the same connection, for table helpers.

        Its writes join this transaction (sqlite-utils uses savepoints inside one).
        """
        import sqlite_utils

        return sqlite_utils.Database(self.conn, recursive_triggers=False, execute_plugins=False)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after the outermost transaction commits (never on rollback).

        Callbacks run in the committing thread, after the write lock is released, in the
        order they were added; an exception from one propagates after the commit.
        """
        self._callbacks.append(callback)


class _ReaderSlot:
    # sqlite3.Connection cannot be weakly referenced; this holder can, so a thread's
    # connection is freed (and closed) with the thread, and close() finds the rest.
    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        # Close now, as the thread ends: a traceback kept somewhere may still hold the
        # connection, and closing it later (from the garbage collector, after the
        # Database was closed) would checkpoint the WAL into a file thought closed.
        with suppress(Exception):
            self.conn.close()


class Database:
    """An eventlite SQLite file: WAL, a write lock, per-thread readers, a versioned schema.

    Opening creates the file and its tables when it is missing or empty, and runs the
    missing migration steps of an older eventlite file. It raises :class:`SchemaError`,
    changing nothing, for a file that is not SQLite, a SQLite file that holds other tables
    but no eventlite marker, or a file written by a newer eventlite (``user_version``
    above :data:`SCHEMA_VERSION`).

    ``synchronous`` is ``"full"`` (the default: a committed transaction survives power
    loss) or ``"normal"`` (faster; survives a process crash, but the last commits can be
    lost if the machine loses power). ``busy_timeout`` is how many seconds a writer waits
    for another process's write lock before :class:`StorageError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "full",
        busy_timeout: float = 10.0,
    ) -> None:
        if synchronous not in _SYNC_PRAGMA:
            raise ValueError(f"synchronous must be 'full' or 'normal', got {synchronous!r}")
        self.path = os.fspath(path)
        """The file's path."""
        if self.path == ":memory:" or self.path.startswith("file:"):
            raise ValueError(
                "Database needs a file path (each connection to ':memory:' would be a separate "
                "database); use InMemoryEventStore for a store without a file"
            )
        self.synchronous: Synchronous = synchronous
        """``"full"`` or ``"normal"``, as opened."""
        self.busy_timeout = busy_timeout
        """Seconds a writer waits for another process's lock."""
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: weakref.WeakSet[_ReaderSlot] = weakref.WeakSet()
        self._readers_lock = threading.Lock()
        self._savepoints = 0
        self._commit_listeners: tuple[Callable[[], None], ...] = ()
        self._closed = False
        self._conn = self._connect()
        try:
            self._open_schema()
        except BaseException:
            self._conn.close()
            raise

    # -- connections ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "opening", self.path) from exc
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA synchronous={_SYNC_PRAGMA[self.synchronous]}")

    def read_connection(self) -> sqlite3.Connection:
        """This thread's read connection (autocommit: each statement sees the last commit).

        Inside :meth:`transaction` on the same thread it is the write connection, so a
        transaction reads its own writes. Use :meth:`read` for several statements that
        must see one snapshot.
        """
        tx: Transaction | None = getattr(self._local, "tx", None)
        if tx is not None:
            return tx.conn
        self._check_open()
        slot: _ReaderSlot | None = getattr(self._local, "reader", None)
        if slot is not None:
            return slot.conn
        conn = self._connect()
        try:
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            conn.close()
            raise storage_error(exc, "opening a reader", self.path) from exc
        slot = _ReaderSlot(conn)
        with self._readers_lock:
            self._readers.add(slot)
        self._local.reader = slot
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read connection holding one snapshot for the whole block.

        Keep the block short: an open read transaction stops the WAL from being
        checkpointed past it.
        """
        conn = self.read_connection()
        if conn.in_transaction:  # the write transaction of this thread
            yield conn
            return
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise storage_error(exc, "beginning a read", self.path) from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading", self.path) from exc
        finally:
            with suppress(sqlite3.Error):
                conn.execute("COMMIT")

    # -- writes -----------------------------------------------------------------------

    def in_transaction(self) -> bool:
        """Whether the calling thread is inside :meth:`transaction`."""
        return getattr(self._local, "tx", None) is not None

    def on_every_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every outermost commit made through this object, in
        the committing thread, after the transaction's own callbacks (the app's relay and
        projections wake up this way, whoever wrote)."""
        with self._write_lock:
            self._commit_listeners = (*self._commit_listeners, listener)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction: ``BEGIN IMMEDIATE``, then ``COMMIT``, or ``ROLLBACK`` on error.

        One transaction at a time per process (a lock), and per file across processes
        (SQLite's write lock, waited for up to ``busy_timeout``). Nested in another
        transaction of the same thread, the block becomes a savepoint of it: its failure
        rolls back only the block, and nothing is durable before the outer commit.
        ``sqlite3`` errors leave the block as :class:`StorageError`.
        """
        outer: Transaction | None = getattr(self._local, "tx", None)
        if outer is not None:
            with self._savepoint(outer):
                yield outer
            return
        self._check_open()
        conn = self._conn
        callbacks: list[Callable[[], None]]
        with self._write_lock:
            self._check_open()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise storage_error(exc, "beginning a write transaction", self.path) from exc
            tx = Transaction(self, conn)
            self._local.tx = tx
            try:
                try:
                    yield tx
                except BaseException as exc:
                    self._rollback(conn)
                    if isinstance(exc, sqlite3.Error):
                        raise storage_error(exc, "writing", self.path) from exc
                    raise
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback(conn)
                    raise storage_error(exc, "committing", self.path) from exc
            finally:
                self._local.tx = None
            callbacks = [*tx._callbacks, *self._commit_listeners]
        first_error: BaseException | None = None
        for callback in callbacks:
            # every callback runs even if an earlier one fails; the first error is raised
            try:
                callback()
            except BaseException as exc:
                if first_error is None:
                    first_error = exc
        if first_error is not None:
            raise first_error

    @contextmanager
    def _savepoint(self, tx: Transaction) -> Iterator[None]:
        self._savepoints += 1
        name = f"eventlite_{self._savepoints}"
        conn = tx.conn
        try:
            conn.execute(f"SAVEPOINT {name}")
        except sqlite3.Error as exc:
            raise storage_error(exc, "opening a savepoint", self.path) from exc
        mark = len(tx._callbacks)
        try:
            yield
        except BaseException as exc:
            # what the rolled-back block asked to run after the commit is rolled back too
            del tx._callbacks[mark:]
            if conn.in_transaction:
                try:
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
                except sqlite3.Error:
                    pass
            if isinstance(exc, sqlite3.Error):
                raise storage_error(exc, "writing", self.path) from exc
            raise
        try:
            conn.execute(f"RELEASE {name}")
        except sqlite3.Error as exc:
            raise storage_error(exc, "releasing a savepoint", self.path) from exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # A failed COMMIT or an I/O error may already have ended the transaction.
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    # -- schema -----------------------------------------------------------------------

    def _header(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """(application_id, user_version, number of schema objects), read-only."""
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) == _SQLITE_NOTADB or (
                "not a database" in str(exc)
            ):
                raise SchemaError(f"{self.path} is not a SQLite database: {exc}") from exc
            raise storage_error(exc, "reading the schema", self.path) from exc
        return int(app_id), int(version), int(objects)

    def _check_header(self, app_id: int, version: int, objects: int) -> bool:
        """Raise SchemaError for a file that is not ours; True when it needs migrating."""
        if app_id == 0 and version == 0 and objects == 0:
            return True
        if app_id != APPLICATION_ID:
            raise SchemaError(
                f"{self.path} is a SQLite database but not an eventlite store "
                f"(application_id {app_id:#x}, {objects} schema objects); open the right "
                "file, or give eventlite a new one"
            )
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.path} has schema version {version}, newer than the {SCHEMA_VERSION} "
                "this eventlite knows; upgrade eventlite to open it"
            )
        return version < SCHEMA_VERSION

    def _open_schema(self) -> None:
        conn = self._conn
        if not self._check_header(*self._header(conn)):
            self._configure_writer(conn)
            return
        self._configure_writer(conn)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise storage_error(exc, "beginning a migration", self.path) from exc
        try:
            # Another process may have created or migrated the file meanwhile.
            app_id, version, objects = self._header(conn)
            if self._check_header(app_id, version, objects):
                self._migrate(conn, version)
            conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise storage_error(exc, "migrating the schema", self.path) from exc
            raise

    def _configure_writer(self, conn: sqlite3.Connection) -> None:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StorageError(f"{self.path}: cannot switch to WAL mode (got {mode!r})")
            self._configure(conn)
        except sqlite3.Error as exc:
            raise storage_error(exc, "configuring", self.path) from exc

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        import sqlite_utils

        db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        for number in range(version + 1, SCHEMA_VERSION + 1):
            step = MIGRATIONS[number - 1]
            try:
                step.apply(db)
            except Exception as exc:
                raise SchemaError(
                    f"{self.path}: migration step {number} ({step.name}) failed: {exc}"
                ) from exc
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        """The file's ``user_version``."""
        conn = self.read_connection()
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading the schema version", self.path) from exc

    # -- life -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.path}: the database is closed")

    def close(self) -> None:
        """Wait for the running write transaction, then close every connection.

        Idempotent. Must not be called from inside a transaction.
        """
        if self.in_transaction():
            raise StorageError("cannot close the database inside one of its transactions")
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                readers = list(self._readers)
                self._readers = weakref.WeakSet()
            for slot in readers:
                slot.conn.close()
            self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<Database {self.path!r} synchronous={self.synchronous}{state}>"
