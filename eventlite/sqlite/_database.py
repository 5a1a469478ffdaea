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

The schema (:mod:`eventlite.sqlite.schema`) is created and migrated when a file is opened,
unless it is opened read-only (``readonly=True``): then nothing is created, migrated or
written, and every connection is ``mode=ro`` with ``query_only``.

Every ``sqlite3.Error`` that crosses this module becomes a :class:`StorageError` (or a
:class:`SchemaError` when the file is not an eventlite store), the original kept as
``__cause__``.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Literal

from ..exceptions import SchemaError, StorageError
from ..store.storage import Transaction as _Transaction
from .schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["Database", "Synchronous", "Transaction", "storage_error", "where_equal"]

Synchronous = Literal["full", "normal"]
"""``"full"``: a commit survives power loss (fsync per commit). ``"normal"``: a commit
survives a crash of the process but the last commits may be lost on power loss."""

_SQLITE_NOTADB = 26
_SQLITE_READONLY_DIRECTORY = 1544  # SQLITE_READONLY | (6 << 8)
_SQLITE_CANTOPEN = 14
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


class Transaction(_Transaction):
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

    ``readonly=True`` opens an existing store for reading only, for tools that look (the
    operator CLI): it creates, migrates and writes nothing (every connection is
    ``mode=ro`` and ``query_only``; reading a WAL-mode file may create its ``-wal`` and
    ``-shm`` companions, as any SQLite reader does), and :meth:`transaction` raises
    :class:`StorageError`. It raises :class:`StorageError` for a path that is missing,
    a directory, or not a regular file (a FIFO or a device is refused before it is
    opened, so opening never blocks), and :class:`SchemaError` for a file that is not
    SQLite, not an eventlite store (an empty file included), or newer than this
    eventlite; an older store is read as it is. In a directory it cannot write, a file
    whose ``-wal`` holds nothing is read as immutable (nothing can be writing it then).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "full",
        busy_timeout: float = 10.0,
        readonly: bool = False,
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
        self.readonly = readonly
        """Whether the file was opened read-only (see the class doc)."""
        self._uri: str | None = None
        if readonly:
            self._uri = _readonly_uri(self.path)
        elif os.path.exists(self.path) and not os.path.isdir(self.path):
            _check_regular(self.path)  # a FIFO or a device would block or feed garbage
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
        if self._uri is not None:
            return self._connect_readonly(self._uri)
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

    def _connect_readonly(self, uri: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                uri,
                uri=True,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot open: {exc}") from exc
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
        if self.in_transaction():  # the write transaction of this thread
            yield conn
            return
        try:
            if conn.in_transaction:  # a snapshot an interrupt left open: let it go
                conn.execute("COMMIT")
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise storage_error(exc, "beginning a read", self.path) from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading", self.path) from exc
        finally:
            # inline, not a helper: see the note in transaction()
            interrupted: BaseException | None = None
            while True:
                try:
                    _end_read(conn)
                    break
                except Exception:
                    raise
                except BaseException as exc:
                    interrupted = interrupted or exc
            if interrupted is not None:
                raise interrupted

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
        Refused (:class:`StorageError`) when the file was opened read-only.

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
        if self.readonly:
            raise StorageError(f"{self.path} is open read-only: nothing can be written")
        conn = self._conn
        callbacks: list[Callable[[], None]]
        with self._write_lock:
            # Everything from BEGIN to the end is inside one try, and the cleanup in its
            # finally survives further interrupts (see below): an exception raised into
            # this thread at any moment (KeyboardInterrupt from Ctrl-C, a signal handler's
            # exception) never leaves the connection inside a transaction, which would
            # hold the file's write lock against every other process.
            committed = False
            tx: Transaction | None = None
            try:
                self._check_open()
                if conn.in_transaction:  # left open by an interrupt in an older version
                    conn.execute("ROLLBACK")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise storage_error(exc, "beginning a write transaction", self.path) from exc
                tx = Transaction(self, conn)
                self._local.tx = tx
                try:
                    yield tx
                except sqlite3.Error as exc:
                    raise storage_error(exc, "writing", self.path) from exc
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    raise storage_error(exc, "committing", self.path) from exc
                committed = True
            finally:
                # Run the cleanup to its end even if interrupts land in it (it is
                # idempotent), then raise the first. The loop is written out here, not in
                # a helper: CPython runs pending signal handlers on entry to a function,
                # so a helper's own first line could raise before its loop began, and a
                # signal that arrived during COMMIT is often handled just there.
                interrupted: BaseException | None = None
                while True:
                    try:
                        self._end(conn, committed)
                        break
                    except Exception:
                        raise
                    except BaseException as exc:
                        interrupted = interrupted or exc
                if interrupted is not None:
                    raise interrupted
            assert tx is not None
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

    def _end(self, conn: sqlite3.Connection, committed: bool) -> None:
        """Leave the write transaction: forget it, and roll it back unless committed."""
        self._local.tx = None
        if not committed:
            self._rollback(conn)

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # A failed COMMIT or an I/O error may already have ended the transaction, and a
        # connection closed meanwhile has none to end (reading in_transaction raises then).
        with suppress(sqlite3.Error):
            if conn.in_transaction:
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
                if self.readonly:
                    raise SchemaError(f"{self.path}: not a SQLite database ({exc})") from exc
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

    def _open_readonly(self) -> None:
        """Check the header of a file opened read-only; falls back to an immutable read in
        a directory that cannot be written (see the class doc)."""
        try:
            header = self._header(self._conn)
        except StorageError as exc:
            cause = exc.__cause__
            code = getattr(cause, "sqlite_errorcode", None)
            if code not in (_SQLITE_READONLY_DIRECTORY, _SQLITE_CANTOPEN):
                raise
            self._conn.close()
            directory = os.path.dirname(os.path.abspath(self.path))
            wal = self.path + "-wal"
            if os.path.exists(wal) and os.path.getsize(wal) > 0:
                raise StorageError(
                    f"{self.path}: cannot read it: its directory {directory} cannot be "
                    f"written, and SQLite must create {os.path.basename(self.path)}-shm "
                    "beside a WAL-mode file whose -wal holds commits; make the directory "
                    "writable, or copy the file with its -wal elsewhere"
                ) from cause
            assert self._uri is not None
            self._uri += "&immutable=1"
            self._conn = self._connect()
            header = self._header(self._conn)
        app_id, version, _objects = header
        if app_id != APPLICATION_ID:
            raise SchemaError(
                f"{self.path}: a SQLite database but not an eventlite store "
                f"(application_id {app_id:#x})"
            )
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.path}: schema version {version}, newer than the {SCHEMA_VERSION} "
                "this eventlite knows; upgrade eventlite to read it"
            )

    def _open_schema(self) -> None:
        if self.readonly:
            self._open_readonly()
            return
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

    def close(self, timeout: float | None = None) -> bool:
        """Wait for the running write transaction, then close every connection.

        With ``timeout``, wait at most that many seconds: if a transaction is still open
        then (a handler stuck inside it), the database is marked closed (new transactions
        are refused), the readers are closed, the write connection is left to the thread
        that holds it (SQLite rolls its transaction back when the process ends), and
        False is returned. True otherwise. Idempotent. Must not be called from inside a
        transaction.
        """
        if self.in_transaction():
            raise StorageError("cannot close the database inside one of its transactions")
        locked = self._write_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout))
        try:
            if self._closed and locked:
                return True
            self._closed = True
            with self._readers_lock:
                readers = list(self._readers)
                self._readers = weakref.WeakSet()
            for slot in readers:
                with suppress(sqlite3.Error):
                    slot.conn.close()
            if locked:
                self._conn.close()
            return locked
        finally:
            if locked:
                self._write_lock.release()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        mode = " read-only" if self.readonly else f" synchronous={self.synchronous}"
        return f"<Database {self.path!r}{mode}{state}>"


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular(path: str) -> None:
    """Raise :class:`StorageError` unless ``path`` is a regular file (a FIFO would block
    the open, a device feed it endless bytes)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise StorageError(f"{path}: no such file") from None
    except OSError as exc:
        raise StorageError(f"{path}: cannot open: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise StorageError(f"{path}: is a directory, not an eventlite store")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise StorageError(f"{path}: is {kind}, not an eventlite store")


def _readonly_uri(path: str) -> str:
    """The ``mode=ro`` URI of an existing regular file; :class:`StorageError` otherwise."""
    _check_regular(path)
    if not os.access(path, os.R_OK):
        raise StorageError(f"{path}: cannot read it: permission denied")
    from pathlib import Path

    return Path(path).resolve().as_uri() + "?mode=ro"


def _end_read(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("COMMIT")
