"""How many times to try a failing handler, and how long to wait between attempts.

A :class:`RetryPolicy` says how many attempts a handler gets in all and, through
exponential backoff with jitter, how long to wait before each attempt after the first::

    policy = RetryPolicy(max_attempts=4, initial=0.5, multiplier=2.0, max_delay=10.0)
    policy.delay(2)   # about 0.5 s before the second attempt
    policy.delay(3)   # about 1.0 s before the third
    policy.delay(4)   # about 2.0 s before the fourth

The in-memory :class:`~eventlite.bus.MessageBus` only makes *immediate* attempts: it tries a
failing subscriber again at once, up to ``max_attempts`` times, and never sleeps, so a
worker thread is never held up by a backoff. The delays are for durable delivery, where a
later attempt is scheduled as a stored row instead of a sleep.

Durable subscribers (see :mod:`eventlite.relay`) make the same immediate attempts, then up
to ``delayed_attempts`` *delayed* ones, the n-th after :meth:`RetryPolicy.retry_delay` of
``n`` seconds, each a row in the SQLite file fired by the scheduler thread::

    policy = RetryPolicy(max_attempts=3, delayed_attempts=2, initial=1.0)
    # 3 attempts at once; then one about 1 s later; then one about 2 s after that;
    # then the message is dead-lettered.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs

__all__ = ["RetryPolicy"]


def _check_max_attempts(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_attempts must be an int >= 1 (1 means no retry), got {value!r}")


def _to_seconds(value: float | timedelta) -> Any:
    # a duration as seconds; anything else is left for the validator to name
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _default_max_delay(initial: Any) -> float:
    # 30 s, or initial when longer; a bad initial is left for its validator to name
    if isinstance(initial, (int, float)) and not isinstance(initial, bool) and initial > 30:
        return float(initial)
    return 30.0


def _non_negative(_: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not (value >= 0 and math.isfinite(value))
    ):
        raise ValueError(
            f"{attribute.name} must be a finite number of seconds >= 0 (or a timedelta), "
            f"got {value!r}"
        )


def _check_multiplier(_: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 1:
        raise ValueError(f"multiplier must be a number >= 1 (1 keeps delays equal), got {value!r}")


def _check_delayed(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"delayed_attempts must be an int >= 0, got {value!r}")


def _check_jitter(_: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"jitter must be a fraction between 0 and 1, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """How many attempts a handler gets, and the backoff between them.

    Lengths of time are seconds or ``timedelta``s. Raises ``ValueError`` when built with a
    field out of range, or with a ``max_delay`` shorter than ``initial``.
    ``RetryPolicy(max_attempts=1)`` means "no retry"; it overrides a bus-wide default for
    one subscriber.
    """

    max_attempts: int = attrs.field(default=3, validator=_check_max_attempts)
    """Attempts in all, the first one included; 1 means the handler is not retried."""
    initial: float = attrs.field(default=0.1, converter=_to_seconds, validator=_non_negative)
    """Seconds (or a ``timedelta``) to wait before the second attempt (before jitter)."""
    multiplier: float = attrs.field(default=2.0, validator=_check_multiplier)
    """Each further wait is the previous one times this; 1 keeps every wait at ``initial``."""
    max_delay: float = attrs.field(
        default=attrs.Factory(lambda self: _default_max_delay(self.initial), takes_self=True),
        converter=_to_seconds,
        validator=_non_negative,
    )
    """No wait is longer than this many seconds (or ``timedelta``), jitter included. By
    default 30 s, or ``initial`` when that is longer; a ``max_delay`` below ``initial`` is
    refused, since the first wait could never be as long as asked."""
    jitter: float = attrs.field(default=0.1, validator=_check_jitter)
    """Spread each wait at random by up to this fraction either way (0 to 1), so consumers
    that failed together do not all retry at the same moment."""
    delayed_attempts: int = attrs.field(default=0, validator=_check_delayed)
    """Durable subscribers only: attempts made after the immediate ones have failed, each
    after a backoff (:meth:`retry_delay`) and scheduled as a stored row, not a sleep. 0 (the
    default) dead-letters a message as soon as its immediate attempts are spent."""

    def __attrs_post_init__(self) -> None:
        if self.max_delay < self.initial:
            raise ValueError(
                f"max_delay ({self.max_delay:g} s) is shorter than initial ({self.initial:g} s): "
                "no wait could be as long as the first one asked for; raise max_delay (or "
                "leave it out: it defaults to 30 s, or to initial when that is longer)"
            )

    @property
    def total_attempts(self) -> int:
        """Every attempt a durable delivery gets: ``max_attempts + delayed_attempts``."""
        return self.max_attempts + self.delayed_attempts

    def retry_delay(self, retry: int, *, random: Callable[[], float] = _random.random) -> float:
        """Seconds to wait before delayed retry number ``retry`` (1-based).

        ``initial * multiplier ** (retry - 1)``, spread by ``jitter`` and capped at
        ``max_delay`` (the same curve as :meth:`delay`, starting at its first wait). Raises
        ``ValueError`` for a retry below 1.
        """
        if retry < 1:
            raise ValueError(f"delayed retries are numbered from 1, got {retry!r}")
        return self.delay(retry + 1, random=random)

    def delay(self, attempt: int, *, random: Callable[[], float] = _random.random) -> float:
        """Seconds to wait before attempt number ``attempt`` (1-based).

        0 for the first attempt; ``initial * multiplier ** (attempt - 2)`` for later ones,
        spread by ``jitter`` and capped at ``max_delay``. ``random`` returns a float in
        [0, 1); pass a fixed one for a repeatable result. Raises ``ValueError`` for an
        attempt below 1.
        """
        if attempt < 1:
            raise ValueError(f"attempts are numbered from 1, got {attempt!r}")
        if attempt == 1:
            return 0.0
        try:
            base = self.initial * self.multiplier ** (attempt - 2)
        except OverflowError:
            base = float("inf")
        base = min(base, self.max_delay)
        if self.jitter:
            base *= 1.0 + self.jitter * (2.0 * random() - 1.0)
        return max(0.0, min(base, self.max_delay))
