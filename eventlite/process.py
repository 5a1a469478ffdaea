"""Process managers: long-running processes driven by events, one instance per key.

A :class:`ProcessManager` is a state machine that lives as long as a business process does
(an order from placement to delivery). Events *start* an instance or are *correlated* to
one by a key read from the event; its handlers change the instance's state, dispatch
commands, and schedule timeouts for what must happen if nothing else does::

    @attrs.define
    class Payment:
        reminded: bool = False

    payments = ProcessManager(
        "payment-follow-up",
        state=Payment,
        correlate={OrderPlaced: lambda e: e.order_id, PaymentTaken: lambda e: e.order_id},
    )

    @payments.starts(OrderPlaced)
    def placed(event: OrderPlaced, process: Process[Payment]) -> None:
        process.schedule(PaymentOverdue(event.order_id), after=timedelta(hours=1), name="due")

    @payments.handles(PaymentOverdue)
    def overdue(event: PaymentOverdue, process: Process[Payment]) -> None:
        process.dispatch(CancelOrder(event.order_id))
        process.complete()

    @payments.handles(PaymentTaken)
    def paid(event: PaymentTaken, process: Process[Payment]) -> None:
        process.complete()           # also cancels the pending "due" timeout

    app.process_manager(payments)

The rules (see ``docs/process-managers.md``):

- A process manager is a durable subscriber of the app's file, named after it, of every
  type it has a handler for: events reach it one at a time, in commit order, at least
  once, also after a crash.
- The instance's state (an attrs class or a dict, stored as JSON), its new and cancelled
  timeouts, the inbox mark of the event and the subscriber's checkpoint are written in one
  transaction. A handler that raises writes none of them; the event is retried per the
  manager's retry policy, then dead-lettered.
- The key is ``correlate[type](event)`` (found along the event class's bases); ``None``
  means the event is not for this manager. A starting event for a key without an instance
  creates one. Any other event for a key without an instance is **ignored** with an INFO
  line on the ``eventlite.process`` logger: it never fails the delivery.
- :meth:`Process.complete` marks the instance ``done`` and cancels its timeouts; later
  events for its key (starting events too) are ignored with an INFO line.
- :meth:`Process.dispatch` runs a command at once on the app's bus, correlated to the
  event being handled. A handling that fails after dispatching is retried, so commands are
  dispatched at least once: make their handlers idempotent.
- :meth:`Process.schedule` stores a timeout row with the state. When the app's clock
  passes its time, the relay thread of the manager records the message in the log as an
  event (stream ``process:<name>/<key>``, in the flow of the event that scheduled it), and
  delivers it to the handler of its type for that instance. A timeout cancelled before its
  message is handled never reaches the handler. Rows survive restarts: a timeout that fell
  due while the process was down fires when it starts again.
"""

from __future__ import annotations

import abc
import builtins
import enum
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast, overload

import attrs

from ._ids import new_id
from .clock import Clock, to_datetime
from .codec import Codec
from .envelope import Envelope, Metadata, current_envelope
from .exceptions import EventliteError, MessageError
from .sqlite._database import Database, Transaction, storage_error, where_equal
from .store.events import EventStore, StreamAppend

if TYPE_CHECKING:
    from .dlq import DeadLetterQueue
    from .unit_of_work import UnitOfWork

__all__ = [
    "HEADER_KEY",
    "HEADER_PROCESS",
    "HEADER_TIMEOUT",
    "Process",
    "ProcessError",
    "ProcessHandler",
    "ProcessInstance",
    "ProcessManager",
    "ProcessNotFound",
    "ProcessRunner",
    "Processes",
    "ProcessStatus",
    "Timeout",
    "timeout_stream",
]

_log = logging.getLogger("eventlite.process")

S = TypeVar("S")
F = TypeVar("F", bound=Callable[..., Any])

HEADER_PROCESS: Final = "eventlite-process"
"""Header of a fired timeout's event: the name of the process manager that scheduled it."""
HEADER_KEY: Final = "eventlite-process-key"
"""Header of a fired timeout's event: the key of its instance."""
HEADER_TIMEOUT: Final = "eventlite-timeout"
"""Header of a fired timeout's event: the timeout's id (also the event's id)."""

