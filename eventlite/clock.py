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
for display.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Final, Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock", "to_datetime"]


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
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        """The time the clock was set to."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (``>= 0``) and return the new time.

        Raises ``ValueError`` for a negative amount: time never goes backwards.
        """
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward, got {seconds!r} seconds")
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock({to_datetime(self._now).isoformat()})"


def to_datetime(seconds: float) -> datetime:
    """An aware UTC ``datetime`` from epoch seconds, as a :class:`Clock` returns them."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
