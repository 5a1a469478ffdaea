"""What the bus calls for one handler: its middleware chain and, for a subscriber, its
immediate retries. Built once, when the handler is registered or subscribed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from ..envelope import Envelope, _current, current_envelope
from ..middleware import CallNext, Middleware

_log = logging.getLogger("eventlite.bus")

Handler = Callable[[Any], Any]
"""A handler as the bus calls it: ``call(message) -> result``."""

_set = _current.set
_reset = _current.reset
# Only called while the bus has made a message current, so never None there.
_current_envelope = cast(Callable[[], Envelope], current_envelope)


def name_of(handler: Callable[..., Any]) -> str:
    """A handler's name in logs and error hooks: its module and qualified name."""
    qualname = getattr(handler, "__qualname__", None)
    if qualname is None:
        return repr(handler)
    module = getattr(handler, "__module__", None)
    return f"{module}.{qualname}" if module else str(qualname)


class _Terminal:
    """The end of a middleware chain: calls the handler with the message."""

    __slots__ = ("_handler", "handler_name")

    def __init__(self, handler: Handler, name: str) -> None:
        self._handler = handler
        self.handler_name = name

    def __call__(self, envelope: Envelope) -> Any:
        if envelope is _current_envelope():
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


def compose(handler: Handler, name: str, middleware: tuple[Middleware, ...]) -> Handler:
    """The callable the bus runs for a handler: ``call(message) -> result``.

    Without middleware it is the handler itself, so no envelope is made for it; with
    middleware, the chain gets the current envelope, made then if it was pending.
    """
    if not middleware:
        return handler
    chain: CallNext = _Terminal(handler, name)
    for mw in reversed(middleware):
        chain = _Link(mw, chain, name)

    def run_chain(message: Any) -> Any:
        return chain(_current_envelope())

    return run_chain


def with_retry(call: Handler, name: str, attempts: int) -> Handler:
    """``call`` tried up to ``attempts`` times in all, each failure but the last logged."""

    def retrying(message: Any) -> Any:
        for attempt in range(1, attempts):
            try:
                return call(message)
            except Exception as exc:
                env = _current_envelope()
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
