"""The in-memory message bus: commands, queries and events inside one process.

- A command (``PlaceOrder``) or a query (``GetOrder``) has exactly one handler, run in the
  caller's thread by :meth:`MessageBus.dispatch` or :meth:`MessageBus.ask`, which return its
  result and let its exception through unchanged.
- An event (``OrderPlaced``) has zero or many subscribers. :meth:`MessageBus.publish` runs
  the synchronous ones in the caller's thread, in the order they subscribed, and queues the
  background ones on a pool of worker threads. A subscriber of a base class also receives
  its subclasses.

Every message travels in an :class:`~eventlite.envelope.Envelope`, made when it is
dispatched or published and made current while its handler runs, so the messages a handler
sends are correlated to it (see :func:`~eventlite.envelope.current_envelope`).

One subscriber's failure never stops the others and is never silently dropped: the
subscriber is retried per its :class:`~eventlite.retry.RetryPolicy` (immediate attempts),
then the failure is logged on the ``eventlite.bus`` logger and passed to every error hook
as ``hook(envelope, subscriber_name, exception)``.

Background delivery keeps order per key: events with the same ordering key (the key given
to ``publish``, else the stored event's stream id) go to the same worker thread, so each
subscriber sees them in publish order; events with different keys run in parallel. Each
worker's queue is bounded, and ``publish`` waits while the queue it needs is full.

Registration is copy-on-write: registering, subscribing and unsubscribing replace immutable
tables under a lock, so ``dispatch``, ``ask`` and ``publish`` never take a lock (a background
delivery takes its worker queue's lock, briefly).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

import attrs

from . import _ids
from .envelope import Envelope, _current, _fast_envelope, _new_obj, _time_ns
from .exceptions import BusClosed, HandlerAlreadyRegistered, NoHandlerError
from .messages import MessageKind, Registry, default_registry
from .middleware import CallNext, Middleware
from .retry import RetryPolicy

__all__ = ["ErrorHook", "MessageBus", "Subscription", "WorkerStats"]


class ErrorHook(Protocol):
    """A function ``hook(envelope, subscriber_name, exception)``, told of every subscriber
    failure that retries did not cure. For background subscribers it runs on the worker
    thread; a hook that raises is logged and skipped."""

    def __call__(
        self, envelope: Envelope, subscriber_name: str, exception: BaseException, /
    ) -> object: ...


_H = TypeVar("_H", bound=Callable[..., Any])
_Handler = Callable[[Any], Any]
# A subscriber as the bus calls it: its composed chain, and the subscription it belongs to.
_Pair = tuple[_Handler, "Subscription"]
# For one concrete event class: its synchronous and its background subscribers, in order.
_Plan = tuple[tuple[_Pair, ...], tuple[_Pair, ...]]

_log = logging.getLogger("eventlite.bus")
_set = _current.set
_reset = _current.reset
# Only called while the bus has made an envelope current, so never None there.
_current_get = cast(Callable[[], Envelope], _current.get)
_current_get_or_none = _current.get
# The envelope module's id counter; next() on it is cheaper than its bound __next__.
_seq_counter = _ids._counter
_get_ident = threading.get_ident

_OPEN, _CLOSING, _CLOSED = "open", "closing", "closed"


def _name_of(handler: Callable[..., Any]) -> str:
    qualname = getattr(handler, "__qualname__", None)
    if qualname is None:
        return repr(handler)
    module = getattr(handler, "__module__", None)
    return f"{module}.{qualname}" if module else str(qualname)


class _Terminal:
    """The end of a middleware chain: calls the handler with the message."""

    __slots__ = ("_handler", "handler_name")

    def __init__(self, handler: _Handler, name: str) -> None:
        self._handler = handler
        self.handler_name = name

    def __call__(self, envelope: Envelope) -> Any:
        if envelope is _current_get():
            return self._handler(envelope._message)
        # A middleware passed on a different envelope: the handler sees that one as current.
        token = _set(envelope)
        try:
            return self._handler(envelope._message)
        finally:
            _reset(token)


class _Link:
    """One middleware with the rest of the chain bound to it."""

    __slots__ = ("_middleware", "_next", "handler_name")

    def __init__(self, middleware: Middleware, rest: CallNext, name: str) -> None:
        self._middleware = middleware
        self._next = rest
        self.handler_name = name

    def __call__(self, envelope: Envelope) -> Any:
        return self._middleware(envelope, self._next)


def _compose(handler: _Handler, name: str, middleware: tuple[Middleware, ...]) -> _Handler:
    """The callable the bus runs for a handler: ``call(message) -> result``."""
    if not middleware:
        return handler
    chain: CallNext = _Terminal(handler, name)
    for mw in reversed(middleware):
        chain = _Link(mw, chain, name)

    def run_chain(message: Any) -> Any:
        return chain(_current_get())

    return run_chain


def _with_retry(call: _Handler, name: str, attempts: int) -> _Handler:
    def retrying(message: Any) -> Any:
        for attempt in range(1, attempts):
            try:
                return call(message)
            except Exception as exc:
                env = _current_get()
                _log.warning(
                    "subscriber %s failed attempt %d of %d on %s %s (%s: %s); trying again",
                    name,
                    attempt,
                    attempts,
                    env.type,
                    env.id,
                    type(exc).__name__,
                    exc,
                )
        return call(message)

    return retrying


class Subscription:
    """One subscriber of one event type, as returned by :meth:`MessageBus.subscribe`.

    Call :meth:`unsubscribe` to stop deliveries. Treat the attributes as read-only.
    """

    __slots__ = (
        "event_type",
        "handler",
        "name",
        "background",
        "retry",
        "_bus",
        "_seq",
        "_call",
        "_active",
    )

    event_type: type[Any]
    """The class subscribed to; instances of its subclasses are delivered too."""
    handler: Callable[[Any], Any]
    """The function given to ``subscribe``; it receives the event."""
    name: str
    """The subscriber's name in logs, error hooks and metrics."""
    background: bool
    """True when the subscriber runs on the bus's worker threads."""
    retry: RetryPolicy | None
    """The policy in effect (the subscriber's own, else the bus default), or None."""

    def __init__(
        self,
        bus: MessageBus,
        event_type: type[Any],
        handler: Callable[[Any], Any],
        name: str,
        background: bool,
        retry: RetryPolicy | None,
        seq: int,
        call: _Handler,
    ) -> None:
        self._bus = bus
        self.event_type = event_type
        self.handler = handler
        self.name = name
        self.background = background
        self.retry = retry
        self._seq = seq
        self._call = call
        self._active = True

    @property
    def active(self) -> bool:
        """False once unsubscribed."""
        return self._active

    def unsubscribe(self) -> bool:
        """Stop deliveries to this subscriber; True if it was subscribed until now.

        Events published afterwards do not reach it, nor do background deliveries still
        queued; a delivery already running, or a ``publish`` already under way in another
        thread, may still complete.
        """
        return self._bus.unsubscribe(self)

    def __repr__(self) -> str:
        how = "background" if self.background else "sync"
        state = "" if self._active else ", unsubscribed"
        return f"<Subscription {self.name} to {self.event_type.__qualname__} ({how}{state})>"


