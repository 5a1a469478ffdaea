"""The durable runner against the engine: whatever batches the events are stored in and
read in, and wherever the runner restarts, the store ends with what the engine computes
over the same events in one go: the same appended events in the same order, the same
table rows, the same dead letters, the same late counts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlite.streams import (
    DeleteRow,
    Session,
    Stream,
    StreamRunner,
    Tumbling,
    dead_letter_source,
)
from eventlite.streams._writes import event_id

from . import pipelines
from .conftest import Other, Reading, arrivals, at, codec, us
from .durable import (
    append_batches,
    fresh_storage,
    inputs,
    model,
    model_dead,
    model_events,
    model_rows,
    stored_dead,
    stored_events,
    stored_rows,
)
from .pipelines import TABLES

TABLE_NAMES = ("hopping", "sessions", "pairs", "names")
OUTPUT_TYPES = ("test.streams.Total", "test.streams.Late")
INPUT_TYPES = ("test.streams.Reading", "test.streams.Other")

RUNS = st.lists(
    st.tuples(st.integers(0, 12), st.sampled_from(["catch up", "catch up", "restart"])),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(
    events=arrivals(jitter=12, kinds=(Reading, Other)),
    runs=RUNS,
    batch_size=st.integers(1, 9),
    dead_letters=st.booleans(),
)
def test_the_runner_stores_what_the_engine_computes(
    events: list[Any], runs: list[tuple[int, str]], batch_size: int, dead_letters: bool
) -> None:
    """Random events at random times, stored in random batches, processed by the runner
    in batches of a random size between the appends, with restarts from the committed
    state (a new runner object, as after a crash) now and then: the events it appended,
    its rows, its dead letters and its late counts are the engine's over all the events;
    whether the runner reads whole envelopes (late events dead-lettered) or only
    positions and messages."""
    with fresh_storage() as storage:

        def everything() -> Stream:
            return pipelines.everything(dead_letters)

        def runner() -> StreamRunner:
            made = StreamRunner(storage, codec, batch_size=batch_size, owner="test")
            made.add(everything(), tables=TABLES)
            return made

        current = runner()
        done = 0
        for size, action in [*runs, (len(events), "catch up")]:
            append_batches(storage, [events[done : done + size]])
            done += size
            if action == "restart":
                current = runner()  # the old one is dropped as a crash would
            current.catch_up()
        outputs = model(everything(), inputs(storage, INPUT_TYPES), TABLES)
        assert model_events(outputs) == stored_events(
            storage, OUTPUT_TYPES, dead_letter_source("everything")
        )
        assert model_rows(outputs) == stored_rows(storage, TABLE_NAMES)
        assert [(p, "LateEvent") for p, _ in model_dead(outputs)] == stored_dead(
            storage, "everything"
        )
        (status,) = current.status()
        assert (storage.events.head_position(), 0) == (status.position, status.lag)
        assert _late_counts(everything(), inputs(storage, INPUT_TYPES)) == status.late


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(
    events=arrivals(jitter=12, kinds=(Reading, Other), max_size=150),
    runs=RUNS,
    batch_size=st.integers(1, 40),
    dead_letters=st.booleans(),
)
def test_the_runner_stores_what_the_engine_computes_long(
    events: list[Any], runs: list[tuple[int, str]], batch_size: int, dead_letters: bool
) -> None:
    """The same as above, over more and longer runs."""
    test_the_runner_stores_what_the_engine_computes.hypothesis.inner_test(  # type: ignore[attr-defined]
        events, runs, batch_size, dead_letters
    )


def _late_counts(stream: Stream, envelopes: list[Any]) -> dict[str, int]:
    from eventlite.streams import MemoryState, StreamEngine

    engine = StreamEngine(stream, MemoryState(), codec=codec, tables=TABLES)
    engine.process(envelopes)
    return dict(engine.status().late)


def test_events_of_other_types_move_the_checkpoint() -> None:
    """A stream whose types are not in a batch still moves its checkpoint to the head, so
    its lag says how far it is from what it has to read, not from the log."""
    stream = Stream("only-others")
    stream.source(Other, time=at).window(Tumbling(us(10))).count().to_table("others")
    with fresh_storage() as storage:
        runner = StreamRunner(storage, codec, batch_size=2)
        runner.add(stream)
        append_batches(storage, [[Reading(i, "a", i, 1) for i in range(5)]])
        assert 0 == runner.catch_up()
        (status,) = runner.status()
        assert (5, 5, 0) == (status.position, status.head, status.lag)


def test_rows_merge_and_deletes_apply_in_order_within_a_batch() -> None:
    """A session that grows, merges and is retracted inside one batch leaves the table as
    applying its row outputs one by one would (emit="update": upserts and deletes)."""
    stream = Stream("sessions")
    (
        stream.source(Reading, time=at, out_of_orderness=us(50))
        .key_by(lambda r: r.key)
        .window(Session(us(6)))
        .sum(lambda r: r.value, emit="update")
        .to_table("s")
    )
    events = [Reading(1, "a", 10, 1), Reading(2, "a", 20, 2), Reading(3, "a", 15, 4)]
    with fresh_storage() as storage:
        runner = StreamRunner(storage, codec)
        runner.add(stream)
        append_batches(storage, [events])
        runner.catch_up()
        outputs = model(stream, inputs(storage, INPUT_TYPES))
        assert 1 == sum(1 for o in outputs if isinstance(o, DeleteRow))
        assert model_rows(outputs) == stored_rows(storage, ["s"])
        assert 1 == len(stored_rows(storage, ["s"])["s"])


@pytest.mark.parametrize("dead_letters", [True, False], ids=["envelopes", "messages"])
def test_appended_events_carry_their_input_and_a_derived_id(dead_letters: bool) -> None:
    """An event a stream appends has the correlation of the input that made it, that
    input's id as causation and its timestamp, and an id derived from the stream, the
    input's position and its index among that input's outputs: the same on every run."""
    events = [Reading(i, "a", i * 7, 1) for i in range(1, 6)]
    runs = []
    for _ in range(2):
        with fresh_storage() as storage:
            runner = StreamRunner(storage, codec, owner="test")
            runner.add(pipelines.everything(dead_letters), tables=TABLES)
            append_batches(storage, [events])
            runner.catch_up()
            stored = {e.id: e for e in storage.events.read_all(types=list(INPUT_TYPES))}
            outputs = list(storage.events.read_all(types=["test.streams.Total"]))
            assert outputs
            index: dict[int, int] = {}
            for out in outputs:
                cause = stored[out.causation_id or ""]
                assert (cause.correlation_id, cause.timestamp) == (
                    out.correlation_id,
                    out.timestamp,
                )
                assert cause.position is not None
                n = index[cause.position] = index.get(cause.position, -1) + 1
                assert event_id("everything", cause.position, n) == out.id
            runs.append([(o.id, o.message) for o in outputs])
    assert runs[0] == runs[1]
