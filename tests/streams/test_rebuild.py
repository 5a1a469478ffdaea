"""Rebuilding a stream: its state and tables start over, the log is replayed from position 1
while appends go on, and the result is the live one: the same rows, no event appended
twice, no dead letter added twice."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings

from eventlite.streams import StreamError, StreamRunner, dead_letter_source

from .conftest import Other, Reading, arrivals, codec
from .durable import (
    append_batches,
    fresh_storage,
    inputs,
    model,
    model_events,
    model_rows,
    stored_dead,
    stored_events,
    stored_rows,
)
from .pipelines import TABLES, everything

TABLE_NAMES = ("hopping", "sessions", "pairs", "names")
OUTPUT_TYPES = ("test.streams.Total", "test.streams.Late")
INPUT_TYPES = ("test.streams.Reading", "test.streams.Other")
DEFAULT = dead_letter_source("everything")


def _runner(storage: Any, batch_size: int = 4, owner: str = "test") -> StreamRunner:
    runner = StreamRunner(storage, codec, batch_size=batch_size, owner=owner)
    runner.add(everything(), tables=TABLES)
    return runner


def _results(storage: Any) -> tuple[Any, ...]:
    return (
        stored_events(storage, OUTPUT_TYPES, DEFAULT),
        stored_rows(storage, TABLE_NAMES),
        stored_dead(storage, "everything"),
    )


@settings(max_examples=25, deadline=None)
@given(events=arrivals(jitter=12, kinds=(Reading, Other)))
def test_a_rebuild_gives_the_live_result(events: list[Any]) -> None:
    """After a live run, a rebuild leaves the same appended events (none twice), the same
    rows, the same dead letters (none twice) and the same status."""
    with fresh_storage() as storage:
        runner = _runner(storage)
        append_batches(storage, [events[: len(events) // 2], events[len(events) // 2 :]])
        runner.catch_up()
        live = _results(storage)
        (before,) = runner.status()
        calls: list[tuple[int, int]] = []
        reached = runner.rebuild(
            "everything", progress=lambda done, total: calls.append((done, total))
        )
        assert live == _results(storage)
        (after,) = runner.status()
        assert (before.position, before.late, before.open, "live") == (
            after.position,
            after.late,
            after.open,
            after.state,
        )
        assert (reached, reached) == calls[-1]
        assert after.rebuilt_at is not None


def test_a_rebuild_goes_on_while_events_are_appended() -> None:
    """Events appended from another thread during a rebuild are all processed, once: the
    rebuilt store is the engine's result over every event."""
    events = [
        (Reading if i % 3 else Other)(i, "ab"[i % 2], i * 2 - (i % 5), i % 7) for i in range(1, 400)
    ]
    with fresh_storage() as storage:
        runner = _runner(storage, batch_size=25)
        append_batches(storage, [events[:200]])
        runner.catch_up()
        started = threading.Event()

        def append_more() -> None:
            started.wait(5)
            for i in range(200, len(events), 10):
                append_batches(storage, [events[i : i + 10]])

        writer = threading.Thread(target=append_more)
        writer.start()
        runner.rebuild("everything", progress=lambda done, total: started.set())
        writer.join()
        runner.catch_up()
        outputs = model(everything(), inputs(storage, INPUT_TYPES), TABLES)
        assert model_rows(outputs) == stored_rows(storage, TABLE_NAMES)
        assert model_events(outputs) == stored_events(storage, OUTPUT_TYPES, DEFAULT)


def test_a_rebuild_cut_short_is_finished_by_the_next_run() -> None:
    """A rebuild that stops midway (the process dies) leaves the stream rebuilding; the
    next runner finishes the replay from its last batch and goes live, with the live
    result."""
    events = [Reading(i, "ab"[i % 2], i * 3, i % 4) for i in range(1, 60)]
    with fresh_storage() as storage:
        runner = _runner(storage)
        append_batches(storage, [events])
        runner.catch_up()
        live = _results(storage)

        def die(done: int, total: int) -> None:
            if done > 20:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            runner.rebuild("everything", progress=die)
        (status,) = runner.status()
        assert "rebuilding" == status.state
        again = _runner(storage)
        again.catch_up()
        (status,) = again.status()
        assert ("live", live) == (status.state, _results(storage))


def test_a_stream_another_process_runs_cannot_be_rebuilt_here() -> None:
    """rebuild raises StreamError naming the owner when another runner holds the lease."""
    with fresh_storage() as storage:
        first = _runner(storage, owner="first")
        first.catch_up()
        second = _runner(storage, owner="second")
        with pytest.raises(StreamError, match="cannot rebuild: 'first' runs it"):
            second.rebuild("everything")
