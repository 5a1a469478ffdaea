"""Event time as integer microseconds since the Unix epoch, and the conversions to it.

The engine keeps every time as an ``int`` of microseconds: exact (no float rounding), cheap
to compare, and JSON-ready for the state it stores. Users give times as timezone-aware
``datetime`` objects or as seconds since the epoch (``int`` or ``float``), and durations as
``timedelta`` or seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_US = timedelta(microseconds=1)
NEVER = -(2**62)
"""A watermark before every event time: nothing seen yet."""
FOREVER = 2**62
"""A watermark after every event time: the input is finished."""

Duration = timedelta | int | float
"""A duration: a ``timedelta``, or a number of seconds."""


def duration_us(value: Duration, what: str) -> int:
    """``value`` in microseconds; ``what`` names it in the error for a negative or bad one."""
    if isinstance(value, timedelta):
        us = value // ONE_US
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        us = round(value * 1_000_000)
    else:
        raise TypeError(f"{what} must be a timedelta or a number of seconds, got {value!r}")
    if us < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return us


def to_us(value: Any) -> int:
    """An event time in microseconds: from an aware ``datetime`` or seconds since the epoch."""
    if type(value) is datetime:
        if value.tzinfo is None:
            raise ValueError(f"an event time must be timezone-aware, got {value!r}")
        return (value - EPOCH) // ONE_US
    if type(value) is int:
        return value * 1_000_000
    if type(value) is float:
        return round(value * 1_000_000)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"an event time must be timezone-aware, got {value!r}")
        return (value - EPOCH) // ONE_US
    raise TypeError(
        f"an event time must be a timezone-aware datetime or seconds since the epoch, "
        f"got {type(value).__name__} {value!r}"
    )


def from_us(us: int) -> datetime:
    """The UTC ``datetime`` of a time in microseconds."""
    return EPOCH + timedelta(microseconds=us)


def show(us: int) -> str:
    """A time for messages: ISO 8601, or what a sentinel watermark means."""
    if us <= NEVER:
        return "(nothing seen yet)"
    if us >= FOREVER:
        return "(input finished)"
    return from_us(us).isoformat()
