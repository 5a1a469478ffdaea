"""The event store in PostgreSQL: gap-free positions in commit order, with group commit."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from ..codec import Codec, Decoder, _loads
from ..envelope import Envelope, restored, stamped
from ..exceptions import ConcurrencyError, MessageDecodeError, MessageEncodeError, StorageError
from ..store.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
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
from ._database import PostgresDatabase, PostgresTransaction

if TYPE_CHECKING:
    import psycopg

__all__ = ["COPY_THRESHOLD", "PAGE_SIZE", "PostgresEventStore"]

_COLUMNS = (
    "position, stream_id, version, id, type, schema_version, data, "
    'correlation_id, causation_id, user_id, headers, "timestamp"'
)
"""The columns of an ``events`` row, in the order of :class:`LogRecord`'s fields."""
_SELECT = f"SELECT {_COLUMNS} FROM events"
_STREAM_FORWARD = (
    f"{_SELECT} WHERE stream_id = %s AND version >= %s AND version <= %s ORDER BY version LIMIT %s"
)
_STREAM_BACKWARD = (
    f"{_SELECT} WHERE stream_id = %s AND version >= %s AND version <= %s "
    "ORDER BY version DESC LIMIT %s"
)
_ALL = f"{_SELECT} WHERE position >= %s ORDER BY position LIMIT %s"
_ALL_OF = f"{_SELECT} WHERE position >= %s AND type = ANY(%s) ORDER BY position LIMIT %s"
_RECORDS = f"{_SELECT} WHERE position > %s ORDER BY position LIMIT %s"
_RECORDS_OF = f"{_SELECT} WHERE position > %s AND type = ANY(%s) ORDER BY position LIMIT %s"
_ONE = f"{_SELECT} WHERE position = %s"
_BY_ID = f"{_SELECT} WHERE id = %s"
_STREAMS = (
    'SELECT s.stream_id, s.version, e."timestamp" FROM streams s '
    "LEFT JOIN events e ON e.stream_id = s.stream_id AND e.version = s.version"
)
_COUNT_STREAMS = "SELECT count(*) FROM streams"
_VERSION = "SELECT version FROM streams WHERE stream_id = %s"
_HEAD = "SELECT coalesce(max(position), 0) FROM events"
_APPEND = (
    "SELECT failed, actual, versions, positions FROM eventlite_append("
    "%b, %b, %b::text[], %b::int4[], %b::int4[], %b::int8[], %b::int4[], %b::int4[], "
    "%b::int4[], %b::text[], %b::text[], %b::int4[], %b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::int8[])"
)
_APPEND_ONE = (
    "SELECT actual, version, head FROM eventlite_append_one(%b, %b, %b, %b, %b::text[], "
    "%b::text[], %b::int4[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], "
    "%b::int8[])"
)
_LOCK_LOG = "SELECT head, versions FROM eventlite_lock_log(%b, %b::text[])"
_COPY = f"COPY events ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = [
    "int8", "text", "int8", "text", "text", "int4", "text", "text", "text", "text", "text", "int8"
]  # fmt: skip
_SET_VERSIONS = (
    "INSERT INTO streams (stream_id, version) SELECT * FROM unnest(%b::text[], %b::int8[]) "
    "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version"
)
_NOTIFY = "SELECT pg_notify(%s, %s)"
COPY_THRESHOLD: Final = 2000
"""Batches of at least this many events are written with ``COPY`` (see
:meth:`PostgresEventStore._copy`)."""
_STORED = "SELECT id FROM events WHERE id = ANY(%s::text[]) LIMIT 1"
_MAX_VERSION = 1 << 62
_MAX_GATHER_SECONDS = 0.002
_EXPECTED_CODE = {ANY: -1, NO_STREAM: -2, STREAM_EXISTS: -3}

PAGE_SIZE: Final = 1000
"""How many rows :meth:`PostgresEventStore.read_all` fetches per query."""

_EMPTY: Mapping[str, str] = {}
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_make_record = LogRecord._make

