"""Nothing stalls a stream: an event a function of the pipeline fails on, one whose state
or output the store cannot keep, a stored event that cannot be decoded, a late event under
``late="dead_letter"``: each goes to the dead-letter queue with its error, and the stream
goes on as if it had never been there."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlite
from eventlite import Registry
from eventlite.dlq import DeadLetterQueue
from eventlite.sqlite import SQLiteStorage
from eventlite.streams import (
    LateEvent,
    Stream,
    StreamRunner,
    Tumbling,
    dead_letter_source,
)

from .conftest import Reading, at, codec, registry, us
from .durable import (
    append_batches,
    fresh_storage,
    inputs,
    model,
    model_rows,
    stored_dead,
    stored_rows,
)

INPUT_TYPES = ("test.streams.Reading",)


@eventlite.event(registry=registry, name="test.streams.failures.Labelled")
class Labelled:
    """An event with a text."""

    label: str


def fragile() -> Stream:
    """Counts per key and window of ``100 // value``: a value of 0 fails."""
    stream = Stream("fragile")
    (
        stream.source(Reading, time=at, out_of_orderness=us(5))
        .key_by(lambda r: r.key)
        .map(lambda r: 100 // r.value)
        .window(Tumbling(us(10)))
        .sum()
        .to_table("sums")
    )
    return stream


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.sampled_from([0, 1, 2, 5, 7]), max_size=40),
    batch_size=st.integers(1, 12),
    stored_in=st.integers(1, 15),
)
def test_failing_events_are_dead_lettered_and_the_rest_goes_on(
    values: list[int], batch_size: int, stored_in: int
) -> None:
    """Whatever the batches, every event whose value is 0 is in the dead-letter queue with
    its ZeroDivisionError, in order, and the table holds what the engine computes over
    the other events."""
    events = [Reading(i, "ab"[i % 2], i * 3, v) for i, v in enumerate(values, start=1)]
    with fresh_storage() as storage:
        runner = StreamRunner(storage, codec, batch_size=batch_size)
        runner.add(fragile())
        for i in range(0, len(events), stored_in):
            append_batches(storage, [events[i : i + stored_in]])
            runner.catch_up()
        stored = inputs(storage, INPUT_TYPES)
        good = [e for e in stored if e.message.value != 0]
        bad = [(e.position, "ZeroDivisionError") for e in stored if e.message.value == 0]
        assert bad == stored_dead(storage, "fragile")
        assert model_rows(model(fragile(), good)) == stored_rows(storage, ["sums"])
        (status,) = runner.status()
        assert (None, 0) == (status.error, status.lag)


def test_the_dead_letter_names_the_stream_the_event_and_the_error() -> None:
    """The dead letter of a failing event holds the event (decodable), the stream as its
    source, the error's type and text, and one attempt."""
    with fresh_storage() as storage:
        runner = StreamRunner(storage, codec)
        runner.add(fragile())
        append_batches(storage, [[Reading(1, "a", 1, 2), Reading(2, "a", 2, 0)]])
        runner.catch_up()
        [dead] = DeadLetterQueue(storage, codec).list()
        assert (
            "stream:fragile",
            2,
            "ZeroDivisionError",
            "integer division or modulo by zero",
            1,
            Reading(2, "a", 2, 0),
        ) == (
            dead.source,
            dead.position,
            dead.error_type,
            dead.error_message,
            dead.attempts,
            dead.envelope(codec).message,
        )


def test_state_the_store_cannot_keep_sends_its_event_to_the_dead_letter_queue() -> None:
    """An event that leaves an accumulator the state cannot hold (an arbitrary object) is
    found, dead-lettered, and its effect undone; the others count."""
    stream = Stream("unkeepable")
    (
        stream.source(Reading, time=at)
        .window(Tumbling(us(100)))
        .aggregate(0, lambda acc, r: acc + 1 if r.value else object())
        .to_table("w")
    )
    with fresh_storage() as storage:
        runner = StreamRunner(storage, codec)
        runner.add(stream)
        values = [1, 1, 0, 1, 1]
        append_batches(storage, [[Reading(i, "a", i, v) for i, v in enumerate(values, 1)]])
        runner.catch_up()
        append_batches(storage, [[Reading(9, "a", 500, 1)]])  # closes the window
        runner.catch_up()
        assert [(3, "TypeError")] == stored_dead(storage, "unkeepable")
        db = storage.projections.read_model()
        assert [4] == [r["value"] for r in db["w"].rows]


def test_rows_and_events_the_store_cannot_take_are_errors_of_their_event() -> None:
    """A row with a value no table stores, a row whose primary key holds None, an event
    the codec cannot encode: each dead-letters the event that made it, and nothing of
    that event is written."""
    stream = Stream("picky")
    flow = stream.source(Reading, time=at).key_by(lambda r: r.key)
    flow.to_table("sets", row=lambda r: {"key": r.id, "v": {r.value} if r.value == 1 else 0})
    flow.to_table("keys", row=lambda r: {"key": None if r.value == 2 else r.id})
    labels: dict[int, Any] = {3: object(), 4: "\udcff"}  # no JSON; no UTF-8
    flow.to_events(lambda r: Labelled(labels.get(r.value, str(r.value))))
    with fresh_storage() as storage:
        runner = StreamRunner(storage, codec)
        runner.add(stream)
        values = [0, 1, 2, 3, 4, 5]
        append_batches(storage, [[Reading(i, "a", i, v) for i, v in enumerate(values, 1)]])
        runner.catch_up()
        assert [
            (2, "TypeError"),
            (3, "TypeError"),
            (4, "MessageEncodeError"),
            (5, "MessageEncodeError"),
        ] == stored_dead(storage, "picky")
        db = storage.projections.read_model()
        assert ([1, 6], [1, 6]) == (
            sorted(r["key"] for r in db["sets"].rows),
            sorted(r["key"] for r in db["keys"].rows),
        )
        labelled = storage.events.read_all(types=["test.streams.failures.Labelled"])
        assert ["0", "5"] == [e.message.label for e in labelled]


