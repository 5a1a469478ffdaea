"""Shared pieces of the stream tests: the messages, envelopes in input order, strategies for
event sets arriving out of order, and a runner that cuts the input into batches and
crashes where it is told.

Event times are *ticks*: whole microseconds since the epoch (``t``), the engine's own
resolution, so that every boundary (an event exactly at a window's end, exactly at the
watermark minus the lateness) is reachable; sources read them with ``time=at`` and
durations are given with :func:`us`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from eventlite import Codec, Envelope, Registry, event
from eventlite.streams import (
    MemoryState,
    Output,
    Stream,
    StreamEngine,
    UpsertRow,
)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
registry = Registry()
codec = Codec(registry)


@event(registry=registry, name="test.streams.Reading")
class Reading:
    """A measurement: ``value`` for ``key`` at second ``t``; ``id`` names it in pairs."""

    id: int
    key: str
    t: int
    value: int


@event(registry=registry, name="test.streams.Other")
class Other:
    """The right-hand side of joins: the same fields as a Reading, another type."""

    id: int
    key: str
    t: int
    value: int


@event(registry=registry, name="test.streams.Late")
class Late:
    """The side-output event of a late reading."""

    id: int


@event(registry=registry, name="test.streams.Total")
class Total:
    """A window's result as an event."""

    key: str
    start: int
    value: int


def at(event: Any) -> datetime:
    """The time of a test event: ``t`` ticks after the epoch."""
    return EPOCH + timedelta(microseconds=event.t)


def us(n: int) -> timedelta:
    """A duration of ``n`` ticks."""
    return timedelta(microseconds=n)


def ticks(when: datetime) -> int:
    """A time as ticks."""
    return (when - EPOCH) // timedelta(microseconds=1)


def envelopes(events: Iterable[Any], first: int = 1) -> list[Envelope]:
    """The events as stored envelopes at positions ``first``, ``first + 1``, ... (the same
    events always give equal envelopes: ids and timestamps come from the position)."""
    return [
        Envelope(
            e,
            id=f"event-{i}",
            timestamp=EPOCH + timedelta(seconds=i),
            stream_id="readings",
            version=i,
            position=i,
        )
        for i, e in enumerate(events, start=first)
    ]


def arrivals(
    *,
    jitter: int,
    max_size: int = 50,
    keys: str = "ab",
    kinds: Sequence[type[Any]] = (Reading,),
) -> st.SearchStrategy[list[Any]]:
    """Readings in arrival order, none more than ``jitter`` ticks behind the greatest time
    before it: either a random set delayed at random (:func:`delayed`) or a walk that
    keeps landing on the edges (:func:`walk`)."""
    return st.one_of(
        delayed(jitter=jitter, max_size=max_size, keys=keys, kinds=kinds),
        walk(jitter=jitter, max_size=max_size, keys=keys, kinds=kinds),
    )


@st.composite
def delayed(
    draw: st.DrawFn,
    *,
    jitter: int,
    max_size: int,
    keys: str,
    kinds: Sequence[type[Any]],
) -> list[Any]:
    """Events at random times over a random span, arriving in the order of ``t + delay``
    with ``0 <= delay <= jitter`` (often exactly 0 or ``jitter``)."""
    span = draw(st.sampled_from([15, 40, 120, 400]))
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(keys),
                st.integers(0, span),
                st.integers(-50, 50),
                st.one_of(st.sampled_from([0, jitter]), st.integers(0, jitter)),
                st.sampled_from(list(kinds)),
            ),
            max_size=max_size,
        )
    )
    made = [
        (t + delay, i, cls(i + 1, key, t, value))
        for i, (key, t, value, delay, cls) in enumerate(rows)
    ]
    made.sort(key=lambda m: (m[0], m[1]))
    return [m[2] for m in made]


@st.composite
def walk(
    draw: st.DrawFn,
    *,
    jitter: int,
    max_size: int,
    keys: str,
    kinds: Sequence[type[Any]],
) -> list[Any]:
    """Events in arrival order, each a few ticks past the greatest time so far or up to
    ``jitter`` behind it, often exactly ``jitter``: the last instant still in bounds."""
    moves = draw(
        st.lists(
            st.tuples(
                st.sampled_from(keys),
                st.one_of(st.integers(0, 5), st.just(-jitter), st.integers(-jitter, 0)),
                st.integers(-50, 50),
                st.sampled_from(list(kinds)),
            ),
            max_size=max_size,
        )
    )
    top = jitter
    made = []
    for i, (key, move, value, cls) in enumerate(moves):
        t = top + move
        top = max(top, t)
        made.append(cls(i + 1, key, t, value))
    return made


def cuts(n: int) -> st.SearchStrategy[list[int]]:
    """Sorted cut points splitting ``n`` inputs into batches."""
    return st.lists(st.integers(0, n), max_size=6).map(sorted)


def batches(items: Sequence[Any], points: Sequence[int]) -> list[Sequence[Any]]:
    """``items`` cut at ``points``."""
    edges = [0, *points, len(items)]
    return [items[a:b] for a, b in itertools.pairwise(edges)]


def run_all(
    stream: Stream, events: Sequence[Any], points: Sequence[int] = (), **engine: Any
) -> list[Output]:
    """Every output of ``stream`` over ``events`` fed in batches cut at ``points``, then
    finished."""
    engine.setdefault("codec", codec)
    runner = StreamEngine(stream, MemoryState(), **engine)
    out: list[Output] = []
    for batch in batches(envelopes(events), points):
        out += runner.process(batch).outputs
        runner.state.flush()
    out += runner.finish().outputs
    return out


def windows(outputs: Iterable[Output]) -> list[tuple[Any, ...]]:
    """``(key, start, end, value)`` of the default rows of ``to_table``, sorted."""
    rows = []
    for o in outputs:
        assert isinstance(o, UpsertRow)
        r = o.row
        rows.append((r["key"], ticks(r["start"]), ticks(r["end"]), r["value"]))
    return sorted(rows)


StreamFactory = Callable[[], Stream]
