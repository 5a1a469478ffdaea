"""The durable runner: streams over the log of a storage, exactly-once inside the store.

A :class:`StreamRunner` runs :class:`~eventlite.streams.Stream` pipelines the way a
projector runs tracking projections: one thread per stream follows the log after the
stream's checkpoint, in large batches. For each batch it runs the stream's
:class:`~eventlite.streams.StreamEngine`, then writes, in **one** ``storage.transaction()``:

- the events the stream appends (``to_events``, side outputs), each with an id derived
  from the stream, the input position and its index, so a re-run or a rebuild never
  appends one twice;
- the read-model rows it upserts or deletes (``to_table``);
- the input events it refuses (late events under ``late="dead_letter"``, events a
  function of the pipeline failed on, stored events that cannot be decoded) into the
  dead-letter queue, under the source ``stream:<name>``;
- the state entries the batch changed and the checkpoint (the entry
  ``("$stream", "position")`` and the stream's status row), moved by compare-and-set;
- a check that this process still holds the stream's lease.

Killed at any point, a stream restarts from its last committed batch and produces
exactly what an uninterrupted run would have: no window lost, none emitted twice, no
event appended twice. Time comes from the events, never from the clock.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeGuard

import attrs

from ..clock import Clock, SystemClock, to_datetime
from ..codec import Codec
from ..dlq import DeadLetterQueue
from ..envelope import Envelope
from ..exceptions import (
    EventliteError,
    MessageDecodeError,
    StorageError,
    UnknownMessageType,
)
from ..store.dead_letters import safe_text
from ..store.events import DuplicateEventError, LogRecord
from ..store.leases import Lease, LeaseLost, LeaseStore
from ..store.storage import Storage
from ..store.streams import REBUILDING, StreamProgress, StreamRecord, StreamStateStore
from . import _writes
from ._time import FOREVER, from_us
from .engine import StreamEngine, StreamError
from .outputs import AppendEvent, DeadLetterEvent, DeleteRow, Output, UpsertRow
from .pipeline import Stream
from .state import StateKey, StreamState
from .tables import Table

__all__ = [
    "DEAD_LETTER_PREFIX",
    "LateEvent",
    "Progress",
    "StreamRunStatus",
    "StreamRunner",
    "dead_letter_source",
    "stream_status",
]

_log = logging.getLogger("eventlite.streams")

DEAD_LETTER_PREFIX = "stream:"
"""The dead letters of stream ``name`` come from the source ``"stream:" + name``."""

Progress = Callable[[int, int], object]
"""``progress(done, total)``: told the position a rebuild reached and the head."""

_MAX_ERROR = 2000


def dead_letter_source(name: str) -> str:
    """The dead-letter source of stream ``name``: ``"stream:" + name``."""
    return DEAD_LETTER_PREFIX + name


class LateEvent(EventliteError):
    """The error a late event is dead-lettered with (``late="dead_letter"``): it came more
    than the allowed lateness behind its operator's watermark."""


@attrs.frozen
class StreamRunStatus:
    """Where one durable stream stands, as :meth:`StreamRunner.status` reads it."""

    name: str
    """The stream's name."""
    position: int
    """Its checkpoint: the last log position processed."""
    head: int
    """The store's last position when this status was read."""
    state: str
    """``"live"``, or ``"rebuilding"`` while a rebuild replays the log."""
    watermarks: Mapping[str, datetime | None]
    """Each source's watermark (None before its first event)."""
    open: Mapping[str, int]
    """Each stateful operator's open windows or buffered values."""
    late: Mapping[str, int]
    """Each stateful operator's late events counted so far."""
    error: str | None
    """The last failure of its thread, cleared by the next batch that commits."""
    updated_at: datetime
    """When its checkpoint last moved (UTC)."""
    rebuilt_at: datetime | None
    """When the last rebuild started (UTC), or None."""

    @property
    def lag(self) -> int:
        """How many positions the stream is behind the log."""
        return max(self.head - self.position, 0)

    @property
    def watermark(self) -> datetime | None:
        """The least watermark of its sources: no window ending before it is still open
        (None while a source has seen nothing)."""
        marks = list(self.watermarks.values())
        if not marks or any(m is None for m in marks):
            return None
        return min(m for m in marks if m is not None)


