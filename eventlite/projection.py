"""Projections: read models kept up to date from the event log, in the same SQLite file.

A projection is a class whose methods, marked ``@projects(EventType)``, turn events into
rows of its own tables (its *read model*), written with ``sqlite-utils``::

    class OrderSummaries(Projection):
        tables = ("order_summaries",)

        def setup(self, db: sqlite_utils.Database) -> None:
            db["order_summaries"].create({"id": str, "total": int}, pk="id", if_not_exists=True)

        @projects(OrderPlaced)
        def _placed(self, event: OrderPlaced, db: sqlite_utils.Database) -> None:
            db["order_summaries"].insert({"id": event.order_id, "total": event.total})

A :class:`Projector` runs projections over a :class:`~eventlite.sqlite.Database`. Each has a
*checkpoint* (table ``projections``): the log position its read model reflects. The
checkpoint only moves in the transaction that writes the read model, so after any crash the
two agree, and no event is applied twice or skipped.

- **inline**: updated inside the unit of work that records the events (through
  :meth:`Projector.hook`); a failed commit rolls the read model back with the events.
- **tracking**: updated by a background thread, in batches, each batch committed with its
  checkpoint; it wakes on :meth:`Projector.notify` and polls for other processes' commits.

:meth:`Projector.rebuild` empties a read model and replays the log from position 1 while
new events keep arriving, then hands over to live updates.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeVar

import attrs

from .clock import Clock, SystemClock, to_datetime
from .codec import Codec, Decoder
from .envelope import Envelope
from .envelope import restored as restore
from .exceptions import EventliteError
from .sqlite._database import Database, Transaction, storage_error
from .sqlite.schema import MIGRATIONS

if TYPE_CHECKING:
    import sqlite_utils

__all__ = [
    "Projection",
    "ProjectionError",
    "ProjectionMode",
    "ProjectionStatus",
    "Projector",
    "Progress",
    "projects",
]

_log = logging.getLogger("eventlite.projection")

ProjectionMode = Literal["inline", "tracking"]
"""``"inline"``: updated in the events' own transaction. ``"tracking"``: by a thread."""

Progress = Callable[[int, int], object]
"""``progress(done, total)``: the log position a rebuild has reached, and the head."""

F = TypeVar("F", bound=Callable[..., Any])

_LIVE: Final = "live"
_REBUILDING: Final = "rebuilding"
_MARK: Final = "__eventlite_projects__"


class ProjectionError(EventliteError):
    """A projection's handler failed (``__cause__`` is the handler's exception).

    ``name`` is the projection; ``position`` the stored event it was applying, when known.
    """

    def __init__(self, name: str, message: str, position: int | None = None) -> None:
        self.name = name
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"projection {name!r}{where}: {message}")


def projects(*event_types: type[Any]) -> Callable[[F], F]:
    """Mark a :class:`Projection` method as the handler of these event types.

    The method is called ``method(event, db)``, ``db`` being a ``sqlite_utils.Database``
    bound to the transaction that also moves the checkpoint; one with a parameter named
    ``envelope`` also gets the stored :class:`Envelope` (position, stream, timestamp,
    metadata) as ``envelope=``. A handler of a base class also handles its subclasses,
    unless they have a handler of their own. (Named ``projects``, not ``handles``, so it is
    never mistaken for the bus's command handlers.)
    """
    if not event_types:
        raise TypeError("@projects needs at least one event type")
    for t in event_types:
        if not isinstance(t, type):
            raise TypeError(f"@projects takes event classes, got {t!r}")

    def mark(fn: F) -> F:
        setattr(fn, _MARK, (*getattr(fn, _MARK, ()), *event_types))
        return fn

    return mark


@attrs.frozen
class _Handler:
    fn: Callable[..., Any]
    wants_envelope: bool


