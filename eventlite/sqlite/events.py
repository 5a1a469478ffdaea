"""The event store in one SQLite file, with group commit."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from ..codec import Codec, Decoder, _loads
from ..envelope import Envelope, restored, stamped
from ..exceptions import (
    ConcurrencyError,
    MessageDecodeError,
    MessageEncodeError,
    StorageError,
    UnknownMessageType,
)
from ..store.events import (
    DuplicateEventError,
    EventStore,
    ExpectedVersion,
    LogRecord,
    RecordFilter,
    StreamAppend,
    StreamInfo,
    check_version,
    normalize_appends,
    prefix_end,
    type_names,
    validate_range,
    validate_read_all,
    validate_records,
    validate_stream_id,
    validate_streams,
)
from ._database import Database, Synchronous, Transaction, storage_error

__all__ = ["SQLiteEventStore"]

_COLUMNS = (
    "position, stream_id, version, id, type, schema_version, data, "
    "correlation_id, causation_id, user_id, headers, timestamp"
)
"""The columns of an ``events`` row, in the order of :class:`LogRecord`'s fields."""
_SELECT = f"SELECT {_COLUMNS} FROM events"
_HEAD = "SELECT max(position) FROM events"
_VERSION = "SELECT version FROM streams WHERE stream_id = ?"
_STREAM_FORWARD = (
    f"{_SELECT} WHERE stream_id = ? AND version >= ? AND version <= ? ORDER BY version LIMIT ?"
)
_STREAM_BACKWARD = (
    f"{_SELECT} WHERE stream_id = ? AND version >= ? AND version <= ? ORDER BY version DESC LIMIT ?"
)
_ALL = f"{_SELECT} WHERE position >= ? ORDER BY position LIMIT ?"
_RECORDS = f"{_SELECT} WHERE position > ? ORDER BY position LIMIT ?"
_ONE = f"{_SELECT} WHERE position = ?"
_BY_ID = f"{_SELECT} WHERE id = ?"
_STREAMS = (
    "SELECT s.stream_id, s.version, e.timestamp FROM streams s "
    "LEFT JOIN events e ON e.stream_id = s.stream_id AND e.version = s.version"
)
_COUNT_STREAMS = "SELECT count(*) FROM streams"
_MANY = 100  # more values than this go to a filter as one JSON array (json_each)
_make_record = functools.partial(tuple.__new__, LogRecord)  # LogRecord._make, in C
_MAX_VERSION = 1 << 62
_MAX_GATHER_SECONDS = 0.002
_CHUNK = 250


@functools.cache
def _state_sql(n: int) -> str:
    marks = ", ".join("?" * n)
    return (
        "SELECT NULL, max(position) FROM events UNION ALL "
        f"SELECT stream_id, version FROM streams WHERE stream_id IN ({marks})"
    )


@functools.cache
def _records_of(n: int) -> str:
    marks = ", ".join("?" * n)
    return f"{_SELECT} WHERE position > ? AND type IN ({marks}) ORDER BY position LIMIT ?"


_MESSAGE_COLUMNS = "position, type, schema_version, data"
_MESSAGES = f"SELECT {_MESSAGE_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"


@functools.cache
def _messages_of(n: int) -> str:
    marks = ", ".join("?" * n)
    return (
        f"SELECT {_MESSAGE_COLUMNS} FROM events WHERE position > ? AND type IN ({marks}) "
        "ORDER BY position LIMIT ?"
    )


@functools.cache
def _insert_sql(n: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n)
    return f"INSERT INTO events ({_COLUMNS}) VALUES {values}"


@functools.cache
def _set_versions_sql(n: int) -> str:
    values = ", ".join(["(?, ?)"] * n)
    return (
        f"INSERT INTO streams (stream_id, version) VALUES {values} "
        "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version"
    )


