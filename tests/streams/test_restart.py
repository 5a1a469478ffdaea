"""Exactly-once across crashes: a runner commits outputs with the state, crashes anywhere,
restarts from the committed state and position, and ends with the outputs of a run that
never stopped: no window lost, none emitted twice, in the same order."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlite.streams import (
    MemoryState,
    Output,
    Stream,
    StreamEngine,
    StreamError,
    StreamStatus,
    Tumbling,
)

from .conftest import Other, Reading, arrivals, at, codec, envelopes, us
from .pipelines import TABLES, everything


def uninterrupted(stream: Stream, events: list[Any]) -> tuple[list[Output], StreamStatus]:
    """The outputs of one run without a stop, and the status it ends with."""
    engine = StreamEngine(stream, MemoryState(), codec=codec, tables=TABLES)
    outputs = engine.process(envelopes(events)).outputs + engine.finish().outputs
    return outputs, engine.status()


def crashing(
    stream: Stream, events: list[Any], plan: list[tuple[int, str, bool]]
) -> tuple[list[Output], StreamStatus]:
    """Run ``events`` as a runner would: batches of the planned sizes, each followed by a
    commit (outputs kept, state flushed), nothing, or a crash (uncommitted outputs and
    state lost, the engine rebuilt from the committed state). After a restart the runner
    reads from the committed position, or (``from_start``) hands everything again."""
    inputs = envelopes(events)
    committed: list[Output] = []
    pending: list[Output] = []
    state = MemoryState()
    engine = StreamEngine(stream, state, codec=codec, tables=TABLES)
    from_start = False
    for size, action, again in plan:
        if from_start:
            batch = inputs[: engine.position + size]
        else:
            batch = [e for e in inputs if e.position > engine.position][:size]  # type: ignore[operator]
        pending += engine.process(batch).outputs
        if action == "commit":
            state.flush()
            committed += pending
            pending = []
        elif action == "crash":
            pending = []
            state = MemoryState(state.snapshot())
            engine = StreamEngine(stream, state, codec=codec, tables=TABLES)
            from_start = again
    pending += engine.process([e for e in inputs if e.position > engine.position]).outputs  # type: ignore[operator]
    pending += engine.finish().outputs
    return committed + pending, engine.status()


PLANS = st.lists(
    st.tuples(
        st.integers(0, 15), st.sampled_from(["commit", "commit", "none", "crash"]), st.booleans()
    ),
    max_size=12,
)


@settings(max_examples=120, deadline=None)
@given(events=arrivals(jitter=12, kinds=(Reading, Other)), plan=PLANS)
def test_a_restart_from_committed_state_gives_the_uninterrupted_outputs(
    events: list[Any], plan: list[tuple[int, str, bool]]
) -> None:
    """Crashing at random points (losing what was not committed) and restarting from the
    committed state gives exactly the outputs, in order, and the final status (late
    counts, watermarks) of a run without crashes; with events late for some operators and
    not others (the side outputs and dead letters too)."""
    stream = everything()
    assert uninterrupted(stream, events) == crashing(stream, events, plan)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None)
@given(events=arrivals(jitter=12, kinds=(Reading, Other), max_size=150), plan=PLANS)
def test_a_restart_from_committed_state_gives_the_uninterrupted_outputs_long(
    events: list[Any], plan: list[tuple[int, str, bool]]
) -> None:
    """The same as above, over more and longer runs."""
    stream = everything()
    assert uninterrupted(stream, events) == crashing(stream, events, plan)


@settings(max_examples=60, deadline=None)
@given(events=arrivals(jitter=12, kinds=(Reading, Other)), points=st.lists(st.integers(0, 50)))
def test_outputs_do_not_depend_on_batch_boundaries(events: list[Any], points: list[int]) -> None:
    """The same events in the same order give the same outputs in the same order,
    however they are cut into batches."""
    stream = everything()
    engine = StreamEngine(stream, MemoryState(), codec=codec, tables=TABLES)
    inputs = envelopes(events)
    edges = [0, *sorted(points), len(inputs)]
    outputs: list[Output] = []
    for a, b in itertools.pairwise(edges):
        outputs += engine.process(inputs[a:b]).outputs
    outputs += engine.finish().outputs
    assert uninterrupted(stream, events) == (outputs, engine.status())


def test_closed_windows_leave_no_state() -> None:
    """Windows, sessions and join buffers leave the state once closed: a long steady run
    keeps a bounded number of entries, and after finish only counters and positions."""
    stream = everything()
    state = MemoryState()
    engine = StreamEngine(stream, state, codec=codec, tables=TABLES)
    sizes = []
    events = [(Reading if i % 3 else Other)(i, "ab"[i % 2], i, i % 7) for i in range(1, 3001)]
    for i in range(0, 3000, 300):
        engine.process(envelopes(events[i : i + 300], first=i + 1))
        state.flush()
        sizes.append(len(state))
    assert max(sizes) <= sizes[0] + 5
    engine.finish()
    state.flush()
    left = sorted({op for op, key in state.snapshot() if key not in ("$meta", "watermark")})
    assert ["$stream"] == left


def test_a_failing_function_stops_the_engine_and_a_new_one_goes_on() -> None:
    """A function that raises gives StreamError naming the stream and the input position;
    the engine refuses further work; a new engine from the committed state, skipping the
    bad event, continues as if it had never been there."""

    def build() -> Stream:
        stream = Stream("fragile")
        (
            stream.source(Reading, time=at)
            .map(lambda r: 1 // r.value)
            .window(Tumbling(us(10)))
            .count()
            .to_table("w")
        )
        return stream

    good = [Reading(1, "a", 1, 1), Reading(2, "a", 2, 1)]
    bad = Reading(3, "a", 3, 0)
    inputs = envelopes([*good, bad, Reading(4, "a", 4, 1)])
    state = MemoryState()
    engine = StreamEngine(build(), state, codec=codec)
    engine.process(inputs[:2])
    state.flush()
    with pytest.raises(
        StreamError, match=r"stream 'fragile' at position 3: ZeroDivisionError"
    ) as e:
        engine.process(inputs[2:])
    assert 3 == e.value.position
    with pytest.raises(StreamError, match="stopped after an error"):
        engine.process(inputs[3:])

    again = StreamEngine(build(), MemoryState(state.snapshot()), codec=codec)
    again.skip(inputs[2])
    rows = again.process(inputs).outputs + again.finish().outputs
    assert [{"key": None, "value": 3}] == [
        {"key": r.row["key"], "value": r.row["value"]}  # type: ignore[union-attr]
        for r in rows
    ]


def test_state_that_cannot_be_kept_stops_the_engine() -> None:
    """An accumulator that is neither JSON data nor a registered message makes process()
    raise StreamError saying the state cannot be written; the engine stops."""
    stream = Stream("unkeepable")
    (
        stream.source(Reading, time=at)
        .window(Tumbling(us(10)))
        .aggregate(object(), lambda acc, r: acc)
        .to_table("w")
    )
    engine = StreamEngine(stream, codec=codec)
    with pytest.raises(StreamError, match="cannot write its state: TypeError: cannot keep"):
        engine.process(envelopes([Reading(1, "a", 1, 0)]))
    with pytest.raises(StreamError, match="stopped after an error"):
        engine.finish()


def test_to_events_refuses_what_is_not_a_registered_event() -> None:
    """A to_events sink given something that is not an event of the engine's registry
    raises StreamError naming its type."""
    stream = Stream("not-events")
    stream.source(Reading, time=at).map(lambda r: {"id": r.id}).to_events()
    engine = StreamEngine(stream, codec=codec)
    with pytest.raises(StreamError, match="to_events got a dict"):
        engine.process(envelopes([Reading(1, "a", 1, 0)]))
