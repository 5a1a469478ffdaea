"""The PostgreSQL event store beyond the shared contract: large appends (written with
COPY) keep every rule of small ones."""

from __future__ import annotations

import pytest

from eventlite.envelope import Envelope
from eventlite.exceptions import ConcurrencyError
from eventlite.postgres import PostgresStorage
from eventlite.postgres.events import COPY_THRESHOLD
from eventlite.store.events import NO_STREAM, DuplicateEventError
from eventlite.testing.store_contract import Noted

pytestmark = pytest.mark.services

N = COPY_THRESHOLD + 5


def test_large_append_numbers_like_a_small_one(storage: PostgresStorage) -> None:
    """A large append_many gets consecutive positions and versions per part, in order,
    reads back the same, and the next small append follows it."""
    storage.events.append("a", [Noted(n=0)])
    result = storage.events.append_many(
        [
            ("a", [Noted(n=i) for i in range(N)], 1),
            ("b", [Noted(n=1)], NO_STREAM),
            ("a", [Noted(n=2)]),
        ]
    )
    assert list(range(2, N + 2)) == [e.version for e in result[0]]
    assert list(range(2, N + 2)) == [e.position for e in result[0]]
    assert [(1, N + 2)] == [(e.version, e.position) for e in result[1]]
    assert [(N + 2, N + 3)] == [(e.version, e.position) for e in result[2]]
    assert result[0] == storage.events.read_stream("a", 2, N + 1)
    (after,) = storage.events.append("c", [Noted(n=3)])
    assert N + 4 == after.position == storage.events.head_position()


def test_large_append_conflict_writes_nothing(storage: PostgresStorage) -> None:
    """A large append with a wrong expected version raises ConcurrencyError and writes
    nothing."""
    storage.events.append("a", [Noted(n=0)])
    with pytest.raises(ConcurrencyError) as info:
        storage.events.append("a", [Noted(n=i) for i in range(N)], expected_version=0)
    assert ("a", 0, 1) == (info.value.stream_id, info.value.expected, info.value.actual)
    assert (1, 1) == (storage.events.head_position(), storage.events.stream_version("a"))


def test_large_append_with_a_stored_id_writes_nothing(storage: PostgresStorage) -> None:
    """A large append holding an event id already stored raises DuplicateEventError and
    writes nothing; the next append gets the next position."""
    stored = Envelope(Noted(n=0))
    storage.events.append("a", [stored])
    events = [Noted(n=i) for i in range(N)] + [stored]
    with pytest.raises(DuplicateEventError) as info:
        storage.events.append("b", events)
    assert (stored.id, "b") == (info.value.event_id, info.value.stream_id)
    assert (1, 0) == (storage.events.head_position(), storage.events.stream_version("b"))
    assert 2 == storage.events.append("b", [Noted(n=1)])[0].position
