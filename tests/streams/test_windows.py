"""Windows against the batch model: tumbling, hopping and session windows, every aggregate,
events arriving out of order within the lateness, any batch boundaries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlite import Envelope
from eventlite.streams import (
    DeleteRow,
    Hopping,
    MemoryState,
    Session,
    Stream,
    StreamEngine,
    Tumbling,
    UpsertRow,
    Window,
    WindowResult,
)

from . import model
from .conftest import Reading, Total, arrivals, at, codec, cuts, run_all, ticks, us, windows

JITTER = 12
KINDS: dict[str, Window] = {
    "tumbling": Tumbling(us(10)),
    "hopping": Hopping(us(12), us(4)),
    "session": Session(us(5)),
}
AGGREGATES = ["count", "sum", "min", "max", "mean"]


def build(
    kind: str, aggregate: str, out_of_orderness: int, lateness: int, emit: str = "close"
) -> Stream:
    """A stream aggregating readings per key in windows of ``kind``, into table ``w``."""
    stream = Stream("windows")
    windowed = (
        stream.source(Reading, time=at, out_of_orderness=us(out_of_orderness))
        .key_by(lambda r: r.key)
        .window(KINDS[kind], allowed_lateness=us(lateness))
    )
    if aggregate == "count":
        flow = windowed.count(emit=emit)  # type: ignore[arg-type]
    else:
        method: Callable[..., Any] = getattr(windowed, aggregate)
        flow = method(lambda r: r.value, emit=emit)
    flow.to_table("w")
    return stream


def expected(kind: str, aggregate: str, events: list[Reading]) -> list[tuple[Any, ...]]:
    """The batch model's windows of ``kind``."""
    if kind == "tumbling":
        return model.tumbling(events, 10, aggregate)
    if kind == "hopping":
        return model.hopping(events, 12, 4, aggregate)
    return model.sessions(events, 5, aggregate)


def check_windows(
    kind: str, aggregate: str, events: list[Reading], split: int, points: list[int]
) -> None:
    ooo, lateness = split, JITTER - split
    outputs = run_all(build(kind, aggregate, ooo, lateness), events, points)
    assert expected(kind, aggregate, events) == windows(outputs)


@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=25, deadline=None)
@given(
    events=arrivals(jitter=JITTER),
    split=st.integers(0, JITTER),
    data=st.data(),
)
def test_streamed_windows_equal_the_batch_model(
    kind: str, aggregate: str, events: list[Reading], split: int, data: st.DataObject
) -> None:
    """For events arriving out of order by at most the out-of-orderness plus the allowed
    lateness (split between them at random), the windows the stream emits on close are
    exactly those of a batch computation, each once, whatever the batch boundaries."""
    check_windows(kind, aggregate, events, split, data.draw(cuts(len(events))))


@pytest.mark.slow
@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=400, deadline=None)
@given(
    events=arrivals(jitter=JITTER, max_size=150),
    split=st.integers(0, JITTER),
    data=st.data(),
)
def test_streamed_windows_equal_the_batch_model_long(
    kind: str, aggregate: str, events: list[Reading], split: int, data: st.DataObject
) -> None:
    """The same as above, over more and longer event sets."""
    check_windows(kind, aggregate, events, split, data.draw(cuts(len(events))))


def table_after(outputs: list[Any]) -> list[tuple[Any, ...]]:
    """The rows a table holds after applying the upserts and deletes in order."""
    table: dict[tuple[Any, Any], tuple[Any, ...]] = {}
    for o in outputs:
        if isinstance(o, DeleteRow):
            del table[(o.key["key"], o.key["start"])]
        else:
            assert isinstance(o, UpsertRow)
            r = o.row
            table[(r["key"], r["start"])] = (
                r["key"],
                ticks(r["start"]),
                ticks(r["end"]),
                r["value"],
            )
    return sorted(table.values())


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=40, deadline=None)
@given(events=arrivals(jitter=JITTER), data=st.data())
def test_updates_end_at_the_batch_result(
    kind: str, events: list[Reading], data: st.DataObject
) -> None:
    """With emit="update", a table that applies each update (and deletes each retracted
    session) ends holding exactly the batch model's windows."""
    outputs = run_all(
        build(kind, "sum", JITTER, 0, emit="update"), events, data.draw(cuts(len(events)))
    )
    assert expected(kind, "sum", events) == table_after(outputs)


