"""Where eventlite reads the time, so tests can move it by hand.

Everything that decides by the time (a delayed message, a visibility timeout, a TTL, a dead
letter's age, a scheduled timeout) asks a :class:`Clock` instead of calling ``time.time()``.
Production code uses :class:`SystemClock`; tests pass a :class:`FakeClock` and call
:meth:`FakeClock.advance` instead of sleeping::

    clock = FakeClock()
    queue = WorkQueue(storage, "emails", codec, clock=clock)
    queue.send(SendEmail("a@example.com"), delay=60)
    queue.receive()          # [] - not due yet
    clock.advance(60)
    queue.receive()          # [Received(...)]

Times are plain ``float`` seconds since the Unix epoch (UTC), the form that is cheap to
compare and to store in SQLite; :func:`to_datetime` turns one into an aware ``datetime``
for display. Every length of time eventlite takes may be given as seconds or as a
``timedelta``; :func:`seconds` reads either.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Final, Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock", "seconds", "to_datetime"]


def seconds(duration: float | timedelta, what: str = "a duration") -> float:
    """A length of time given as seconds (int or float) or as a ``timedelta``, in seconds.

    Raises ``TypeError`` for anything else (a bool included) and ``ValueError`` for a
    negative, NaN or infinite one; ``what`` names the argument in the message::

        seconds(90)                        # 90.0
        seconds(timedelta(minutes=1.5))    # 90.0
    """
    if isinstance(duration, timedelta):
        value = duration.total_seconds()
    elif isinstance(duration, (int, float)) and not isinstance(duration, bool):
        value = float(duration)
    else:
        raise TypeError(
            f"{what} must be a number of seconds or a timedelta, got {type(duration).__name__}"
        )
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{what} must be a finite length of time >= 0, got {duration!r}")
    return value


@runtime_checkable
class Clock(Protocol):
    """A source of the current time. Implementations must be safe to call from any thread."""

    def now(self) -> float:
        """Seconds since the Unix epoch (UTC), as a float."""
        ...


class SystemClock:
    """The real wall clock (``time.time()``)."""

    __slots__ = ()

    def now(self) -> float:
        """Seconds since the Unix epoch, from the operating system."""
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


FAKE_EPOCH: Final = 1_700_000_000.0
"""Where a :class:`FakeClock` starts unless told: 2023-11-14 22:13:20 UTC."""


class FakeClock:
    """A clock that stands still until :meth:`advance` moves it; for tests.

    ``start`` is the first reading, in epoch seconds or as an aware ``datetime``.
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float | datetime = FAKE_EPOCH) -> None:
        if isinstance(start, datetime):
            if start.tzinfo is None:
                raise ValueError("FakeClock needs an aware datetime (attach a timezone)")
            start = start.timestamp()
        elif isinstance(start, bool) or not isinstance(start, (int, float)):
            raise TypeError(
                f"FakeClock starts at epoch seconds or an aware datetime, not {start!r}"
            )
        if not math.isfinite(start):
            raise ValueError(f"FakeClock needs a finite start, got {start!r}")
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        """The time the clock was set to."""
        return self._now

    def advance(self, by: float | timedelta) -> float:
        """Move the clock forward by ``by``, seconds or a ``timedelta``, and return the new
        time (epoch seconds).

        Raises ``ValueError`` for a negative amount (time never goes backwards) or a NaN or
        infinite one, ``TypeError`` for anything but a number or a ``timedelta``.
        """
        step = seconds(by, "FakeClock.advance()")
        with self._lock:
            self._now += step
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock({to_datetime(self._now).isoformat()})"


def to_datetime(seconds: float) -> datetime:
    """An aware UTC ``datetime`` from epoch seconds, as a :class:`Clock` returns them."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
