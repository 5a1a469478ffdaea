"""A test app: the application's real composition root on a fake clock, with a record of
what happened.

:class:`TestApp` builds the :class:`~eventlite.App` (in memory, or on a temporary SQLite
file) with a :class:`RecordingBus` and a :class:`~eventlite.clock.FakeClock`, and records,
as they happen, every command dispatched, every event published or stored, every
subscriber failure, every delayed retry and process timeout scheduled, and every dead
letter::

    with TestApp(build, registry=registry) as t:
        t.dispatch(PlaceOrder("o-1", total=10))
        t.run_until_idle()            # every queue, relay and due retry handled
        assert [OrderPlaced("o-1", 10)] == t.published
        t.advance(60)                 # time passes: due retries and timeouts fire
        assert [] == t.dead_letters
        print("\\n".join(t.trace()))   # the causation tree, the same on every run

``build`` is the application's composition root: a function that returns a wired
``App``. It receives, by parameter name, what it asks for among ``db``, ``registry``,
``bus``, ``clock``, ``metrics`` and ``synchronous``, and must hand ``bus`` and ``clock``
to the ``App`` it makes (``metrics`` too, for delayed retries to be recorded). A
``**options`` parameter receives all of them but ``registry``, so the natural root works
as is::

    def build(db: str | None = None, **options: Any) -> App:
        app = App(db, registry=registry, **options)
        ...
        return app

Without ``build``, a bare ``App`` is made, to be wired through :attr:`TestApp.app`.

:meth:`TestApp.run_until_idle` is :meth:`App.run_until_idle <eventlite.App.run_until_idle>`
(which waits for the bus's workers, every durable subscriber, the delayed retries due by
the clock and the dead letters released for retry, including what that work itself
produces), followed by a look at the store, the dead-letter queue and the process
timeouts for what the live hooks cannot see. Nothing sleeps: time moves only when
:meth:`TestApp.advance` moves the clock.
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import attrs

from ..bus import MessageBus
from ..clock import FakeClock
from ..envelope import Envelope, current_envelope
from ..messages import MessageKind, Registry, default_registry
from ..metrics import DeliveryMetrics

if TYPE_CHECKING:
    from ..app import App
    from ..dlq import DeadLetter

__all__ = ["Record", "RecordingBus", "TestApp"]

DISPATCH: Final = "dispatch"
"""Record kind: a command was dispatched (and reached its handler, or a stub)."""
EVENT: Final = "event"
"""Record kind: an event was stored (and published, when through a unit of work)."""
PUBLISH: Final = "publish"
"""Record kind: an event was published on the bus without being stored."""
FAILURE: Final = "failure"
"""Record kind: a bus subscriber failed after its retries."""
RETRY: Final = "retry"
"""Record kind: a durable subscriber's delayed retry was scheduled."""
DEAD_LETTER: Final = "dead letter"
"""Record kind: an entry was added to the dead-letter queue."""
TIMEOUT: Final = "timeout"
"""Record kind: a process manager scheduled a timeout."""


@attrs.frozen
class Record:
    """One thing that happened in a :class:`TestApp`."""

    kind: str
    """``dispatch``, ``event``, ``publish``, ``failure``, ``retry``, ``dead letter`` or
    ``timeout``."""
    message: Any
    """The command or event concerned (the type name, when it cannot be decoded)."""
    id: str | None
    """The envelope id of the message dispatched, stored or published (what its effects
    name as their cause); None for the other kinds."""
    cause: str | None
    """The envelope id of the message that led to this one, when known."""
    detail: str = ""
    """Where or who: ``Order-o-1 v2`` for a stored event, the subscriber and the error for
    a failure, a retry or a dead letter, the instance and the delay for a timeout."""
    from_test: bool = attrs.field(default=False, eq=False, repr=False)
    """Whether it was recorded in the thread that made the test app (so its order among
    other such records is the test's own)."""
    seq: int = attrs.field(default=0, eq=False, repr=False)
    """Its place among all the records."""
    stream: tuple[str, int] | None = attrs.field(default=None, eq=False, repr=False)
    """``(stream_id, version)`` of a stored event."""

    def line(self) -> str:
        """The record as one line of :meth:`TestApp.trace`: no ids, no times."""
        text = f"{self.kind} {self.message!r}"
        return f"{text} {self.detail}" if self.detail else text