def test_windows_close_in_order_of_their_end() -> None:
    """Windows closing together are emitted by end time, then in the order they opened;
    each window's result says when it starts and ends."""
    stream = Stream("order")
    (
        stream.source(Reading, time="t")
        .key_by(lambda r: r.key)
        .window(Tumbling(10))
        .count()
        .to_table("w")
    )
    events = [Reading(1, "b", 5, 0), Reading(2, "a", 7, 0), Reading(3, "a", 15, 0)]
    events.append(Reading(4, "a", 100, 0))
    assert [("b", 0, 10, 1), ("a", 0, 10, 1), ("a", 10, 20, 1)] == [
        (r[0], r[1], r[2], r[3]) for r in _rows(run_all(stream, events)[:3])
    ]


def _rows(outputs: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            o.row["key"],
            int(o.row["start"].timestamp()),
            int(o.row["end"].timestamp()),
            o.row["value"],
        )
        for o in outputs
    ]


def test_a_window_closes_when_the_watermark_passes_its_end_by_the_lateness() -> None:
    """A tumbling window [0, 10) with out-of-orderness 2 s and lateness 3 s closes at the
    first event of time 15 or more, not before."""
    stream = Stream("close")
    (
        stream.source(Reading, time="t", out_of_orderness=2)
        .window(Tumbling(10), allowed_lateness=3)
        .count()
        .to_table("w")
    )
    engine = StreamEngine(stream, MemoryState(), codec=codec)
    feed = iter(range(1, 100))

    def at(t: int) -> list[Any]:
        i = next(feed)
        return engine.process(
            [Envelope(Reading(i, "k", t, 0), stream_id="s", version=i, position=i)]
        ).outputs

    assert [] == at(1)
    assert [] == at(14)
    [row] = at(15)
    assert isinstance(row, UpsertRow)
    assert (None, 1) == (row.row["key"], row.row["value"])


def test_time_from_the_envelope_and_from_a_function() -> None:
    """Without time=, an event's time is its envelope's timestamp; with a function, what
    the function returns (a datetime or seconds)."""
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def make(time: Any) -> Stream:
        stream = Stream("time")
        stream.source(Reading, time=time).window(Tumbling(60)).count().to_table("w")
        return stream

    events = [Reading(i, "k", i * 25, 0) for i in range(1, 6)]
    stamped = [
        Envelope(e, stream_id="s", version=i, position=i, timestamp=base + timedelta(seconds=e.t))
        for i, e in enumerate(events, start=1)
    ]

    def starts(time: Any) -> list[Any]:
        engine = StreamEngine(make(time), codec=codec)
        outputs = engine.process(stamped).outputs + engine.finish().outputs
        return [o.row["start"] for o in outputs]  # type: ignore[union-attr]

    minutes = [base, base + timedelta(minutes=1), base + timedelta(minutes=2)]
    assert minutes == starts(None)
    assert minutes == starts(lambda r: base + timedelta(seconds=r.t))
    assert minutes == starts(lambda r: base.timestamp() + r.t)


def test_window_results_flow_into_events() -> None:
    """A to_events sink turns each window result into a registered event, appended with
    the input position that closed the window."""

    stream = Stream("events")
    (
        stream.source(Reading, time="t")
        .key_by(lambda r: r.key)
        .window(Tumbling(10))
        .sum(lambda r: r.value)
        .to_events(
            lambda w: Total(w.key, int(w.start.timestamp()), w.value),
            stream_id=lambda w: f"totals-{w.key}",
        )
    )
    outputs = run_all(
        stream, [Reading(1, "a", 1, 5), Reading(2, "a", 2, 6), Reading(3, "a", 12, 1)]
    )
    assert [("totals-a", Total("a", 0, 11), 3), ("totals-a", Total("a", 10, 1), 3)] == [
        (o.stream_id, o.message, o.position)  # type: ignore[union-attr]
        for o in outputs
    ]


def test_window_result_fields() -> None:
    """A window result names its key, start, end and value, and whether it is final."""
    stream = Stream("fields")
    stream.source(Reading, time="t").window(Session(5)).count().to_table(
        "w", row=lambda w: {"key": 1, "r": w}
    )
    [out] = run_all(stream, [Reading(1, "a", 1, 0), Reading(2, "a", 3, 0)])
    assert isinstance(out, UpsertRow)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    expected_result = WindowResult(
        None, epoch + timedelta(seconds=1), epoch + timedelta(seconds=8), 2, final=True
    )
    assert expected_result == out.row["r"]
