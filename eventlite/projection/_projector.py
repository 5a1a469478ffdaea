"""The projector: runs projections over the log of one storage, inline or tracking."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

import attrs

from ..clock import Clock, SystemClock, to_datetime
from ..codec import Codec
from ..envelope import Envelope
from ..relay import Tenure, live_owners
from ..store.leases import LeaseLost, LeaseStore
from ..store.projections import LIVE, ProjectionRecord
from ..store.storage import Storage, Transaction
from ._projection import Handler, Progress, Projection, ProjectionError, ProjectionMode

__all__ = ["ProjectionStatus", "Projector"]

_log = logging.getLogger("eventlite.projection")

_UNKNOWN: Final[Any] = object()


@attrs.frozen
class ProjectionStatus:
    """Where one projection stands, as :meth:`Projector.status` reads it from the storage."""

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


class _Moved(Exception):
    """The checkpoint moved under a batch (another writer applied it): roll it back."""


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
        self.routes: dict[type[Any], Handler | None] = {}
        self.types: tuple[object, frozenset[str]] = (None, frozenset())
        # Handlers that take the envelope make the projector read whole envelopes; the
        # others need only the messages, a much cheaper read.
        self.wants_envelopes = any(h.wants_envelope for h in type(projection)._handlers.values())

    def route(self, cls: type[Any]) -> Handler | None:
        """The handler of a message class (its own, or its nearest base class's)."""
        try:
            return self.routes[cls]
        except KeyError:
            pass
        handlers = type(self.projection)._handlers
        found = next((handlers[c] for c in cls.__mro__ if c in handlers), None)
        self.routes[cls] = found
        return found

    def type_names(self, codec: Codec) -> frozenset[str]:
        """The registered names of every type this projection handles, subclasses too."""
        registry = codec.registry
        generation = registry._by_name
        if self.types[0] is not generation:
            handled = tuple(type(self.projection)._handlers)
            names = frozenset(e.name for e in generation.values() if issubclass(e.cls, handled))
            self.types = (generation, names)
        return self.types[1]


class Projector:
    """Runs projections over the log of one storage (see :mod:`eventlite.projection`).

    ``storage`` holds the log, the checkpoints and the read models (``app.storage``; a
    backend without projections, such as the in-memory one, raises
    :class:`~eventlite.exceptions.StorageError`); ``codec`` names the registered types a
    projection handles (default: a :class:`Codec` over the default registry: use the
    app's). ``batch_size`` is how many events a tracking thread or a rebuild applies per
    transaction; ``poll_interval`` how often (seconds) tracking threads look for commits
    they were not told about (:meth:`notify` wakes them at once); ``on_error(name,
    error)`` is told when a tracking batch fails (it is logged either way, recorded in the
    status, and retried with a growing pause up to ``max_backoff`` seconds).

    With ``leases`` (the storage's lease store) and ``lease_seconds``, each tracking
    projection is applied by one process at a time, the holder of its lease
    ``projection:<name>`` (renewed every third of that time; ``owner`` names this process,
    as a relay's owner does). Another process's tracking thread stands by, and takes over
    once the lease expires, at once when its holder was a process of this machine that is
    gone. The lease is checked in the transaction that moves the checkpoint, so a paused
    former holder never commits a batch. Inline projections and :meth:`catch_up` need no
    lease (their checkpoint moves by compare-and-set).

    Wiring into an app: create it with the app's storage and codec, add projections,
    :meth:`start` it, run :meth:`hook` in every unit of work
    (``uow.on_commit_write(projector.hook)``), call :meth:`notify` after commits (the hook
    does so for the commits it sees), and :meth:`close` it before the storage.
    """

    def __init__(
        self,
        storage: Storage,
        codec: Codec | None = None,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        max_backoff: float = 30.0,
        clock: Clock | None = None,
        on_error: Callable[[str, BaseException], object] | None = None,
        leases: LeaseStore | None = None,
        lease_seconds: float | None = None,
        owner: str | None = None,
    ) -> None:
        if not isinstance(storage, Storage):
            raise TypeError(
                f"Projector needs a Storage (for example app.storage), got {type(storage).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        self.storage = storage
        """Where the log, the checkpoints and the read models are."""
        self._store = storage.projections
        self._events = storage.events
        self.codec = codec if codec is not None else Codec()
        """The codec whose registry names the types each projection handles."""
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
        if lease_seconds is not None and not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        self.leases = leases if lease_seconds is not None else None
        """Where tracking projections' leases are kept (None: no leases)."""
        self.lease_seconds = lease_seconds
        """How long a tracking projection's lease lasts without renewal."""
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This process's name in the leases."""
        if self.leases is not None:
            live_owners.add(self.owner)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = False
        self._closed = False

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
        clash = sorted(set(projection.tables) & self._store.reserved_tables())
        if clash:
            raise ValueError(f"{cls.__qualname__}: {clash} are eventlite's own tables")
        if not cls._handlers:
            _log.warning("%r has no @projects handlers", projection)
        self._check_open()
        entry = _Entry(projection, mode)
        with self._lock:
            if entry.name in self._entries:
                raise ValueError(f"a projection named {entry.name!r} was already added")
            with self.storage.transaction():
                projection.setup(self._store.read_model())
                self._store.register(entry.name, mode, self.clock.now())
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
        tenure: Tenure | None = None
        if self.leases is not None and self.lease_seconds is not None:
            tenure = Tenure(
                self.leases,
                entry.name,
                self.owner,
                self.lease_seconds,
                lease=f"projection:{entry.name}",
                label="projection",
            )
        while not stop.is_set():
            entry.wake.clear()
            pause = self.poll_interval
            try:
                if tenure is not None and not tenure.hold():
                    # another process applies it: look again in a while
                    entry.wake.wait(min(self.poll_interval, tenure.ttl / 6))
                    continue
                guard = tenure.check if tenure is not None else None
                with entry.lock:
                    while not stop.is_set() and not self._step(entry, guard)[2]:
                        pass
            except LeaseLost as lost:
                assert tenure is not None
                tenure.drop()
                _log.warning(
                    "projection %r: its lease passed to %s; the batch in hand was rolled back",
                    entry.name,
                    lost.holder.owner if lost.holder is not None else "nobody",
                )
            except Exception as exc:
                failures += 1
                self._failed(entry, exc)
                pause = min(self.poll_interval * 2 ** min(failures, 30), self.max_backoff)
            else:
                failures = 0
            entry.wake.wait(pause)
        if tenure is not None:
            try:
                tenure.release()
            except Exception:
                _log.warning("projection %r: could not give its lease back", entry.name)

    def _failed(self, entry: _Entry, exc: Exception) -> None:
        _log.error("projection %r: batch failed, will retry: %s", entry.name, exc, exc_info=exc)
        try:
            self._store.fail(entry.name, f"{type(exc).__name__}: {exc}")
        except Exception:
            _log.exception("projection %r: could not record the failure", entry.name)
        hook = self.on_error
        if hook is not None:
            try:
                hook(entry.name, exc)
            except Exception:
                _log.exception("the projection error hook %r failed", hook)

    # -- applying -----------------------------------------------------------------------

    def _read(self, entry: _Entry, after: int, until: int) -> tuple[list[Any], int, bool]:
        """The next batch of ``entry``'s events above ``after`` and up to ``until``:
        ``(items, end, complete)``, ``end`` being the position the batch brings the
        projection to, ``complete`` whether it reaches ``until``.

        Items are envelopes when a handler of the projection takes them, else
        ``(position, message)`` pairs.
        """
        names = entry.type_names(self.codec)
        if not names:
            return [], until, True
        limit = self.batch_size
        items: list[Any]
        if entry.wants_envelopes:
            items = list(self._events.read_all(after + 1, limit, names))
            last = items[-1].position if items else after
            if last > until:
                items = [env for env in items if env.position <= until]
        else:
            items = self._events.read_messages(after, limit, names)
            last = items[-1][0] if items else after
            if last > until:
                items = [item for item in items if item[0] <= until]
        # A short page saw every matching event up to ``until``, and so did one that went
        # past it; a full page ends at its last event.
        if last > until or len(items) < limit:
            return items, until, True
        return items, last, False

    def _apply(self, entry: _Entry, db: Any, items: Sequence[Any]) -> None:
        projection = entry.projection
        get = entry.routes.get
        route = entry.route
        index = 0
        try:
            if entry.wants_envelopes:
                for index, env in enumerate(items):  # noqa: B007 (read below)
                    message = env.message
                    cls = type(message)
                    handler = get(cls, _UNKNOWN)
                    if handler is _UNKNOWN:
                        handler = route(cls)
                    if handler is None:
                        continue
                    if handler.wants_envelope:
                        handler.fn(projection, message, db, envelope=env)
                    else:
                        handler.fn(projection, message, db)
            else:
                for index, (_, message) in enumerate(items):  # noqa: B007 (read below)
                    cls = type(message)
                    handler = get(cls, _UNKNOWN)
                    if handler is _UNKNOWN:
                        handler = route(cls)
                    if handler is not None:
                        handler.fn(projection, message, db)
        except Exception as exc:
            item = items[index]
            position = item.position if isinstance(item, Envelope) else item[0]
            raise ProjectionError(entry.name, f"{type(exc).__name__}: {exc}", position) from exc

    def _batch(self, entry: _Entry, batches: Sequence[Sequence[Any]]) -> None:
        """Apply ``batches`` in the open transaction, between ``begin_batch`` and
        ``end_batch``, through the read model bound to that transaction."""
        projection = entry.projection
        db = self._store.read_model()
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

    def _step(
        self, entry: _Entry, guard: Callable[[], None] | None = None
    ) -> tuple[int, int, bool]:
        """Apply the next batch; returns (position, head, whether it is live at the head).

        Far from the head, events are read and decoded before the write transaction, so the
        write lock is held only to apply them; inside it, the checkpoint must still be where
        the batch started (or another writer got there first, and the batch is dropped).
        Within one batch of the head, the batch is read under the lock instead: when that
        read reaches the head, the projection ends the step exactly there and, if it was
        rebuilding, goes live in the same transaction, so no commit can slip between its
        last event and the hand-over. Either way a step holds at most one batch in memory.
        """
        store = self._store
        events = self._events
        record = store.get(entry.name)
        if record is None:
            raise ProjectionError(entry.name, "its checkpoint row is missing (add it again)")
        head = events.head_position()
        position = record.position
        if record.state == LIVE and position >= head:
            return position, head, True
        near = head - position <= self.batch_size
        items: list[Any] = []
        end = position
        if not near:
            items, end, _ = self._read(entry, position, head)
        finished = False
        try:
            with self.storage.transaction():
                if entry.mode == "inline":
                    # Appenders apply an inline projection in their own transactions (the
                    # hook), from the checkpoint they read: none may commit while this
                    # batch moves it, nor between the head read below and the hand-over
                    # to live (on SQLite the write transaction shuts them out already).
                    events.lock_log()
                current = store.get(entry.name)
                if current is None or current.position != position:
                    return (current.position if current else position), head, False
                head = events.head_position()
                if near:
                    items, end, finished = self._read(entry, position, head)
                self._batch(entry, [items])
                if guard is not None:
                    guard()  # the lease, in the transaction that moves the checkpoint
                moved = store.advance(
                    entry.name, expected=position, position=end, now=self.clock.now(), live=finished
                )
                if not moved:
                    raise _Moved
        except _Moved:
            return position, head, False
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
        if tx is None or not self.storage.in_transaction():
            if any(e.mode == "inline" for e in entries.values()):
                raise ProjectionError(
                    "<inline>",
                    "inline projections are written in the commit's transaction, which must "
                    f"be one of their own storage ({self.storage.description}: a SQLite "
                    "file or a database); this commit has none of it to join",
                )
            return
        if not recorded:
            return
        first = recorded[0].position
        last = recorded[-1].position
        if first is None or last is None:
            raise ValueError("hook() takes recorded events (with positions)")
        store = self._store
        tracking = False
        for entry in entries.values():
            if entry.mode != "inline":
                tracking = True
                continue
            record = store.get(entry.name)
            if record is None or record.state != LIVE or record.position >= last:
                continue
            position = record.position
            while position < first - 1:  # the gap, a batch at a time
                items, position, _ = self._read(entry, position, first - 1)
                self._batch(entry, [items])
            fresh: list[Any] = [
                env for env in recorded if env.position is not None and env.position > position
            ]
            if not entry.wants_envelopes:
                fresh = [(env.position, env.message) for env in fresh]
            self._batch(entry, [fresh])
            now = self.clock.now()
            if not store.advance(entry.name, expected=record.position, position=last, now=now):
                raise ProjectionError(entry.name, "its checkpoint moved during the commit")
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
            with self.storage.transaction():
                if entry.mode == "inline":
                    self._events.lock_log()  # no hook of a commit meanwhile sees it live
                db = self._store.read_model()
                projection.reset(db)
                projection.setup(db)
                self._store.begin_rebuild(entry.name, self.clock.now())
            position = self._catch_up(entry, progress)
        entry.wake.set()
        return position

    # -- reading ------------------------------------------------------------------------

    def reader(self) -> Any:
        """The storage's read-model helper for query handlers (on SQLite a
        ``sqlite_utils.Database``): ``projector.reader()["order_summaries"].get("o-1")``.

        It sees the last commit; inside a transaction of this thread it is that
        transaction's (see :meth:`ProjectionStore.read_model
        <eventlite.store.projections.ProjectionStore.read_model>`).
        """
        return self._store.read_model()

    def status(self, name: str | None = None) -> list[ProjectionStatus]:
        """The status of projection ``name``, or of every projection in the storage
        (added to this projector or not), by name."""
        store = self._store
        if name is None:
            records = store.list()
        else:
            found = store.get(name)
            records = [] if found is None else [found]
        head = self._events.head_position()  # read after the rows: never below them
        return [_status(r, head) for r in records]

    # -- life ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ProjectionError("<projector>", "the projector is closed")

    def _outside_transactions(self) -> None:
        # Batches commit on their own; inside the caller's transaction they would not, and
        # a tracking thread waiting for the write lock while holding its projection's lock
        # would deadlock with this thread.
        if self.storage.in_transaction():
            raise ProjectionError(
                "<projector>",
                "catch_up, rebuild and start must run outside a database transaction",
            )

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the tracking threads (each finishes its batch) and wait for them;
        idempotent. The storage stays open: it belongs to the caller."""
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
        live_owners.discard(self.owner)  # its leases may be taken over from now on

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Projector {self.storage.description!r} {sorted(self._entries)}>"


def _status(record: ProjectionRecord, head: int) -> ProjectionStatus:
    return ProjectionStatus(
        name=record.name,
        mode=record.mode,
        position=record.position,
        head=head,
        state=record.state,
        error=record.error,
        updated_at=to_datetime(record.updated_at),
        rebuilt_at=None if record.rebuilt_at is None else to_datetime(record.rebuilt_at),
    )