def _status(record: StreamRecord, head: int) -> StreamRunStatus:
    return StreamRunStatus(
        name=record.name,
        position=record.position,
        head=head,
        state=record.state,
        watermarks={s: _wm_datetime(us) for s, us in record.watermarks.items()},
        open=dict(record.open),
        late=dict(record.late),
        error=record.error,
        updated_at=to_datetime(record.updated_at),
        rebuilt_at=None if record.rebuilt_at is None else to_datetime(record.rebuilt_at),
    )


def _wm_datetime(us: int | None) -> datetime | None:
    if us is None:
        return None
    if us >= FOREVER:
        return datetime.max.replace(tzinfo=from_us(0).tzinfo)
    return from_us(us)


def stream_status(storage: Storage, name: str | None = None) -> list[StreamRunStatus]:
    """The status of stream ``name``, or of every stream the storage holds, by name: what
    :meth:`StreamRunner.status` and ``python -m eventlite streams`` show. Needs no
    runner: it reads the storage only."""
    store = storage.streams
    if name is None:
        records = store.list()
    else:
        found = store.get(name)
        records = [] if found is None else [found]
    head = storage.events.head_position()  # read after the rows: never below them
    return [_status(r, head) for r in records]


class _StoredState(StreamState):
    """A stream's :class:`StreamState` over a :class:`StreamStateStore`: reads go to the
    store (the engine reads only when it is built), writes wait for the runner to save
    them with its batch."""

    def __init__(self, store: StreamStateStore, name: str) -> None:
        self._store = store
        self._name = name
        self._pending: dict[StateKey, Any | None] = {}

    def get(self, operator: str, key: str) -> Any | None:
        """See :meth:`StreamState.get`."""
        address = (operator, key)
        if address in self._pending:
            return self._pending[address]
        return self._store.entry(self._name, operator, key)

    def put(self, operator: str, key: str, value: Any) -> None:
        """See :meth:`StreamState.put`."""
        if value is None:
            raise ValueError(f"state entry {operator!r}/{key!r}: None means deleted")
        self._pending[(operator, key)] = value

    def delete(self, operator: str, key: str) -> None:
        """See :meth:`StreamState.delete`."""
        self._pending[(operator, key)] = None

    def scan(self, operator: str) -> Iterator[tuple[str, Any]]:
        """See :meth:`StreamState.scan`."""
        found = dict(self._store.entries(self._name, operator))
        for (op, key), value in self._pending.items():
            if op == operator:
                found[key] = value
        for key in sorted(found):
            value = found[key]
            if value is not None:
                yield key, value

    def changes(self) -> Mapping[StateKey, Any | None]:
        """See :meth:`StreamState.changes` (the mapping stays valid after a flush)."""
        return self._pending

    def flush(self) -> None:
        """See :meth:`StreamState.flush`: the runner has saved the changes."""
        self._pending = {}


Item = Envelope | tuple[int, Any]
"""An input as the runner reads it: an envelope, or ``(position, message)`` for a stream
whose engine needs no envelopes."""


class _Moved(Exception):
    """The checkpoint moved under a batch (another writer saved first): roll it back."""


class _NotOwner(Exception):
    """Another process holds the stream's lease."""

    def __init__(self, holder: Lease | None) -> None:
        super().__init__(holder)
        self.holder = holder


class _Step(NamedTuple):
    position: int
    """Where the stream is after the step."""
    head: int
    """The head seen by the step."""
    finished: bool
    """Whether it is live at that head."""
    appended: int
    """How many events the step appended to the log."""


class _Entry:
    """A stream as one runner runs it."""

    __slots__ = (
        "dead",
        "engine",
        "lease",
        "light",
        "lock",
        "name",
        "rebuilding",
        "renew_at",
        "stream",
        "tables",
        "thread",
        "types",
        "wake",
    )

    def __init__(self, stream: Stream, tables: Mapping[str, Table]) -> None:
        self.stream = stream
        self.name = stream.name
        self.tables = dict(tables)
        # Held while a batch is computed and written: the thread takes it per round, a
        # rebuild or a catch-up in another thread for its whole length.
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        # The engine, its state as of the last commit; None: build it from the store.
        self.engine: StreamEngine | None = None
        self.rebuilding = False
        # Whether the engine takes (position, message) pairs instead of envelopes.
        self.light = False
        # While rebuilding: ids of the inputs already in the dead-letter queue.
        self.dead: set[str] | None = None
        self.lease: Lease | None = None
        self.renew_at = 0.0
        self.types: tuple[object, frozenset[str]] = (None, frozenset())

    def type_names(self, codec: Codec) -> frozenset[str]:
        """The registered names of every type its sources read (subclasses and
        punctuation markers included)."""
        registry = codec.registry
        generation = registry._by_name
        if self.types[0] is not generation:
            wanted: list[type[Any]] = []
            for source in self.stream._sources:
                wanted.extend(source.types)
                marker = getattr(source.watermark, "marker", None)
                if isinstance(marker, type):
                    wanted.append(marker)
            read = tuple(wanted)
            names = frozenset(e.name for e in generation.values() if issubclass(e.cls, read))
            self.types = (generation, names)
        return self.types[1]


