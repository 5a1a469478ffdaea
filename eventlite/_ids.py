"""Time-ordered message ids in the UUIDv7 layout, cheap enough for every in-memory dispatch.

An id is 48 bits of Unix milliseconds, the version nibble 7, the variant bits, and 74 bits
of a per-process counter that starts at a random value. The counter makes ids unique and
increasing within a process even inside one millisecond (RFC 9562, method 1); the random
start keeps processes apart. Making one costs a ``time_ns`` and a ``next``: the string is
formatted only when somebody reads it.
"""

from __future__ import annotations

import itertools
import secrets
import time

_COUNTER_BITS = 74
_LOW_MASK = (1 << 62) - 1

# itertools.count.__next__ is atomic under the GIL, so threads never share a value.
_counter = itertools.count(secrets.randbits(_COUNTER_BITS - 2))
_next = _counter.__next__
_time_ns = time.time_ns


def id_int(ns: int, seq: int) -> int:
    """The 128-bit UUIDv7 integer for a time in nanoseconds and a counter value."""
    seq &= (1 << _COUNTER_BITS) - 1
    return (
        ((ns // 1_000_000) << 80)
        | (0x7 << 76)
        | ((seq >> 62) << 64)
        | (0b10 << 62)
        | (seq & _LOW_MASK)
    )


def format_id(value: int) -> str:
    """Format a 128-bit id as the canonical 8-4-4-4-12 hex string."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_id() -> str:
    """A new time-ordered id string."""
    return format_id(id_int(_time_ns(), _next()))
