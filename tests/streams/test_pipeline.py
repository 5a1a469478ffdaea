"""Declaring a stream: what the builder accepts and refuses, names, stateless steps, the
public surface, the status, declared watermark policies."""

from __future__ import annotations

import types
from datetime import timedelta
from typing import Any

import pytest

from eventlite import streams
from eventlite.streams import (
    BoundedOutOfOrderness,
    Hopping,
    MemoryState,
    Punctuated,
    Session,
    Stream,
    StreamEngine,
    Tumbling,
)

from .conftest import Late, Other, Reading, at, codec, envelopes, run_all, us


def test_all_matches_public_names() -> None:
    """eventlite.streams.__all__ is exactly its public names, each with a docstring."""
    public = {
        name
        for name, value in vars(streams).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert sorted(public) == sorted(streams.__all__)
    missing = [
        name
        for name in streams.__all__
        if isinstance(getattr(streams, name), type) and not (getattr(streams, name).__doc__ or "")
    ]
    assert [] == missing


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda s: s.source(), TypeError, "at least one event type"),
        (lambda s: s.source("Reading"), TypeError, "event classes"),
        (lambda s: s.source(Reading, time=3), TypeError, "time must be callable"),
        (
            lambda s: s.source(Reading, out_of_orderness=1, watermark=BoundedOutOfOrderness(2)),
            ValueError,
            "either out_of_orderness or watermark",
        ),
        (lambda s: s.source(Reading, out_of_orderness=-1), ValueError, "must not be negative"),
        (lambda s: s.source(Reading).window("1m"), TypeError, "Tumbling, Hopping or Session"),
        (
            lambda s: s.source(Reading).window(Session(1)).aggregate(0, lambda a, v: a),
            ValueError,
            "need an aggregate with merge=",
        ),
        (
            lambda s: s.source(Reading).window(Tumbling(1)).count(emit="often"),
            ValueError,
            "emit must be",
        ),
        (
            lambda s: s.source(Reading).window(Tumbling(1)).count().window(Tumbling(1)),
            TypeError,
            "results of a windowed aggregate",
        ),
        (lambda s: s.source(Reading).join(s.source(Other)), ValueError, "within="),
        (
            lambda s: s.source(Reading).join(s.source(Other), within=1, before=1),
            ValueError,
            "either within or before/after",
        ),
        (
            lambda s: s.source(Reading).join(Stream("other").source(Other), within=1),
            ValueError,
            "two streams",
        ),
        (lambda s: s.source(Reading).map(3), TypeError, "must be callable"),
        (lambda s: s.source(Reading).to_table("t", pk=()), ValueError, "primary-key"),
        (
            lambda s: (s.source(Reading, name="x"), s.source(Other, name="x")),
            ValueError,
            "already has an operator named 'x'",
        ),
    ],
)
def test_a_wrong_declaration_is_refused_when_made(build: Any, error: type, match: str) -> None:
    """Mistakes in a pipeline raise at once, saying what is wrong."""
    with pytest.raises(error, match=match):
        build(Stream("bad"))


@pytest.mark.parametrize(
    ("window", "match"),
    [
        (lambda: Tumbling(0), "must be positive"),
        (lambda: Hopping(10, 20), "longer than the size"),
        (lambda: Session(timedelta(seconds=-1)), "must not be negative"),
        (lambda: Tumbling("1m"), "timedelta or a number of seconds"),  # type: ignore[arg-type]
    ],
)
def test_a_wrong_window_is_refused(window: Any, match: str) -> None:
    """Window sizes must be positive durations; a hop may not exceed its size."""
    with pytest.raises((ValueError, TypeError), match=match):
        window()


def test_operators_are_named_in_order_unless_named() -> None:
    """Sources are named after their types, stateful steps aggregateN and joinN in the
    order declared, unless given a name; the names address the state."""
    stream = Stream("names")
    readings = stream.source(Reading)
    others = stream.source(Other, name="others")
    readings.window(Tumbling(1)).count().to_table("a")
    readings.window(Tumbling(1)).count(name="kept").to_table("b")
    readings.window(Tumbling(1)).sum(lambda r: r.value).to_table("c")
    readings.join(others, within=1).to_table("d", row=lambda p: {"key": 1})
    assert ["Reading", "aggregate1", "aggregate2", "join1", "kept", "others"] == (
        stream.operator_names()
    )