def _insert_many(
    conn: sqlite3.Connection, sql_for: Callable[[int], str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert ``rows`` with one multi-row statement per chunk of :data:`_CHUNK` rows."""
    for i in range(0, len(rows), _CHUNK):
        chunk = rows[i : i + _CHUNK]
        conn.execute(sql_for(len(chunk)), [value for row in chunk for value in row])


PAGE_SIZE: Final = 1000
"""How many rows :meth:`SQLiteEventStore.read_all` fetches per query."""

_EMPTY: Mapping[str, str] = {}
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# (id, type, schema_version, data, correlation_id, causation_id, user_id, headers, timestamp)
_Row = tuple[str, str, int, str, str, "str | None", "str | None", "str | None", int]
# (stream_id, envelopes, rows, expected_version)
_Part = tuple[str, list[Envelope], list[_Row], ExpectedVersion]


class _Pending:
    """One caller's append, waiting for the group commit that writes it."""

    __slots__ = (
        "done",
        "error",
        "following",
        "gone",
        "handed",
        "parts",
        "result",
        "shared_error",
        "wake",
    )

    def __init__(self, parts: list[_Part]) -> None:
        self.parts = parts
        self.done = False
        # True once its caller, interrupted while waiting, left append_many
        self.gone = False
        # Set by the caller holding the writing turn (the store's ``_holder``) when it
        # hands the turn on, just before the handover itself: whom it handed it to
        self.handed = False
        self.following: _Pending | None = None
        self.result: list[list[Envelope]] | None = None
        self.error: BaseException | None = None
        # True when the error is the whole batch's (a storage failure), not this append's
        self.shared_error = False
        # Released when the append is done, or when its caller is to lead the next batch
        # (a lock made held: cheaper to wait on and release than an Event)
        self.wake = threading.Lock()
        self.wake.acquire()


def _wake(pending: _Pending) -> None:
    """Release ``pending``'s caller. Safe to repeat (an interrupted handover is run
    again): a second release of a wake nobody took yet is ignored, and one after it was
    taken does nothing, since a wake is waited on only once."""
    _release(pending.wake)


def _release(wake: threading.Lock) -> None:
    """Release ``wake`` unless it is released already."""
    with suppress(RuntimeError):
        wake.release()


class _RetryOneByOne(Exception):
    """A batch hit a unique constraint: redo it append by append, each in a savepoint."""


class SQLiteEventStore(EventStore):
    """The :class:`EventStore` contract in a SQLite file (see ``docs/event-store.md``).

    ``path`` is the file (created with its tables if missing) or an open
    :class:`~eventlite.sqlite.Database` shared with the outbox, inbox and other durable parts,
    so that they can write in the same transaction; the store closes only a database it
    opened itself. ``codec`` turns messages into JSON and back (default: a :class:`Codec`
    over the default registry). ``synchronous`` is ``"full"`` (default; every commit
    survives power loss) or ``"normal"`` (faster; the last commits may be lost on power
    loss, never on a process crash). Raises :class:`SchemaError` for a file that is not an
    eventlite store or is newer than this eventlite.

    **Group commit.** Appends that arrive while another is being written wait for it,
    then the next of them writes all the waiting ones in one transaction: one fsync for
    the lot. Each caller still gets its own result or its own :class:`ConcurrencyError`,
    checked in arrival order against the streams as the earlier appends of the batch
    left them (a savepoint per append keeps a failed one out of the commit).

    **Sharing a transaction.** Called in a thread that is inside
    ``store.database.transaction()``, an append joins that transaction (as a savepoint)
    and becomes durable with its commit; reads in that thread see its uncommitted writes.

    **Positions.** They are computed inside the ``BEGIN IMMEDIATE`` transaction, which
    SQLite grants to one writer at a time across processes, so they stay gap-free and in
    commit order with several processes appending to one file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Database,
        *,
        codec: Codec | None = None,
        synchronous: Synchronous = "full",
        busy_timeout: float = 10.0,
    ) -> None:
        if isinstance(path, Database):
            self._db = path
            self._owns_db = False
        else:
            self._db = Database(path, synchronous=synchronous, busy_timeout=busy_timeout)
            self._owns_db = True
        self.codec = codec if codec is not None else Codec()
        """The codec that turns messages into the ``data`` column and back."""
        self._closed = False
        # Guards the queue and the turn. A plain lock, entered with ``with``: its acquire
        # cannot be split from the block by an interrupt (a Condition's Python-level
        # __enter__ could leave it held by a caller that is gone).
        self._lock = threading.Lock()
        self._active = 0  # callers inside append_many, outside a transaction
        # while a leader waits in _gather for callers to queue: released to wake it
        self._gather_wake: threading.Lock | None = None
        self._commit_seconds = 0.0  # how long the last group commit took
        self._queue: list[_Pending] = []
        # the append whose caller holds the writing turn: it writes the queue, or hands the
        # turn on, before it leaves append_many; None when nobody writes
        self._holder: _Pending | None = None

    @property
    def database(self) -> Database:
        """The SQLite file, for writing other tables in the same transaction."""
        return self._db

    @property
    def path(self) -> str:
        """The file's path."""
        return self._db.path

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self._db.path}: the event store is closed")

    # -- appending --------------------------------------------------------------------

    def _prepare(self, appends: Iterable[StreamAppend | tuple[Any, ...]]) -> list[_Part]:
        # Encoding and checking run in the caller's thread, before the write lock, so a
        # message or a value that cannot be stored fails only its own append, never the
        # group commit it would have joined.
        codec = self.codec
        message_type = codec.message_type
        encode = codec.encode
        parts: list[_Part] = []
        ids: set[str] = set()
        count = 0
        for stream_id, envelopes, expected in normalize_appends(appends):
            if not (stream_id.isascii() or _utf8(stream_id)):
                raise ValueError(
                    f"stream_id {stream_id!r} holds text that cannot be stored (a lone "
                    "surrogate, not valid Unicode)"
                )
            rows: list[_Row] = []
            for env in envelopes:
                message = env.message
                entry = message_type(message)
                event_id = env.id
                data = encode(message)
                ctx = env._ctx
                if ctx is None:
                    correlation, causation, user, headers = event_id, None, None, None
                    plain = type(event_id) is str and event_id.isascii() and data.isascii()
                else:
                    correlation, causation, user, h = ctx
                    headers = _dumps(dict(h)) if h else None
                    plain = (
                        type(event_id) is str
                        and event_id.isascii()
                        and data.isascii()
                        and type(correlation) is str
                        and correlation.isascii()
                        and (causation is None or (type(causation) is str and causation.isascii()))
                        and (user is None or (type(user) is str and user.isascii()))
                        and (headers is None or headers.isascii())
                    )
                if not plain:
                    # the careful look, only for rows with text beyond ASCII (or a bug)
                    _check_row(entry.name, event_id, data, correlation, causation, user, headers)
                rows.append(
                    (
                        event_id,
                        entry.name,
                        entry.version,
                        data,
                        correlation,
                        causation,
                        user,
                        headers,
                        env._ns // 1000,
                    )
                )
                ids.add(event_id)
                count += 1
            parts.append((stream_id, envelopes, rows, expected))
        if len(ids) != count:
            seen: set[str] = set()
            for part_stream, envelopes, _, _ in parts:
                for env in envelopes:
                    if env.id in seen:
                        raise DuplicateEventError(env.id, part_stream)
                    seen.add(env.id)
        return parts

    def _write(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        """Write ``batch`` in the open transaction with a fixed number of statements.

        Versions are checked in Python, in arrival order, against the streams as the
        earlier appends of the batch leave them; an append that fails its check gets its
        :class:`ConcurrencyError` and is left out. Raises :class:`_RetryOneByOne` when a
        unique constraint fails (a stored event id), after which the caller must roll back.
        """
        # Each statement lets other threads take the GIL, and getting it back can be slow
        # while they run: so a batch costs a fixed handful of statements, not one per event.
        head, versions = self._state(conn, {part[0] for p in batch for part in p.parts})
        rows: list[tuple[Any, ...]] = []
        changed: dict[str, int] = {}
        for pending in batch:
            seen: dict[str, int] = {}
            try:
                for stream_id, _, part_rows, expected in pending.parts:
                    actual = seen.get(stream_id)
                    if actual is None:
                        actual = versions.get(stream_id, 0)
                    check_version(stream_id, expected, actual)
                    seen[stream_id] = actual + len(part_rows)
            except ConcurrencyError as exc:
                pending.error = exc
                continue
            result: list[list[Envelope]] = []
            for stream_id, envelopes, part_rows, _ in pending.parts:
                version = versions.get(stream_id, 0)
                rows.extend(
                    (head + i, stream_id, version + i, *r) for i, r in enumerate(part_rows, 1)
                )
                result.append(
                    [
                        stamped(env, stream_id, version + i, head + i)
                        for i, env in enumerate(envelopes, 1)
                    ]
                )
                n = len(part_rows)
                head += n
                if n:
                    versions[stream_id] = changed[stream_id] = version + n
            pending.result = result
        if not rows:
            return
        try:
            _insert_many(conn, _insert_sql, rows)
        except sqlite3.IntegrityError as exc:
            raise _RetryOneByOne() from exc
        _insert_many(conn, _set_versions_sql, list(changed.items()))

    @staticmethod
    def _state(conn: sqlite3.Connection, stream_ids: set[str]) -> tuple[int, dict[str, int]]:
        """The head position and the versions of the given streams, in one query."""
        ids = list(stream_ids)
        versions: dict[str, int] = {}
        head = 0
        for i in range(0, max(len(ids), 1), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            for stream_id, version in conn.execute(_state_sql(len(chunk)), chunk):
                if stream_id is None:
                    head = version or 0
                else:
                    versions[stream_id] = version
        return head, versions

    def _write_one_by_one(self, tx: Transaction, batch: list[_Pending]) -> None:
        """The slow path after a unique constraint failed: each append in a savepoint."""
        conn = tx.conn
        for pending in batch:
            pending.result = pending.error = None
            conn.execute("SAVEPOINT eventlite_append")
            try:
                self._write(conn, [pending])
            except _RetryOneByOne as exc:
                conn.execute("ROLLBACK TO eventlite_append")
                pending.result = None
                pending.error = self._duplicate(conn, pending, exc)
            conn.execute("RELEASE eventlite_append")

    def _duplicate(
        self, conn: sqlite3.Connection, pending: _Pending, exc: _RetryOneByOne
    ) -> Exception:
        for part_stream, _, rows, _ in pending.parts:
            for r in rows:
                if conn.execute("SELECT 1 FROM events WHERE id = ?", (r[0],)).fetchone():
                    return DuplicateEventError(r[0], part_stream)
        cause = exc.__cause__
        assert isinstance(cause, sqlite3.Error)
        return storage_error(cause, "appending", self._db.path)

    def append_many(
        self, appends: Iterable[StreamAppend | tuple[Any, ...]]
    ) -> list[list[Envelope]]:
        """See :meth:`EventStore.append_many`; appends from several threads share commits."""
        self._check_open()
        db = self._db
        if db.in_transaction():
            pending = _Pending(self._prepare(appends))
            self._commit([pending])
            return self._outcome(pending, leader=True)
        lock = self._lock
        with lock:
            self._active += 1
        try:
            pending = _Pending(self._prepare(appends))
            batch: list[_Pending] = []
            started: float | None = None
            # Everything from queuing to the handover is in one try/finally, so that an
            # exception raised into this thread anywhere in it (KeyboardInterrupt from a
            # signal handler) never stalls the others: the interrupted append leaves the
            # queue or hands its turn on, and the other appends of a batch it took but did
            # not write go to the next turn. What its caller can assume: like any
            # interrupted write, the append may or may not have been committed (it was if
            # it had joined a batch that then committed); read the stream to find out.
            # Positions stay gap-free either way.
            try:
                with lock:
                    self._queue.append(pending)
                    lead = self._holder is None
                    if lead:
                        self._holder = pending
                    # Wake the gathering leader only once its batch is complete: each
                    # wake costs a GIL hand-off, paid while the stragglers still queue.
                    gathering = self._gather_wake
                    if gathering is not None and len(self._queue) >= self._active:
                        _release(gathering)
                if not lead:
                    pending.wake.acquire()
                    if pending.done:
                        return self._outcome(pending, leader=False)
                    # Woken without a result: the previous leader handed over to this caller.
                self._gather()
                with lock:
                    batch = self._queue
                    self._queue = []
                started = time.perf_counter()
                self._commit(batch)
            finally:
                # Run to the end even if interrupts land in it meanwhile (_finish is
                # idempotent), then raise the first one: an interrupted handover would
                # leave the turn with a caller that is gone, and every append waiting.
                interrupted: BaseException | None = None
                while True:
                    try:
                        self._finish(pending, batch, started)
                        break
                    except BaseException as exc:
                        if isinstance(exc, Exception):
                            raise
                        interrupted = interrupted or exc
                if interrupted is not None:
                    raise interrupted
            return self._outcome(pending, leader=True)
        finally:
            with lock:
                self._active -= 1
                gathering = self._gather_wake
                if gathering is not None and len(self._queue) >= self._active:
                    _release(gathering)

    def _finish(self, pending: _Pending, batch: list[_Pending], started: float | None) -> None:
        """Leave ``append_many``: a follower whose batch was written has nothing to do; an
        interrupted follower withdraws from the queue; the caller holding the turn ends the
        batch it took and hands the turn to the next queued append.

        A leader interrupted before it wrote its batch puts the other appends of the batch
        back at the front of the queue, in order, for the next turn to write them.

        Idempotent, so that it can be run again when an interrupt lands in it: only the
        turn's holder changes the front of the queue, and the handover is one assignment
        (``_holder``) made after everything it depends on.
        """
        if pending.done and self._holder is not pending:
            return  # a follower whose batch was written, or a leader that handed over
        if started is not None:
            self._commit_seconds = time.perf_counter() - started
        for p in batch:
            if p.result is not None or p.error is not None:
                p.done = True
                if p is not pending:
                    _wake(p)
        with self._lock:
            if self._holder is not pending:
                if pending.handed:
                    following = pending.following  # handed over; make sure it woke
                else:
                    # A follower interrupted while it waited. Still queued: it was not
                    # written. Otherwise it is in a batch, written or not yet; if that
                    # batch is not committed, it must not be requeued.
                    pending.gone = True
                    if pending in self._queue:
                        self._queue.remove(pending)
                    return
            else:
                # Appends with neither result nor error were never written (the leader
                # was interrupted before its commit, or its commit was): requeue them
                # first, except the interrupted caller's own. An interrupt between taking
                # the batch and emptying the queue leaves the batch in the queue too, and
                # nothing may be queued twice.
                skip = {id(p) for p in batch}
                skip.add(id(pending))
                queue = [
                    p
                    for p in batch
                    if p.result is None and p.error is None and p is not pending and not p.gone
                ] + [p for p in self._queue if id(p) not in skip]
                self._queue = queue
                following = queue[0] if queue else None
                pending.following = following
                pending.handed = True
                self._holder = following
        if following is not None:
            _wake(following)

    def _gather(self) -> None:
        """Before writing, wait briefly for callers already inside ``append_many`` (still
        encoding, or just woken from the last batch) to queue, so they share this commit.

        Waits no longer than the last commit took (capped): at worst it doubles one
        append's latency, and with fsync-bound commits it doubles the batch. Called by the
        turn's holder without the lock (only the holder takes from the queue, so counting
        it unlocked is safe); a lone caller never waits. An interrupt here leaves nothing
        behind: a stale wake lock is only ever released.
        """
        if len(self._queue) >= self._active:
            return
        deadline = time.monotonic() + min(self._commit_seconds, _MAX_GATHER_SECONDS)
        wake = threading.Lock()
        wake.acquire()
        self._gather_wake = wake
        try:
            while len(self._queue) < self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                wake.acquire(timeout=remaining)
        finally:
            self._gather_wake = None

    @staticmethod
    def _outcome(pending: _Pending, *, leader: bool) -> list[list[Envelope]]:
        error = pending.error
        if error is not None:
            if pending.shared_error and not leader:
                raise StorageError(
                    f"the group commit this append was part of failed: {error}"
                ) from error
            raise error
        assert pending.result is not None
        return pending.result

    def _commit(self, batch: list[_Pending]) -> None:
        """Write ``batch`` in a transaction (a savepoint, inside the caller's own one)."""
        db = self._db
        try:
            try:
                with db.transaction() as tx:
                    self._write(tx.conn, batch)
            except _RetryOneByOne:
                with db.transaction() as tx:
                    self._write_one_by_one(tx, batch)
        except Exception as exc:
            for pending in batch:
                if pending.result is not None or pending.error is None:
                    pending.result = None
                    pending.error = exc
                    pending.shared_error = True
        except BaseException:
            # Interrupted (KeyboardInterrupt from a signal handler): the batch is in the
            # file or not at all. If it is not, the other appends of the batch were not
            # written and go to the next turn (their callers see nothing); if it is, they
            # get their results. Only the interrupted caller sees the interrupt.
            if not self._batch_committed(batch):
                for pending in batch:
                    pending.result = None
                    pending.error = None
            raise

    def _batch_committed(self, batch: list[_Pending]) -> bool:
        """Whether the events of ``batch`` are in the file (after an interrupt, when the
        commit may or may not have happened): looks up one event id the batch wrote."""
        event_id = next(
            (
                rows[0][0]
                for p in batch
                if p.result is not None
                for _, _, rows, _ in p.parts
                if rows
            ),
            None,
        )
        if event_id is None:
            return False
        while True:
            try:
                return bool(self._query("SELECT 1 FROM events WHERE id = ?", (event_id,)))
            except Exception:
                raise
            except BaseException:
                pass  # interrupted again while looking: look again

    # -- reading ----------------------------------------------------------------------

    def _envelopes(self, rows: Iterable[Sequence[Any]]) -> Iterator[Envelope]:
        """The envelopes of stored rows. A row that cannot be decoded, whatever its shape
        (a column of the wrong type or NULL, JSON nested too deeply, a date out of range,
        text that is not UTF-8), raises :class:`MessageDecodeError` naming its position
        (or :class:`UnknownMessageType` for a type name the registry lacks)."""
        codec = self.codec
        # per (type, schema version): the structuring hook and class to call inline (None
        # when the row needs upcasting), and the decoder that upcasts or names an error
        plans: dict[tuple[str, int], tuple[Any, type[Any], Decoder]] = {}
        loads = _loads
        for row in rows:
            pos, sid, ver, eid, typ, sv, data, corr, caus, user, hdrs, ts = row
            try:
                plan = plans.get((typ, sv))
                if plan is None:
                    if type(typ) is not str or type(sv) is not int:
                        raise _Malformed()
                    direct = codec._direct(typ, sv)
                    hook, cls = direct if direct is not None else (None, object)
                    plan = plans[typ, sv] = (hook, cls, codec.decoder(typ, sv))
                hook, cls, decode = plan
                # every column the envelope keeps must hold what the store writes; a row
                # that fails is explained by _malformed (the same checks are in decode)
                if not (
                    type(data) is str
                    and type(sid) is str
                    and type(eid) is str
                    and type(corr) is str
                    and type(ver) is int
                    and type(ts) is int
                    and _MIN_US <= ts <= _MAX_US
                    and (caus is None or type(caus) is str)
                    and (user is None or type(user) is str)
                ):
                    raise _Malformed()
                if hook is None:
                    message = decode(data, pos)
                else:
                    try:
                        message = hook(loads(data), cls)
                    except Exception:
                        message = decode(data, pos)
                headers = _EMPTY if hdrs is None else _load_headers(hdrs, typ, pos)
            except (MessageDecodeError, UnknownMessageType):
                raise
            except Exception as exc:
                raise _malformed(row, exc) from (None if isinstance(exc, _Malformed) else exc)
            yield restored(message, eid, ts, corr, caus, user, headers, sid, ver, pos)

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        self._check_open()
        conn = self._db.read_connection()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc):
                raise storage_error(exc, "reading events", self._db.path) from exc
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading events", self._db.path) from exc
        except OverflowError:
            raise ValueError(
                f"a number given to the read is out of range (at most 2**63 - 1): {params!r}"
            ) from None
        except UnicodeEncodeError:
            raise ValueError(
                f"text given to the read cannot be stored, so matches nothing (a lone "
                f"surrogate): {params!r}"
            ) from None
        # A row holds text that is not UTF-8 (written by another program): read it again
        # with that text as bytes, so the row can be named and dead-lettered, not lost.
        # The connection is this thread's own (or this thread's write transaction's).
        factory = conn.text_factory
        conn.text_factory = _lenient_text
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading events", self._db.path) from exc
        finally:
            conn.text_factory = factory

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        """See :meth:`EventStore.read_stream`: one query, one snapshot."""
        validate_stream_id(stream_id)
        validate_range(from_version, to_version, limit)
        rows = self._query(
            _STREAM_BACKWARD if backwards else _STREAM_FORWARD,
            (
                stream_id,
                from_version,
                _MAX_VERSION if to_version is None else to_version,
                -1 if limit is None else limit,
            ),
        )
        return list(self._envelopes(rows))

    def read_all(
        self,
        from_position: int = 1,
        limit: int | None = None,
        types: Iterable[str | type] | None = None,
    ) -> Iterator[Envelope]:
        """See :meth:`EventStore.read_all`.

        Each page of :data:`PAGE_SIZE` rows is its own query; no read transaction stays
        open between pages, so a slow consumer never stops the WAL from being
        checkpointed (a snapshot held for the whole iteration would let the WAL file grow
        without bound while writers go on). Nothing is lost by it: positions are given in
        commit order, so the next page, which starts after the last position yielded,
        cannot have missed an event.
        """
        validate_read_all(from_position, limit)
        names = type_names(types)
        self._check_open()
        return self._iter_all(from_position, limit, names)

    def _iter_all(
        self, position: int, limit: int | None, names: frozenset[str] | None
    ) -> Iterator[Envelope]:
        if names is None:
            sql = _ALL
            extra: tuple[str, ...] = ()
        elif not names:
            return
        else:
            marks = ", ".join("?" * len(names))
            sql = f"{_SELECT} WHERE position >= ? AND type IN ({marks}) ORDER BY position LIMIT ?"
            extra = tuple(sorted(names))
        remaining = limit
        while remaining is None or remaining > 0:
            page = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            rows = self._query(sql, (position, *extra, page))
            if not rows:
                return
            position = rows[-1][0] + 1
            yield from self._envelopes(rows)
            if remaining is not None:
                remaining -= len(rows)

    def read_records(
        self, after: int = 0, limit: int = 1000, types: frozenset[str] | None = None
    ) -> list[LogRecord]:
        """See :meth:`EventStore.read_records`."""
        validate_records(after, limit)
        if types is None:
            rows = self._query(_RECORDS, (after, limit))
        elif not types:
            return []
        else:
            names = sorted(types)
            rows = self._query(_records_of(len(names)), (after, *names, limit))
        return list(map(_make_record, rows))

    def record_at(self, position: int) -> LogRecord | None:
        """See :meth:`EventStore.record_at`."""
        rows = self._query(_ONE, (position,))
        return _make_record(rows[0]) if rows else None

    def decode(self, record: LogRecord) -> Envelope:
        """See :meth:`EventStore.decode`: the same decoding and checks as every read of the
        store, one record at a time (the relay's path, so it builds no generator)."""
        pos, sid, ver, eid, typ, sv, data, corr, caus, user, hdrs, ts = record
        try:
            # the same checks as _envelopes, inlined: the relay decodes every record here
            if not (
                type(typ) is str
                and type(sv) is int
                and type(data) is str
                and type(sid) is str
                and type(eid) is str
                and type(corr) is str
                and type(ver) is int
                and type(ts) is int
                and _MIN_US <= ts <= _MAX_US
                and (caus is None or type(caus) is str)
                and (user is None or type(user) is str)
            ):
                raise _Malformed()
            message = self.codec.decoder(typ, sv)(data, pos)
            headers = _EMPTY if hdrs is None else _load_headers(hdrs, typ, pos)
        except (MessageDecodeError, UnknownMessageType):
            raise
        except Exception as exc:
            raise _malformed(record, exc) from (None if isinstance(exc, _Malformed) else exc)
        return restored(message, eid, ts, corr, caus, user, headers, sid, ver, pos)

    def read_messages(
        self, after: int = 0, limit: int = 1000, types: frozenset[str] | None = None
    ) -> list[tuple[int, Any]]:
        """See :meth:`EventStore.read_messages`: only the columns a message needs."""
        validate_records(after, limit)
        if types is None:
            rows = self._query(_MESSAGES, (after, limit))
        elif not types:
            return []
        else:
            names = sorted(types)
            rows = self._query(_messages_of(len(names)), (after, *names, limit))
        decoder = self.codec.decoder
        decoders: dict[tuple[str, int], Decoder] = {}
        out: list[tuple[int, Any]] = []
        append = out.append
        for position, type_name, schema_version, data in rows:
            decode = decoders.get((type_name, schema_version))
            if decode is None:
                decode = decoders[type_name, schema_version] = decoder(type_name, schema_version)
            append((position, decode(data, position)))
        return out

    def find_records(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        types: Collection[str] | None = None,
        streams: Collection[str] | None = None,
        correlation_ids: Collection[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[LogRecord]:
        """See :meth:`EventStore.find_records`: one query (streams and event ids are
        indexed; correlation ids and times are not, so those read the log)."""
        validate_records(after, limit)
        match = RecordFilter(types, streams, correlation_ids, since, until)
        clauses = ["position > ?"]
        params: list[Any] = [after]
        for column, values in (
            ("type", match.types),
            ("stream_id", match.streams),
            ("correlation_id", match.correlation_ids),
        ):
            if values is None:
                continue
            kept = sorted(v for v in values if _utf8(v))
            if not kept:
                return []
            if len(kept) > _MANY:
                # SQLite's JSON functions end a string at a NUL: such values go as they are
                nul = [v for v in kept if "\x00" in v]
                listed = f"{column} IN (SELECT value FROM json_each(?))"
                params.append(json.dumps([v for v in kept if "\x00" not in v]))
                if nul:
                    listed = f"({listed} OR {column} IN ({', '.join('?' * len(nul))}))"
                    params.extend(nul)
                clauses.append(listed)
            else:
                clauses.append(f"{column} IN ({', '.join('?' * len(kept))})")
                params.extend(kept)
        if match.since is not None or match.until is not None:
            clauses.append("typeof(timestamp) = 'integer'")
        if match.since is not None:
            clauses.append("timestamp >= ?")
            params.append(match.since)
        if match.until is not None:
            clauses.append("timestamp < ?")
            params.append(match.until)
        sql = f"{_SELECT} WHERE {' AND '.join(clauses)} ORDER BY position LIMIT ?"
        return list(map(_make_record, self._query(sql, (*params, limit))))

    def record_by_id(self, event_id: str) -> LogRecord | None:
        """See :meth:`EventStore.record_by_id`: the unique index on event ids."""
        if not isinstance(event_id, str):
            raise TypeError(f"event_id must be a str, got {type(event_id).__name__}")
        if not _utf8(event_id):
            return None
        rows = self._query(_BY_ID, (event_id,))
        return _make_record(rows[0]) if rows else None

    def list_streams(
        self, *, prefix: str | None = None, after: str | None = None, limit: int = 1000
    ) -> list[StreamInfo]:
        """See :meth:`EventStore.list_streams`: a range of the ``streams`` table's key."""
        validate_streams(prefix, after, limit)
        clauses: list[str] = []
        params: list[Any] = []
        for value in (prefix, after):
            if value is not None and not _utf8(value):
                return []
        if after is not None:
            clauses.append("s.stream_id > ?")
            params.append(after)
        if prefix:
            clauses.append("s.stream_id >= ?")
            params.append(prefix)
            end = prefix_end(prefix)
            if end is not None:
                clauses.append("s.stream_id < ?")
                params.append(end)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(f"{_STREAMS}{where} ORDER BY s.stream_id LIMIT ?", (*params, limit))
        return [StreamInfo(*row) for row in rows]

    def count_streams(self) -> int:
        """See :meth:`EventStore.count_streams`."""
        return int(self._query(_COUNT_STREAMS, ())[0][0])

    def stream_version(self, stream_id: str) -> int:
        """See :meth:`EventStore.stream_version`."""
        rows = self._query(_VERSION, (stream_id,))
        return int(rows[0][0]) if rows else 0

    def head_position(self) -> int:
        """See :meth:`EventStore.head_position`."""
        rows = self._query(_HEAD, ())
        return int(rows[0][0] or 0)

    def close(self) -> None:
        """Close the store, and its database if the store opened it; idempotent."""
        self._closed = True
        if self._owns_db:
            self._db.close()

    def __repr__(self) -> str:
        return f"<SQLiteEventStore {self._db.path!r}>"


def _load_headers(text: object, type_name: str, position: int) -> Mapping[str, str]:
    if type(text) is not str:
        raise MessageDecodeError(
            type_name, f"the headers column holds {_describe_value(text)}, not JSON text", position
        )
    try:
        headers = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MessageDecodeError(
            type_name, f"invalid headers JSON: {type(exc).__name__}: {exc}", position
        ) from None
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise MessageDecodeError(type_name, "headers must be a JSON object of strings", position)
    return headers


class _Malformed(Exception):
    """A stored row has a column of the wrong type; :func:`_malformed` says which."""


class _NotUTF8(bytes):
    """Text of a stored row that is not valid UTF-8, read as its bytes."""


def _lenient_text(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _NotUTF8(raw)


def _describe_value(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, _NotUTF8):
        return "text that is not valid UTF-8"
    if isinstance(value, bytes):
        return f"a BLOB of {len(value)} bytes"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MIN_US: Final = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH_UTC) // timedelta(
    microseconds=1
)
_MAX_US: Final = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH_UTC) // timedelta(
    microseconds=1
)
# (column, index in the row, the Python type it must hold, whether NULL is allowed)
_SHAPE: Final = (
    ("stream_id", 1, str, False),
    ("version", 2, int, False),
    ("id", 3, str, False),
    ("type", 4, str, False),
    ("schema_version", 5, int, False),
    ("data", 6, str, False),
    ("correlation_id", 7, str, False),
    ("causation_id", 8, str, True),
    ("user_id", 9, str, True),
    ("headers", 10, str, True),
    ("timestamp", 11, int, False),
)


def _malformed(row: Sequence[Any], exc: BaseException) -> MessageDecodeError:
    """The error for a row that failed to decode with ``exc``: the first column that does
    not hold what the store writes, or else what the decoder raised."""
    position = row[0]
    type_name = row[4] if type(row[4]) is str else repr(row[4])
    for column, index, kind, nullable in _SHAPE:
        value = row[index]
        if value is None and nullable:
            continue
        if type(value) is not kind:
            cause = f"the {column} column holds {_describe_value(value)}"
            return MessageDecodeError(type_name, cause, position)
    if not _MIN_US <= row[11] <= _MAX_US:
        cause = f"the timestamp {row[11]} is out of the range of dates (years 1 to 9999)"
        return MessageDecodeError(type_name, cause, position)
    if isinstance(exc, RecursionError):
        return MessageDecodeError(type_name, "the JSON is nested too deeply to decode", position)
    return MessageDecodeError(type_name, f"{type(exc).__name__}: {exc}", position)


def _utf8(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8 (holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_row(
    type_name: str,
    event_id: object,
    data: str,
    correlation: object,
    causation: object,
    user: object,
    headers: str | None,
) -> None:
    """Raise :class:`MessageEncodeError` naming the first value of an event that the store
    could not write and read back the same: text with a lone surrogate, an id that is not a
    string."""
    values: list[tuple[str, object, bool]] = [
        ("the event id", event_id, False),
        ("the message", data, False),
        ("the correlation id", correlation, False),
        ("the causation id", causation, True),
        ("the user id", user, True),
        ("the headers", headers, True),
    ]
    for what, value, optional in values:
        if value is None and optional:
            continue
        if not isinstance(value, str):
            raise MessageEncodeError(type_name, f"{what} must be a str, got {value!r}")
        if not _utf8(value):
            raise MessageEncodeError(
                type_name,
                f"{what} holds text that cannot be stored (a lone surrogate, not valid "
                f"Unicode): {value!r}",
            )
