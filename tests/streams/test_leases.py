"""One process runs a stream at a time: runners share a stream through its lease, another
takes over when the owner stops or its lease expires, and a former owner whose lease was
taken over can never commit a batch."""

from __future__ import annotations

from typing import Any

from eventlite.clock import FakeClock
from eventlite.streams import StreamRunner, dead_letter_source

from .conftest import Other, Reading, codec
from .durable import (
    append_batches,
    fresh_storage,
    inputs,
    model,
    model_events,
    model_rows,
    stored_events,
    stored_rows,
)
from .pipelines import TABLES, everything

TABLE_NAMES = ("hopping", "sessions", "pairs", "names")
OUTPUT_TYPES = ("test.streams.Total", "test.streams.Late")
INPUT_TYPES = ("test.streams.Reading", "test.streams.Other")

EVENTS = [
    (Reading if i % 3 else Other)(i, "ab"[i % 2], i * 2 - (i % 5), i % 7) for i in range(1, 90)
]


def _runner(storage: Any, owner: str, lease_ttl: float = 30.0) -> StreamRunner:
    runner = StreamRunner(storage, codec, batch_size=7, owner=owner, lease_ttl=lease_ttl)
    runner.add(everything(), tables=TABLES)
    return runner


def _check(storage: Any) -> None:
    outputs = model(everything(), inputs(storage, INPUT_TYPES), TABLES)
    assert model_rows(outputs) == stored_rows(storage, TABLE_NAMES)
    assert model_events(outputs) == stored_events(
        storage, OUTPUT_TYPES, dead_letter_source("everything")
    )


def test_a_second_runner_waits_for_the_owner_then_takes_over() -> None:
    """While one runner holds a stream's lease, another one processes nothing; once the
    first closes (releasing it), the second continues from the committed checkpoint."""
    with fresh_storage() as storage:
        first = _runner(storage, "first")
        second = _runner(storage, "second")
        append_batches(storage, [EVENTS[:40]])
        first.catch_up()
        append_batches(storage, [EVENTS[40:]])
        assert 0 == second.catch_up()
        (status,) = second.status()
        assert status.lag > 0
        first.close()
        second.catch_up()
        (status,) = second.status()
        assert 0 == status.lag
        assert "second" == storage.leases.holder("stream:everything").owner  # type: ignore[union-attr]
        _check(storage)


def test_an_expired_lease_is_taken_over_and_the_former_owner_cannot_commit() -> None:
    """When the owner stops renewing, another runner takes the stream over after the
    lease's time; the former owner, waking up with its stale tenure, finds it lost in the
    transaction of its next batch and commits nothing: each batch is written once."""
    with fresh_storage() as storage:
        clock = FakeClock()
        storage.leases.clock = clock
        stale = _runner(storage, "stale", lease_ttl=10)
        fresh = _runner(storage, "fresh", lease_ttl=10)
        append_batches(storage, [EVENTS[:30]])
        stale.catch_up()
        clock.advance(11)  # "stale" paused past its lease
        append_batches(storage, [EVENTS[30:60]])
        fresh.catch_up()
        assert (2, "fresh") == (
            storage.leases.holder("stream:everything").generation,  # type: ignore[union-attr]
            storage.leases.holder("stream:everything").owner,  # type: ignore[union-attr]
        )
        append_batches(storage, [EVENTS[60:]])
        assert 0 == stale.catch_up()  # computes a batch, then finds the lease gone
        (status,) = stale.status()
        assert status.lag > 0
        fresh.catch_up()
        _check(storage)