def test_a_running_stream_cannot_change() -> None:
    """Once an engine runs a stream, adding steps raises RuntimeError; an engine needs a
    source and a sink."""
    stream = Stream("frozen")
    with pytest.raises(ValueError, match="no source"):
        StreamEngine(stream)
    flow = stream.source(Reading)
    with pytest.raises(ValueError, match="no sink"):
        StreamEngine(stream)
    flow.to_table("t")
    StreamEngine(stream)
    with pytest.raises(RuntimeError, match="already runs in an engine"):
        flow.map(lambda r: r)


def test_stateless_steps_and_fan_out() -> None:
    """filter, map and flat_map change values, key_by keys; several steps hanging from one
    flow each get every value, in declaration order."""
    stream = Stream("stateless")
    readings = stream.source(Reading)
    readings.filter(lambda r: r.value > 0).map(lambda r: r.id).to_table(
        "positive", row=lambda i: {"key": i}
    )
    readings.flat_map(lambda r: [r.id] * r.value).key_by(lambda i: -i).to_table("copies")
    events = [Reading(1, "a", 1, 2), Reading(2, "a", 2, 0)]
    outputs = run_all(stream, events)
    assert [("positive", 1), ("copies", -1), ("copies", -1)] == [
        (o.table, o.row["key"])  # type: ignore[union-attr]
        for o in outputs
    ]


def test_status_shows_position_watermarks_open_windows_and_late_counts() -> None:
    """status() names the last position, each source's watermark, each operator's open
    windows and late events."""
    stream = Stream("status")
    stream.source(Reading, time=at, out_of_orderness=us(5)).key_by(lambda r: r.key).window(
        Tumbling(us(10))
    ).count().to_table("w")
    engine = StreamEngine(stream, MemoryState(), codec=codec)
    assert (0, {"Reading": None}) == (engine.status().position, engine.status().watermarks)
    engine.process(
        envelopes([Reading(1, "a", 20, 0), Reading(2, "b", 21, 0), Reading(3, "a", 1, 0)])
    )
    status = engine.status()
    assert (3, {"aggregate1": 2}, {"aggregate1": 1}) == (status.position, status.open, status.late)
    assert 16 == (status.watermarks["Reading"] - at(Reading(0, "", 0, 0))) // us(1)  # type: ignore[operator]


def test_inputs_at_or_below_the_position_are_skipped() -> None:
    """An engine handed events it has already processed skips them by position."""
    stream = Stream("again")
    stream.source(Reading, time=at).window(Tumbling(us(10))).count().to_table("w")
    engine = StreamEngine(stream, codec=codec)
    inputs = envelopes([Reading(1, "a", 1, 0), Reading(2, "a", 2, 0)])
    engine.process(inputs)
    engine.process(inputs)
    [row] = engine.finish().outputs
    assert 2 == row.row["value"]  # type: ignore[union-attr]


def test_a_punctuated_watermark_moves_only_with_its_markers() -> None:
    """With Punctuated(Marker), windows close when a marker's time passes their end, not
    when later data arrives; data older than the last marker is late."""
    stream = Stream("markers")
    stream.source(
        Reading, time=at, watermark=Punctuated(Late, time=lambda m: at(Reading(0, "", m.id, 0)))
    ).window(Tumbling(us(10))).count().to_table("w")
    engine = StreamEngine(stream, codec=codec)
    inputs = envelopes(
        [Reading(1, "a", 1, 0), Reading(2, "a", 50, 0), Late(12), Reading(3, "a", 5, 0)]
    )
    outputs = engine.process(inputs[:2]).outputs
    assert [] == outputs
    [row] = engine.process(inputs[2:3]).outputs
    assert (0, 1) == (row.row["start"].microsecond, row.row["value"])  # type: ignore[union-attr]
    engine.process(inputs[3:])
    assert 1 == engine.status().late["aggregate1"]
