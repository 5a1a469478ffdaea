"""Reading the command line's values and showing the store's: argument types that refuse
what the store could not take (numbers past 64 bits, spans past any date), and display
helpers that show whatever a stored value holds."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._base import CommandContext

__all__ = [
    "MAX_INT",
    "cut",
    "duration",
    "iso",
    "moment",
    "plural",
    "positive",
    "seconds",
    "show_time",
    "table",
    "time_of",
    "when",
]

MAX_INT = (1 << 63) - 1
"""The largest number a store holds (a signed 64-bit integer)."""
MAX_SECONDS = 1e9
"""The longest wait the command line takes, in seconds (about 31 years)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _shown(text: str) -> str:
    """An argument as an error message quotes it: cut, and safe to print."""
    text = text if len(text) <= 40 else text[:37] + "..."
    return repr(text)


def positive(text: str) -> int:
    """A whole number from 1 to 2**63 - 1 (what a store can hold)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {_shown(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number from 1 up, got {value}")
    if value > MAX_INT:
        raise argparse.ArgumentTypeError(
            f"expected a number from 1 to {MAX_INT} (2**63 - 1), got {_shown(text)}"
        )
    return value


def seconds(text: str) -> float:
    """A number of seconds from 0 to :data:`MAX_SECONDS`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {_shown(text)}") from None
    if not 0 <= value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected seconds from 0 to {MAX_SECONDS:.0f}, got {_shown(text)}"
        )
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d*)?)([smhdw]?)", re.ASCII)


def duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d`` or ``2w``: a span of time (at most what
    ``timedelta`` holds, about 2.7 million years)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 15m, 12h, 7d or 2w, got {_shown(text)}"
        )
    number, unit = match.groups()
    amount = float(number) * _UNITS[unit or "s"]
    try:
        if not math.isfinite(amount):
            raise OverflowError
        return timedelta(seconds=amount)
    except OverflowError:
        raise argparse.ArgumentTypeError(
            f"the duration {_shown(text)} is too long (at most {timedelta.max.days} days)"
        ) from None


def moment(text: str) -> datetime:
    """An ISO 8601 time (``Z`` allowed; naive means UTC), as an aware datetime."""
    raw = text.strip()
    if raw[-1:] in ("Z", "z"):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {_shown(text)}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def time_of(micros: object) -> datetime | None:
    """A stored time (microseconds since the epoch) as a datetime; None when it is not
    one a datetime can hold."""
    if isinstance(micros, bool) or not isinstance(micros, int):
        return None
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return None


def show_time(micros: object) -> str:
    """A stored time to the microsecond, or the stored value marked when it is not a
    time."""
    value = time_of(micros)
    if value is None:
        return f"<time {micros!r}: not a date>"
    return value.isoformat(timespec="microseconds")


def _as_datetime(value: datetime | float) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def when(value: datetime | float | None) -> str:
    """A time to the second, for tables; ``-`` for none."""
    if value is None:
        return "-"
    shown = _as_datetime(value)
    return str(value) if shown is None else shown.isoformat(timespec="seconds")


def iso(value: datetime | float | None) -> str | None:
    """A time in full, for JSON; None for none."""
    if value is None:
        return None
    shown = _as_datetime(value)
    return str(value) if shown is None else shown.isoformat()


def cut(text: str, width: int = 60) -> str:
    """``text`` on one line, at most ``width`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def table(ctx: CommandContext, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print rows under headers, columns padded to their widest cell, two spaces apart."""
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        ctx.emit(line.rstrip())


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 dead letter``, ``2 dead letters``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
