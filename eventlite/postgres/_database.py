"""The PostgreSQL database every durable part of eventlite shares: pool, transactions,
schema, errors.

One :class:`PostgresDatabase` per URL and schema per process. It owns a
``psycopg_pool.ConnectionPool`` of autocommit connections whose ``search_path`` starts
with the store's schema. A thread's :meth:`~PostgresDatabase.transaction` checks one
connection out for the whole block and sends ``BEGIN``/``COMMIT`` itself; every store
write of that thread inside the block runs on that connection (joins it), and a nested
block is a ``SAVEPOINT``. Outside a transaction each call borrows a connection for one
statement, which commits on its own.

Every ``psycopg`` error that crosses this module becomes a :class:`StorageError` (or a
:class:`SchemaError` when the schema is not an eventlite store) naming the action and the
URL with its password masked; the original is kept as ``__cause__``. No secret reaches a
message or a log.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

from ..exceptions import SchemaError, StorageError
from ..store.storage import Transaction
from ._url import mask_url, scrub, split_schema
from .schema import MARKER, MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["PostgresDatabase", "PostgresTransaction", "where_equal"]

T = TypeVar("T")

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_LOCK_KEY = "eventlite-schema:"


def where_equal(**columns: object) -> tuple[str, list[Any]]:
    """`` WHERE a = %s AND b = %s`` over the columns whose value is not None, with its
    parameters; ``("", [])`` when every value is None. Column names come from the caller's
    code, never from data."""
    names = [name for name, value in columns.items() if value is not None]
    if not names:
        return "", []
    return " WHERE " + " AND ".join(f"{n} = %s" for n in names), [columns[n] for n in names]


def _require_psycopg() -> None:
    """A clear error, saying which extra installs them, when psycopg is missing."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise StorageError(
            "the PostgreSQL backend needs psycopg 3 and psycopg_pool: "
            "pip install 'eventlite[postgres]'"
        ) from exc


class PostgresTransaction(Transaction):
    """An open write transaction, yielded by :meth:`PostgresDatabase.transaction`.

    ``conn`` is the ``psycopg`` connection in ``BEGIN``, valid only inside the block and
    only in the thread that opened it; :meth:`execute` runs a statement on it.
    """

    __slots__ = ("_callbacks", "conn", "database")

    def __init__(self, database: PostgresDatabase, conn: psycopg.Connection[Any]) -> None:
        self.database = database
        """The database this transaction writes to."""
        self.conn = conn
        """The connection, inside ``BEGIN``."""
        self._callbacks: list[Callable[[], None]] = []

    def execute(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        """Run one statement in the transaction (``%s`` placeholders)."""
        return self.conn.execute(sql, params)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """See :meth:`Transaction.on_commit`."""
        self._callbacks.append(callback)

    def lock(self, keys: Iterable[int]) -> None:
        """Take the transaction-level advisory locks ``keys`` (see
        :meth:`PostgresDatabase.lock_key`), smallest first, so that two transactions
        locking overlapping sets never wait for each other in a circle; held until the
        outermost commit or rollback."""
        ordered = sorted(set(keys))
        if len(ordered) == 1:
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (ordered[0],))
        elif ordered:
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::int8[]) WITH ORDINALITY "
                "AS u(k, n) ORDER BY n",
                (ordered,),
            )


