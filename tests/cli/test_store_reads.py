"""The reads the CLI makes, beyond their contract suites: the protocols' default
implementations (which a backend without its own query inherits) agree with the SQLite
ones, and large filters work."""

from __future__ import annotations

from pathlib import Path

from eventlite.codec import Codec
from eventlite.envelope import Envelope, Metadata
from eventlite.sqlite import SQLiteStorage
from eventlite.store.dead_letters import DeadLetterStore, Failure
from eventlite.store.events import EventStore

from .conftest import CorruptStore, Placed, registry


def test_default_dead_letter_search_agrees(corrupt: CorruptStore) -> None:
    """DeadLetterStore.find_by_correlation as the protocol defines it by default finds
    what the SQLite store's narrowed search finds."""
    with SQLiteStorage(corrupt.path, readonly=True) as storage:
        store = storage.dead_letters
        flows = {correlation for d in store.list() if (correlation := _flow(d.message))}
        flows |= {"nope", "caf\udcc3"}
        assert store.find_by_correlation(flows) == DeadLetterStore.find_by_correlation(store, flows)
        assert 3 == len(store.find_by_correlation(flows))


def _flow(message: str | bytes) -> str | None:
    from eventlite.store.dead_letters import correlation_of

    return correlation_of(message)


def test_default_log_reads_agree(corrupt: CorruptStore) -> None:
    """EventStore's default find_records, record_by_id, list_streams and count_streams
    (over read_records) give what the SQLite queries give, corrupt rows included."""
    with SQLiteStorage(corrupt.path, readonly=True) as storage:
        store = storage.events
        searches = [
            {},
            {"streams": ["Order-1", "Bad-3", "Bad-17"]},
            {"correlation_ids": ["bad-flow-2", "bad-flow-9"], "types": ["cli.Placed"]},
        ]
        for kwargs in searches:
            assert store.find_records(**kwargs) == EventStore.find_records(store, **kwargs)  # type: ignore[arg-type]
        assert store.record_by_id("bad-4") == EventStore.record_by_id(store, "bad-4")
        assert store.list_streams(prefix="Order-") == EventStore.list_streams(
            store, prefix="Order-"
        )
        assert store.count_streams() == EventStore.count_streams(store)


def test_large_filters(tmp_path: Path) -> None:
    """Hundreds of streams or flows in one search (more than SQLite's placeholders
    would comfortably take) find their events."""
    with SQLiteStorage(tmp_path / "many.db", codec=Codec(registry)) as storage:
        for n in range(300):
            env = Envelope(Placed(str(n)), metadata=Metadata(f"flow-{n}"))
            storage.events.append(f"Order-{n}", [env])
        streams = [f"Order-{n}" for n in range(0, 300, 2)]
        flows = [f"flow-{n}" for n in range(1, 300, 2)]
        assert 150 == len(storage.events.find_records(streams=streams, limit=1000))
        assert 150 == len(storage.events.find_records(correlation_ids=flows, limit=1000))
        letters = storage.dead_letters
        for n in range(150):
            letters.park("s", f'{{"correlation_id": "flow-{n}"}}', key=f"k{n}", now=0.0)
        letters.add("s", "x", key=None, failure=Failure("E", "m", ""), attempts=1,
                    first_failed_at=0.0, now=0.0)  # fmt: skip
        assert 150 == len(letters.find_by_correlation([f"flow-{n}" for n in range(300)]))
