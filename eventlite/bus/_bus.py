"""The :class:`MessageBus`: routing tables, sending, and the error reports of subscribers."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol, TypeVar

from ..envelope import Envelope, _current, _fast_envelope, _materialize
from ..exceptions import BusClosed, HandlerAlreadyRegistered, NoHandlerError, NotAMessage
from ..messages import MessageKind, Registry, default_registry
from ..middleware import Middleware
from ..retry import RetryPolicy
from ._chain import Handler, compose, name_of, with_retry
from ._subscriptions import Plan, Subscription, matches, plan_for
from ._workers import WorkerPool, WorkerStats


class ErrorHook(Protocol):
    """A function ``hook(envelope, subscriber_name, exception)``, told of every subscriber
    failure that retries did not cure. For background subscribers it runs on the worker
    thread; a hook that raises is logged and skipped."""

    def __call__(
        self, envelope: Envelope, subscriber_name: str, exception: BaseException, /
    ) -> object: ...


_H = TypeVar("_H", bound=Callable[..., Any])

_log = logging.getLogger("eventlite.bus")
_get = _current.get
_set = _current.set
_reset = _current.reset
_get_ident = threading.get_ident

_OPEN, _CLOSING, _CLOSED = "open", "closing", "closed"

# What each kind of message is sent with, and what that method takes.
_SENT_WITH = {
    MessageKind.COMMAND: "dispatch",
    MessageKind.QUERY: "ask",
    MessageKind.EVENT: "publish",
}
_TAKES = {
    "dispatch": "commands",
    "ask": "queries",
    "publish": "events",
    "subscribe": "events",
    "register": "commands and queries",
}
_DECORATOR = {"dispatch": "@eventlite.command", "ask": "@eventlite.query"}


def _wrong_kind(cls: type[Any], kind: MessageKind, method: str) -> TypeError:
    """The error for a message given to the method of another kind: what the message is,
    what the method takes, and what to call instead."""
    if method == "subscribe":
        advice = "give it its one handler with register() instead"
    elif method == "register":
        advice = "add subscribers to it with subscribe() instead"
    else:
        advice = f"send it with {_SENT_WITH[kind]}() instead"
    return TypeError(
        f"{cls.__qualname__} is {'an' if kind is MessageKind.EVENT else 'a'} {kind.value}, "
        f"and {method}() takes {_TAKES[method]}: {advice}"
    )


def _sender(method: str, doc: str) -> Callable[[MessageBus, Any], Any]:
    """The one path of :meth:`MessageBus.dispatch` and :meth:`MessageBus.ask`, made once
    per method so that neither pays for a second call: route the message through the
    method's table (commands or queries) and run its handler in this thread, with a pending
    envelope current (see eventlite.envelope: made only if something needs it)."""
    dispatching = method == "dispatch"

    def send(self: MessageBus, message: Any) -> Any:
        try:
            call = (self._commands if dispatching else self._queries)[type(message)]
        except KeyError:
            call = self._route_miss(message, method)
        token = _set([message, _get(), None])
        try:
            return call(message)
        finally:
            _reset(token)

    send.__name__ = method
    send.__qualname__ = f"MessageBus.{method}"
    send.__doc__ = doc
    return send


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
        self._commands: dict[type[Any], Handler] = {}
        self._queries: dict[type[Any], Handler] = {}
        self._handlers: dict[type[Any], Callable[[Any], Any]] = {}
        self._by_type: dict[type[Any], tuple[Subscription, ...]] = {}
        self._plans: dict[type[Any], Plan] = {}
        self._error_hooks: tuple[ErrorHook, ...] = () if on_error is None else (on_error,)
        self._pool: WorkerPool | None = None
        # The routing tables as they were when close() began (see _route_miss).
        self._closing_routes: tuple[dict[type[Any], Handler], dict[type[Any], Handler]] = ({}, {})
        self._seq = itertools.count()
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
            raise _wrong_kind(message_type, kind, "register")
        call = compose(handler, name or name_of(handler), self._middleware)
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
            raise _wrong_kind(event_type, kind, "subscribe")
        sub_name = name or name_of(handler)
        policy = retry if retry is not None else self._retry
        call = compose(handler, sub_name, self._middleware)
        if policy is not None and policy.max_attempts > 1:
            call = with_retry(call, sub_name, policy.max_attempts)
        with self._lock:
            self._check_open("subscribe to", event_type)
            if background and self._pool is None:
                self._pool = WorkerPool(self._worker_count, self._queue_size, self._report)
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
                    (removed if matches(sub, target) else kept).append(sub)
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

    # dispatch and ask are the same few lines over their own routing table: everything
    # around them (the pending envelope, the handler's chain, the refusals) is shared. One
    # method calling a shared helper would cost a third of a dispatch, so they stay apart.
    # A closed bus empties both tables (see close()), so a miss is where it refuses.

    dispatch = _sender(
        "dispatch",
        """Run the command's handler in this thread and return its result.

        The handler's exception propagates unchanged. Raises :class:`NoHandlerError` when the
        command's type has no handler, :class:`NotAMessage` when its class is neither a
        declared message nor given a handler, ``TypeError`` when it is an event or a query,
        and :class:`BusClosed` after :meth:`close`.
        """,
    )

    ask = _sender(
        "ask",
        """Run the query's handler in this thread and return its answer.

        The handler's exception propagates unchanged. Raises :class:`NoHandlerError` when the
        query's type has no handler, :class:`NotAMessage` when its class is neither a
        declared message nor given a handler, ``TypeError`` when it is an event or a
        command, and :class:`BusClosed` after :meth:`close`.
        """,
    )

    def publish(self, *events: Any, key: Any = None) -> None:
        """Deliver each event to its subscribers, in the order given.

        Background deliveries are queued first, by ordering key: events with the same
        ``key`` reach each background subscriber in publish order; with no key they are
        spread over the workers. Then the synchronous subscribers run in this thread, in
        subscription order. A failing subscriber is retried per its policy, then logged and
        reported to the error hooks; the others still run, and ``publish`` does not raise
        for it.

        Waits while a worker queue is full. Raises ``TypeError`` for a command or a query
        (before delivering any of the events), :class:`BusClosed` after :meth:`close`.
        """
        if self._closed:
            self._refuse("publish", events[0] if events else None)
        if len(events) > 1:
            self._check_events(events)
        for event in events:
            try:
                sync, background = self._plans[type(event)]
            except KeyError:
                sync, background = self._plan(type(event))
            if background:
                current: Envelope | list[Any] = _fast_envelope(event, key)
                self._pool.enqueue(current, background, key)  # type: ignore[union-attr, arg-type]
                if not sync:
                    continue
            elif sync:
                current = [event, _get(), key]
            else:
                continue
            token = _set(current)
            try:
                for call, sub in sync:
                    try:
                        call(event)
                    except Exception as exc:
                        self._report(current, sub, exc)
            finally:
                _reset(token)

    def publish_envelopes(self, *envelopes: Envelope) -> None:
        """Deliver already-made envelopes as :meth:`publish` delivers events.

        Used for stored events, whose envelopes carry their stream id, version and position:
        the ordering key is ``envelope.key`` (the stream id unless another key was given).
        Subscribers receive ``envelope.message``; the envelope is current while they run.
        Raises ``TypeError`` for a command or a query, before delivering any envelope.
        """
        if self._closed:
            self._refuse("publish", envelopes[0].message if envelopes else None)
        if len(envelopes) > 1:
            self._check_events([env._message for env in envelopes])
        for env in envelopes:
            event = env._message
            try:
                sync, background = self._plans[type(event)]
            except KeyError:
                sync, background = self._plan(type(event))
            if background:
                self._pool.enqueue(env, background, env.key)  # type: ignore[union-attr]
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
        pool = self._pool
        return True if pool is None else pool.drain(timeout)

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
            pool = self._pool
            # dispatch and ask find nothing from now on; see _route_miss.
            self._closing_routes = (self._commands, self._queries)
            self._commands = {}
            self._queries = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = self.drain(timeout)
        with self._lock:
            self._state = _CLOSED
        if pool is not None:
            finished = pool.stop(deadline) and finished
        return finished

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def worker_stats(self) -> list[WorkerStats]:
        """A snapshot of each background worker (empty before the first background
        subscriber): its queue length, its lag and the publishers waiting on it."""
        pool = self._pool
        return [] if pool is None else pool.stats()

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
        workers = 0 if self._pool is None else len(self._pool.workers)
        return (
            f"<MessageBus {self._state}: {len(self._handlers)} handlers, "
            f"{sum(len(s) for s in self._by_type.values())} subscribers, "
            f"{workers} workers>"
        )

    # -- internals ---------------------------------------------------------------------------

    def _kind(self, cls: type[Any]) -> MessageKind | None:
        find = self._registry.find
        for base in cls.__mro__:
            entry = find(base)
            if entry is not None:
                return entry.kind
        return None

    def _plan(self, cls: type[Any]) -> Plan:
        """Resolve and cache the subscribers of a concrete event class (the slow path)."""
        kind = self._kind(cls)
        if kind is not None and kind is not MessageKind.EVENT:
            raise _wrong_kind(cls, kind, "publish")
        with self._lock:
            plan = self._plans.get(cls)
            if plan is None:
                plan = plan_for(cls, self._by_type)
                self._plans = {**self._plans, cls: plan}
        return plan

    def _check_events(self, events: Iterable[Any]) -> None:
        """Refuse a command or query among ``events`` before any of them is delivered."""
        plans = self._plans
        for event in events:
            if type(event) not in plans:
                self._plan(type(event))

    def _route_miss(self, message: Any, method: str) -> Handler:
        """The handler of a message its routing table does not hold: only a background
        handler's message sent while the bus is closing has one. Else raises why not."""
        if self._closed:
            try:
                self._refuse(method, message)
            except BusClosed as exc:
                raise exc from None  # not "during handling of KeyError"
            commands, queries = self._closing_routes
            call = (commands if method == "dispatch" else queries).get(type(message))
            if call is not None:
                return call
        raise self._unroutable(message, method) from None

    def _unroutable(self, message: Any, method: str) -> Exception:
        """Why ``message`` has no handler for ``dispatch`` or ``ask``."""
        cls = type(message)
        kind = self._kind(cls)
        wanted = MessageKind.COMMAND if method == "dispatch" else MessageKind.QUERY
        if kind is not None and kind is not wanted:
            return _wrong_kind(cls, kind, method)
        if kind is None:
            if "__eventlite_name__" in cls.__dict__:
                # declared, but in another registry: by_class says so and what to do
                try:
                    self._registry.by_class(cls)
                except NotAMessage as exc:
                    return NotAMessage(f"{exc}; {method}() found no handler for it")
            return NotAMessage(
                f"{cls.__qualname__} is not a registered message and has no handler: "
                f"{method}() takes {_TAKES[method]}; declare it with {_DECORATOR[method]} "
                "and register its handler"
            )
        return NoHandlerError(cls)

    def _check_open(self, action: str, message_type: type[Any]) -> None:
        if self._closed:
            raise BusClosed(
                f"cannot {action} {message_type.__qualname__}: this MessageBus was closed "
                "(close() was called or its with-block ended) and accepts no more messages"
            )

    def _refuse(self, action: str, message: Any) -> None:
        # Work accepted before close() may finish, including what it sends.
        pool = self._pool
        if self._state == _CLOSING and pool is not None and pool.on_worker():
            return
        self._check_open(action, type(message))

    def _not_on_worker(self, action: str) -> None:
        pool = self._pool
        if pool is not None and pool.on_worker():
            raise RuntimeError(
                f"bus.{action}() was called from a background subscriber; it would wait for "
                "its own worker thread"
            )

    def _report(self, current: Envelope | list[Any], sub: Subscription, exc: BaseException) -> None:
        envelope = _materialize(current) if type(current) is list else current
        assert isinstance(envelope, Envelope)
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