class StreamRunner:
    """Runs streams over the log of one storage, durably (see the module doc).

    ``storage`` holds the log, the streams' state (``storage.streams``), the read models
    and the dead letters (``app.storage``; a backend without stream state, such as the
    in-memory one, raises :class:`~eventlite.exceptions.StorageError`). ``codec`` reads the
    events and the messages kept in state (default: over the default registry: give the
    app's); ``dlq`` receives the refused inputs (default: one over ``storage``).

    ``batch_size`` is how many input events a batch reads (and commits) at most;
    ``poll_interval`` how often (seconds) threads look for commits they were not told
    about (:meth:`notify`, and commits through ``storage``, wake them at once);
    ``on_error(name, error)`` is told when a batch fails (it is logged either way, recorded
    in the status, and retried with a growing pause up to ``max_backoff`` seconds).
    ``lease_ttl`` is how long (seconds) a process keeps a stream's lease without renewing
    it: when a process dies, another one takes its streams over after that; ``owner``
    names this runner in the leases (default: host, process id and a random part).
    ``clock`` dates the status rows, nothing else. ``batch_size``, ``poll_interval``,
    ``lease_ttl`` and ``owner`` are also attributes, which an app's runner
    (``app.streams``) may have set before its streams are added.
    """

    def __init__(
        self,
        storage: Storage,
        codec: Codec | None = None,
        *,
        dlq: DeadLetterQueue | None = None,
        batch_size: int = 10_000,
        poll_interval: float = 1.0,
        max_backoff: float = 30.0,
        lease_ttl: float = 30.0,
        owner: str | None = None,
        clock: Clock | None = None,
        on_error: Callable[[str, BaseException], object] | None = None,
    ) -> None:
        if not isinstance(storage, Storage):
            raise TypeError(
                "StreamRunner needs a Storage (for example app.storage), got "
                f"{type(storage).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be > 0, got {lease_ttl!r}")
        self.storage = storage
        """Where the log, the streams' state and their outputs are."""
        self._store = storage.streams
        self._events = storage.events
        self._leases = _leases(storage)
        self.codec = codec if codec is not None else Codec()
        """Decodes the log and the messages kept in state."""
        self._dlq = dlq
        self.batch_size = batch_size
        """Input events per batch (and per transaction)."""
        self.poll_interval = poll_interval
        """Seconds between a thread's looks for commits it was not told about."""
        self.max_backoff = max_backoff
        """The longest pause (seconds) before a failing batch is tried again."""
        self.lease_ttl = lease_ttl
        """Seconds a stream's lease lasts without renewal."""
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This runner's name in the leases."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """Dates the status rows."""
        self.on_error = on_error
        """Told ``(name, error)`` when a batch fails."""
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = False
        self._closed = False
        self._unwatch: Callable[[], None] | None = None
        self._appended = 0
        self._count_lock = threading.Lock()

    @property
    def appended(self) -> int:
        """How many events this runner's streams have appended to the log so far (by
        their threads or by :meth:`catch_up`): it grows whenever their outputs may give
        other followers of the log work."""
        return self._appended

    @property
    def streams(self) -> dict[str, Stream]:
        """The streams added to this runner, by name."""
        return {name: e.stream for name, e in self._entries.items()}

    @property
    def dlq(self) -> DeadLetterQueue:
        """Where refused inputs go (made over the storage on first use)."""
        if self._dlq is None:
            self._dlq = DeadLetterQueue(self.storage, self.codec, clock=self.clock)
        return self._dlq

    # -- adding -------------------------------------------------------------------------

    def add(self, stream: Stream, *, tables: Mapping[str, Table] | None = None) -> Stream:
        """Add a stream and register its state; it runs from where its checkpoint is (the
        start of the log for a new one) once the runner has started, at once if it has.

        ``tables`` are the keyed tables its ``join_table`` steps look values up in.
        Returns the stream, which can no longer change. Raises ``ValueError`` for a name
        already added, a stream its engine refuses (no source, no sink, a missing table),
        or a ``to_table`` naming one of eventlite's own tables.
        """
        if not isinstance(stream, Stream):
            raise TypeError(f"expected a Stream, got {type(stream).__name__}")
        self._check_open()
        entry = _Entry(stream, tables or {})
        # Building an engine checks the pipeline (and freezes it) before anything is stored.
        blank = StreamEngine(stream, _NoState(), codec=self.codec, tables=entry.tables)
        written = stream.tables()
        if written:
            clash = sorted(set(written) & _reserved_tables(self.storage))
            if clash:
                raise ValueError(
                    f"stream {stream.name!r} writes {clash}, which are eventlite's own tables"
                )
        with self._lock:
            if entry.name in self._entries:
                raise ValueError(f"a stream named {entry.name!r} was already added")
            now = self.clock.now()
            record = self._store.register(entry.name, now)
            if not (record.watermarks or record.open or record.late):
                # A new stream: its status names its sources and operators from the start.
                summary = StreamProgress(record.position, *blank._progress())
                self._store.save(entry.name, {}, summary, expected=record.position, now=now)
            self._entries = {**self._entries, entry.name: entry}
            started = self._started
        if started:
            self._launch(entry)
        return stream

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"no stream named {name!r} was added (known: {sorted(self._entries)})"
            ) from None

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Start one thread per stream (and per stream added later). Idempotent."""
        self._check_open()
        with self._lock:
            if self._started:
                return
            self._started = True
            entries = list(self._entries.values())
        self.storage.on_every_commit(self._committed)
        if self.storage.log_notifications:
            self._unwatch = self.storage.watch_log(self.notify)
        for entry in entries:
            self._launch(entry)

    def _launch(self, entry: _Entry) -> None:
        thread = threading.Thread(
            target=self._track, args=(entry,), name=f"eventlite-stream-{entry.name}"
        )
        thread.daemon = True
        entry.thread = thread
        thread.start()

    def _committed(self) -> None:
        if not self._closed:
            self.notify()

    def notify(self) -> None:
        """Wake every stream's thread (call it after a commit of another storage object)."""
        for entry in self._entries.values():
            entry.wake.set()

    def catch_up(self, name: str | None = None) -> int:
        """Process, in the calling thread, every event stored so far with the named stream
        (or every stream); returns how many events they appended to the log.

        Deterministic, for tests and scripts; safe beside the running threads. A stream
        whose lease another process holds is left to that process. Raises
        :class:`StreamError` when called inside a transaction, and what a batch raises
        (a storage failure).
        """
        self._outside_transactions()
        entries = [self._entry(name)] if name is not None else list(self._entries.values())
        appended = 0
        for entry in entries:
            try:
                appended += self._catch_up(entry)[1]
            except _NotOwner:
                continue
        return appended

    def _catch_up(self, entry: _Entry, progress: Progress | None = None) -> tuple[int, int]:
        appended = 0
        with entry.lock:
            while True:
                step = self._step(entry)
                appended += step.appended
                if progress is not None:
                    progress(step.position, step.head)
                if step.finished:
                    return step.position, appended

    def _track(self, entry: _Entry) -> None:
        failures = 0
        stop = self._stop
        while not stop.is_set():
            entry.wake.clear()
            try:
                with entry.lock:
                    while not stop.is_set() and not self._step(entry).finished:
                        pass
            except _NotOwner:
                failures = 0
                pause = min(self.poll_interval, self.lease_ttl / 3)
            except Exception as exc:
                failures += 1
                self._failed(entry, exc)
                pause = min(self.poll_interval * 2 ** min(failures, 30), self.max_backoff)
            else:
                failures = 0
                pause = min(self.poll_interval, self.lease_ttl / 3)
            entry.wake.wait(pause)

    def _failed(self, entry: _Entry, exc: Exception) -> None:
        _log.error("stream %r: batch failed, will retry: %s", entry.name, exc, exc_info=exc)
        try:
            self._store.fail(entry.name, safe_text(f"{type(exc).__name__}: {exc}", _MAX_ERROR))
        except Exception:
            _log.exception("stream %r: could not record the failure", entry.name)
        hook = self.on_error
        if hook is not None:
            try:
                hook(entry.name, exc)
            except Exception:
                _log.exception("the stream error hook %r failed", hook)

    # -- leases -------------------------------------------------------------------------

    def _hold(self, entry: _Entry) -> None:
        """Make sure this runner holds the stream's lease (taking or renewing it); a new
        tenure reloads the state, which another process may have moved. Raises
        :class:`_NotOwner` while another process holds it."""
        leases = self._leases
        if leases is None:
            return
        now = time.monotonic()
        lease = entry.lease
        if lease is not None and now < entry.renew_at:
            return
        name = _lease_name(entry.name)
        if lease is not None:
            try:
                entry.lease = leases.renew(name, self.owner, lease.generation, self.lease_ttl)
                entry.renew_at = now + self.lease_ttl / 3
                return
            except LeaseLost:
                entry.lease = None
                entry.engine = None
        got = leases.acquire(name, self.owner, self.lease_ttl)
        if got is None:
            entry.engine = None
            raise _NotOwner(leases.holder(name))
        if lease is None or got.generation != lease.generation:
            entry.engine = None
        entry.lease = got
        entry.renew_at = now + self.lease_ttl / 3

    def _check_lease(self, entry: _Entry) -> None:
        leases = self._leases
        lease = entry.lease
        if leases is not None and lease is not None:
            leases.check(lease.name, lease.owner, lease.generation)

    def _release(self, entry: _Entry) -> None:
        leases = self._leases
        lease = entry.lease
        entry.lease = None
        if leases is not None and lease is not None:
            try:
                leases.release(lease.name, lease.owner, lease.generation)
            except Exception:
                _log.exception("stream %r: could not release its lease", entry.name)

    # -- processing ---------------------------------------------------------------------

    def _engine(self, entry: _Entry) -> StreamEngine:
        """The stream's engine, built from the committed state when there is none."""
        engine = entry.engine
        if engine is not None:
            return engine
        record = self._store.get(entry.name)
        if record is None:
            record = self._store.register(entry.name, self.clock.now())
        engine = StreamEngine(
            entry.stream,
            _StoredState(self._store, entry.name),
            codec=self.codec,
            tables=entry.tables,
        )
        if engine.position != record.position:
            raise StreamError(
                entry.name,
                f"its state is at position {engine.position} but its checkpoint at "
                f"{record.position}: the store was changed behind the runner's back",
            )
        entry.rebuilding = record.state == REBUILDING
        entry.light = not engine.reads_envelopes
        entry.dead = self._dead_ids(entry.name) if entry.rebuilding else None
        entry.engine = engine
        return engine

    def _dead_ids(self, name: str) -> set[str]:
        try:
            found = self.dlq.list(dead_letter_source(name), limit=None)
        except StorageError:
            return set()
        return {d.message_id for d in found if d.message_id is not None}

    def _read(
        self, entry: _Entry, after: int, until: int
    ) -> tuple[list[Item], int, bool, tuple[LogRecord, Exception] | None]:
        """The next batch above ``after`` and up to ``until``: ``(items, end, complete,
        bad)``; ``end`` is the position the batch brings the stream to, ``complete``
        whether it reaches ``until``, ``bad`` a record that cannot be decoded (the batch
        ends there) and why.

        Items are ``(position, message)`` pairs when the engine needs no envelopes (the
        cheaper read), else envelopes. The store decodes the whole batch at once; only
        when that meets a record it cannot decode is the batch read again record by
        record (as envelopes), to keep what comes before it and name it.
        """
        names = entry.type_names(self.codec)
        if not names:
            return [], until, True, None
        limit = self.batch_size
        events = self._events
        items: list[Item]
        try:
            if entry.light:
                items = list(events.read_messages(after, limit, names))
            else:
                items = list(events.read_all(after + 1, limit, names))
        except (MessageDecodeError, UnknownMessageType):
            items = []
            end = after
            for record in events.read_records(after, limit, names):
                if record.position > until:
                    break
                try:
                    items.append(events.decode(record))
                except (MessageDecodeError, UnknownMessageType) as exc:
                    return items, record.position, False, (record, exc)
                end = record.position
            return items, end, False, None
        last = _position(items[-1]) if items else after
        if last > until:
            items = [item for item in items if _position(item) <= until]
        # A short page saw every matching event up to ``until``, and so did one that went
        # past it; a full page ends at its last event.
        if last > until or len(items) < limit:
            return items, until, True, None
        return items, last, False, None

    def _step(self, entry: _Entry) -> _Step:
        """Process the next batch and commit it; returns where the stream is."""
        self._hold(entry)
        engine = self._engine(entry)
        position = engine.position
        head = self._events.head_position()
        if position >= head and not entry.rebuilding:
            return _Step(position, head, True, 0)
        items, end, complete, bad = self._read(entry, position, head)
        failed: list[tuple[Item | LogRecord, BaseException]] = []
        try:
            outputs = self._run(engine, items)
        except StreamError:
            entry.engine = None
            engine, outputs, failure = self._isolate(entry, items)
            if failure is not None:
                failed.append(failure)
                end, complete, bad = _position(failure[0]), False, None
        if bad is not None:
            failed.append(bad)
        engine.skip(end)
        live = complete and entry.rebuilding
        try:
            appended = self._commit(entry, engine, items, outputs, failed, position, end, live)
        except _Moved:
            # Another writer saved first: drop this batch and continue from its state.
            entry.engine = None
            return _Step(position, head, False, 0)
        except LeaseLost as exc:
            # Another process took the stream over meanwhile: its commits win.
            entry.engine = None
            entry.lease = None
            raise _NotOwner(exc.holder) from None
        except BaseException:
            entry.engine = None
            raise
        engine.state.flush()
        if appended:
            with self._count_lock:
                self._appended += appended
        if live:
            entry.rebuilding = False
            entry.dead = None
        # What it appended moved the head: look once more, so the checkpoint passes it.
        return _Step(end, head, complete and not appended, appended)

    def _run(self, engine: StreamEngine, items: Sequence[Item]) -> list[Output]:
        """Process ``items``, and check that the store can take every output: an event
        the codec cannot encode, or a row the read model cannot store, raises
        :class:`StreamError` at the input that made it, as a failing function does."""
        if items and type(items[0]) is tuple:
            outputs = engine.process_messages(items).outputs  # type: ignore[arg-type]
        else:
            outputs = engine.process(items).outputs  # type: ignore[arg-type]
        encode = self.codec.encode
        name = engine.stream.name
        for out in outputs:
            kind = type(out)
            problem: str | None = None
            cause: BaseException | None = None
            if kind is UpsertRow or kind is DeleteRow:
                problem = _writes.row_problem(out)  # type: ignore[arg-type]
                if problem is not None:
                    problem = f"a row for {out.table!r} cannot be stored: {problem}"  # type: ignore[union-attr]
                    cause = TypeError(problem)
            elif kind is AppendEvent:
                try:
                    encode(out.message).encode("utf-8")  # type: ignore[union-attr]
                except Exception as exc:
                    problem = f"its event cannot be stored: {type(exc).__name__}: {exc}"
                    cause = exc
            if problem is not None:
                raise StreamError(name, problem, out.position) from cause
        return outputs

    def _isolate(
        self, entry: _Entry, items: Sequence[Item]
    ) -> tuple[StreamEngine, list[Output], tuple[Item, BaseException] | None]:
        """A function of the pipeline failed somewhere in ``items`` (or left a value its
        state cannot keep): find the first event it fails on by running them one at a
        time from the committed state, then process what comes before that one. Returns
        the engine, the outputs of those events, and the failing event with its error."""
        engine = self._engine(entry)
        for index, item in enumerate(items):
            try:
                self._run(engine, [item])
            except StreamError as exc:
                error = exc.__cause__ if exc.__cause__ is not None else exc
                _log.warning(
                    "stream %r: the event at position %s failed and goes to the "
                    "dead-letter queue: %s",
                    entry.name,
                    _position(item),
                    exc,
                )
                entry.engine = None
                engine = self._engine(entry)  # the committed state again
                outputs = self._run(engine, items[:index])
                return engine, outputs, (item, error)
        # It went through this time (a function that fails now and then): start over.
        entry.engine = None
        engine = self._engine(entry)
        return engine, self._run(engine, items), None

    def _commit(
        self,
        entry: _Entry,
        engine: StreamEngine,
        items: Sequence[Item],
        outputs: Sequence[Output],
        failed: Sequence[tuple[Item | LogRecord, BaseException]],
        expected: int,
        end: int,
        live: bool,
    ) -> int:
        """Write a batch in one transaction; returns how many events it appended."""
        appends: list[AppendEvent] = []
        rows: list[UpsertRow | DeleteRow] = []
        refused: list[DeadLetterEvent] = []
        for out in outputs:
            if type(out) is UpsertRow or type(out) is DeleteRow:
                rows.append(out)
            elif type(out) is AppendEvent:
                appends.append(out)
            else:
                assert isinstance(out, DeadLetterEvent)
                refused.append(out)
        watermarks, open_, late = engine._progress()
        progress = StreamProgress(engine.position, watermarks, open_, late)
        # The inputs whose envelopes the writes need: the metadata of appended events, the
        # dead letters (pairs read without envelopes are read again, whole).
        wanted = {a.position if a.position is not None else end for a in appends}
        wanted.update(what[0] for what, _ in failed if _is_pair(what))
        inputs = self._envelopes(items, wanted)
        storage = self.storage
        appended = 0
        with storage.transaction():
            self._check_lease(entry)
            if appends:
                parts = _writes.output_envelopes(
                    entry.name, appends, inputs, dead_letter_source(entry.name), end
                )
                appended = self._append(parts)
            for table, (pk, deletes, upserts) in _writes.row_writes(rows):
                self._store.write_rows(table, pk, upserts, deletes)
            for dead in refused:
                self._dead_letter(entry, dead.envelope, LateEvent(dead.reason))
            for what, error in failed:
                if _is_pair(what):
                    position = what[0]
                    what = inputs.get(position) or self._events.record_at(position) or what
                self._dead_letter(entry, what, error)  # type: ignore[arg-type]
            saved = self._store.save(
                entry.name,
                engine.state.changes(),
                progress,
                expected=expected,
                now=self.clock.now(),
                live=live,
            )
            if not saved:
                raise _Moved
        return appended

    def _envelopes(self, items: Sequence[Item], wanted: set[int]) -> dict[int, Envelope]:
        """The envelopes of the inputs at ``wanted`` positions: taken from ``items`` when
        they are envelopes, else read from the log (those that decode)."""
        if not wanted:
            return {}
        if items and type(items[0]) is not tuple:
            return {_position(e): e for e in items if _position(e) in wanted}  # type: ignore[misc]
        events = self._events
        low, high = min(wanted), max(wanted)
        found: dict[int, Envelope] = {}
        for record in events.read_records(low - 1, high - low + 1):
            if record.position in wanted:
                try:
                    found[record.position] = events.decode(record)
                except (MessageDecodeError, UnknownMessageType):
                    continue
        return found

    def _append(self, parts: list[tuple[str, list[Envelope]]]) -> int:
        """Append the events; one already in the log (same id: a rebuild making it again)
        is skipped. Returns how many were appended."""
        events = self._events
        try:
            events.append_many(parts)
        except DuplicateEventError:
            appended = 0
            for stream_id, envelopes in parts:
                for env in envelopes:
                    try:
                        with self.storage.transaction():
                            events.append(stream_id, [env])
                    except DuplicateEventError:
                        continue
                    appended += 1
            return appended
        return sum(len(envelopes) for _, envelopes in parts)

    def _dead_letter(self, entry: _Entry, what: Envelope | LogRecord, error: BaseException) -> None:
        source = dead_letter_source(entry.name)
        dead = entry.dead
        if dead is not None and what.id in dead:
            return  # a rebuild meeting an input the queue already holds
        if isinstance(what, LogRecord):
            self.dlq.add(
                source,
                what.raw(),
                key=None,
                error=error,
                attempts=1,
                position=what.position,
                type_name=what.type,
                message_id=what.id,
            )
        else:
            self.dlq.add(source, what, key=None, error=error, attempts=1)
        if dead is not None:
            dead.add(what.id)

    # -- rebuilding ---------------------------------------------------------------------

    def rebuild(self, name: str, *, progress: Progress | None = None) -> int:
        """Empty stream ``name``'s state and the rows of the tables it writes, and replay
        the log from position 1.

        Other threads and processes may keep appending meanwhile: the replay runs in
        batches, each committed with the checkpoint, and goes live when it reaches the
        head. Events the stream appended before are not appended again (their ids are
        derived from the inputs that made them), and inputs the dead-letter queue
        already holds for the stream are not added again. ``progress(done, total)`` is
        called after every batch with the position reached and the head. Returns the
        position reached. A crash midway leaves the status ``"rebuilding"``; the stream
        finishes the replay from its last committed batch when it runs again.

        Raises :class:`StreamError` when another process holds the stream's lease.
        """
        entry = self._entry(name)
        self._check_open()
        self._outside_transactions()
        with entry.lock:
            try:
                self._hold(entry)
            except _NotOwner as exc:
                holder = repr(exc.holder.owner) if exc.holder is not None else "another runner"
                raise StreamError(name, f"cannot rebuild: {holder} runs it") from None
            with self.storage.transaction():
                self._check_lease(entry)
                self._store.reset(name, self.clock.now())
                self._store.clear_tables(entry.stream.tables())
            entry.engine = None
            position = self._catch_up(entry, progress)[0]
        entry.wake.set()
        return position

    def _finish(self, name: str) -> None:
        """Catch stream ``name`` up, then end its input: every watermark passes all time,
        every window closes and its results are written (for tests and scenarios: a live
        stream never finishes, and events processed after this are late)."""
        entry = self._entry(name)
        self._outside_transactions()
        with entry.lock:
            self._catch_up(entry)
            engine = self._engine(entry)
            outputs = engine.finish().outputs
            position = engine.position
            try:
                appended = self._commit(entry, engine, [], outputs, [], position, position, False)
            except BaseException:
                entry.engine = None
                raise
            engine.state.flush()
            with self._count_lock:
                self._appended += appended

    # -- reading ------------------------------------------------------------------------

    def status(self, name: str | None = None) -> list[StreamRunStatus]:
        """The status of stream ``name``, or of every stream in the storage (added to this
        runner or not), by name."""
        return stream_status(self.storage, name)

    # -- life ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StreamError("<runner>", "the stream runner is closed")

    def _outside_transactions(self) -> None:
        # Batches commit on their own; inside the caller's transaction they would not, and
        # a thread waiting for the write lock while holding its stream's lock would
        # deadlock with this one.
        if self.storage.in_transaction():
            raise StreamError(
                "<runner>", "catch_up and rebuild must run outside a database transaction"
            )

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the threads (each finishes its batch), wait for them and release the
        leases; idempotent. The storage stays open: it belongs to the caller."""
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
        self._stop.set()
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        for entry in entries:
            entry.wake.set()
        for entry in entries:
            thread = entry.thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
        for entry in entries:
            if not entry.lock.acquire(timeout=-1 if timeout is None else timeout):
                _log.error("stream %r: its batch did not end in time", entry.name)
                continue
            try:
                self._release(entry)
                entry.engine = None
            finally:
                entry.lock.release()

    def __enter__(self) -> StreamRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StreamRunner {self.storage.description!r} {sorted(self._entries)}>"


class _NoState(StreamState):
    """A state that holds nothing: for checking a pipeline by building an engine."""

    def get(self, operator: str, key: str) -> Any | None:
        return None

    def put(self, operator: str, key: str, value: Any) -> None:
        pass

    def delete(self, operator: str, key: str) -> None:
        pass

    def scan(self, operator: str) -> Iterator[tuple[str, Any]]:
        return iter(())

    def changes(self) -> Mapping[StateKey, Any | None]:
        return {}

    def flush(self) -> None:
        pass


def _is_pair(item: object) -> TypeGuard[tuple[int, Any]]:
    """Whether an input was read as ``(position, message)`` (not an envelope, nor a
    record, though a record is a tuple too)."""
    return type(item) is tuple


def _position(item: Item) -> int:
    if not isinstance(item, Envelope):
        return int(item[0])
    position = item.position
    assert position is not None, "events read from the log have positions"
    return position


def _lease_name(name: str) -> str:
    return f"stream:{name}"


def _reserved_tables(storage: Storage) -> frozenset[str]:
    """The backend's own tables, which no stream may write."""
    try:
        return storage.projections.reserved_tables()
    except StorageError:
        return frozenset()


def _leases(storage: Storage) -> LeaseStore | None:
    try:
        return storage.leases
    except StorageError:
        return None