class PostgresDatabase:
    """An eventlite schema in a PostgreSQL database: a pool, per-thread transactions, a
    versioned schema (see the module doc).

    Opening checks the schema and creates or migrates it (under an advisory lock, so
    processes opening it at once migrate it once). It raises :class:`SchemaError`,
    changing nothing, when the schema holds tables but no eventlite marker, or was
    written by a newer eventlite; :class:`StorageError` when the server cannot be reached.

    ``readonly=True`` opens an existing store for reading only (the operator CLI): no
    schema is created or migrated, every session is ``default_transaction_read_only``,
    and :meth:`transaction` raises :class:`StorageError`; a schema that is missing or
    holds no eventlite store raises :class:`SchemaError`.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        readonly: bool = False,
    ) -> None:
        _require_psycopg()
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
        from psycopg_pool import ConnectionPool

        url, in_url = split_schema(url)
        if in_url is not None:
            if schema is not None and schema != in_url:
                raise ValueError(f"two schemas given: {schema!r} and ?schema={in_url} in the URL")
            schema = in_url
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(
                "schema must be a lower-case SQL name (letters, digits, underscores; "
                f"at most 63), got {schema!r}"
            )
        if min_size < 0 or max_size < max(1, min_size):
            raise ValueError(
                f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}, {max_size}"
            )
        self.url = url
        """The URL as given (it may hold a password: never show it; see :attr:`description`)."""
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StorageError(
                f"invalid PostgreSQL URL {mask_url(url)}: {scrub(str(exc), ())}"
            ) from None
        self._secrets = tuple(str(params[k]) for k in ("password", "sslpassword") if params.get(k))
        kwargs: dict[str, Any] = {"autocommit": True}
        self.readonly = readonly
        """Whether the store was opened read-only (see the class doc)."""
        if schema is not None or readonly:
            options = str(params.get("options") or "")
            if schema is not None:
                options += f" -c search_path={schema}"
            if readonly:
                options += " -c default_transaction_read_only=on"
            kwargs["options"] = options.strip()
        kwargs.setdefault("connect_timeout", max(1, round(connect_timeout)))
        self._kwargs = kwargs
        self.description = mask_url(url) + (f" (schema {schema})" if schema else "")
        """The URL with its password masked, and the schema: for messages and logs."""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._commit_listeners: tuple[Callable[[], None], ...] = ()
        self._closed = False
        self.schema = self._open_schema(schema)
        """The schema holding the tables (``public`` unless another was named)."""
        self.log_lock = int.from_bytes(
            hashlib.blake2b(f"eventlite-log:{self.schema}".encode(), digest_size=8).digest(),
            "big",
            signed=True,
        )
        """The advisory lock key of the log: held from an append to its commit."""
        self.channel = f"eventlite.{self.schema}"[:63]
        """The ``LISTEN``/``NOTIFY`` channel on which commits that append events are
        announced."""
        self._pool: psycopg_pool.ConnectionPool[Any] = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            name="eventlite",
        )
        try:
            self._pool.open(wait=min_size > 0, timeout=connect_timeout)
        except Exception as exc:
            with suppress(Exception):
                self._pool.close(timeout=0)
            raise self.error(exc, "opening the connection pool") from None

    # -- errors -----------------------------------------------------------------------

    def error(self, exc: BaseException, action: str) -> StorageError:
        """The :class:`StorageError` for ``exc`` met while doing ``action``: names the
        action, the masked URL and the cause (raise it ``from exc``)."""
        import psycopg

        text = scrub(str(exc).strip(), self._secrets) or type(exc).__name__
        sqlstate = getattr(exc, "sqlstate", None)
        code = f" [{sqlstate}]" if sqlstate else ""
        if isinstance(exc, psycopg.OperationalError) and self._lost(exc):
            return StorageError(
                f"{action} failed on {self.description}: the connection was lost{code}: {text}"
            )
        return StorageError(
            f"{action} failed on {self.description}: {type(exc).__name__}{code}: {text}"
        )

    @staticmethod
    def terminated(exc: BaseException) -> bool:
        """Whether ``exc`` says the server ended the session itself (an administrator's
        ``pg_terminate_backend``, a shutdown): its transaction is certainly over."""
        import psycopg

        return isinstance(exc, psycopg.errors.AdminShutdown | psycopg.errors.CrashShutdown)

    @staticmethod
    def _lost(exc: BaseException) -> bool:
        """Whether ``exc`` means the connection is gone (rather than a failed statement)."""
        import psycopg

        if isinstance(exc, psycopg.errors.AdminShutdown | psycopg.errors.CrashShutdown):
            return True
        sqlstate = getattr(exc, "sqlstate", None)
        return sqlstate is None or str(sqlstate).startswith("08")

    # -- connections ------------------------------------------------------------------

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection outside the pool (autocommit, the store's ``search_path``),
        for work that holds one for long: the ``LISTEN`` thread, schema checks."""
        import psycopg

        try:
            conn: psycopg.Connection[Any] = psycopg.Connection.connect(self.url, **self._kwargs)
        except psycopg.Error as exc:
            raise self.error(exc, "connecting") from None
        return conn

    def _getconn(self) -> psycopg.Connection[Any]:
        self._check_open()
        try:
            conn: psycopg.Connection[Any] = self._pool.getconn()
            return conn
        except Exception as exc:
            raise self.error(exc, "getting a connection from the pool") from None

    def _putconn(self, conn: psycopg.Connection[Any]) -> None:
        with suppress(Exception):
            self._pool.putconn(conn)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The thread's transaction connection inside :meth:`transaction` (so reads see
        the transaction's own writes), else a pooled autocommit connection for the block."""
        tx: PostgresTransaction | None = getattr(self._local, "tx", None)
        if tx is not None:
            yield tx.conn
            return
        conn = self._getconn()
        try:
            yield conn
        finally:
            self._putconn(conn)

    def run(
        self, action: str, work: Callable[[psycopg.Connection[Any]], T], *, repeat: bool = True
    ) -> T:
        """``work(conn)`` on :meth:`connection`, its errors as :class:`StorageError`.

        Outside a transaction a call that meets a lost connection (one the server closed
        while it sat in the pool) runs once more on a new one: use it for reads and for
        single statements that are safe to repeat; pass ``repeat=False`` for a statement
        that must not run twice (the server may have committed it before the loss).
        """
        import psycopg

        in_tx = getattr(self._local, "tx", None) is not None
        for attempt in (1, 2):
            try:
                with self.connection() as conn:
                    return work(conn)
            except psycopg.Error as exc:
                if repeat and attempt == 1 and not in_tx and self._lost(exc) and not self._closed:
                    continue
                raise self.error(exc, action) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def lock_key(self, *parts: str) -> int:
        """The advisory lock key (a signed 64-bit integer) of ``parts`` in this schema:
        advisory locks are shared by the whole database, so the schema is part of the
        key. Different parts may share a key (a hash): they then wait for each other,
        which is never wrong, only slower."""
        text = "\x1f".join((self.schema, *parts))
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    # -- transactions -----------------------------------------------------------------

    def in_transaction(self) -> bool:
        """Whether the calling thread is inside :meth:`transaction`."""
        return getattr(self._local, "tx", None) is not None

    def current(self) -> PostgresTransaction | None:
        """The calling thread's open transaction, if any."""
        tx: PostgresTransaction | None = getattr(self._local, "tx", None)
        return tx

    def on_every_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every outermost commit made through this object, in
        the committing thread, after the transaction's own callbacks."""
        with self._lock:
            self._commit_listeners = (*self._commit_listeners, listener)

    @contextmanager
    def transaction(self) -> Iterator[PostgresTransaction]:
        """A write transaction on one connection: ``BEGIN``, then ``COMMIT``, or
        ``ROLLBACK`` on error; nested in another of the same thread, a ``SAVEPOINT``.

        ``psycopg`` errors leave the block as :class:`StorageError`; a connection lost
        inside the block rolls everything of it back (the server does), and the pool
        replaces the connection.
        """
        outer: PostgresTransaction | None = getattr(self._local, "tx", None)
        if outer is not None:
            with self._savepoint(outer):
                yield outer
            return
        if self.readonly:
            raise StorageError(f"{self.description} is open read-only: nothing can be written")
        import psycopg

        conn = self._getconn()
        try:
            try:
                conn.execute("BEGIN")
            except psycopg.Error as exc:
                if not self._lost(exc) or self._closed:
                    raise self.error(exc, "beginning a transaction") from exc
                # closed by the server while idle in the pool: nothing was begun, so
                # begin once more on a new connection
                self._putconn(conn)
                conn = self._getconn()
                try:
                    conn.execute("BEGIN")
                except psycopg.Error as again:
                    raise self.error(again, "beginning a transaction") from again
            tx = PostgresTransaction(self, conn)
            self._local.tx = tx
            try:
                yield tx
            except BaseException as exc:
                self._rollback(conn)
                if isinstance(exc, psycopg.Error):
                    raise self.error(exc, "writing") from exc
                raise
            finally:
                self._local.tx = None
            self._commit(conn)
        finally:
            self._putconn(conn)
        self._run_callbacks([*tx._callbacks, *self._commit_listeners])

    def _commit(self, conn: psycopg.Connection[Any]) -> None:
        import psycopg
        from psycopg.pq import TransactionStatus

        if conn.info.transaction_status == TransactionStatus.INERROR:
            # A statement failed and its error was swallowed: COMMIT would roll back
            # quietly, so say so instead.
            self._rollback(conn)
            raise StorageError(
                f"committing failed on {self.description}: a statement of the transaction "
                "failed earlier, so it was rolled back"
            )
        try:
            cur = conn.execute("COMMIT")
        except psycopg.Error as exc:
            self._rollback(conn)
            raise self.error(exc, "committing") from exc
        if cur.statusmessage == "ROLLBACK":  # pragma: no cover - caught above
            raise StorageError(f"committing failed on {self.description}: rolled back")

    @staticmethod
    def _run_callbacks(callbacks: list[Callable[[], None]]) -> None:
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
    def _savepoint(self, tx: PostgresTransaction) -> Iterator[None]:
        import psycopg

        depth = getattr(self._local, "depth", 0) + 1
        name = f"eventlite_{depth}"
        conn = tx.conn
        try:
            conn.execute(f"SAVEPOINT {name}")
        except psycopg.Error as exc:
            raise self.error(exc, "opening a savepoint") from exc
        self._local.depth = depth
        mark = len(tx._callbacks)
        try:
            yield
        except BaseException as exc:
            # what the rolled-back block asked to run after the commit is rolled back too
            del tx._callbacks[mark:]
            if not conn.broken:
                with suppress(psycopg.Error):
                    conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                    conn.execute(f"RELEASE SAVEPOINT {name}")
            if isinstance(exc, psycopg.Error):
                raise self.error(exc, "writing") from exc
            raise
        finally:
            self._local.depth = depth - 1
        try:
            conn.execute(f"RELEASE SAVEPOINT {name}")
        except psycopg.Error as exc:
            raise self.error(exc, "releasing a savepoint") from exc

    @staticmethod
    def _rollback(conn: psycopg.Connection[Any]) -> None:
        import psycopg
        from psycopg.pq import TransactionStatus

        if conn.broken or conn.closed:
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            with suppress(psycopg.Error):
                conn.execute("ROLLBACK")

    # -- schema -----------------------------------------------------------------------

    def _open_schema(self, schema: str | None) -> str:
        """Check the schema, create or migrate it; the name of the schema in use."""
        import psycopg

        conn = self.connect()
        try:
            if self.readonly:
                return self._check_readonly(conn, schema)
            if (
                schema is not None
                and not conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
                ).fetchone()
            ):
                # only when missing: CREATE SCHEMA IF NOT EXISTS needs the right to create
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            row = conn.execute("SELECT current_schema()").fetchone()
            current = row[0] if row else None
            if current is None:
                raise SchemaError(
                    f"{self.description}: no schema on the search_path exists to hold the "
                    "tables; name one with schema="
                )
            if self._check(conn, current):
                with conn.transaction():
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        (_LOCK_KEY + current,),
                    )
                    # Another process may have created or migrated it meanwhile.
                    if self._check(conn, current):
                        self._migrate(conn, current)
            return str(current)
        except psycopg.Error as exc:
            raise self.error(exc, "opening the schema") from exc
        finally:
            conn.close()

    def _check_readonly(self, conn: psycopg.Connection[Any], schema: str | None) -> str:
        """The schema in use, after checking it holds an eventlite store no newer than this
        eventlite (an older one is read as it is); nothing is created."""
        if schema is not None:
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            if not found.fetchone():
                raise SchemaError(
                    f"{self.description}: schema {schema!r} does not exist: no eventlite "
                    "store there"
                )
        row = conn.execute("SELECT current_schema()").fetchone()
        current = row[0] if row else None
        if current is None:
            raise SchemaError(f"{self.description}: no schema on the search_path exists")
        empty = not conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') LIMIT 1",
            (current,),
        ).fetchone()
        if empty:
            raise SchemaError(
                f"{self.description}: schema {current!r} holds no tables: no eventlite store there"
            )
        self._check(conn, current)
        return str(current)

    def _check(self, conn: psycopg.Connection[Any], schema: str) -> bool:
        """Raise SchemaError for a schema that is not ours or is newer; True when it needs
        creating or migrating. Reads only."""
        names = [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
                "ORDER BY c.relname",
                (schema,),
            ).fetchall()
        ]
        if not names:
            return True
        if VERSION_TABLE not in names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise SchemaError(
                f"{self.description}: schema {schema!r} holds tables that are not an eventlite "
                f"store ({shown}); give eventlite a schema of its own with schema=..."
            )
        row = conn.execute(f"SELECT marker, version FROM {VERSION_TABLE}").fetchone()
        if row is None or row[0] != MARKER:
            raise SchemaError(
                f"{self.description}: schema {schema!r} has a {VERSION_TABLE} table without "
                "the eventlite marker; give eventlite a schema of its own with schema=..."
            )
        version = int(row[1])
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.description}: schema {schema!r} has schema version {version}, newer "
                f"than the {SCHEMA_VERSION} this eventlite knows; upgrade eventlite to open it"
            )
        return version < SCHEMA_VERSION

    def _migrate(self, conn: psycopg.Connection[Any], schema: str) -> None:
        import psycopg

        exists = conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (schema, VERSION_TABLE),
        ).fetchone()
        version = 0
        if exists:
            row = conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
            version = int(row[0]) if row else 0
        for number in range(version + 1, SCHEMA_VERSION + 1):
            step = MIGRATIONS[number - 1]
            try:
                for statement in step.statements:
                    conn.execute(statement.encode())
            except psycopg.Error as exc:
                raise SchemaError(
                    f"{self.description}: migration step {number} ({step.name}) failed: "
                    f"{scrub(str(exc), self._secrets)}"
                ) from exc
        conn.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (SCHEMA_VERSION,))

    @property
    def schema_version(self) -> int:
        """The version recorded in the schema."""

        def read(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
            return int(row[0]) if row else 0

        return self.run("reading the schema version", read)

    # -- life -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.description}: the database is closed")

    def close(self) -> None:
        """Close the pool (idempotent). Must not be called from inside a transaction."""
        if self.in_transaction():
            raise StorageError("cannot close the database inside one of its transactions")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with suppress(Exception):
            self._pool.close(timeout=5.0)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<PostgresDatabase {self.description}{state}>"
