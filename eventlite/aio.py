"""eventlite from asyncio: awaitable ``dispatch``, ``ask`` and ``publish`` that run the
app's handlers on a bounded pool of threads, never on the event loop.

::

    aio = AsyncApp(build("shop.db"))          # build() returns a wired eventlite.App

    async def place(request):
        order_id = await aio.dispatch(PlaceOrder("o-1", "kettle"))   # handler in a thread
        return JSONResponse({"order_id": order_id})

    async with aio:                           # closing it closes the app, off the loop
        ...

The app stays what it is: handlers are plain functions, a unit of work commits to SQLite in
the thread that runs the handler, committed events are published there. The facade only
moves each call to a thread of its own pool (``threads``), with a copy of the caller's
context (``contextvars``), so a command dispatched from an async handler, or from a request
whose envelope is current, is correlated to it exactly as in one thread.

Cancellation: a cancelled await (a client gone, ``asyncio.wait_for`` out of time) whose
handler is still waiting for a free thread is removed from the queue and never runs. A
handler already running cannot be stopped: it runs to its end in its thread, its unit of
work commits if it returns (the events are stored and published) or rolls back if it
raises, and its result is dropped (an exception is logged on the ``eventlite.aio`` logger).

Async handlers: :meth:`AsyncApp.handles` registers an ``async def`` handler of a command or
query. It runs on the event loop of whoever awaits :meth:`AsyncApp.dispatch` or
:meth:`AsyncApp.ask`, with its envelope current; it gets only the message (no ``uow``: a
unit of work is a blocking SQLite transaction), and changes state by awaiting dispatches of
ordinary commands. A synchronous ``app.dispatch`` of its type is refused with ``TypeError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .app import App
from .envelope import Envelope, message_context
from .exceptions import BusClosed
from .messages import MessageKind

if TYPE_CHECKING:
    from .testing.app import TestApp

__all__ = ["AsyncApp", "AsyncHandler"]

log = logging.getLogger(__name__)

T = TypeVar("T")
AsyncHandler = Callable[[Any], Awaitable[Any]]
"""An ``async def handler(message)`` of a command or query, run on the event loop."""
_AH = TypeVar("_AH", bound=AsyncHandler)


class AsyncApp:
    """An :class:`~eventlite.App` seen from asyncio: every call is awaitable and runs the
    app's handlers on a bounded pool of threads, so the event loop never waits for them.

    :param app: the application (an ``App``, or a :class:`~eventlite.testing.TestApp`,
        whose :meth:`~eventlite.testing.TestApp.run_until_idle` then also records what
        happened). The facade owns it: closing the facade closes it.
    :param threads: how many handlers may run at once; further calls wait, on the loop,
        for a free thread.

    Use it as an async context manager (``async with AsyncApp(app) as aio``) or call
    :meth:`aclose`. Raises ``ValueError`` for ``threads`` below 1 and ``TypeError`` for
    an ``app`` that is neither.
    """

    def __init__(self, app: App | TestApp, *, threads: int = 8) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        inner = app if isinstance(app, App) else getattr(app, "app", None)
        if not isinstance(inner, App):
            raise TypeError(f"AsyncApp wraps an eventlite App or TestApp, got {app!r}")
        self.app: App = inner
        """The application whose handlers the facade runs."""
        self.threads = threads
        """How many handlers may run at once."""
        self._owner: App | TestApp = app
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, "eventlite-aio")
        self._lock = threading.Lock()
        # Copy-on-write tables of async handlers, read without the lock.
        self._commands: dict[type[Any], AsyncHandler] = {}
        self._queries: dict[type[Any], AsyncHandler] = {}
        self._running: set[concurrent.futures.Future[Any]] = set()
        self._closing: concurrent.futures.Future[None] | None = None

    # -- async handlers -----------------------------------------------------------------

    def register(self, message_type: type[Any], handler: AsyncHandler) -> None:
        """Make the ``async def`` function ``handler(message)`` the one handler of a
        command or query type; it runs on the loop of whoever awaits :meth:`dispatch` or
        :meth:`ask`, outside the bus's middleware.

        The type is also claimed on the app's bus, with a stand-in that raises
        ``TypeError`` when the type is dispatched synchronously (``app.dispatch``, a
        durable subscriber, a process manager). Raises ``TypeError`` for a handler that is
        not a coroutine function or that takes more than the message, and what
        :meth:`App.register <eventlite.App.register>` raises
        (:class:`~eventlite.exceptions.HandlerAlreadyRegistered`, ``TypeError`` for an event).
        """
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(
                f"{_name(handler)} is not an async def function: register synchronous "
                "handlers on the App (app.register / @app.handles); they run in the "
                "facade's threads"
            )
        params = list(inspect.signature(handler).parameters.values())
        required = [
            p
            for p in params[1:]
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if not params or required:
            raise TypeError(
                f"{_name(handler)}: an async handler takes the message only (no uow: a unit "
                "of work is a blocking SQLite transaction; await aio.dispatch() of a "
                "synchronous command to change state)"
            )
        entry = self.app.registry.find(message_type)
        kind = None if entry is None else entry.kind
        type_name = getattr(message_type, "__qualname__", repr(message_type))

        def refuse(message: Any) -> Any:
            raise TypeError(
                f"{type_name} has an async handler ({_name(handler)}): it runs only on an "
                "event loop, through `await AsyncApp.dispatch()` or `await AsyncApp.ask()`"
            )

        refuse.__name__ = getattr(handler, "__name__", "handler")
        refuse.__qualname__ = _name(handler)
        refuse.__module__ = getattr(handler, "__module__", __name__)
        with self._lock:
            self.app.register(message_type, refuse)
            if kind is not MessageKind.QUERY:
                self._commands = {**self._commands, message_type: handler}
            if kind is not MessageKind.COMMAND:
                self._queries = {**self._queries, message_type: handler}

    def handles(self, message_type: type[Any]) -> Callable[[_AH], _AH]:
        """Decorator form of :meth:`register`; returns the function unchanged::

        @aio.handles(GetQuote)
        async def get_quote(query: GetQuote) -> Decimal: ...
        """

        def decorate(handler: _AH) -> _AH:
            self.register(message_type, handler)
            return handler

        return decorate

    # -- sending ------------------------------------------------------------------------

    async def dispatch(self, command: Any) -> Any:
        """Run the command's handler and return its result, as
        :meth:`App.dispatch <eventlite.App.dispatch>` does, in a thread of the pool (an
        async handler: on this loop). The handler's exception propagates unchanged.

        Raises :class:`~eventlite.BusClosed` after :meth:`aclose`, and ``TypeError`` when
        the handler registered on the app is an ``async def`` (register those here).
        """
        handler = self._commands.get(type(command))
        if handler is not None:
            return await self._on_loop(handler, command)
        return await self._in_thread(_sending(command), functools.partial(self._dispatch, command))

    async def ask(self, query: Any) -> Any:
        """Answer a query, as :meth:`App.ask <eventlite.App.ask>` does, in a thread of the
        pool (an async handler: on this loop). Raises as :meth:`dispatch` does."""
        handler = self._queries.get(type(query))
        if handler is not None:
            return await self._on_loop(handler, query)
        return await self._in_thread(_sending(query), functools.partial(self._ask, query))

    async def publish(self, *events: Any, key: Any = None) -> None:
        """Publish events on the app's bus without storing them (see
        :meth:`App.publish <eventlite.App.publish>`), in a thread of the pool: synchronous
        subscribers run there, and waiting for room in a full background queue never
        blocks the loop."""
        what = _sending(events[0]) if events else "publish"
        await self._in_thread(what, functools.partial(self.app.publish, *events, key=key))

    async def to_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call any blocking ``fn(*args, **kwargs)`` in a thread of the pool, with a copy
        of this context (as ``asyncio.to_thread``, but bounded by the facade's pool and
        waited for by :meth:`run_until_idle`): a repository read, a CLI-style report."""
        what = f"run {_name(fn)}"
        return await self._in_thread(what, functools.partial(fn, *args, **kwargs))

    # -- settling and closing -----------------------------------------------------------

    async def run_until_idle(self, timeout: float = 10.0) -> None:
        """Wait, without blocking the loop, until the calls of this facade already running
        in its threads have finished, then run the app's ``run_until_idle`` (background
        subscribers, durable delivery, projections: see
        :meth:`App.run_until_idle <eventlite.App.run_until_idle>`) in a thread.

        For async tests: afterwards every effect of what was awaited or started before is
        visible. Async handlers still running on the loop are not waited for. Raises
        ``TimeoutError`` when ``timeout`` seconds pass first, and
        :class:`~eventlite.BusClosed` after :meth:`aclose`.
        """
        self._refuse_if_closed("settle")
        # One blocking wait in a thread: nothing of it calls back into this loop, so a
        # cancelled or timed-out settling leaves no callback behind for a closed loop.
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._settle, timeout, cancelled)
        except asyncio.CancelledError:
            cancelled.set()  # the thread stops at its next step
            raise

    def _settle(self, timeout: float, cancelled: threading.Event) -> None:
        deadline = time.monotonic() + timeout

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"background work did not settle within {timeout} s")
            return left

        while True:
            with self._lock:
                running = list(self._running)
            if running:
                _, pending = concurrent.futures.wait(running, remaining())
                if pending:
                    raise TimeoutError(
                        f"{len(pending)} facade call(s) still running after {timeout} s"
                    )
            if cancelled.is_set() or self._closing is not None:
                return
            self._owner.run_until_idle(remaining())
            with self._lock:
                if not self._running:
                    return

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has been called."""
        return self._closing is not None

    async def aclose(self) -> None:
        """Refuse new calls, let the calls already accepted finish, then close the app,
        all in a thread of its own while the loop goes on. Closing twice is harmless (the
        second waits for the first). A cancelled ``aclose`` still closes, in its thread."""
        with self._lock:
            closing = self._closing
            start = closing is None
            if closing is None:
                closing = self._closing = concurrent.futures.Future()
        if start:
            threading.Thread(
                target=self._close, args=(closing,), name="eventlite-aio-close"
            ).start()
        await asyncio.shield(asyncio.wrap_future(closing))

    def _close(self, done: concurrent.futures.Future[None]) -> None:
        try:
            try:
                self._pool.shutdown(wait=True)
            finally:
                self._owner.close()
        except BaseException as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)

    async def __aenter__(self) -> AsyncApp:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        with self._lock:
            running = len(self._running)
        return f"<AsyncApp {state}: {self.threads} threads, {running} calls running>"

    # -- internals ----------------------------------------------------------------------

    def _dispatch(self, command: Any) -> Any:
        return _not_a_coroutine(self.app.dispatch(command), command)

    def _ask(self, query: Any) -> Any:
        return _not_a_coroutine(self.app.ask(query), query)

    def _refuse_if_closed(self, what: str) -> None:
        if self._closing is not None:
            raise BusClosed(
                f"cannot {what}: this AsyncApp was closed (aclose() was called or its "
                "async with-block ended) and accepts no more calls"
            )

    async def _on_loop(self, handler: AsyncHandler, message: Any) -> Any:
        self._refuse_if_closed(_sending(message))
        # Made here, the envelope takes the caller's envelope (if any) as its cause.
        with message_context(Envelope(message)):
            return await handler(message)

    async def _in_thread(self, what: str, call: Callable[[], T]) -> T:
        context = contextvars.copy_context()
        with self._lock:
            self._refuse_if_closed(what)
            future = self._pool.submit(context.run, call)
            self._running.add(future)
        future.add_done_callback(self._finished)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.cancel():  # already running (or done): it goes on without us
                future.add_done_callback(functools.partial(_dropped, what))
            raise

    def _finished(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._running.discard(future)


def _sending(message: Any) -> str:
    return f"send {type(message).__qualname__}"


def _not_a_coroutine(result: Any, message: Any) -> Any:
    if inspect.iscoroutine(result):
        result.close()
        raise TypeError(
            f"the handler of {type(message).__qualname__} is an async def function "
            "registered on the App, which runs handlers in threads: register it with "
            "AsyncApp.register() / @aio.handles() instead"
        )
    return result


def _dropped(what: str, future: concurrent.futures.Future[Any]) -> None:
    """Report the end of a call whose awaiting task was cancelled."""
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        log.warning(
            "%s: the awaiting task was cancelled, then the call failed in its thread: %s: %s",
            what,
            type(error).__name__,
            error,
            exc_info=error,
        )
    else:
        log.debug("%s: the awaiting task was cancelled; the call finished in its thread", what)


def _name(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", repr(handler))