_RUNNING: Final = "running"
_DONE: Final = "done"
_FIRE_BATCH: Final = 500
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def timeout_stream(process: str, key: str) -> str:
    """The stream a fired timeout of instance ``key`` of ``process`` is recorded in."""
    return f"process:{process}/{key}"


# -- errors -------------------------------------------------------------------------------


class ProcessError(EventliteError):
    """A process manager cannot be defined, wired or run as asked."""


class ProcessNotFound(ProcessError, LookupError):
    """No instance of this process manager has this key."""

    def __init__(self, process: str, key: str) -> None:
        self.process = process
        self.key = key
        super().__init__(f"process manager {process!r} has no instance with key {key!r}")


# -- records ------------------------------------------------------------------------------


class ProcessStatus(enum.Enum):
    """Where a process-manager instance stands."""

    RUNNING = "running"
    """Reacting to events."""
    DONE = "done"
    """Completed; later events for its key are ignored."""


@attrs.frozen
class ProcessInstance:
    """One instance of a process manager, as stored after its last handling."""

    process: str
    """The process manager's name."""
    key: str
    """The correlation key of the instance."""
    status: ProcessStatus
    """``running`` or ``done``."""
    state: Any
    """The state as the last handling left it (its class, or a dict when the manager is
    not added to the app that reads it)."""
    started_at: datetime
    """When the instance was created (UTC)."""
    updated_at: datetime
    """When it was last stored (UTC)."""
    finished_at: datetime | None
    """When it completed (UTC), or None."""


@attrs.frozen
class Timeout:
    """A timeout waiting in the file: scheduled, or fired and not yet handled."""

    id: str
    """The id :meth:`Process.schedule` returned; also the id of the event it fires as."""
    process: str
    """The process manager that scheduled it."""
    key: str
    """The instance it belongs to."""
    name: str | None
    """The name it was scheduled under, or None."""
    type: str
    """The registered type name of its message."""
    message: Any
    """The message it fires, or None when it cannot be decoded any more."""
    due_at: datetime
    """When it falls due (UTC)."""
    fired: bool
    """True once its message is recorded in the log (waiting to be handled)."""


# -- definitions --------------------------------------------------------------------------

ProcessHandler = Callable[[Any, "Process[Any]"], object]
"""A handler of a process manager: ``handler(event, process)``."""

_Correlate = Callable[[Any], object]


@attrs.frozen
class _Route:
    fn: ProcessHandler
    starts: bool