# (id, type, schema_version, data, correlation_id, causation_id, user_id, headers, timestamp)
_Row = tuple[str, str, int, str, str, "str | None", "str | None", "str | None", int]
# (stream_id, envelopes, rows, expected_version)
_Part = tuple[str, list[Envelope], list[_Row], ExpectedVersion]


class _Pending:
    """One caller's append, waiting for the group commit that writes it."""

    __slots__ = ("done", "error", "gone", "parts", "result", "shared_error", "turn", "wake")

    def __init__(self, parts: list[_Part]) -> None:
        self.parts = parts
        self.done = False
        # True once its caller holds the writing turn (set under the store's lock): it
        # must then write the queue, or hand the turn on, before it leaves append_many
        self.turn = False
        # True once its caller, interrupted while waiting, left append_many
        self.gone = False
        self.result: list[list[Envelope]] | None = None
        self.error: BaseException | None = None
        # True when the error is the whole batch's (a storage failure), not this append's
        self.shared_error = False
        # Released when the append is done, or when its caller is to lead the next batch
        self.wake = threading.Lock()
        self.wake.acquire()


class _Duplicate(Exception):
    """The batch hit the unique event id: redo it append by append."""


class PostgresEventStore(EventStore):
    """The :class:`EventStore` contract in PostgreSQL (see ``docs/postgres.md``).

    Built by :class:`~eventlite.postgres.PostgresStorage` over its
    :class:`~eventlite.postgres.PostgresDatabase`; ``codec`` turns messages into JSON
    text and back.

    **Positions.** The ``log_head`` table holds one row, the last position. An append
    locks that row as its last step before the commit (inside one server-side function
    call), reads the stream versions, writes its events at the next positions and
    commits; the next appender, in any process, gets the row only after that commit is
    visible. So positions are gap-free and in commit order: a reader that has seen N
    never later finds an event below N. The price: appending transactions of the whole
    database commit one after the other, each holding the lock for its insert and its
    commit (one WAL flush).

    **Group commit.** So that this one-at-a-time section is paid per batch rather than
    per append, appends that arrive while another is being written wait for it, then
    the next of them writes all the waiting ones in one call and one commit. Each caller
    still gets its own result or its own :class:`ConcurrencyError`, checked in arrival
    order against the streams as the earlier appends of the batch left them.

    **Sharing a transaction.** Called in a thread that is inside the storage's
    ``transaction()``, an append joins that transaction (as a savepoint) and holds the
    log's lock from the append to the commit: append last in a long transaction.
    """

    def __init__(self, database: PostgresDatabase, *, codec: Codec | None = None) -> None:
        self._db = database
        self.codec = codec if codec is not None else Codec()
        """The codec that turns messages into the ``data`` column and back."""
        self._closed = False
        self._cv = threading.Condition(threading.Lock())
        self._active = 0  # callers inside append_many, outside a transaction
        self._gathering = False  # a leader waits in _gather for callers to queue
        self._commit_seconds = 0.0  # how long the last group commit took
        self._queue: list[_Pending] = []
        self._writing = False

    @property
    def database(self) -> PostgresDatabase:
        """The database, for writing other tables in the same transaction."""
        return self._db

    def _check_open(self) -> None:
        if self._closed or self._db.closed:
            raise StorageError(f"{self._db.description}: the event store is closed")

    # -- appending --------------------------------------------------------------------

    def _prepare(self, appends: Iterable[StreamAppend | tuple[Any, ...]]) -> list[_Part]:
        # Encoding runs in the caller's thread, before any lock, so a message that cannot
        # be encoded fails only its own append.
        codec = self.codec
        message_type = codec.message_type
        encode = codec.encode
        parts: list[_Part] = []
        ids: set[str] = set()
        count = 0
        for stream_id, envelopes, expected in normalize_appends(appends):
            if not _storable(stream_id):
                raise ValueError(
                    f"stream_id {stream_id!r} holds text PostgreSQL cannot store (a NUL "
                    "character or a lone surrogate)"
                )
            rows: list[_Row] = []
            for env in envelopes:
                message = env.message
                entry = message_type(message)
                event_id = env.id
                ctx = env._ctx
                if ctx is None:
                    correlation, causation, user, headers = event_id, None, None, None
                else:
                    correlation, causation, user, h = ctx
                    headers = _dumps(dict(h)) if h else None
                try:
                    probe = "".join((event_id, correlation, causation or "", user or ""))
                except TypeError:
                    probe = "\x00"  # not text: the careful look names it
                if not probe.isascii() or "\x00" in probe:
                    _check_row(entry.name, event_id, correlation, causation, user)
                rows.append(
                    (
                        event_id,
                        entry.name,
                        entry.version,
                        encode(message),
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

    @staticmethod
    def _params(batch: list[_Pending]) -> list[Any]:
        """The arguments of one ``eventlite_append`` call writing ``batch`` (after the
        lock key and the channel)."""
        known: dict[str, int] = {}
        appends: list[int] = []
        idx: list[int] = []
        expected: list[int] = []
        counts: list[int] = []
        event_parts: list[int] = []
        offsets: list[int] = []
        columns: list[list[Any]] = [[] for _ in range(9)]
        part_no = 0
        for number, pending in enumerate(batch, 1):
            for stream_id, _, rows, want in pending.parts:
                part_no += 1
                appends.append(number)
                i = known.get(stream_id)
                if i is None:
                    i = known[stream_id] = len(known) + 1
                idx.append(i)
                expected.append(_EXPECTED_CODE[want] if not isinstance(want, int) else want)
                counts.append(len(rows))
                n = len(rows)
                if n == 1:
                    event_parts.append(part_no)
                    offsets.append(1)
                    for column, value in zip(columns, rows[0], strict=True):
                        column.append(value)
                elif n:
                    event_parts.extend([part_no] * n)
                    offsets.extend(range(1, n + 1))
                    for column, values in zip(columns, zip(*rows, strict=True), strict=True):
                        column.extend(values)
        return [list(known), appends, idx, expected, counts, event_parts, offsets, *columns]

    def _call(self, conn: psycopg.Connection[Any], batch: list[_Pending]) -> None:
        """Write ``batch`` with one call of the append function on ``conn`` and hand each
        append its result or its :class:`ConcurrencyError`. Raises :class:`_Duplicate`
        when an event id is already stored; other ``psycopg`` errors propagate."""
        import psycopg

        if len(batch) == 1 and len(batch[0].parts) == 1:
            self._call_one(conn, batch[0])
            return
        try:
            db = self._db
            params = (db.log_lock, db.channel, *self._params(batch))
            row = conn.execute(_APPEND, params).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "events_id":
                raise _Duplicate() from exc
            raise
        assert row is not None
        failed, actual, versions, positions = row
        part_no = 0
        for number, pending in enumerate(batch):
            bad = failed[number]
            if bad is not None:
                stream_id, _, _, want = pending.parts[bad - part_no - 1]
                pending.error = ConcurrencyError(stream_id, want, int(actual[number]))
                part_no += len(pending.parts)
                continue
            result: list[list[Envelope]] = []
            for stream_id, envelopes, _, _ in pending.parts:
                version = versions[part_no]
                head = positions[part_no]
                result.append(
                    [
                        stamped(env, stream_id, version + i, head + i)
                        for i, env in enumerate(envelopes, 1)
                    ]
                )
                part_no += 1
            pending.result = result

    def _call_one(self, conn: psycopg.Connection[Any], pending: _Pending) -> None:
        """:meth:`_call` for a batch of one append to one stream."""
        import psycopg

        ((stream_id, envelopes, rows, want),) = pending.parts
        columns: list[Any] = [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * 9
        db = self._db
        expected = _EXPECTED_CODE[want] if not isinstance(want, int) else want
        try:
            row = conn.execute(
                _APPEND_ONE, (db.log_lock, db.channel, stream_id, expected, *columns)
            ).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "events_id":
                raise _Duplicate() from exc
            raise
        assert row is not None
        actual, version, head = row
        if actual is not None:
            pending.error = ConcurrencyError(stream_id, want, int(actual))
            return
        pending.result = [
            [stamped(env, stream_id, version + i, head + i) for i, env in enumerate(envelopes, 1)]
        ]

    def _copy(self, conn: psycopg.Connection[Any], batch: list[_Pending]) -> None:
        """Write a large ``batch`` in one transaction: take the log's lock and read the
        versions (one call), check the expected versions here, ``COPY`` the rows in, set
        the versions, notify, commit. The lock is held from the first call to the commit,
        as in the append function; ``COPY`` inserts rows several times faster."""
        import psycopg

        known: dict[str, int] = {}
        for pending in batch:
            for stream_id, _, _, _ in pending.parts:
                known.setdefault(stream_id, len(known))
        names = list(known)
        db = self._db
        try:
            with conn.transaction():
                row = conn.execute(_LOCK_LOG, (db.log_lock, names)).fetchone()
                assert row is not None
                head, start = int(row[0]), [int(v) for v in row[1]]
                current = list(start)
                first = head
                rows: list[tuple[Any, ...]] = []
                for pending in batch:
                    trial = list(current)
                    failed: ConcurrencyError | None = None
                    for stream_id, _, part_rows, want in pending.parts:
                        version = trial[known[stream_id]]
                        try:
                            check_version(stream_id, want, version)
                        except ConcurrencyError as exc:
                            failed = exc
                            break
                        trial[known[stream_id]] = version + len(part_rows)
                    if failed is not None:
                        pending.error = failed
                        continue
                    result: list[list[Envelope]] = []
                    for stream_id, envelopes, part_rows, _ in pending.parts:
                        version = current[known[stream_id]]
                        rows.extend(
                            (head + i, stream_id, version + i, *r)
                            for i, r in enumerate(part_rows, 1)
                        )
                        result.append(
                            [
                                stamped(env, stream_id, version + i, head + i)
                                for i, env in enumerate(envelopes, 1)
                            ]
                        )
                        current[known[stream_id]] = version + len(part_rows)
                        head += len(part_rows)
                    pending.result = result
                if head > first:
                    with conn.cursor().copy(_COPY) as copy:
                        copy.set_types(_COPY_TYPES)
                        for event_row in rows:
                            copy.write_row(event_row)
                    changed = [
                        (n, v) for n, v, w in zip(names, current, start, strict=True) if v != w
                    ]
                    conn.execute(_SET_VERSIONS, ([n for n, _ in changed], [v for _, v in changed]))
                    conn.execute(_NOTIFY, (db.channel, str(head)))
        except psycopg.errors.UniqueViolation as exc:
            for pending in batch:
                pending.result = pending.error = None
            if exc.diag.constraint_name == "events_id":
                raise _Duplicate() from exc
            raise
        except BaseException:
            for pending in batch:
                pending.result = pending.error = None
            raise

    def _duplicate_error(self, conn: psycopg.Connection[Any], pending: _Pending) -> Exception:
        for stream_id, _, rows, _ in pending.parts:
            ids = [r[0] for r in rows]
            if ids and conn.execute(_STORED, (ids,)).fetchone():
                for event_id in ids:
                    if conn.execute(_STORED, ([event_id],)).fetchone():
                        return DuplicateEventError(event_id, stream_id)
        return StorageError(
            f"appending failed on {self._db.description}: a unique event id clashed"
        )

    def append_many(
        self, appends: Iterable[StreamAppend | tuple[Any, ...]]
    ) -> list[list[Envelope]]:
        """See :meth:`EventStore.append_many`; appends from several threads share commits."""
        self._check_open()
        tx = self._db.current()
        if tx is not None:
            pending = _Pending(self._prepare(appends))
            self._append_in(tx, pending)
            return self._outcome(pending, leader=True)
        cv = self._cv
        with cv:
            self._active += 1
        try:
            pending = _Pending(self._prepare(appends))
            batch: list[_Pending] = []
            started: float | None = None
            # As in the SQLite store: everything from queuing to the handover is in one
            # try/finally, so that an exception raised into this thread anywhere in it
            # (KeyboardInterrupt) never stalls the others.
            try:
                with cv:
                    self._queue.append(pending)
                    lead = pending.turn = not self._writing
                    self._writing = True
                    if self._gathering and len(self._queue) >= self._active:
                        cv.notify()
                if not lead:
                    pending.wake.acquire()
                    if pending.done:
                        return self._outcome(pending, leader=False)
                    # Woken without a result: the previous leader handed over to this caller.
                with cv:
                    self._gather()
                    batch = self._queue
                    self._queue = []
                started = time.perf_counter()
                self._commit(batch)
            finally:
                self._finish(pending, batch, started)
            return self._outcome(pending, leader=True)
        finally:
            with cv:
                self._active -= 1
                if self._gathering and len(self._queue) >= self._active:
                    cv.notify()

    def _append_in(self, tx: PostgresTransaction, pending: _Pending) -> None:
        """An append inside the caller's transaction: one savepoint around the call, so a
        duplicate id fails only this append."""
        import psycopg

        db = self._db
        try:
            with db.transaction():  # a savepoint of the caller's transaction
                self._call(tx.conn, [pending])
        except _Duplicate:
            try:
                pending.error = self._duplicate_error(tx.conn, pending)
            except psycopg.Error as exc:
                pending.error = db.error(exc, "appending")

    def _finish(self, pending: _Pending, batch: list[_Pending], started: float | None) -> None:
        """Leave ``append_many`` (the SQLite store's handover, see there): a follower whose
        batch was written has nothing to do; an interrupted follower withdraws from the
        queue; the caller holding the turn ends its batch and hands the turn on."""
        if pending.done and not pending.turn:
            return
        if started is not None:
            self._commit_seconds = time.perf_counter() - started
        unwritten = [p for p in batch if p.result is None and p.error is None]
        for p in batch:
            if p.result is not None or p.error is not None:
                p.done = True
                if p is not pending:
                    p.wake.release()
        with self._cv:
            if not pending.turn:
                pending.gone = True
                if pending in self._queue:
                    self._queue.remove(pending)
                return
            pending.turn = False
            skip = {id(p) for p in batch}
            skip.add(id(pending))
            self._queue = [p for p in unwritten if p is not pending and not p.gone] + [
                p for p in self._queue if id(p) not in skip
            ]
            if self._queue:
                following = self._queue[0]
                following.turn = True
                following.wake.release()
            else:
                self._writing = False

    def _gather(self) -> None:
        """Before writing, wait briefly (no longer than the last commit took, at most
        2 ms) for callers already inside ``append_many`` to queue, so they share this
        commit. Called with the lock held; a lone caller never waits."""
        cv = self._cv
        if len(self._queue) >= self._active:
            return
        deadline = time.monotonic() + min(self._commit_seconds, _MAX_GATHER_SECONDS)
        self._gathering = True
        try:
            while len(self._queue) < self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                cv.wait(remaining)
        finally:
            self._gathering = False

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
        """Write ``batch`` in one autocommit call; on a clashing event id, append by
        append; on a lost connection, find out whether the batch was stored."""
        import psycopg

        db = self._db
        try:
            try:
                with db.connection() as conn:
                    if sum(len(rows) for p in batch for _, _, rows, _ in p.parts) >= COPY_THRESHOLD:
                        self._copy(conn, batch)
                    else:
                        self._call(conn, batch)
            except _Duplicate:
                for pending in batch:
                    pending.result = pending.error = None
                    try:
                        with db.connection() as conn:
                            self._call(conn, [pending])
                    except _Duplicate:
                        with db.connection() as conn:
                            pending.error = self._duplicate_error(conn, pending)
        except psycopg.Error as exc:
            error = self._lost_or_failed(exc, batch)
            self._fail(batch, error)
        except BaseException as exc:
            self._fail(batch, exc)

    @staticmethod
    def _fail(batch: list[_Pending], error: BaseException) -> None:
        for pending in batch:
            if pending.result is not None or pending.error is None:
                pending.result = None
                pending.error = error
                pending.shared_error = True

    def _lost_or_failed(self, exc: psycopg.Error, batch: list[_Pending]) -> StorageError:
        """The error for a batch whose call failed: when the connection was lost, say
        whether the batch's events were stored (the commit may have happened)."""
        import psycopg

        db = self._db
        error = db.error(exc, "appending")
        if not db._lost(exc):
            return error
        ids = [rows[0][0] for p in batch for _, _, rows, _ in p.parts if rows]
        if not ids:
            return error
        try:
            with db.connection() as conn:
                stored = conn.execute(_STORED, (ids,)).fetchone() is not None
        except (psycopg.Error, StorageError):
            return StorageError(f"{error}; whether the append was stored is unknown")
        if stored:
            return StorageError(
                f"{error}; the commit had been made before: the events are stored "
                "(read the stream to see them)"
            )
        if db.terminated(exc):
            return StorageError(f"{error}; nothing of the append was written")
        # Cut off by the network, the server's session may still be running the append
        # and commit it later.
        return StorageError(
            f"{error}; the append was not stored when checked, but a session cut off by "
            "the network may still commit it: read the stream to be sure"
        )

    def lock_log(self) -> None:
        """See :meth:`EventStore.lock_log`: the log's advisory lock, the one every append
        takes, held by the calling thread's transaction until it ends."""
        self._check_open()
        tx = self._db.current()
        if tx is None:
            raise StorageError(
                f"{self._db.description}: lock_log() holds the log's lock until a commit, "
                "so it must be called inside storage.transaction()"
            )
        import psycopg

        try:
            tx.lock([self._db.log_lock])
        except psycopg.Error as exc:
            raise self._db.error(exc, "locking the log") from exc

    # -- reading ----------------------------------------------------------------------

    def _envelopes(self, rows: Iterable[Sequence[Any]]) -> Iterator[Envelope]:
        codec = self.codec
        plans: dict[tuple[str, int], tuple[Any, type[Any], Decoder]] = {}
        loads = _loads
        for pos, sid, ver, eid, typ, sv, data, corr, caus, user, hdrs, ts in rows:
            plan = plans.get((typ, sv))
            if plan is None:
                direct = codec._direct(typ, sv)
                hook, cls = direct if direct is not None else (None, object)
                plan = plans[typ, sv] = (hook, cls, codec.decoder(typ, sv))
            hook, cls, decode = plan
            if hook is None:
                message = decode(data, pos)
            else:
                try:
                    message = hook(loads(data), cls)
                except Exception:
                    message = decode(data, pos)
            yield restored(
                message,
                eid,
                ts,
                corr,
                caus,
                user,
                _EMPTY if hdrs is None else _load_headers(hdrs, typ, pos),
                sid,
                ver,
                pos,
            )

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        self._check_open()
        return self._db.run("reading events", lambda conn: conn.execute(sql, params).fetchall())

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
                limit,
            ),
        )
        return list(self._envelopes(rows))

    def read_all(
        self,
        from_position: int = 1,
        limit: int | None = None,
        types: Iterable[str | type] | None = None,
    ) -> Iterator[Envelope]:
        """See :meth:`EventStore.read_all`: pages of :data:`PAGE_SIZE` rows, each its own
        query; nothing is held open between pages."""
        validate_read_all(from_position, limit)
        names = type_names(types)
        self._check_open()
        return self._iter_all(from_position, limit, names)

    def _iter_all(
        self, position: int, limit: int | None, names: frozenset[str] | None
    ) -> Iterator[Envelope]:
        if names is not None and not names:
            return
        selected = sorted(names) if names is not None else None
        remaining = limit
        while remaining is None or remaining > 0:
            page = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            if selected is None:
                rows = self._query(_ALL, (position, page))
            else:
                rows = self._query(_ALL_OF, (position, selected, page))
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
            rows = self._query(_RECORDS_OF, (after, sorted(types), limit))
        make = _make_record
        return [make(row) for row in rows]

    def record_at(self, position: int) -> LogRecord | None:
        """See :meth:`EventStore.record_at`."""
        rows = self._query(_ONE, (position,))
        return _make_record(rows[0]) if rows else None

    def decode(self, record: LogRecord) -> Envelope:
        """See :meth:`EventStore.decode`: the same decoding as every read of the store."""
        return next(self._envelopes((record,)))

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
        clauses = ["position > %s"]
        params: list[Any] = [after]
        for column, values in (
            ("type", match.types),
            ("stream_id", match.streams),
            ("correlation_id", match.correlation_ids),
        ):
            if values is None:
                continue
            kept = sorted(v for v in values if _storable(v))
            if not kept:
                return []
            clauses.append(f"{column} = ANY(%s)")
            params.append(kept)
        if match.since is not None:
            clauses.append('"timestamp" >= %s')
            params.append(match.since)
        if match.until is not None:
            clauses.append('"timestamp" < %s')
            params.append(match.until)
        sql = f"{_SELECT} WHERE {' AND '.join(clauses)} ORDER BY position LIMIT %s"
        make = _make_record
        return [make(row) for row in self._query(sql, (*params, limit))]

    def record_by_id(self, event_id: str) -> LogRecord | None:
        """See :meth:`EventStore.record_by_id`: the unique index on event ids."""
        if not isinstance(event_id, str):
            raise TypeError(f"event_id must be a str, got {type(event_id).__name__}")
        if not _storable(event_id):
            return None
        rows = self._query(_BY_ID, (event_id,))
        return _make_record(rows[0]) if rows else None

    def list_streams(
        self, *, prefix: str | None = None, after: str | None = None, limit: int = 1000
    ) -> list[StreamInfo]:
        """See :meth:`EventStore.list_streams` (ids compared by code point: ``COLLATE
        "C"``)."""
        validate_streams(prefix, after, limit)
        for value in (prefix, after):
            if value is not None and not _storable(value):
                return []
        clauses: list[str] = []
        params: list[Any] = []
        if after is not None:
            clauses.append('s.stream_id COLLATE "C" > %s')
            params.append(after)
        if prefix:
            clauses.append('s.stream_id COLLATE "C" >= %s')
            params.append(prefix)
            end = prefix_end(prefix)
            if end is not None:
                clauses.append('s.stream_id COLLATE "C" < %s')
                params.append(end)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f'{_STREAMS}{where} ORDER BY s.stream_id COLLATE "C" LIMIT %s'
        return [StreamInfo(*row) for row in self._query(sql, (*params, limit))]

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
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        """Close the store (not the database, which its storage closes); idempotent."""
        self._closed = True

    def __repr__(self) -> str:
        return f"<PostgresEventStore {self._db.description}>"


def _load_headers(text: str, type_name: str, position: int) -> Mapping[str, str]:
    try:
        headers = json.loads(text)
    except ValueError as exc:
        raise MessageDecodeError(type_name, f"invalid headers JSON: {exc}", position) from exc
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise MessageDecodeError(type_name, "headers must be a JSON object of strings", position)
    return headers


def _check_row(
    type_name: str, event_id: object, correlation: object, causation: object, user: object
) -> None:
    """Raise :class:`MessageEncodeError` naming the first id of an event that a text column
    cannot hold: not a string, a NUL character, a lone surrogate. (The data and headers are
    JSON, in which a NUL is written as an escape.)"""
    values: list[tuple[str, object, bool]] = [
        ("the event id", event_id, False),
        ("the correlation id", correlation, False),
        ("the causation id", causation, True),
        ("the user id", user, True),
    ]
    for what, value, optional in values:
        if value is None and optional:
            continue
        if not isinstance(value, str):
            raise MessageEncodeError(type_name, f"{what} must be a str, got {value!r}")
        if not _storable(value):
            raise MessageEncodeError(
                type_name,
                f"{what} holds text PostgreSQL cannot store (a NUL character or a lone "
                f"surrogate): {value!r}",
            )


def _storable(text: str) -> bool:
    """Whether PostgreSQL can hold ``text`` (no NUL, no lone surrogate): text it cannot
    hold matches nothing stored."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