def test_a_stored_event_that_cannot_be_decoded_is_dead_lettered_raw(tmp_path: Any) -> None:
    """A stored row of a type the stream reads whose data the codec refuses goes to the
    dead-letter queue as its raw record (position, type, id, data), and the events around
    it are processed."""
    other = Registry()

    @eventlite.event(registry=other, name="test.streams.Reading")
    class NotAReading:
        id: str

    path = tmp_path / "bad.db"
    writer = SQLiteStorage(path, codec=eventlite.Codec(other))
    storage = SQLiteStorage(path, codec=codec)
    try:
        stream = Stream("counts")
        stream.source(Reading, time=at).window(Tumbling(us(10))).count().to_table("c")
        runner = StreamRunner(storage, codec)
        runner.add(stream)
        append_batches(storage, [[Reading(1, "a", 1, 1)]])
        writer.events.append("bad", [NotAReading("x")])
        append_batches(storage, [[Reading(3, "a", 2, 1), Reading(4, "a", 30, 1)]])
        runner.catch_up()
        [dead] = DeadLetterQueue(storage, codec).list(dead_letter_source("counts"))
        assert (2, "test.streams.Reading", "MessageDecodeError") == (
            dead.position,
            dead.type_name,
            dead.error_type.rsplit(".", 1)[-1] if dead.error_type else None,
        )
        assert isinstance(dead.message, str)
        assert {"id": "x"} == json.loads(json.loads(dead.message)["data"])
        db = storage.projections.read_model()
        assert [2] == [r["value"] for r in db["c"].rows]
        (status,) = runner.status()
        assert (4, 0) == (status.position, status.lag)
    finally:
        writer.close()
        storage.close()


def test_late_events_under_dead_letter_land_in_the_queue() -> None:
    """``late="dead_letter"``: each late event is in the dead-letter queue as a
    LateEvent naming the operator's lateness, and counted in the status."""
    stream = Stream("strict")
    (
        stream.source(Reading, time=at)
        .window(Tumbling(us(10)), late="dead_letter")
        .count(name="per-10")
        .to_table("c")
    )
    with fresh_storage() as storage:
        runner = StreamRunner(storage, codec)
        runner.add(stream)
        late = Reading(2, "a", 3, 1)
        append_batches(storage, [[Reading(1, "a", 50, 1), late, Reading(3, "a", 50, 1)]])
        runner.catch_up()
        [dead] = DeadLetterQueue(storage, codec).list()
        assert (2, "LateEvent", late) == (
            dead.position,
            (dead.error_type or "").rsplit(".", 1)[-1],
            dead.envelope(codec).message,
        )
        assert "more than the allowed lateness" in (dead.error_message or "")
        (status,) = runner.status()
        assert {"per-10": 1} == status.late
        assert issubclass(LateEvent, eventlite.EventliteError)


def test_a_batch_the_store_refuses_is_retried_and_recorded_in_the_status() -> None:
    """A batch the store refuses (here a trigger aborts writes to the stream's table) is
    not dead-lettered: ``catch_up`` raises the StorageError; the stream's thread records
    the error in the status, tells ``on_error`` and tries again after a pause; once the
    store takes it, the error is cleared."""
    stream = Stream("blocked")
    stream.source(Reading, time=at).window(Tumbling(us(10))).count().to_table("c")
    with fresh_storage() as storage:
        with storage.database.transaction() as tx:
            tx.execute("CREATE TABLE c (start TEXT PRIMARY KEY, end TEXT, key TEXT, value INT)")
            tx.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON c BEGIN SELECT RAISE(ABORT, 'no'); END"
            )
        told = threading.Event()
        runner = StreamRunner(
            storage,
            codec,
            poll_interval=0.01,
            max_backoff=0.05,
            on_error=lambda name, exc: told.set(),
        )
        runner.add(stream)
        append_batches(storage, [[Reading(1, "a", 1, 1), Reading(2, "a", 30, 1)]])
        with pytest.raises(eventlite.StorageError, match="no"):
            runner.catch_up()
        runner.start()
        try:
            assert told.wait(5)
            (status,) = runner.status()
            assert (2, "StorageError") == (status.lag, (status.error or "").split(":")[0])
            with storage.database.transaction() as tx:
                tx.execute("DROP TRIGGER refuse")
            _wait(lambda: runner.status()[0].lag == 0)
        finally:
            runner.close()
        (status,) = runner.status()
        db = storage.projections.read_model()
        assert (None, [1]) == (status.error, [r["value"] for r in db["c"].rows])
        assert [] == stored_dead(storage, "blocked")


def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.01)
