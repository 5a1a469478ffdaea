"""Middleware: code that wraps every handling on the bus.

A middleware is a function ``middleware(envelope, call_next)``. It receives the envelope of
the message about to be handled and ``call_next``, the rest of the chain: calling
``call_next(envelope)`` runs the next middleware and, at the end, the handler, and returns
the handler's result. A middleware may act before and after, look at the result, catch or
raise, or not call ``call_next`` at all. ``call_next.handler_name`` names the handler or
subscriber at the end of the chain.

The bus composes each handler's chain once, when the handler is registered or subscribed,
so a call costs only the middleware's own work. The first middleware given to
:class:`~eventlite.bus.MessageBus` is the outermost.

Built in:

- :func:`logging_middleware` logs each handling, its duration and its failure.
- :func:`timing_middleware` calls a metrics callback with the message type, handler name,
  duration and success of each handling.
- :func:`retry_middleware` tries a failing handler again at once, up to a
  :class:`~eventlite.retry.RetryPolicy`'s ``max_attempts``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .envelope import Envelope
from .retry import RetryPolicy

__all__ = [
    "CallNext",
    "Middleware",
    "TimingCallback",
    "logging_middleware",
    "retry_middleware",
    "timing_middleware",
]


class CallNext(Protocol):
    """The rest of a middleware chain, as passed to a middleware."""

    handler_name: str
    """The name of the handler or subscriber at the end of the chain."""

    def __call__(self, envelope: Envelope) -> Any:
        """Run the rest of the chain and the handler on ``envelope``; return the result."""


class Middleware(Protocol):
    """A function ``middleware(envelope, call_next) -> result`` that wraps one handling:
    it calls ``call_next(envelope)`` to run the rest of the chain and the handler, and
    returns the result (see the module doc)."""

    def __call__(self, envelope: Envelope, call_next: CallNext, /) -> Any: ...


class TimingCallback(Protocol):
    """A function ``callback(message_type, handler_name, seconds, success)`` that
    :func:`timing_middleware` calls after each handling."""

    def __call__(
        self, message_type: str, handler_name: str, seconds: float, success: bool, /
    ) -> object: ...


_bus_log = logging.getLogger("eventlite.bus")


def logging_middleware(
    logger: logging.Logger | None = None, level: int = logging.DEBUG
) -> Middleware:
    """Log each handling at ``level``: the message type and id, the handler and the time it
    took; a failure is logged at WARNING (or ``level`` if higher) with the exception's type
    and text, then re-raised. ``logger`` defaults to ``eventlite.bus``.
    """
    log = logger if logger is not None else _bus_log
    fail_level = max(level, logging.WARNING)
    clock = time.perf_counter

    def log_handling(envelope: Envelope, call_next: CallNext) -> Any:
        if not log.isEnabledFor(fail_level):
            return call_next(envelope)
        verbose = log.isEnabledFor(level)
        if verbose:
            log.log(level, "%s handling %s %s", call_next.handler_name, envelope.type, envelope.id)
        start = clock()
        try:
            result = call_next(envelope)
        except Exception as exc:
            log.log(
                fail_level,
                "%s failed on %s %s after %.3f ms: %s: %s",
                call_next.handler_name,
                envelope.type,
                envelope.id,
                (clock() - start) * 1000,
                type(exc).__name__,
                exc,
            )
            raise
        if verbose:
            log.log(
                level,
                "%s handled %s %s in %.3f ms",
                call_next.handler_name,
                envelope.type,
                envelope.id,
                (clock() - start) * 1000,
            )
        return result

    return log_handling


def timing_middleware(
    callback: TimingCallback, *, clock: Callable[[], float] = time.perf_counter
) -> Middleware:
    """Measure each handling and report it to ``callback(message_type, handler_name,
    seconds, success)``; ``message_type`` is the registered type name.

    ``success`` is False when the handler raised (the exception still propagates). An
    exception raised by the callback itself is logged on ``eventlite.bus`` and swallowed,
    so metrics never break handling.
    """

    def time_handling(envelope: Envelope, call_next: CallNext) -> Any:
        start = clock()
        ok = False
        try:
            result = call_next(envelope)
            ok = True
            return result
        finally:
            elapsed = clock() - start
            try:
                callback(envelope.type, call_next.handler_name, elapsed, ok)
            except Exception:
                _bus_log.exception("timing callback %r failed", callback)

    return time_handling


def retry_middleware(policy: RetryPolicy) -> Middleware:
    """Run a failing handler again at once, up to ``policy.max_attempts`` attempts in all;
    the last attempt's exception propagates.

    For commands and queries this is the only retry the bus makes. Subscribers are retried
    by their own ``retry=`` policy too, so giving both multiplies the attempts. Attempts are
    immediate: the backoff delays of ``policy`` are not slept.
    """
    attempts = policy.max_attempts

    def retry_handling(envelope: Envelope, call_next: CallNext) -> Any:
        for attempt in range(1, attempts):
            try:
                return call_next(envelope)
            except Exception as exc:
                _bus_log.warning(
                    "%s failed attempt %d of %d on %s %s (%s: %s); trying again",
                    call_next.handler_name,
                    attempt,
                    attempts,
                    envelope.type,
                    envelope.id,
                    type(exc).__name__,
                    exc,
                )
        return call_next(envelope)

    return retry_handling