class Projection:
    """Base class of projections (see the module doc).

    Subclasses set ``tables`` (the read-model tables a rebuild drops) or override
    :meth:`reset`, create their tables in :meth:`setup`, and mark handlers with
    :func:`projects`. ``name`` keys the checkpoint and defaults to the class name: keep it
    stable across releases.

    For speed, a projection may gather changes in memory and write them once per batch:
    :meth:`begin_batch` is called before each batch (clear the buffers there) and
    :meth:`end_batch` after it, inside the batch's transaction.
    """

    name: ClassVar[str] = ""
    """The projection's stable name (default: the class name)."""
    tables: ClassVar[tuple[str, ...]] = ()
    """The read-model tables; :meth:`reset` drops them before a rebuild."""
    _handlers: ClassVar[dict[type[Any], _Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__
        handlers: dict[type[Any], _Handler] = {}
        for klass in reversed(cls.__mro__):
            own: dict[type[Any], str] = {}
            for attr, value in vars(klass).items():
                for event_type in getattr(value, _MARK, ()):
                    if event_type in own:
                        raise TypeError(
                            f"{cls.__qualname__}: {klass.__qualname__}.{own[event_type]} and "
                            f".{attr} both project {event_type.__qualname__}"
                        )
                    own[event_type] = attr
                    wants = "envelope" in inspect.signature(value).parameters
                    handlers[event_type] = _Handler(value, wants)
        cls._handlers = handlers

    @classmethod
    def handled_types(cls) -> frozenset[type[Any]]:
        """The event classes this projection has a handler for."""
        return frozenset(cls._handlers)

    def setup(self, db: sqlite_utils.Database) -> None:
        """Create the read-model tables if they are missing (``if_not_exists=True``).

        Called inside a transaction when the projection is added to a projector and after
        every :meth:`reset`. The default creates nothing.
        """

    def reset(self, db: sqlite_utils.Database) -> None:
        """Empty the read model before a rebuild; the default drops every table in
        :attr:`tables` (then :meth:`setup` runs again)."""
        for table in self.tables:
            db.table(table).drop(ignore=True)

    def begin_batch(self) -> None:
        """Called before each batch of events is applied (also before a retried one)."""

    def end_batch(self, db: sqlite_utils.Database) -> None:
        """Called after each batch, in its transaction, before the checkpoint moves."""

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self.name!r}>"


@attrs.frozen
class ProjectionStatus:
    """Where one projection stands, as :meth:`Projector.status` reads it from the file."""

    name: str
    """The projection's name."""
    mode: str
    """``"inline"`` or ``"tracking"``, as last added."""
    position: int
    """The log position its read model reflects."""
    head: int
    """The store's last position when this status was read."""
    state: str
    """``"live"``, or ``"rebuilding"`` while a rebuild replays the log."""
    error: str | None
    """The last failure of its tracking thread, cleared by the next batch that commits."""
    updated_at: datetime
    """When the checkpoint last moved (UTC)."""
    rebuilt_at: datetime | None
    """When the last rebuild started (UTC), or None."""

    @property
    def lag(self) -> int:
        """How many positions the read model is behind the log."""
        return max(self.head - self.position, 0)


# (position, message, envelope or the events row it comes from)
_Item = tuple[int, Any, Any]

# The first four columns are all most projections need; handlers that take the envelope
# get the rest too.
_COLUMNS = "position, type, schema_version, data"
_ALL_COLUMNS = (
    f"{_COLUMNS}, stream_id, version, id, correlation_id, causation_id, user_id, headers, timestamp"
)
_HEAD = "SELECT coalesce(max(position), 0) FROM events"
_CHECKPOINT = "SELECT position, status FROM projections WHERE name = ?"
_EMPTY: Mapping[str, str] = {}
_UNKNOWN: Any = object()


@functools.cache
def _rows_sql(n_types: int, envelopes: bool) -> str:
    where = "position > ? AND position <= ?"
    if n_types:
        where += f" AND type IN ({', '.join('?' * n_types)})"
    columns = _ALL_COLUMNS if envelopes else _COLUMNS
    return f"SELECT {columns} FROM events WHERE {where} ORDER BY position LIMIT ?"


def _reserved_tables() -> frozenset[str]:
    """The tables eventlite's own schema steps create (a projection must not drop them)."""
    return _schema_tables(len(MIGRATIONS))


@functools.cache
def _schema_tables(steps: int) -> frozenset[str]:
    import sqlite_utils

    db = sqlite_utils.Database(memory=True, execute_plugins=False)
    try:
        for step in MIGRATIONS[:steps]:
            step.apply(db)
        return frozenset(db.table_names())
    finally:
        db.close()


def _envelope(row: tuple[Any, ...], message: Any) -> Envelope:
    pos, _typ, _sv, _data, sid, ver, eid, corr, caus, user, hdrs, ts = row
    headers = _EMPTY if hdrs is None else json.loads(hdrs)
    return restore(message, eid, ts, corr, caus, user, headers, sid, ver, pos)


class _Entry:
    """A projection as one projector runs it."""

    __slots__ = (
        "lock",
        "mode",
        "name",
        "projection",
        "routes",
        "thread",
        "types",
        "wake",
        "wants_envelopes",
    )

    def __init__(self, projection: Projection, mode: ProjectionMode) -> None:
        self.projection = projection
        self.name = projection.name
        self.mode = mode
        # Held while a batch is applied by this process: the tracking thread takes it per
        # round, a rebuild for its whole length (so the thread pauses meanwhile).
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.routes: dict[type[Any], _Handler | None] = {}
        self.types: tuple[object, tuple[str, ...]] = (None, ())
        self.wants_envelopes = any(h.wants_envelope for h in type(projection)._handlers.values())

    def route(self, cls: type[Any]) -> _Handler | None:
        """The handler of a message class (its own, or its nearest base class's)."""
        try:
            return self.routes[cls]
        except KeyError:
            pass
        handlers = type(self.projection)._handlers
        found = next((handlers[c] for c in cls.__mro__ if c in handlers), None)
        self.routes[cls] = found
        return found

    def type_names(self, codec: Codec) -> tuple[str, ...]:
        """The registered names of every type this projection handles, subclasses too."""
        registry = codec.registry
        generation = registry._by_name
        if self.types[0] is not generation:
            handled = tuple(type(self.projection)._handlers)
            names = tuple(sorted(e.name for e in generation.values() if issubclass(e.cls, handled)))
            self.types = (generation, names)
        return self.types[1]


class Projector:
    """Runs projections over the events of one SQLite file (see the module doc).

    ``database`` is the file shared with the event store; ``codec`` decodes stored events
    (default: a :class:`Codec` over the default registry: use the store's). ``batch_size``
    is how many events a tracking thread or a rebuild applies per transaction;
    ``poll_interval`` how often (seconds) tracking threads look for commits they were not
    told about (:meth:`notify` wakes them at once); ``on_error(name, error)`` is told when
    a tracking batch fails (it is logged either way, recorded in the status, and retried
    with a growing pause up to ``max_backoff`` seconds).

    Wiring into an app: create it with the app's database and codec, add projections,
    :meth:`start` it, run :meth:`hook` in every unit of work
    (``uow.on_commit_write(projector.hook)``), call :meth:`notify` after commits (the hook
    does so for the commits it sees), and :meth:`close` it before the database.
    """

    def __init__(
        self,
        database: Database,
        codec: Codec | None = None,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        max_backoff: float = 30.0,
        clock: Clock | None = None,
        on_error: Callable[[str, BaseException], object] | None = None,
    ) -> None:
        if not isinstance(database, Database):
            raise TypeError(
                "Projector needs an eventlite Database (for example store.database), got "
                f"{type(database).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        self._db = database
        self.codec = codec if codec is not None else Codec()
        """The codec that decodes stored events for the handlers."""
        self.batch_size = batch_size
        """Events per transaction for tracking threads and rebuilds."""
        self.poll_interval = poll_interval
        """Seconds between a tracking thread's looks for commits it was not told about."""
        self.max_backoff = max_backoff
        """The longest pause (seconds) before a failing tracking batch is tried again."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """Dates checkpoint moves and rebuilds."""
        self.on_error = on_error
        """Told ``(name, error)`` when a tracking batch fails."""
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = False
        self._closed = False

    @property
    def database(self) -> Database:
        """The SQLite file of the events and the read models."""
        return self._db

    @property
    def projections(self) -> dict[str, Projection]:
        """The projections added to this projector, by name."""
        return {name: e.projection for name, e in self._entries.items()}

    # -- adding -------------------------------------------------------------------------

    def add(self, projection: Projection, *, mode: ProjectionMode = "tracking") -> Projection:
        """Add a projection, create its tables (:meth:`Projection.setup`) and its checkpoint.

        A new checkpoint starts at position 0: the projection catches up from the start of
        the log when the projector starts (or at once, if it has started). Returns the
        projection. Raises ``ValueError`` for a name already added, an unknown mode, or a
        table of eventlite's own; ``TypeError`` for a projection that declares no
        ``tables`` and no ``reset``.
        """
        if not isinstance(projection, Projection):
            raise TypeError(f"expected a Projection, got {type(projection).__name__}")
        if mode not in ("inline", "tracking"):
            raise ValueError(f"mode must be 'inline' or 'tracking', got {mode!r}")
        cls = type(projection)
        if not projection.tables and cls.reset is Projection.reset:
            raise TypeError(
                f"{cls.__qualname__} declares no tables and no reset(): a rebuild could not "
                "empty its read model"
            )
        clash = sorted(set(projection.tables) & _reserved_tables())
        if clash:
            raise ValueError(f"{cls.__qualname__}: {clash} are eventlite's own tables")
        if not cls._handlers:
            _log.warning("%r has no @projects handlers", projection)
        self._check_open()
        entry = _Entry(projection, mode)
        with self._lock:
            if entry.name in self._entries:
                raise ValueError(f"a projection named {entry.name!r} was already added")
            with self._db.transaction() as tx:
                projection.setup(tx.sqlite_utils())
                tx.execute(
                    "INSERT INTO projections (name, mode, position, status, updated_at) "
                    "VALUES (?, ?, 0, ?, ?) ON CONFLICT (name) DO UPDATE SET mode = excluded.mode",
                    (entry.name, mode, _LIVE, self.clock.now()),
                )
            self._entries = {**self._entries, entry.name: entry}
            started = self._started
        if started:
            self._launch(entry)
        return projection

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"no projection named {name!r} was added (known: {sorted(self._entries)})"
            ) from None

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Bring inline projections up to date (finishing a rebuild a crash interrupted),
        then start one thread per tracking projection. Idempotent."""
        self._check_open()
        with self._lock:
            if self._started:
                return
            self._started = True
            entries = list(self._entries.values())
        for entry in entries:
            self._launch(entry)

    def _launch(self, entry: _Entry) -> None:
        if entry.mode == "inline":
            self._catch_up(entry)
            return
        thread = threading.Thread(
            target=self._track, args=(entry,), name=f"eventlite-projection-{entry.name}"
        )
        thread.daemon = True
        entry.thread = thread
        thread.start()

    def notify(self) -> None:
        """Wake every tracking thread (call it after a commit)."""
        for entry in self._entries.values():
            entry.wake.set()

    def catch_up(self, name: str | None = None) -> None:
        """Apply, in the calling thread, every event stored so far to the named projection
        (or to every projection); returns when each reflects the head it saw last.

        Deterministic, for tests and scripts; safe beside running tracking threads. Raises
        :class:`ProjectionError` when a handler fails, or when called inside a transaction.
        """
        entries = [self._entry(name)] if name is not None else list(self._entries.values())
        for entry in entries:
            self._catch_up(entry)

    def _catch_up(self, entry: _Entry, progress: Progress | None = None) -> int:
        self._outside_transactions()
        with entry.lock:
            while True:
                position, head, finished = self._step(entry)
                if progress is not None:
                    progress(position, head)
                if finished:
                    return position

    def _track(self, entry: _Entry) -> None:
        failures = 0
        stop = self._stop
        while not stop.is_set():
            entry.wake.clear()
            try:
                with entry.lock:
                    while not stop.is_set() and not self._step(entry)[2]:
                        pass
            except Exception as exc:
                failures += 1
                self._failed(entry, exc)
                pause = min(self.poll_interval * 2 ** min(failures, 30), self.max_backoff)
            else:
                failures = 0
                pause = self.poll_interval
            entry.wake.wait(pause)

    def _failed(self, entry: _Entry, exc: Exception) -> None:
        _log.error("projection %r: batch failed, will retry: %s", entry.name, exc, exc_info=exc)
        try:
            with self._db.transaction() as tx:
                tx.execute(
                    "UPDATE projections SET error = ? WHERE name = ?",
                    (f"{type(exc).__name__}: {exc}", entry.name),
                )
        except Exception:
            _log.exception("projection %r: could not record the failure", entry.name)
        hook = self.on_error
        if hook is not None:
            try:
                hook(entry.name, exc)
            except Exception:
                _log.exception("the projection error hook %r failed", hook)

    # -- applying -----------------------------------------------------------------------

    def _read(
        self,
        conn: sqlite3.Connection,
        entry: _Entry,
        after: int,
        until: int,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        names = entry.type_names(self.codec)
        if not names:
            return []
        try:
            sql = _rows_sql(len(names), entry.wants_envelopes)
            return conn.execute(sql, (after, until, *names, limit)).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading events", self._db.path) from exc

    def _decode(self, rows: list[tuple[Any, ...]]) -> list[_Item]:
        decoder = self.codec.decoder
        decoders: dict[tuple[str, int], Decoder] = {}
        items: list[_Item] = []
        append = items.append
        for row in rows:
            key = (row[1], row[2])
            decode = decoders.get(key)
            if decode is None:
                decode = decoders[key] = decoder(*key)
            append((row[0], decode(row[3], row[0]), row))
        return items

    def _apply(self, entry: _Entry, db: sqlite_utils.Database, items: Sequence[_Item]) -> None:
        projection = entry.projection
        get = entry.routes.get
        route = entry.route
        index = 0
        try:
            for index, (_, message, source) in enumerate(items):  # noqa: B007 (read below)
                cls = type(message)
                handler = get(cls, _UNKNOWN)
                if handler is _UNKNOWN:
                    handler = route(cls)
                if handler is None:
                    continue
                if handler.wants_envelope:
                    env = source if isinstance(source, Envelope) else _envelope(source, message)
                    handler.fn(projection, message, db, envelope=env)
                else:
                    handler.fn(projection, message, db)
        except Exception as exc:
            raise ProjectionError(
                entry.name, f"{type(exc).__name__}: {exc}", items[index][0]
            ) from exc

    def _batch(self, entry: _Entry, tx: Transaction, batches: Sequence[Sequence[_Item]]) -> None:
        projection = entry.projection
        db = tx.sqlite_utils()
        try:
            projection.begin_batch()
        except Exception as exc:
            raise ProjectionError(entry.name, f"begin_batch: {exc}") from exc
        for items in batches:
            self._apply(entry, db, items)
        try:
            projection.end_batch(db)
        except Exception as exc:
            raise ProjectionError(entry.name, f"end_batch: {exc}") from exc

    def _step(self, entry: _Entry) -> tuple[int, int, bool]:
        """Apply the next batch; returns (position, head, whether it is live at the head).

        Far from the head, events are read and decoded before the write transaction, so the
        write lock is held only to apply them; inside it, the checkpoint must still be where
        the batch started (or another writer got there first, and the batch is dropped).
        Within one batch of the head, the batch is read under the lock instead: when that
        read reaches the head, the projection ends the step exactly there and, if it was
        rebuilding, goes live in the same transaction, so no commit can slip between its
        last event and the hand-over. Either way a step holds at most one batch in memory.
        """
        db = self._db
        limit = self.batch_size
        conn = db.read_connection()
        try:
            row = conn.execute(_CHECKPOINT, (entry.name,)).fetchone()
            head = conn.execute(_HEAD).fetchone()[0]
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading a checkpoint", db.path) from exc
        if row is None:
            raise ProjectionError(entry.name, "its checkpoint row is missing (add it again)")
        position, status = row
        if status == _LIVE and position >= head:
            return position, head, True
        near = head - position <= limit
        items: list[_Item] = []
        end = position
        if not near:
            rows = self._read(conn, entry, position, head, limit)
            items = self._decode(rows)
            # A short page saw every matching event up to ``head``.
            end = rows[-1][0] if len(rows) == limit else head
        finished = False
        with db.transaction() as tx:
            current = tx.execute(_CHECKPOINT, (entry.name,)).fetchone()
            if current is None or current[0] != position:
                return (current[0] if current else position), head, False
            head = tx.execute(_HEAD).fetchone()[0]
            if near:
                rows = self._read(tx.conn, entry, position, head, limit)
                items = self._decode(rows)
                finished = len(rows) < limit
                end = head if finished else rows[-1][0]
            self._batch(entry, tx, [items])
            tx.execute(
                "UPDATE projections SET position = ?, status = ?, error = NULL, updated_at = ? "
                "WHERE name = ?",
                (end, _LIVE if finished else status, self.clock.now(), entry.name),
            )
        return end, head, finished

    def hook(self, tx: Transaction | None, recorded: Sequence[Envelope]) -> None:
        """The unit-of-work write hook: apply ``recorded`` to every inline projection
        inside the commit's transaction ``tx``, so they commit or roll back together.

        Events stored since the projection's checkpoint by other means (a plain
        ``store.append``) are applied first, in order. An inline projection that is
        rebuilding is skipped (the rebuild hands over at the head). A handler's failure
        raises :class:`ProjectionError`, failing the commit. Also arranges for tracking
        threads to be woken after the commit.
        """
        entries = self._entries
        if tx is None:
            if any(e.mode == "inline" for e in entries.values()):
                raise ProjectionError(
                    "<inline>", "inline projections need the SQLite store (tx is None)"
                )
            return
        if not recorded:
            return
        first = recorded[0].position
        last = recorded[-1].position
        if first is None or last is None:
            raise ValueError("hook() takes recorded events (with positions)")
        tracking = False
        for entry in entries.values():
            if entry.mode != "inline":
                tracking = True
                continue
            row = tx.execute(_CHECKPOINT, (entry.name,)).fetchone()
            if row is None or row[1] != _LIVE or row[0] >= last:
                continue
            position = row[0]
            while position < first - 1:  # the gap, a batch at a time
                rows = self._read(tx.conn, entry, position, first - 1, self.batch_size)
                self._batch(entry, tx, [self._decode(rows)])
                position = rows[-1][0] if len(rows) == self.batch_size else first - 1
            fresh: list[_Item] = [
                (env.position, env.message, env)
                for env in recorded
                if env.position is not None and env.position > position
            ]
            self._batch(entry, tx, [fresh])
            tx.execute(
                "UPDATE projections SET position = ?, updated_at = ? WHERE name = ?",
                (last, self.clock.now(), entry.name),
            )
        if tracking:
            tx.on_commit(self.notify)

    # -- rebuilding ---------------------------------------------------------------------

    def rebuild(self, name: str, *, progress: Progress | None = None) -> int:
        """Empty the read model of projection ``name`` and replay the log from position 1.

        Other threads and processes may keep appending meanwhile: the replay runs in
        batches, each committed with the checkpoint, and when it reaches the head it hands
        over to live updates in the same transaction as its last events, so none is missed
        and none applied twice. While it runs, the read model is partial: its status says
        ``"rebuilding"``, inline updates wait, and this process's tracking thread pauses.
        ``progress(done, total)`` is called after every batch with the position reached and
        the head (at least once; the last call has ``done == total``). Returns the
        position reached. A crash midway leaves the status ``"rebuilding"``; starting the
        projector again finishes the replay from the last committed batch.
        """
        entry = self._entry(name)
        projection = entry.projection
        self._check_open()
        self._outside_transactions()
        with entry.lock:
            with self._db.transaction() as tx:
                db = tx.sqlite_utils()
                projection.reset(db)
                projection.setup(db)
                now = self.clock.now()
                tx.execute(
                    "UPDATE projections SET position = 0, status = ?, error = NULL, "
                    "updated_at = ?, rebuilt_at = ? WHERE name = ?",
                    (_REBUILDING, now, now, entry.name),
                )
            position = self._catch_up(entry, progress)
        entry.wake.set()
        return position

    # -- reading ------------------------------------------------------------------------

    def reader(self) -> sqlite_utils.Database:
        """A ``sqlite_utils.Database`` over this thread's read connection, for query
        handlers: ``projector.reader()["order_summaries"].get("o-1")``.

        Each statement sees the last commit; inside a transaction of this thread it is that
        transaction's connection.
        """
        import sqlite_utils

        return sqlite_utils.Database(
            self._db.read_connection(), recursive_triggers=False, execute_plugins=False
        )

    def status(self, name: str | None = None) -> list[ProjectionStatus]:
        """The status of projection ``name``, or of every projection in the file (added to
        this projector or not), by name."""
        sql = "SELECT name, mode, position, status, error, updated_at, rebuilt_at FROM projections"
        params: tuple[str, ...] = ()
        if name is not None:
            sql += " WHERE name = ?"
            params = (name,)
        try:
            with self._db.read() as conn:
                head = conn.execute(_HEAD).fetchone()[0]
                rows = conn.execute(sql + " ORDER BY name", params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading projections", self._db.path) from exc
        return [
            ProjectionStatus(
                name=r[0],
                mode=r[1],
                position=r[2],
                head=head,
                state=r[3],
                error=r[4],
                updated_at=to_datetime(r[5]),
                rebuilt_at=None if r[6] is None else to_datetime(r[6]),
            )
            for r in rows
        ]

    # -- life ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ProjectionError("<projector>", "the projector is closed")

    def _outside_transactions(self) -> None:
        # Batches commit on their own; inside the caller's transaction they would not, and
        # a tracking thread waiting for the write lock while holding its projection's lock
        # would deadlock with this thread.
        if self._db.in_transaction():
            raise ProjectionError(
                "<projector>",
                "catch_up, rebuild and start must run outside a database transaction",
            )

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the tracking threads (each finishes its batch) and wait for them;
        idempotent. The database stays open: it belongs to the caller."""
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
        self._stop.set()
        for entry in entries:
            entry.wake.set()
        for entry in entries:
            thread = entry.thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Projector {self._db.path!r} {sorted(self._entries)}>"