@attrs.frozen
class WorkerStats:
    """A snapshot of one background worker, from :meth:`MessageBus.worker_stats`."""

    queued: int
    """Deliveries waiting in the worker's queue (never more than ``queue_size``, except for
    events published by handlers running on the workers)."""
    pending: int
    """Deliveries queued or being handled: the worker's lag."""
    blocked_publishers: int
    """Threads waiting in ``publish`` for room in this worker's queue."""


class _Worker:
    """One background thread with its own bounded queue of ``(envelope, subscribers)``."""

    __slots__ = (
        "lock",
        "not_empty",
        "not_full",
        "idle",
        "queue",
        "size",
        "enqueued",
        "done",
        "sleeping",
        "blocked",
        "drainers",
        "stop",
        "stopped",
        "thread",
    )

    def __init__(self, size: int) -> None:
        self.lock = threading.Lock()
        self.not_empty = threading.Condition(self.lock)
        self.not_full = threading.Condition(self.lock)
        self.idle = threading.Condition(self.lock)
        self.queue: deque[tuple[Envelope, tuple[_Pair, ...]]] = deque()
        self.size = size
        # Counted under the lock; the worker is idle when done == enqueued.
        self.enqueued = 0
        self.done = 0
        # Who waits on which condition, so nobody pays for a notify that wakes no one.
        self.sleeping = False
        self.blocked = 0
        self.drainers = 0
        self.stop = False
        self.stopped = False
        self.thread: threading.Thread | None = None


