"""Window kinds, watermark policies and late-event policies: the declarations of event time.

**Event time.** Each source reads an event's time from the event itself (a field, or the
envelope's timestamp), never from the clock.

**Watermarks.** A source's watermark is its claim that no event older than it is still to
come: by default the greatest event time it has seen minus its declared
``out_of_orderness`` (:class:`BoundedOutOfOrderness`), or the time of its last marker event
(:class:`Punctuated`). An operator fed by several sources (a join, or a window after one)
uses the smallest of their watermarks.

**Lateness.** An operator accepts an event whose time is at most ``allowed_lateness``
behind its watermark; a window stays open until the watermark passes its end by
``allowed_lateness``. Anything older is *late*, and its :data:`LatePolicy` decides: drop
it, count it, append a side-output event for it, or dead-letter it. With this rule, no
accepted event ever reaches a window that has already closed, so the streamed results are
exactly those of a batch computation over the accepted events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import attrs

from ._time import Duration, duration_us

__all__ = [
    "BoundedOutOfOrderness",
    "Hopping",
    "LatePolicy",
    "Punctuated",
    "Session",
    "SideOutput",
    "Tumbling",
    "WatermarkPolicy",
    "Window",
]


def _positive(what: str) -> Callable[[Any, Any, Any], None]:
    def check(_: Any, attribute: Any, value: Any) -> None:
        if duration_us(value, what) <= 0:
            raise ValueError(f"{what} must be positive, got {value!r}")

    return check


def _not_negative(what: str) -> Callable[[Any, Any, Any], None]:
    def check(_: Any, attribute: Any, value: Any) -> None:
        duration_us(value, what)

    return check


@attrs.frozen
class Tumbling:
    """Fixed windows of ``size`` that do not overlap: ``[offset + n*size, offset +
    (n+1)*size)``, aligned on the epoch (``offset`` shifts them)."""

    size: Duration = attrs.field(validator=_positive("Tumbling size"))
    """How long each window is (a ``timedelta`` or seconds)."""
    offset: Duration = attrs.field(default=0, validator=_not_negative("Tumbling offset"))
    """Where windows start, after the epoch's alignment (e.g. to start days at 06:00)."""


@attrs.frozen
class Hopping:
    """Windows of ``size`` starting every ``step``, so an event is in ``size / step`` of them
    (overlapping when ``step < size``)."""

    size: Duration = attrs.field(validator=_positive("Hopping size"))
    """How long each window is."""
    step: Duration = attrs.field(validator=_positive("Hopping step"))
    """How far apart windows start."""
    offset: Duration = attrs.field(default=0, validator=_not_negative("Hopping offset"))
    """Where windows start, after the epoch's alignment."""

    def __attrs_post_init__(self) -> None:
        if duration_us(self.step, "step") > duration_us(self.size, "size"):
            raise ValueError(
                f"Hopping step {self.step!r} is longer than the size {self.size!r}: events "
                f"between windows would belong to none"
            )


@attrs.frozen
class Session:
    """Windows of activity per key: events less than ``gap`` apart share a session, which
    ends ``gap`` after its last event. Sessions merge when an event bridges them."""

    gap: Duration = attrs.field(validator=_positive("Session gap"))
    """The inactivity that ends a session."""


Window = Tumbling | Hopping | Session
"""A window kind."""


@attrs.frozen
class BoundedOutOfOrderness:
    """The watermark is the greatest event time seen minus ``delay``: events may arrive up
    to ``delay`` out of order without being behind the watermark."""

    delay: Duration = attrs.field(default=0, validator=_not_negative("out-of-orderness"))
    """How far out of order events may arrive."""


@attrs.frozen
class Punctuated:
    """The watermark is declared by marker events: each event of ``marker`` says that no
    event older than its ``time`` is still to come (for instance a producer's "hour
    closed" event). Data events do not move it."""

    marker: type[Any]
    """The marker event class (it must be registered, like every event)."""
    time: str | Callable[[Any], Any] | None = None
    """Where the marker's time is: a field name, a function of the marker, or None for
    the envelope's timestamp."""


WatermarkPolicy = BoundedOutOfOrderness | Punctuated
"""How a source computes its watermark."""


@attrs.frozen
class SideOutput:
    """Late-event policy: count the event and append ``to(value)`` to the log instead."""

    to: Callable[[Any], Any]
    """Makes the side-output event from the late value (an event class taking the value
    works); returning None appends nothing."""
    stream_id: str | Callable[[Any], str] | None = None
    """The event stream to append to, or a function of the late value; None lets the
    runner choose."""


LatePolicy = Literal["drop", "count", "dead_letter"] | SideOutput
"""What happens to a late event: ``"drop"`` discards it; ``"count"`` (the default)
discards it and counts it in the operator's state (see
:meth:`~eventlite.streams.StreamEngine.status`); ``"dead_letter"`` counts it and returns
its input envelope as a :class:`~eventlite.streams.DeadLetterEvent`; a :class:`SideOutput`
counts it and appends an event made from it."""