class RecordingBus(MessageBus):
    """A :class:`~eventlite.MessageBus` that tells ``record`` about every command it
    dispatches and every event it publishes, then behaves exactly as the real one.

    With ``stub_commands=True``, a command whose type has no handler is recorded and
    answered with None instead of raising :class:`~eventlite.NoHandlerError`: a test of a
    process manager sees what it dispatches without the handlers of those commands.
    Other keyword arguments are the bus's own.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        record: Callable[[Record], None],
        stub_commands: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(registry, **options)
        self._record = record
        self.stub_commands = stub_commands
        """Whether commands without a handler are recorded and answered with None."""

    def register(
        self, message_type: type[Any], handler: Callable[[Any], Any], *, name: str | None = None
    ) -> None:
        """See :meth:`MessageBus.register`; the handler is wrapped so that each dispatch is
        recorded with its envelope id, in the thread that dispatched it."""
        entry = self.registry.find(message_type)
        if entry is not None and entry.kind is MessageKind.QUERY:
            super().register(message_type, handler, name=name)
            return
        record = self._record

        @functools.wraps(handler)
        def recorded(message: Any) -> Any:
            env = current_envelope()
            record(
                Record(
                    DISPATCH,
                    message,
                    None if env is None else env.id,
                    None if env is None else env.causation_id,
                )
            )
            return handler(message)

        super().register(message_type, recorded, name=name)

    def handlers(self) -> dict[type[Any], Callable[[Any], Any]]:
        """See :meth:`MessageBus.handlers`: the handlers as the app registered them."""
        return {t: getattr(h, "__wrapped__", h) for t, h in super().handlers().items()}

    def dispatch(self, command: Any) -> Any:
        """See :meth:`MessageBus.dispatch`; with ``stub_commands``, a command without a
        handler is recorded and answered with None."""
        if self.stub_commands and type(command) not in super().handlers():
            parent = current_envelope()
            self._record(Record(DISPATCH, command, None, None if parent is None else parent.id))
            return None
        return super().dispatch(command)

    def publish(self, *events: Any, key: Any = None) -> None:
        """See :meth:`MessageBus.publish`; each event is recorded first."""
        envelopes = [Envelope(event, key=key) for event in events]
        for env in envelopes:
            self._record(Record(PUBLISH, env.message, env.id, env.causation_id))
        super().publish_envelopes(*envelopes)

    def publish_envelopes(self, *envelopes: Envelope) -> None:
        """See :meth:`MessageBus.publish_envelopes`; each envelope is recorded first."""
        for env in envelopes:
            self._record(_stored_record(env) if env.stream_id is not None else _published(env))
        super().publish_envelopes(*envelopes)


def _published(env: Envelope) -> Record:
    return Record(PUBLISH, env.message, env.id, env.causation_id)


def _stored_record(env: Envelope) -> Record:
    assert env.stream_id is not None and env.version is not None
    return Record(
        EVENT,
        env.message,
        env.id,
        env.causation_id,
        f"in {env.stream_id} v{env.version}",
        stream=(env.stream_id, env.version),
    )


class _RecordingMetrics(DeliveryMetrics):
    """Durable delivery's hooks: delayed retries are recorded, every hook is passed on."""

    def __init__(self, record: Callable[[Record], None], inner: DeliveryMetrics | None) -> None:
        self._record = record
        self._inner = inner if inner is not None else DeliveryMetrics()

    def handled(self, subscriber: str, envelope: Envelope, seconds: float) -> None:
        """Passed on."""
        self._inner.handled(subscriber, envelope, seconds)

    def failed(
        self, subscriber: str, envelope: Envelope, attempt: int, error: BaseException
    ) -> None:
        """Passed on."""
        self._inner.failed(subscriber, envelope, attempt, error)

    def retry_scheduled(
        self, subscriber: str, envelope: Envelope, retry: int, delay: float
    ) -> None:
        """Recorded (without the delay, which has jitter), and passed on."""
        self._record(
            Record(RETRY, envelope.message, None, envelope.id, f"#{retry} by {subscriber}")
        )
        self._inner.retry_scheduled(subscriber, envelope, retry, delay)

    def dead_lettered(
        self, subscriber: str, position: int | None, error: BaseException | str
    ) -> None:
        """Passed on (the entry itself is read from the dead-letter queue)."""
        self._inner.dead_lettered(subscriber, position, error)

    def parked(self, subscriber: str, position: int | None, key: str) -> None:
        """Passed on."""
        self._inner.parked(subscriber, position, key)

    def lag(self, subscriber: str, lag: int) -> None:
        """Passed on."""
        self._inner.lag(subscriber, lag)