class MessageBus:
    """Routes commands and queries to their one handler, and events to their subscribers.

    :param registry: the message registry that says whether a class is an event, a command
        or a query (default: the process-wide ``default_registry``). Classes it does not
        know may still be used: as events with ``subscribe``/``publish``, and as commands or
        queries with ``register``/``dispatch``/``ask``.
    :param workers: how many threads run background subscribers (started with the first
        background subscriber). Events are sharded over them by ordering key.
    :param queue_size: how many deliveries each worker's queue holds; ``publish`` waits while
        the queue it needs is full.
    :param middleware: functions ``middleware(envelope, call_next)`` that wrap every
        handling, the first one outermost (see :mod:`eventlite.middleware`).
    :param retry: the :class:`~eventlite.retry.RetryPolicy` of subscribers that do not give
        their own; None tries each subscriber once.
    :param on_error: an error hook ``on_error(envelope, subscriber_name, exception)``; more
        can be added with :meth:`add_error_hook`.

    Raises ``ValueError`` for ``workers`` or ``queue_size`` below 1. Use it as a context
    manager, or call :meth:`close`, so background work is finished before the process exits.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        workers: int = 4,
        queue_size: int = 1024,
        middleware: Iterable[Middleware] = (),
        retry: RetryPolicy | None = None,
        on_error: ErrorHook | None = None,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be an int >= 1, got {queue_size!r}")
        self._registry = registry if registry is not None else default_registry
        self._worker_count = workers
        self._queue_size = queue_size
        self._middleware: tuple[Middleware, ...] = tuple(middleware)
        self._retry = retry
        self._lock = threading.Lock()
        # Copy-on-write tables: replaced whole under self._lock, read without it.
        self._commands: dict[type[Any], _Handler] = {}
        self._queries: dict[type[Any], _Handler] = {}
        self._handlers: dict[type[Any], Callable[[Any], Any]] = {}
        self._by_type: dict[type[Any], tuple[Subscription, ...]] = {}
        self._plans: dict[type[Any], _Plan] = {}
        self._error_hooks: tuple[ErrorHook, ...] = () if on_error is None else (on_error,)
        self._workers: tuple[_Worker, ...] = ()
        self._worker_idents: frozenset[int] = frozenset()
        self._seq = itertools.count()
        self._spread = itertools.count()
        self._state = _OPEN
        self._closed = False

    # -- registration ----------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """The registry this bus asks for a class's kind."""
        return self._registry

    def register(
        self,
        message_type: type[Any],
        handler: Callable[[Any], Any],
        *,
        name: str | None = None,
    ) -> None:
        """Make ``handler`` the one handler of a command or query type.

        Raises :class:`HandlerAlreadyRegistered` if the type has a handler already,
        ``TypeError`` if the type is an event (subscribe to events instead), and
        :class:`BusClosed` after :meth:`close`. Only the exact type is routed: a subclass of
        a command needs its own handler.
        """
        if not isinstance(message_type, type):
            raise TypeError(f"register() takes a message class, got {message_type!r}")
        kind = self._kind(message_type)
        if kind is MessageKind.EVENT:
            raise TypeError(
                f"{message_type.__qualname__} is an event: subscribe to it with "
                "bus.subscribe(); register() takes a command or a query"
            )
        call = _compose(handler, name or _name_of(handler), self._middleware)
        with self._lock:
            self._check_open("register a handler for", message_type)
            existing = self._handlers.get(message_type)
            if existing is not None:
                raise HandlerAlreadyRegistered(message_type, existing)
            self._handlers = {**self._handlers, message_type: handler}
            if kind is not MessageKind.QUERY:
                self._commands = {**self._commands, message_type: call}
            if kind is not MessageKind.COMMAND:
                self._queries = {**self._queries, message_type: call}

    def handles(self, message_type: type[Any], *, name: str | None = None) -> Callable[[_H], _H]:
        """Decorator form of :meth:`register`; returns the function unchanged::

        @bus.handles(PlaceOrder)
        def place_order(command: PlaceOrder) -> str: ...
        """

        def decorate(handler: _H) -> _H:
            self.register(message_type, handler, name=name)
            return handler

        return decorate

    def subscribe(
        self,
        event_type: type[Any],
        handler: Callable[[Any], Any],
        *,
        background: bool = False,
        retry: RetryPolicy | None = None,
        name: str | None = None,
    ) -> Subscription:
        """Deliver every published instance of ``event_type`` (or of a subclass) to ``handler``.

        Synchronous subscribers run in the publisher's thread, in subscription order;
        ``background=True`` runs the handler on the worker threads instead. ``retry`` (else
        the bus default) says how many immediate attempts a failing delivery gets before it
        is reported; each attempt runs through the middleware. ``name`` defaults to the
        handler's module and qualified name. The same handler may be subscribed more than
        once; each subscription is delivered to.

        Returns a :class:`Subscription`, whose ``unsubscribe()`` stops deliveries. Raises
        ``TypeError`` if ``event_type`` is a command or a query, :class:`BusClosed` after
        :meth:`close`.
        """
        if not isinstance(event_type, type):
            raise TypeError(f"subscribe() takes an event class, got {event_type!r}")
        kind = self._kind(event_type)
        if kind is not None and kind is not MessageKind.EVENT:
            raise TypeError(
                f"{event_type.__qualname__} is a {kind.value}: register its one handler with "
                "bus.register(); subscribe() takes events"
            )
        sub_name = name or _name_of(handler)
        policy = retry if retry is not None else self._retry
        call = _compose(handler, sub_name, self._middleware)
        if policy is not None and policy.max_attempts > 1:
            call = _with_retry(call, sub_name, policy.max_attempts)
        with self._lock:
            self._check_open("subscribe to", event_type)
            if background and not self._workers:
                self._start_workers()
            sub = Subscription(
                self, event_type, handler, sub_name, background, policy, next(self._seq), call
            )
            self._by_type = {
                **self._by_type,
                event_type: (*self._by_type.get(event_type, ()), sub),
            }
            self._plans = {}
        return sub

    def subscribes(
        self,
        event_type: type[Any],
        *,
        background: bool = False,
        retry: RetryPolicy | None = None,
        name: str | None = None,
    ) -> Callable[[_H], _H]:
        """Decorator form of :meth:`subscribe`; returns the function unchanged (unsubscribe
        it with ``bus.unsubscribe(function)``)::

        @bus.subscribes(OrderPlaced, background=True)
        def send_confirmation(event: OrderPlaced) -> None: ...
        """

        def decorate(handler: _H) -> _H:
            self.subscribe(event_type, handler, background=background, retry=retry, name=name)
            return handler

        return decorate

    def unsubscribe(self, target: Subscription | Callable[[Any], Any]) -> bool:
        """Remove a subscription, or every subscription of a handler function.

        Returns True if something was subscribed until now. Queued background deliveries
        to it are skipped; a delivery already running finishes.
        """
        with self._lock:
            removed: list[Subscription] = []
            table: dict[type[Any], tuple[Subscription, ...]] = {}
            for event_type, subs in self._by_type.items():
                kept: list[Subscription] = []
                for sub in subs:
                    hit = (
                        sub is target
                        if isinstance(target, Subscription)
                        # a wrapper (such as App's dependency injection) names what it wraps
                        else getattr(sub.handler, "__wrapped__", sub.handler) == target
                        or sub.handler == target
                    )
                    (removed if hit else kept).append(sub)
                if kept:
                    table[event_type] = tuple(kept)
            if not removed:
                return False
            for sub in removed:
                sub._active = False
            self._by_type = table
            self._plans = {}
        return True

    def subscriptions(self) -> tuple[Subscription, ...]:
        """Every active subscription, in subscription order."""
        subs = [sub for group in self._by_type.values() for sub in group]
        return tuple(sorted(subs, key=lambda s: s._seq))

    def handlers(self) -> dict[type[Any], Callable[[Any], Any]]:
        """The registered command and query handlers by message type, as registered."""
        return dict(self._handlers)

    def add_error_hook(self, hook: ErrorHook) -> None:
        """Also call ``hook(envelope, subscriber_name, exception)`` for every subscriber
        failure that retries did not cure. A hook that raises is logged and skipped."""
        with self._lock:
            self._error_hooks = (*self._error_hooks, hook)

    def remove_error_hook(self, hook: ErrorHook) -> None:
        """Stop calling ``hook``; raises ``ValueError`` if it was not added."""
        with self._lock:
            hooks = list(self._error_hooks)
            hooks.remove(hook)
            self._error_hooks = tuple(hooks)

    # -- sending -----------------------------------------------------------------------------

    def dispatch(self, command: Any) -> Any:
        """Run the command's handler in this thread and return its result.

        The handler's exception propagates unchanged. Raises :class:`NoHandlerError` when the
        command's type has no handler, ``TypeError`` when it is an event or a query, and
        :class:`BusClosed` after :meth:`close`.
        """
        if self._closed:
            self._refuse("dispatch", command)
        try:
            call = self._commands[type(command)]
        except KeyError:
            raise self._no_handler(command, MessageKind.COMMAND) from None
        # _fast_envelope(command, None), inlined: the call is a tenth of a dispatch.
        env = _new_obj(Envelope)
        env._ns = _time_ns()
        env._seq = next(_seq_counter)
        env._id = env._ts = env._meta = env._stored = env._key = None
        env._message = command
        parent = _current_get_or_none()
        env._ctx = None if parent is None else parent._child_ctx()
        token = _set(env)
        try:
            return call(command)
        finally:
            _reset(token)

    def ask(self, query: Any) -> Any:
        """Run the query's handler in this thread and return its answer.

        The handler's exception propagates unchanged. Raises :class:`NoHandlerError` when the
        query's type has no handler, ``TypeError`` when it is an event or a command, and
        :class:`BusClosed` after :meth:`close`.
        """
        if self._closed:
            self._refuse("ask", query)
        try:
            call = self._queries[type(query)]
        except KeyError:
            raise self._no_handler(query, MessageKind.QUERY) from None
        # _fast_envelope(command, None), inlined: the call is a tenth of a dispatch.
        env = _new_obj(Envelope)
        env._ns = _time_ns()
        env._seq = next(_seq_counter)
        env._id = env._ts = env._meta = env._stored = env._key = None
        env._message = query
        parent = _current_get_or_none()
        env._ctx = None if parent is None else parent._child_ctx()
        token = _set(env)
        try:
            return call(query)
        finally:
            _reset(token)

    def publish(self, *events: Any, key: Any = None) -> None:
        """Deliver each event to its subscribers, in the order given.

        Background deliveries are queued first, by ordering key: events with the same
        ``key`` reach each background subscriber in publish order; with no key they are
        spread over the workers. Then the synchronous subscribers run in this thread, in
        subscription order. A failing subscriber is retried per its policy, then logged and
        reported to the error hooks; the others still run, and ``publish`` does not raise
        for it.

        Waits while a worker queue is full. Raises ``TypeError`` for a command or a query,
        :class:`BusClosed` after :meth:`close`.
        """
        if self._closed:
            self._refuse("publish", events[0] if events else None)
        for event in events:
            try:
                sync, background = self._plans[type(event)]
            except KeyError:
                sync, background = self._plan(type(event))
            if not sync:
                if background:
                    self._enqueue(_fast_envelope(event, key), background, key)
                continue
            env = _fast_envelope(event, key)
            if background:
                self._enqueue(env, background, key)
            token = _set(env)
            try:
                for call, sub in sync:
                    try:
                        call(event)
                    except Exception as exc:
                        self._report(env, sub, exc)
            finally:
                _reset(token)

    def publish_envelopes(self, *envelopes: Envelope) -> None:
        """Deliver already-made envelopes as :meth:`publish` delivers events.

        Used for stored events, whose envelopes carry their stream id, version and position:
        the ordering key is ``envelope.key`` (the stream id unless another key was given).
        Subscribers receive ``envelope.message``; the envelope is current while they run.
        """
        if self._closed:
            self._refuse("publish", envelopes[0].message if envelopes else None)
        for env in envelopes:
            event = env._message
            try:
                sync, background = self._plans[type(event)]
            except KeyError:
                sync, background = self._plan(type(event))
            if background:
                self._enqueue(env, background, env.key)
            if sync:
                token = _set(env)
                try:
                    for call, sub in sync:
                        try:
                            call(event)
                        except Exception as exc:
                            self._report(env, sub, exc)
                finally:
                    _reset(token)

    # -- background work ---------------------------------------------------------------------

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued background delivery has been handled, including those
        queued meanwhile by the handlers themselves.

        Returns True when the workers are idle, False if ``timeout`` seconds passed first.
        Raises ``RuntimeError`` when called from a background handler, which would wait for
        itself.
        """
        self._not_on_worker("drain")
        deadline = None if timeout is None else time.monotonic() + timeout
        # A worker's counts only grow; two passes that read the same counts, all idle, show
        # a moment when every worker was idle at once.
        previous: list[int] | None = None
        while True:
            counts: list[int] = []
            for w in self._workers:
                with w.lock:
                    while w.done != w.enqueued:
                        remaining = None
                        if deadline is not None:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                return False
                        w.drainers += 1
                        try:
                            w.idle.wait(remaining)
                        finally:
                            w.drainers -= 1
                    counts.append(w.enqueued)
            if counts == previous:
                return True
            previous = counts

    def close(self, timeout: float | None = None) -> bool:
        """Finish queued and running background work, stop the worker threads, and refuse
        new messages: afterwards ``publish``, ``dispatch``, ``ask``, ``register`` and
        ``subscribe`` raise :class:`BusClosed`.

        While closing, background handlers may still publish and dispatch; their messages
        are handled before the threads stop. Returns True when everything finished, False
        if ``timeout`` seconds passed first (the workers then finish the queued work on
        their own, but messages they send are refused). Closing twice is harmless. Raises
        ``RuntimeError`` when called from a background handler.
        """
        self._not_on_worker("close")
        with self._lock:
            if self._state == _CLOSED:
                return True
            self._state = _CLOSING
            self._closed = True
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = self.drain(timeout)
        with self._lock:
            self._state = _CLOSED
        for w in self._workers:
            with w.lock:
                w.stop = True
                w.not_empty.notify()
        for w in self._workers:
            assert w.thread is not None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            w.thread.join(remaining)
            finished = finished and not w.thread.is_alive()
        return finished

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def worker_stats(self) -> list[WorkerStats]:
        """A snapshot of each background worker (empty before the first background
        subscriber): its queue length, its lag and the publishers waiting on it."""
        stats = []
        for w in self._workers:
            with w.lock:
                stats.append(WorkerStats(len(w.queue), w.enqueued - w.done, w.blocked))
        return stats

    def __enter__(self) -> MessageBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<MessageBus {self._state}: {len(self._handlers)} handlers, "
            f"{sum(len(s) for s in self._by_type.values())} subscribers, "
            f"{len(self._workers)} workers>"
        )

    # -- internals ---------------------------------------------------------------------------

    def _kind(self, cls: type[Any]) -> MessageKind | None:
        find = self._registry.find
        for base in cls.__mro__:
            entry = find(base)
            if entry is not None:
                return entry.kind
        return None

    def _plan(self, cls: type[Any]) -> _Plan:
        """Resolve and cache the subscribers of a concrete event class (the slow path)."""
        kind = self._kind(cls)
        if kind is not None and kind is not MessageKind.EVENT:
            method = "dispatch" if kind is MessageKind.COMMAND else "ask"
            raise TypeError(
                f"{cls.__qualname__} is a {kind.value}: send it with bus.{method}(); "
                "publish() takes events"
            )
        with self._lock:
            plan = self._plans.get(cls)
            if plan is None:
                by_type = self._by_type
                subs = [sub for base in cls.__mro__ for sub in by_type.get(base, ())]
                subs.sort(key=lambda s: s._seq)
                plan = (
                    tuple((s._call, s) for s in subs if not s.background),
                    tuple((s._call, s) for s in subs if s.background),
                )
                self._plans = {**self._plans, cls: plan}
        return plan

    def _no_handler(self, message: Any, wanted: MessageKind) -> Exception:
        cls = type(message)
        kind = self._kind(cls)
        if kind is MessageKind.EVENT:
            return TypeError(
                f"{cls.__qualname__} is an event: publish it with bus.publish(); "
                "dispatch() takes commands and ask() takes queries"
            )
        if kind is MessageKind.QUERY and wanted is MessageKind.COMMAND:
            return TypeError(f"{cls.__qualname__} is a query: ask it with bus.ask()")
        if kind is MessageKind.COMMAND and wanted is MessageKind.QUERY:
            return TypeError(f"{cls.__qualname__} is a command: send it with bus.dispatch()")
        return NoHandlerError(cls)

    def _check_open(self, action: str, message_type: type[Any]) -> None:
        if self._closed:
            raise BusClosed(
                f"cannot {action} {message_type.__qualname__}: this MessageBus was closed "
                "(close() was called or its with-block ended) and accepts no more messages"
            )

    def _refuse(self, action: str, message: Any) -> None:
        # Work accepted before close() may finish, including what it sends.
        if self._state == _CLOSING and _get_ident() in self._worker_idents:
            return
        self._check_open(action, type(message))

    def _not_on_worker(self, action: str) -> None:
        if _get_ident() in self._worker_idents:
            raise RuntimeError(
                f"bus.{action}() was called from a background subscriber; it would wait for "
                "its own worker thread"
            )

    def _report(self, envelope: Envelope, sub: Subscription, exc: BaseException) -> None:
        attempts = 1 if sub.retry is None else sub.retry.max_attempts
        _log.error(
            "subscriber %s failed on %s %s (correlation %s) after %d attempt(s): %s: %s",
            sub.name,
            envelope.type,
            envelope.id,
            envelope.correlation_id,
            attempts,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        for hook in self._error_hooks:
            try:
                hook(envelope, sub.name, exc)
            except Exception:
                _log.exception("error hook %r failed while reporting %s", hook, sub.name)

    def _start_workers(self) -> None:
        """Start the worker threads; called under ``self._lock``."""
        workers = tuple(_Worker(self._queue_size) for _ in range(self._worker_count))
        idents = set()
        for i, w in enumerate(workers):
            thread = threading.Thread(
                target=self._work, args=(w,), name=f"eventlite-bus-worker-{i}", daemon=True
            )
            w.thread = thread
            thread.start()
            assert thread.ident is not None
            idents.add(thread.ident)
        self._worker_idents = frozenset(idents)
        self._workers = workers

    def _enqueue(self, env: Envelope, subs: tuple[_Pair, ...], key: Any) -> None:
        workers = self._workers
        if key is None:
            w = workers[next(self._spread) % len(workers)]
        else:
            w = workers[hash(key) % len(workers)]
        with w.lock:
            if len(w.queue) >= w.size:
                self._wait_for_room(w)
            if w.stopped:
                raise BusClosed(
                    f"cannot publish {env.type}: this MessageBus was closed and its worker "
                    "threads have stopped"
                )
            w.queue.append((env, subs))
            w.enqueued += 1
            if w.sleeping:
                w.not_empty.notify()

    def _wait_for_room(self, w: _Worker) -> None:
        """Wait, holding ``w.lock``, until ``w``'s queue has room."""
        if _get_ident() in self._worker_idents:
            # Workers waiting on each other's full queues would deadlock; what handlers
            # publish is bounded by what they were given, so let it in.
            return
        w.blocked += 1
        try:
            while len(w.queue) >= w.size and not w.stopped:
                w.not_full.wait()
        finally:
            w.blocked -= 1

    def _work(self, w: _Worker) -> None:
        lock = w.lock
        report = self._report
        while True:
            with lock:
                while not w.queue:
                    if w.stop:
                        w.stopped = True
                        w.not_full.notify_all()
                        return
                    w.sleeping = True
                    w.not_empty.wait()
                    w.sleeping = False
                batch = w.queue
                w.queue = deque()
                if w.blocked:
                    w.not_full.notify_all()
            try:
                for env, subs in batch:
                    message = env._message
                    token = _set(env)
                    for call, sub in subs:
                        if sub._active:
                            try:
                                call(message)
                            except BaseException as exc:
                                # Not only Exception: nothing may end a worker thread.
                                report(env, sub, exc)
                    _reset(token)
            finally:
                with lock:
                    w.done += len(batch)
                    if w.drainers and w.done == w.enqueued:
                        w.idle.notify_all()
