"""Stored rows that cannot be decoded, whatever their shape: every read names the position
with a MessageDecodeError, and a durable subscriber dead-letters them raw and goes on,
without running any earlier event again.

The rows are spoilt with raw ``sqlite3`` (another program writing the file), after the app
stored good events in their place; NULLs go into a copy of the table without its NOT NULL
constraints (an older or hand-made file)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from eventlite.app import App
from eventlite.exceptions import MessageDecodeError
from eventlite.messages import Registry, event

registry = Registry()


@event(registry=registry, name="bad.Placed")
class Placed:
    n: int


DEEP = "[" * 100_000 + "]" * 100_000

# name -> the SET clause that spoils a row (raw SQL of another program)
SPOILERS: dict[str, str] = {
    "deeply nested JSON in data": f"data = '{DEEP}'",
    "deeply nested JSON in headers": f"headers = '{DEEP}'",
    "a BLOB in data": "data = x'7b226e223a317d'",
    "text that is not UTF-8 in data": "data = CAST(x'7bff7d' AS TEXT)",
    "text that is not UTF-8 in the stream id": "stream_id = CAST(x'ff' AS TEXT)",
    "text in schema_version": "schema_version = 'one'",
    "a float in schema_version": "schema_version = 1.5",
    "text in version": "version = 'first'",
    "a BLOB as the event id": "id = x'00'",
    "a BLOB as the type": "type = x'00'",
    "a date past year 9999": "timestamp = 400000000000000000",
    "a date before year 1": "timestamp = -400000000000000000",
    "text as the date": "timestamp = 'yesterday'",
    "headers that are not an object": "headers = '[1, 2]'",
    "a BLOB as headers": "headers = x'7b7d'",
    "JSON null as the message": "data = 'null'",
    "a BLOB as the user id": "user_id = x'00'",
}
NULLS = ["data", "version", "correlation_id", "timestamp"]


def _store(path: Path, streams: int) -> None:
    """Store Placed(i) in stream s-i, one event each, so that no spoilt row holds another
    stream back."""
    with App(path, registry=registry) as app:
        for i in range(1, streams + 1):
            app.store.append(f"s-{i}", [Placed(i)])


def _spoil(path: Path, position: int, assignment: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE events SET {assignment} WHERE position = ?", (position,))
    conn.close()


def _without_not_null(path: Path) -> None:
    db = sqlite_utils.Database(path)
    db["events"].transform(not_null=dict.fromkeys(NULLS, False))  # type: ignore[union-attr]
    db.close()


@pytest.mark.parametrize("spoiler", SPOILERS)
def test_every_read_names_the_position_of_an_undecodable_row(tmp_path: Path, spoiler: str) -> None:
    """read_all, read_stream and decode(record_at) raise MessageDecodeError naming the
    position of a spoilt row (never a RecursionError, TypeError or OverflowError), and
    read_records still hands the row out, with a raw() that is valid JSON. (A version that
    is not a number is outside every version range, so read_stream does not see it.)"""
    path = tmp_path / "app.db"
    _store(path, 3)
    _spoil(path, 2, SPOILERS[spoiler])
    with App(path, registry=registry) as app:
        record = app.store.record_at(2)
        assert record is not None
        reads = [lambda: list(app.store.read_all()), lambda: app.store.decode(record)]
        if isinstance(record.stream_id, str) and isinstance(record.version, int):
            reads.append(lambda: app.store.read_stream(record.stream_id))
        failures: list[BaseException] = []
        for read in reads:
            with pytest.raises(MessageDecodeError) as info:
                read()  # type: ignore[no-untyped-call]
            failures.append(info.value)
        assert [2] * len(reads) == [getattr(f, "position", None) for f in failures]
        assert "position 2" in str(failures[0])
        assert [1, 2, 3] == [r.position for r in app.store.read_records()]
        assert 2 == json.loads(record.raw())["position"]


@pytest.mark.parametrize("column", NULLS)
def test_a_null_in_a_required_column_names_the_position(tmp_path: Path, column: str) -> None:
    """In a file whose events table lacks its NOT NULL constraints, a NULL where a value is
    required is a MessageDecodeError naming the column and the position."""
    path = tmp_path / "app.db"
    _store(path, 2)
    _without_not_null(path)
    _spoil(path, 1, f"{column} = NULL")
    with App(path, registry=registry) as app:
        with pytest.raises(MessageDecodeError, match=f"position 1.*{column} column holds NULL"):
            list(app.store.read_all())
        assert [Placed(2)] == [e.message for e in app.store.read_all(from_position=2)]


def test_a_durable_subscriber_dead_letters_every_shape_and_goes_on(tmp_path: Path) -> None:
    """A subscriber over a log where every other event is spoilt (each in its own way)
    handles each good event exactly once, dead-letters each spoilt one raw with the reason
    and its position, and ends with its checkpoint at the head."""
    path = tmp_path / "app.db"
    spoilers = [*SPOILERS.values(), *(f"{c} = NULL" for c in NULLS)]
    _store(path, 2 * len(spoilers) + 1)
    _without_not_null(path)
    for i, assignment in enumerate(spoilers):
        _spoil(path, 2 * i + 2, assignment)
    calls: Counter[int] = Counter()
    with App(path, registry=registry) as app:
        app.subscribe(
            Placed, lambda e: calls.update([e.n]), durable=True, name="sub", start="beginning"
        )
        app.run_until_idle()
        letters = app.dlq.list("sub", limit=None)
        status = app.subscribers()[0]
        head = app.store.head_position()
    good = list(range(1, 2 * len(spoilers) + 2, 2))
    assert (good, {1}) == (sorted(calls), set(calls.values()))
    assert [2 * i + 2 for i in range(len(spoilers))] == [d.position for d in letters]
    for letter in letters:
        assert letter.error_type is not None and letter.error_type.endswith(
            ("MessageDecodeError", "UnknownMessageType")
        ), letter
        assert letter.position == json.loads(letter.message)["position"]
    assert (head, 0) == (status.checkpoint, status.lag)


def test_no_earlier_event_runs_again_after_an_undecodable_row(tmp_path: Path) -> None:
    """The events before and after a deeply nested row in one page are each handled once;
    the stream of the bad row is held behind its dead letter, others flow."""
    path = tmp_path / "app.db"
    _store(path, 5)
    _spoil(path, 3, SPOILERS["deeply nested JSON in data"])
    calls: list[Any] = []
    with App(path, registry=registry) as app:
        app.subscribe(
            Placed, lambda e: calls.append(e.n), durable=True, name="s", start="beginning"
        )
        app.run_until_idle()
        app.store.append("s-3", [Placed(6)])
        app.run_until_idle()
        (dead, parked) = app.dlq.list("s")
    assert [1, 2, 4, 5] == calls
    assert (("dead", 3), ("parked", 6)) == (
        (dead.status.value, dead.position),
        (parked.status.value, parked.position),
    )