class ProcessManager(Generic[S]):
    """The definition of a process manager: its name, state class, correlation and handlers.

    :param name: stable across releases: it names the durable subscriber (checkpoint, inbox,
        dead letters) and keys the stored instances.
    :param state: the class of an instance's state: an attrs class whose fields all have
        defaults (stored through the codec's converter; make it mutable, or assign a new
        value to ``process.state``), or ``dict`` (the default; JSON values only).
    :param correlate: for each event class, a function from an event to the key of its
        instance (a ``str``; other values are turned into one with ``str()``), or None when
        the event is not for this manager. A function for a base class serves its
        subclasses too.

    Mark handlers with :meth:`starts` and :meth:`handles`; add the manager to an app with
    ``app.process_manager(manager)``. The definition holds no connection: one definition
    may be added to several apps (one after the other, or in different processes).
    """

    @overload
    def __init__(
        self: ProcessManager[dict[str, Any]],
        name: str,
        *,
        correlate: Mapping[type[Any], _Correlate] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        name: str,
        *,
        state: type[S],
        correlate: Mapping[type[Any], _Correlate] | None = None,
    ) -> None: ...

    def __init__(
        self,
        name: str,
        *,
        state: type[Any] = dict,
        correlate: Mapping[type[Any], _Correlate] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a process manager needs a non-empty name, got {name!r}")
        if state is not dict:
            if not (isinstance(state, type) and attrs.has(state)):
                raise TypeError(
                    f"process manager {name!r}: state must be dict or an attrs class, got {state!r}"
                )
            required = [f.name for f in attrs.fields(state) if f.default is attrs.NOTHING]
            if required:
                raise TypeError(
                    f"process manager {name!r}: every field of {state.__qualname__} needs a "
                    f"default (a new instance starts as {state.__qualname__}()); these have "
                    f"none: {required}"
                )
        correlate = dict(correlate or {})
        for event_type, fn in correlate.items():
            if not isinstance(event_type, type) or not callable(fn):
                raise TypeError(
                    f"process manager {name!r}: correlate maps event classes to functions, "
                    f"got {event_type!r}: {fn!r}"
                )
        self.name = name
        """The stable name."""
        self.state_type: type[Any] = state
        """The class of an instance's state."""
        self._correlate: dict[type[Any], _Correlate] = correlate
        self._routes: dict[type[Any], _Route] = {}
        self._keys: dict[type[Any], _Correlate | None] = {}
        self._found: dict[type[Any], _Route | None] = {}
        self._running = False  # added to an app: its subscription is fixed

    # -- handlers -----------------------------------------------------------------------

    def starts(self, *event_types: type[Any]) -> Callable[[F], F]:
        """Mark ``handler(event, process)`` as the handler of event types that start an
        instance: for a key without one, a new instance (state ``state()``) is created and
        given to the handler; for a running instance the handler runs on it. Each type needs
        a ``correlate`` function."""
        return self._mark(event_types, starts=True)

    def handles(self, *event_types: type[Any]) -> Callable[[F], F]:
        """Mark ``handler(event, process)`` as the handler of event types that continue an
        instance. An event of these types for a key without an instance is ignored (with an
        INFO log line). Types used only as timeout messages need no ``correlate``
        function: a fired timeout carries its instance's key."""
        return self._mark(event_types, starts=False)

    def _mark(self, event_types: Sequence[type[Any]], *, starts: bool) -> Callable[[F], F]:
        if self._running:
            raise ProcessError(
                f"process manager {self.name!r} runs in an app already: its subscription "
                "is fixed, so define every handler before app.process_manager()"
            )
        if not event_types:
            raise TypeError("give at least one event class")
        for t in event_types:
            if not isinstance(t, type):
                raise TypeError(f"process manager {self.name!r}: expected a class, got {t!r}")
            if t in self._routes:
                raise ValueError(
                    f"process manager {self.name!r} already has a handler for {t.__qualname__}"
                )
            if starts and self._key_function(t) is None:
                raise ValueError(
                    f"process manager {self.name!r}: {t.__qualname__} starts instances, so "
                    "it needs a correlate function (correlate={EventType: fn})"
                )

        def mark(handler: F) -> F:
            for t in event_types:
                if t in self._routes:
                    raise ValueError(
                        f"process manager {self.name!r} already has a handler for {t.__qualname__}"
                    )
                self._routes[t] = _Route(handler, starts)
            self._found.clear()
            return handler

        return mark

    def handled_types(self) -> frozenset[type[Any]]:
        """The event classes this manager has a handler for (subclasses are handled too)."""
        return frozenset(self._routes)

    def starting_types(self) -> frozenset[type[Any]]:
        """The event classes whose handler may start an instance."""
        return frozenset(t for t, r in self._routes.items() if r.starts)

    def key_of(self, event: Any) -> str | None:
        """The key of the instance ``event`` belongs to, or None when it is not for this
        manager (no ``correlate`` function for its class, or the function said None)."""
        fn = self._key_function(type(event))
        if fn is None:
            return None
        key = fn(event)
        if key is None:
            return None
        return key if isinstance(key, str) else str(key)

    def _key_function(self, cls: type[Any]) -> _Correlate | None:
        try:
            return self._keys[cls]
        except KeyError:
            pass
        fn = next((self._correlate[c] for c in cls.__mro__ if c in self._correlate), None)
        self._keys[cls] = fn
        return fn

    def _route(self, cls: type[Any]) -> _Route | None:
        try:
            return self._found[cls]
        except KeyError:
            pass
        found = next((self._routes[c] for c in cls.__mro__ if c in self._routes), None)
        self._found[cls] = found
        return found

    # -- state --------------------------------------------------------------------------

    def _new_state(self) -> Any:
        return self.state_type()

    def _dump_state(self, state: Any, codec: Codec) -> str:
        kind = self.state_type
        if not isinstance(state, kind):
            raise TypeError(
                f"process manager {self.name!r}: state must stay a {kind.__qualname__}, got "
                f"{state!r}"
            )
        if kind is dict:
            return _dumps(state)
        return _dumps(codec.converter.unstructure(state))

    def _load_state(self, text: str, codec: Codec) -> Any:
        raw = json.loads(text)
        if self.state_type is dict:
            return raw
        return codec.converter.structure(raw, self.state_type)

    def __repr__(self) -> str:
        return f"<ProcessManager {self.name!r} {sorted(t.__qualname__ for t in self._routes)}>"


# -- the handler's view -------------------------------------------------------------------


@attrs.frozen
class _Scheduled:
    id: str
    name: str | None
    type: str
    version: int
    data: str
    due_at: float
    correlation_id: str
    causation_id: str | None


class Process(Generic[S]):
    """What a process manager's handler receives with the event: one instance.

    Change :attr:`state` (or assign it); call :meth:`dispatch`, :meth:`schedule`,
    :meth:`cancel` and :meth:`complete`. State, timeouts and completion are stored when the
    handler returns, with the event's inbox mark; if the handler raises, none of it is.
    """

    __slots__ = (
        "_changes",
        "_clock",
        "_codec",
        "_dispatch",
        "_done",
        "_manager",
        "envelope",
        "is_new",
        "key",
        "name",
        "state",
    )

    def __init__(
        self,
        manager: ProcessManager[Any],
        key: str,
        state: S,
        *,
        is_new: bool,
        envelope: Envelope | None,
        dispatch: Callable[[Any], Any],
        clock: Clock,
        codec: Codec,
    ) -> None:
        self.name = manager.name
        """The process manager's name."""
        self.key = key
        """The instance's correlation key."""
        self.state: S = state
        """The instance's state: change it, or assign a new value of the same class."""
        self.is_new = is_new
        """True when this event created the instance."""
        self.envelope = envelope
        """The envelope of the event being handled."""
        self._manager = manager
        self._dispatch = dispatch
        self._clock = clock
        self._codec = codec
        self._changes: list[_Scheduled | str] = []
        self._done = False

    @property
    def done(self) -> bool:
        """Whether :meth:`complete` was called in this handling."""
        return self._done

    def dispatch(self, command: Any) -> Any:
        """Run ``command``'s handler now, on the app's bus, correlated to the event being
        handled; returns its result and lets its exception through (which fails this
        handling: nothing is stored and the event is retried)."""
        return self._dispatch(command)

    def schedule(self, message: Any, *, after: timedelta | float, name: str | None = None) -> str:
        """Deliver ``message`` (a registered message, typically an event such as
        ``PaymentOverdue``) to this instance once ``after`` (a ``timedelta`` or seconds,
        ``>= 0``) has passed on the app's clock; returns the timeout's id.

        A ``name`` lets :meth:`cancel` find it by name; scheduling under a name that has a
        timeout waiting replaces that one. Raises ``ValueError`` for a negative delay or a
        message this manager has no handler for, and
        :class:`~eventlite.exceptions.MessageError` for one the codec cannot store.
        """
        seconds = after.total_seconds() if isinstance(after, timedelta) else after
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"after must be a timedelta or seconds >= 0, got {after!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"a timeout's name must be a non-empty str or None, got {name!r}")
        if self._manager._route(type(message)) is None:
            raise ValueError(
                f"process manager {self.name!r} has no handler for {type(message).__qualname__}"
                ": a timeout is delivered to the handler of its message's class"
            )
        entry = self._codec.message_type(message)
        data = self._codec.encode(message)
        timeout_id = new_id()
        env = self.envelope
        self._changes.append(
            _Scheduled(
                id=timeout_id,
                name=name,
                type=entry.name,
                version=entry.version,
                data=data,
                due_at=self._clock.now() + float(seconds),
                correlation_id=env.correlation_id if env is not None else timeout_id,
                causation_id=env.id if env is not None else None,
            )
        )
        return timeout_id

    def cancel(self, timeout: str) -> None:
        """Cancel a timeout of this instance: ``timeout`` is the id :meth:`schedule`
        returned or the name it was given. A timeout cancelled before its message is handled
        never reaches the handler; cancelling one that is gone does nothing."""
        if not isinstance(timeout, str) or not timeout:
            raise ValueError(f"cancel takes a timeout id or name, got {timeout!r}")
        self._changes.append(timeout)

    def complete(self) -> None:
        """Mark the instance done (stored with this handling) and cancel its timeouts; later
        events for its key are ignored."""
        self._done = True

    def __repr__(self) -> str:
        return f"<Process {self.name} {self.key!r}{' done' if self._done else ''}>"


# -- running and reading ------------------------------------------------------------------

_INSTANCE_COLUMNS = "process, key, status, state, started_at, updated_at, finished_at"
_TIMEOUT_COLUMNS = "id, process, key, name, type, schema_version, data, due_at, fired_at"


class Processes:
    """The process managers of one SQLite file: runs them and reads their instances.

    ``app.processes`` is the app's; ``app.process_manager(manager)`` adds one (the app
    makes a :class:`ProcessRunner` with :meth:`runner` and gives it to its relay). Reading
    works for every manager stored in the file; the state of an instance comes back as its
    class when its manager was added here, else as a dict. Every method may be called from
    any thread.
    """

    def __init__(self, database: Database, codec: Codec, *, clock: Clock) -> None:
        self.database = database
        """The SQLite file holding ``process_instances`` and ``process_timeouts``."""
        self.codec = codec
        """Encodes states and timeout messages."""
        self.clock = clock
        """Decides when timeouts are due and dates the instances."""
        self._managers: dict[str, ProcessManager[Any]] = {}

    @property
    def managers(self) -> dict[str, ProcessManager[Any]]:
        """The process managers added here, by name."""
        return dict(self._managers)

    def runner(
        self,
        manager: ProcessManager[Any],
        *,
        store: EventStore,
        dispatch: Callable[[Any], Any],
        dlq: DeadLetterQueue | None,
        alarm: Callable[[float], object],
    ) -> ProcessRunner:
        """Register ``manager`` and make the runner its durable subscriber calls.

        ``store`` records fired timeouts (it must write to this file), ``dispatch`` runs the
        commands handlers dispatch, ``dlq`` takes timeouts whose message can no longer be
        decoded, ``alarm(when)`` asks for a wake-up of the subscriber at a clock time.
        Raises ``ValueError`` for a manager without a starting handler or a name added
        already, ``TypeError`` for something that is not a :class:`ProcessManager`.
        """
        if not isinstance(manager, ProcessManager):
            raise TypeError(f"expected a ProcessManager, got {type(manager).__name__}")
        if not manager.starting_types():
            raise ValueError(
                f"process manager {manager.name!r} has no @starts handler: nothing would ever "
                "create an instance"
            )
        if getattr(store, "database", None) is not self.database:
            raise ValueError("the store must write to the same SQLite file as the processes")
        if manager.name in self._managers:
            raise ValueError(f"a process manager named {manager.name!r} was already added")
        self._managers = {**self._managers, manager.name: manager}
        manager._running = True
        return ProcessRunner(self, manager, store=store, dispatch=dispatch, dlq=dlq, alarm=alarm)

    # -- reading ------------------------------------------------------------------------

    def get(self, process: str, key: str) -> ProcessInstance:
        """The stored instance ``key`` of process manager ``process``; raises
        :class:`ProcessNotFound`."""
        try:
            row = (
                self.database.read_connection()
                .execute(
                    f"SELECT {_INSTANCE_COLUMNS} FROM process_instances "
                    "WHERE process = ? AND key = ?",
                    (process, key),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading a process instance", self.database.path) from exc
        if row is None:
            raise ProcessNotFound(process, key)
        return self._instance(row)

    def find(self, process: str, key: str) -> ProcessInstance | None:
        """The stored instance, or None."""
        try:
            return self.get(process, key)
        except ProcessNotFound:
            return None

    def list(
        self,
        process: str | None = None,
        *,
        status: ProcessStatus | str | None = None,
        limit: int | None = None,
    ) -> builtins.list[ProcessInstance]:
        """Stored instances, oldest first, optionally of one manager and one status."""
        where, params = where_equal(
            process=process, status=None if status is None else ProcessStatus(status).value
        )
        sql = f"SELECT {_INSTANCE_COLUMNS} FROM process_instances{where}"
        sql += " ORDER BY started_at, process, key LIMIT ?"
        params.append(-1 if limit is None else limit)
        try:
            rows = self.database.read_connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "listing process instances", self.database.path) from exc
        return [self._instance(r) for r in rows]

    def timeouts(
        self, process: str | None = None, key: str | None = None
    ) -> builtins.list[Timeout]:
        """The timeouts waiting (scheduled, or fired and not yet handled), earliest first,
        optionally of one manager and one instance."""
        where, params = where_equal(process=process, key=key)
        sql = f"SELECT {_TIMEOUT_COLUMNS} FROM process_timeouts{where}"
        try:
            rows = (
                self.database.read_connection()
                .execute(sql + " ORDER BY due_at, id", params)
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "listing timeouts", self.database.path) from exc
        out = []
        for tid, proc, k, name, type_name, version, data, due_at, fired_at in rows:
            try:
                message = self.codec.decode(type_name, data, version=version)
            except MessageError:
                message = None
            out.append(
                Timeout(
                    id=tid,
                    process=proc,
                    key=k,
                    name=name,
                    type=type_name,
                    message=message,
                    due_at=to_datetime(due_at),
                    fired=fired_at is not None,
                )
            )
        return out

    def cancel(self, timeout_id: str) -> bool:
        """Cancel a waiting timeout by id, from outside its process manager's handlers;
        returns whether one was waiting. Its message never reaches the handler."""
        with self.database.transaction() as tx:
            cursor = tx.execute("DELETE FROM process_timeouts WHERE id = ?", (timeout_id,))
            return cursor.rowcount == 1

    def _instance(self, row: Sequence[Any]) -> ProcessInstance:
        process, key, status, text, started, updated, finished = row
        manager = self._managers.get(process)
        state = manager._load_state(text, self.codec) if manager else json.loads(text)
        return ProcessInstance(
            process=process,
            key=key,
            status=ProcessStatus(status),
            state=state,
            started_at=to_datetime(started),
            updated_at=to_datetime(updated),
            finished_at=None if finished is None else to_datetime(finished),
        )

    def __repr__(self) -> str:
        return f"<Processes {self.database.path!r} {sorted(self._managers)}>"


class ProcessRunner:
    """Runs one process manager for its durable subscriber (made by :meth:`Processes.runner`).

    :meth:`handle` is the subscriber's handler (it takes the unit of work its state is
    written through); :meth:`fire_due` is the relay's ``on_pass`` hook, run in the same
    thread, so events and timeouts of the manager are handled one at a time.
    """

    def __init__(
        self,
        processes: Processes,
        manager: ProcessManager[Any],
        *,
        store: EventStore,
        dispatch: Callable[[Any], Any],
        dlq: DeadLetterQueue | None,
        alarm: Callable[[float], object],
    ) -> None:
        self.manager = manager
        """The definition this runner runs."""
        self._processes = processes
        self._db = processes.database
        self._codec = processes.codec
        self._clock = processes.clock
        self._store = store
        self._dispatch = dispatch
        self._dlq = dlq
        self._alarm = alarm
        self.event_type: type[Any] = _any_of(manager.name, manager.handled_types())
        """A class that every handled event class (and subclass) counts as a subclass of:
        what the durable subscriber subscribes to."""

    # -- events -------------------------------------------------------------------------

    def handle(self, message: Any, uow: UnitOfWork) -> None:
        """Handle one delivered event: find or create its instance, run the handler, and
        write the state, timeouts and completion through ``uow`` (whose commit also carries
        the inbox mark). Events that are not for an instance are ignored, with a log line."""
        manager = self.manager
        name = manager.name
        env = current_envelope()
        target = self._target(message, env)
        if target is None:
            return
        key, timeout_id = target
        route = manager._route(type(message))
        if route is None:  # pragma: no cover - the subscription has only handled types
            return
        stored = self._stored(key)
        if stored is None:
            if not route.starts or timeout_id is not None:
                _log.info(
                    "process manager %s: %s for key %r, which has no instance and does not "
                    "start one; ignored",
                    name,
                    type(message).__qualname__,
                    key,
                )
                return
            state, revision = manager._new_state(), 0
        else:
            status, text, revision = stored
            if status == _DONE:
                _log.info(
                    "process manager %s: instance %r is done; %s ignored",
                    name,
                    key,
                    type(message).__qualname__,
                )
                return
            state = manager._load_state(text, self._codec)
        process: Process[Any] = Process(
            manager,
            key,
            state,
            is_new=revision == 0,
            envelope=env,
            dispatch=self._dispatch,
            clock=self._clock,
            codec=self._codec,
        )
        route.fn(message, process)
        text = manager._dump_state(process.state, self._codec)  # a bad state fails here

        def write(tx: Transaction | None, _events: Sequence[Envelope]) -> None:
            assert tx is not None  # process managers need the SQLite file
            self._write(tx, process, text, revision, timeout_id)

        uow.on_commit_write(write)

    def _target(self, message: Any, env: Envelope | None) -> tuple[str, str | None] | None:
        """(key, timeout id) of the instance a delivered message is for: a fired timeout of
        this manager names both in its headers, any other event is correlated (timeout id
        None). None, logged, when it is for no instance: a cancelled timeout, no key."""
        name = self.manager.name
        headers = env.metadata.headers if env is not None else {}
        timeout_id, key = headers.get(HEADER_TIMEOUT), headers.get(HEADER_KEY)
        if headers.get(HEADER_PROCESS) == name and timeout_id is not None and key is not None:
            if self._waiting(timeout_id):
                return key, timeout_id
            _log.info(
                "process manager %s: timeout %s (%s) of %r was cancelled; not handled",
                name,
                timeout_id,
                type(message).__qualname__,
                key,
            )
            return None
        key = self.manager.key_of(message)
        if key is None:
            _log.debug(
                "process manager %s: %s has no key for it; ignored",
                name,
                type(message).__qualname__,
            )
            return None
        return key, None

    def _stored(self, key: str) -> tuple[str, str, int] | None:
        try:
            row = (
                self._db.read_connection()
                .execute(
                    "SELECT status, state, revision FROM process_instances "
                    "WHERE process = ? AND key = ?",
                    (self.manager.name, key),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading a process instance", self._db.path) from exc
        return None if row is None else (row[0], row[1], row[2])

    def _waiting(self, timeout_id: str) -> bool:
        try:
            row = (
                self._db.read_connection()
                .execute("SELECT 1 FROM process_timeouts WHERE id = ?", (timeout_id,))
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading a timeout", self._db.path) from exc
        return row is not None

    def _write(
        self,
        tx: Transaction,
        process: Process[Any],
        text: str,
        revision: int,
        timeout_id: str | None,
    ) -> None:
        name, key = self.manager.name, process.key
        now = self._clock.now()
        if timeout_id is not None:
            gone = tx.execute("DELETE FROM process_timeouts WHERE id = ?", (timeout_id,))
            if gone.rowcount != 1:
                raise ProcessError(
                    f"process manager {name!r}: timeout {timeout_id} of {key!r} was cancelled "
                    "while it was being handled"
                )
        status = _DONE if process.done else _RUNNING
        finished = now if process.done else None
        if revision == 0:
            cursor = tx.execute(
                "INSERT INTO process_instances (process, key, status, state, revision, "
                "started_at, updated_at, finished_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?) "
                "ON CONFLICT (process, key) DO NOTHING",
                (name, key, status, text, now, now, finished),
            )
        else:
            cursor = tx.execute(
                "UPDATE process_instances SET status = ?, state = ?, revision = revision + 1, "
                "updated_at = ?, finished_at = ? WHERE process = ? AND key = ? AND revision = ?",
                (status, text, now, finished, name, key, revision),
            )
        if cursor.rowcount != 1:
            raise ProcessError(
                f"process manager {name!r}: instance {key!r} changed while this event was "
                f"handled (expected revision {revision}); is the manager running in two "
                "processes?"
            )
        if process.done:
            tx.execute("DELETE FROM process_timeouts WHERE process = ? AND key = ?", (name, key))
            return
        earliest: float | None = None
        for change in process._changes:
            if isinstance(change, str):
                tx.execute(
                    "DELETE FROM process_timeouts WHERE process = ? AND key = ? "
                    "AND (id = ? OR name = ?)",
                    (name, key, change, change),
                )
                continue
            if change.name is not None:
                tx.execute(
                    "DELETE FROM process_timeouts WHERE process = ? AND key = ? AND name = ?",
                    (name, key, change.name),
                )
            tx.execute(
                "INSERT INTO process_timeouts (id, process, key, name, type, schema_version, "
                "data, correlation_id, causation_id, due_at, fired_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (
                    change.id,
                    name,
                    key,
                    change.name,
                    change.type,
                    change.version,
                    change.data,
                    change.correlation_id,
                    change.causation_id,
                    change.due_at,
                    now,
                ),
            )
            earliest = change.due_at if earliest is None else min(earliest, change.due_at)
        if earliest is not None:
            due = earliest
            tx.on_commit(lambda: self._wake_at(due))

    # -- timeouts -----------------------------------------------------------------------

    def fire_due(self) -> bool:
        """Record the message of every timeout due by the clock in the log (the subscriber
        then delivers it); returns whether any was due. The relay calls it on every pass."""
        name = self.manager.name
        now = self._clock.now()
        try:
            rows = (
                self._db.read_connection()
                .execute(
                    "SELECT id, key, type, schema_version, data, correlation_id, causation_id "
                    "FROM process_timeouts WHERE process = ? AND fired_at IS NULL "
                    "AND due_at <= ? ORDER BY due_at, id LIMIT ?",
                    (name, now, _FIRE_BATCH),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading due timeouts", self._db.path) from exc
        if not rows:
            return False
        with self._db.transaction() as tx:
            appends: list[StreamAppend] = []
            for tid, key, type_name, version, data, correlation, causation in rows:
                claimed = tx.execute(
                    "UPDATE process_timeouts SET fired_at = ? WHERE id = ? AND fired_at IS NULL",
                    (now, tid),
                )
                if claimed.rowcount != 1:
                    continue  # cancelled, or fired by another process meanwhile
                try:
                    message = self._codec.decode(type_name, data, version=version)
                except MessageError as exc:
                    self._undecodable(tx, tid, key, type_name, data, exc)
                    continue
                headers = {HEADER_PROCESS: name, HEADER_KEY: key, HEADER_TIMEOUT: tid}
                env = Envelope(
                    message,
                    id=tid,
                    metadata=Metadata(correlation, causation, headers=headers),
                )
                appends.append(StreamAppend(timeout_stream(name, key), [env]))
            if appends:
                self._store.append_many(appends)
        self.wake_at_next()
        return True

    def _undecodable(
        self, tx: Transaction, tid: str, key: str, type_name: str, data: str, why: MessageError
    ) -> None:
        """A timeout whose message no longer decodes (its class was renamed or removed):
        dead-letter it raw and drop the row, so the other timeouts still fire. Without a
        DLQ the row stays, marked fired, for :meth:`Processes.timeouts` to show."""
        raw = _dumps({"timeout": tid, "key": key, "type": type_name, "data": data})
        if self._dlq is not None:
            self._dlq.add(
                self.manager.name,
                raw,
                key=None,
                error=why,
                attempts=1,
                type_name=type_name,
                message_id=tid,
            )
            tx.execute("DELETE FROM process_timeouts WHERE id = ?", (tid,))
        _log.error(
            "process manager %s: timeout %s (%s) of %r cannot be decoded (%s)%s",
            self.manager.name,
            tid,
            type_name,
            key,
            why,
            "; dead-lettered" if self._dlq is not None else "",
        )

    def next_due(self) -> float | None:
        """The clock time of the earliest timeout not yet fired, or None."""
        try:
            row = (
                self._db.read_connection()
                .execute(
                    "SELECT min(due_at) FROM process_timeouts "
                    "WHERE process = ? AND fired_at IS NULL",
                    (self.manager.name,),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading timeouts", self._db.path) from exc
        return None if row[0] is None else float(row[0])

    def wake_at_next(self) -> None:
        """Ask for a wake-up when the earliest waiting timeout falls due (after a restart,
        after firing)."""
        due = self.next_due()
        if due is not None:
            self._wake_at(due)

    def _wake_at(self, when: float) -> None:
        try:
            self._alarm(when)
        except RuntimeError:  # the scheduler closed with the app: the row stays for next time
            _log.debug("process manager %s: no alarm set, the scheduler is closed", self.manager)

    def __repr__(self) -> str:
        return f"<ProcessRunner {self.manager.name!r}>"


def _any_of(name: str, types: Iterable[type[Any]]) -> type[Any]:
    """An abstract class that the given classes are registered with, so ``issubclass`` and
    ``isinstance`` accept them and their subclasses: one durable subscription for several
    unrelated event classes."""
    marker = abc.ABCMeta(f"{name} events", (abc.ABC,), {"__module__": __name__})
    for t in types:
        marker.register(t)
    return cast("type[Any]", marker)