def _call_build(build: Callable[..., App], options: dict[str, Any]) -> App:
    """Call the composition root by the one convention of
    :func:`~eventlite.app.call_app_factory` (the store, when it takes one, and the options
    it names); a ``**options`` parameter gets the App's own options (all but
    ``registry``, which the root chooses, unless it names it)."""
    from ..app import call_app_factory

    params = inspect.signature(build).parameters.values()
    names = {p.name for p in params if p.kind is not p.VAR_KEYWORD}
    rest = {k: v for k, v in options.items() if k != "db"}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        if "registry" not in names:
            del rest["registry"]
        return call_app_factory(build, options["db"], **rest)
    missing = [n for n in ("bus", "clock") if n not in names]
    if missing:
        name = getattr(build, "__qualname__", repr(build))
        raise TypeError(
            f"TestApp: {name}() must take {' and '.join(missing)} and pass them to App(...), "
            "so the test app can record what the bus carries and move the clock (or take "
            "**options and pass them all on)"
        )
    return call_app_factory(build, options["db"], **rest)


def _seconds(amount: float | timedelta) -> float:
    return amount.total_seconds() if isinstance(amount, timedelta) else float(amount)


class TestApp:
    """The application under test, with a fake clock and a record of what happened.

    :param build: the composition root (see the module doc), or None for a bare ``App``.
    :param registry: the registry of the application's messages (default:
        ``eventlite.default_registry``); the recording bus asks it what is a command.
    :param storage: ``"sqlite"`` (the default: a temporary file, removed on
        :meth:`close`, with ``synchronous="normal"``) or ``"memory"``.
    :param path: a SQLite file to use instead of a temporary one.
    :param clock: the :class:`~eventlite.clock.FakeClock` (default: a new one at
        ``eventlite.clock.FAKE_EPOCH``).
    :param metrics: the app's own delivery metrics, still told everything.
    :param stub_commands: record commands that have no handler and answer them with None
        (see :class:`RecordingBus`).
    :param timeout: seconds :meth:`run_until_idle` waits before ``TimeoutError``.

    Raises ``TypeError`` when ``build`` cannot be given the bus and the clock, or makes an
    app without them.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self,
        build: Callable[..., App] | None = None,
        *,
        registry: Registry | None = None,
        storage: str = "sqlite",
        path: str | os.PathLike[str] | None = None,
        clock: FakeClock | None = None,
        metrics: DeliveryMetrics | None = None,
        stub_commands: bool = False,
        timeout: float = 10.0,
    ) -> None:
        if storage not in ("sqlite", "memory"):
            raise ValueError(f"storage must be 'sqlite' or 'memory', got {storage!r}")
        self.registry = registry if registry is not None else default_registry
        """The registry of the application's messages."""
        self.clock = clock if clock is not None else FakeClock()
        """The clock the app reads; :meth:`advance` moves it."""
        self.timeout = timeout
        """Seconds :meth:`run_until_idle` waits."""
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._seen: set[str] = set()
        self._owner = threading.get_ident()
        self._last_position = 0
        self._last_dead_letter = 0
        self._dead_letters: list[DeadLetter] = []
        self._timeouts: set[str] = set()
        self._tmpdir: str | None = None
        db: str | None = None
        if storage == "sqlite":
            if path is None:
                self._tmpdir = tempfile.mkdtemp(prefix="eventlite-test-")
                path = os.path.join(self._tmpdir, "app.db")
            db = os.fspath(path)
        bus = RecordingBus(self.registry, record=self._add, stub_commands=stub_commands)
        options: dict[str, Any] = {
            "db": db,
            "registry": self.registry,
            "bus": bus,
            "clock": self.clock,
            "metrics": _RecordingMetrics(self._add, metrics),
            "synchronous": "normal",
        }
        from ..app import App

        try:
            app = _call_build(build, options) if build is not None else App(**options)
        except BaseException:
            bus.close()
            self._remove_tmpdir()
            raise
        self.app: App = app
        """The application, as the composition root made it."""
        problem = None
        if not isinstance(app, App):
            problem = f"build() returned {type(app).__name__}, not an App"
        elif app.bus is not bus:
            problem = "the app does not use the bus given to build(): pass bus= on to App()"
        elif app.clock is not self.clock:
            problem = "the app does not use the clock given to build(): pass clock= on to App()"
        if problem is not None:
            self.close()
            raise TypeError(f"TestApp: {problem}")
        app.bus.add_error_hook(self._on_error)

    # -- recording --------------------------------------------------------------------

    def _add(self, record: Record) -> None:
        with self._lock:
            if record.id is not None and record.kind in (EVENT, PUBLISH):
                if record.id in self._seen:
                    return
                self._seen.add(record.id)
            self._records.append(
                attrs.evolve(
                    record,
                    from_test=threading.get_ident() == self._owner,
                    seq=len(self._records),
                )
            )

    def _on_error(self, envelope: Envelope, subscriber: str, exc: BaseException) -> None:
        error = f"{type(exc).__qualname__}: {exc}" if str(exc) else type(exc).__qualname__
        self._add(Record(FAILURE, envelope.message, None, envelope.id, f"in {subscriber}: {error}"))

    def _collect(self) -> None:
        """Record what the live hooks do not see: events stored without being published,
        new dead letters, new process timeouts."""
        app = self.app
        for env in app.store.read_all(from_position=self._last_position + 1):
            self._add(_stored_record(env))
            self._last_position = env.position or self._last_position
        if app.database is None:
            return
        codec = app.codec
        for entry in app.dlq.list(limit=None):
            if entry.id <= self._last_dead_letter:
                continue
            self._last_dead_letter = entry.id
            self._dead_letters.append(entry)
            try:
                message: Any = entry.envelope(codec).message
            except Exception:
                message = entry.type_name
            error = entry.error_type or "parked"
            if entry.error_message:
                error += f": {entry.error_message}"
            self._add(
                Record(
                    DEAD_LETTER, message, None, entry.message_id, f"from {entry.source}: {error}"
                )
            )
        processes = getattr(app, "processes", None) if hasattr(type(app), "processes") else None
        if processes is None:
            return
        now = self.clock.now()
        waiting = sorted(
            (t for t in processes.timeouts() if t.id not in self._timeouts),
            key=lambda t: (t.due_at, t.process, t.key, repr(t.message)),
        )
        for t in waiting:
            self._timeouts.add(t.id)
            due = t.due_at.timestamp() - now
            self._add(
                Record(TIMEOUT, t.message, None, None, f"for {t.process}/{t.key} in {due:g}s")
            )

    @property
    def records(self) -> list[Record]:
        """Everything recorded, in the order it was recorded."""
        with self._lock:
            return list(self._records)

    def _of(self, kind: str) -> list[Any]:
        return [r.message for r in self.records if r.kind == kind]

    @property
    def dispatched(self) -> list[Any]:
        """The commands dispatched, in order (those dispatched from different threads may
        interleave differently from run to run; :meth:`trace` does not)."""
        return self._of(DISPATCH)

    @property
    def published(self) -> list[Any]:
        """The events published on the bus or stored, in the order seen."""
        return [r.message for r in self.records if r.kind in (EVENT, PUBLISH)]

    @property
    def failures(self) -> list[Record]:
        """Bus subscribers that failed after their retries (which the bus only logs)."""
        return [r for r in self.records if r.kind == FAILURE]

    @property
    def scheduled(self) -> list[Record]:
        """Delayed retries of durable subscribers, and process managers' timeouts, as they
        were scheduled (a timeout is seen by the :meth:`run_until_idle` after it)."""
        return [r for r in self.records if r.kind in (RETRY, TIMEOUT)]

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """Dead-letter queue entries added since the test app was made, as they were added
        (seen by :meth:`run_until_idle`; kept here after a retry removes them)."""
        with self._lock:
            return list(self._dead_letters)

    def clear(self) -> None:
        """Forget what was recorded so far (what happens next is still linked to it in
        :meth:`trace` only through ids, so its causes show as roots)."""
        with self._lock:
            self._records.clear()
            self._dead_letters.clear()

    def trace(self) -> list[str]:
        """The records as a causation tree, one line each, indented under their cause.

        The same run gives the same lines every time, whatever the threads did: records
        made in the test's own thread keep their order at the top level; stored events
        under one cause come by stream and version; everything else under one cause is
        sorted by its text (with what it caused).
        """
        records = self.records
        known = {r.id for r in records if r.id is not None}
        children: dict[str, list[Record]] = {}
        roots: list[Record] = []
        for r in records:
            if r.cause is not None and r.cause in known and r.cause != r.id:
                children.setdefault(r.cause, []).append(r)
            else:
                roots.append(r)

        @functools.cache
        def render(index: int) -> tuple[str, ...]:
            r = records[index]
            kids = children.get(r.id, []) if r.id is not None else []
            return (r.line(), *("  " + line for line in _ordered(kids)))

        position = {id(r): i for i, r in enumerate(records)}

        def _ordered(group: list[Record]) -> Iterator[str]:
            stored = sorted(
                (r for r in group if r.stream is not None), key=lambda r: r.stream or ("", 0)
            )
            rest = sorted(render(position[id(r)]) for r in group if r.stream is None)
            for r in stored:
                yield from render(position[id(r)])
            for lines in rest:
                yield from lines

        lines: list[str] = []
        ours = [r for r in roots if r.from_test]
        for r in sorted(ours, key=lambda r: r.seq):
            lines.extend(render(position[id(r)]))
        lines.extend(_ordered([r for r in roots if not r.from_test]))
        return lines

    # -- driving ----------------------------------------------------------------------

    def run_until_idle(self, timeout: float | None = None) -> None:
        """Handle everything that is due: the bus's background work, every durable
        subscriber's deliveries, delayed retries and process timeouts due by the clock,
        dead letters released for retry, and what all that produces. Then record what was
        stored, dead-lettered and scheduled. Raises ``TimeoutError`` when ``timeout``
        (default: :attr:`timeout`) seconds pass first."""
        self.app.run_until_idle(self.timeout if timeout is None else timeout)
        self._collect()

    def advance(self, amount: float | timedelta) -> None:
        """Settle what is pending at the current time (:meth:`run_until_idle`), then move
        the clock forward by ``amount`` (seconds or a ``timedelta``) and settle again: a
        timer set by work still pending when ``advance`` is called counts from now, and
        what falls due by the new time (delayed retries, timeouts) is handled."""
        self.run_until_idle()
        self.clock.advance(_seconds(amount))
        self.run_until_idle()

    def dispatch(self, command: Any) -> Any:
        """Dispatch a command on the app and return its result."""
        return self.app.dispatch(command)

    def ask(self, query: Any) -> Any:
        """Ask the app a query."""
        return self.app.ask(query)

    def publish(self, *events: Any) -> None:
        """Publish events on the app's bus without storing them."""
        self.app.publish(*events)

    # -- life -------------------------------------------------------------------------

    def _remove_tmpdir(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def close(self) -> None:
        """Close the app, and remove its temporary file. Idempotent."""
        from ..app import App

        app = getattr(self, "app", None)
        try:
            if isinstance(app, App):
                app.close()
        finally:
            self._remove_tmpdir()

    def __enter__(self) -> TestApp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TestApp {len(self._records)} records, clock {self.clock!r}>"
