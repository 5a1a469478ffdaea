"""Group commit in the SQLite store: appends queued behind a busy writer share one commit,
and each caller still gets its own outcome."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventlite import Codec, ConcurrencyError, Envelope, Registry, StorageError
from eventlite.messages import event
from eventlite.sqlite import SQLiteEventStore
from eventlite.store import NO_STREAM, DuplicateEventError

registry = Registry()


@event(registry=registry, name="threads.Noted")
class Noted:
    n: int


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition that another thread makes true, failing after 10 s."""
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


class Appender(threading.Thread):
    """A thread making one append and keeping its result or exception."""

    def __init__(self, store: SQLiteEventStore, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.store, self.args, self.kwargs = store, args, kwargs
        self.result: list[Envelope] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.store.append(*self.args, **self.kwargs)
        except BaseException as exc:
            self.error = exc


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    """A store whose commits are counted in ``store.commits``."""
    s = SQLiteEventStore(tmp_path / "s.db", codec=Codec(registry))
    commits: list[str] = []
    s.commits = commits  # type: ignore[attr-defined]

    def trace(sql: str) -> None:
        if sql == "COMMIT":
            commits.append(sql)

    s.database._conn.set_trace_callback(trace)
    yield s
    s.close()


def _queue_behind_a_transaction(
    store: SQLiteEventStore, appends: list[tuple[Any, ...]]
) -> tuple[Appender, list[Appender], Any]:
    """Hold the write lock in a transaction; start a first appender (which leads and
    waits for the lock), then the given appends one by one so they queue in that order.
    Returns the leader, the queued appenders, and the open transaction's context."""
    held = store.database.transaction()
    held.__enter__()
    leader = Appender(store, "lead", [Noted(n=0)])
    leader.start()
    _wait_for(
        lambda: store._holder is not None and not store._queue, "the leader to take its batch"
    )
    queued = []
    for i, (args, kwargs) in enumerate(appends, 1):
        appender = Appender(store, *args, **kwargs)
        appender.start()
        _wait_for(lambda i=i: len(store._queue) == i, f"append {i} to queue")  # type: ignore[misc]
        queued.append(appender)
    return leader, queued, held


def test_queued_appends_share_one_commit(store: SQLiteEventStore) -> None:
    """Appends that arrive while another is being written are committed together, in
    arrival order, with one COMMIT for the lot."""
    appends: list[tuple[Any, ...]] = [
        ((f"s{i}", [Noted(n=i), Noted(n=i + 10)]), {}) for i in range(5)
    ]
    leader, queued, held = _queue_behind_a_transaction(store, appends)
    held.__exit__(None, None, None)
    for t in [leader, *queued]:
        t.join()
    assert [None] * 6 == [t.error for t in [leader, *queued]]
    assert ["COMMIT"] * 3 == store.commits  # type: ignore[attr-defined]
    assert [[1]] + [[2 + 2 * i, 3 + 2 * i] for i in range(5)] == [
        [e.position for e in t.result or []] for t in [leader, *queued]
    ]


def test_each_caller_gets_its_own_outcome(store: SQLiteEventStore) -> None:
    """In one batch, versions are checked against the batch's own earlier appends; a
    conflict or a duplicate id fails only its own append."""
    stored = store.append("dup", [Noted(n=0)])[0]
    appends = [
        (("x", [Noted(n=1)]), {"expected_version": NO_STREAM}),
        (("x", [Noted(n=2)]), {"expected_version": 1}),
        (("x", [Noted(n=3)]), {"expected_version": 1}),
        (("y", [Noted(n=4), Envelope(Noted(n=5), id=stored.id)]), {}),
        (("z", [Noted(n=6)]), {"expected_version": NO_STREAM}),
    ]
    leader, queued, held = _queue_behind_a_transaction(store, appends)
    before = len(store.commits)  # type: ignore[attr-defined]
    held.__exit__(None, None, None)
    for t in [leader, *queued]:
        t.join()
    ok_x1, ok_x2, conflict, duplicate, ok_z = queued
    assert [(1, 3), (2, 4)] == [(e.version, e.position) for t in (ok_x1, ok_x2) for e in t.result]  # type: ignore[union-attr]
    assert isinstance(conflict.error, ConcurrencyError)
    assert ("x", 1, 2) == (conflict.error.stream_id, conflict.error.expected, conflict.error.actual)
    assert isinstance(duplicate.error, DuplicateEventError)
    assert stored.id == duplicate.error.event_id
    assert [(1, 5)] == [(e.version, e.position) for e in ok_z.result or []]
    assert 3 == len(store.commits) - before  # type: ignore[attr-defined]
    assert [1, 2, 3, 4, 5] == [e.position for e in store.read_all()]
    assert 0 == store.stream_version("y")


def test_a_failed_batch_fails_every_caller(
    store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the storage fails under a batch, every caller in it gets StorageError and
    nothing of the batch is written."""
    appends: list[tuple[Any, ...]] = [((f"s{i}", [Noted(n=i)]), {}) for i in range(3)]
    leader, queued, held = _queue_behind_a_transaction(store, appends)
    write = store._write

    def failing(conn: sqlite3.Connection, batch: list[Any]) -> None:
        if any(part[0] == "lead" for pending in batch for part in pending.parts):
            return write(conn, batch)
        raise sqlite3.OperationalError("disk I/O error")

    # The leader's batch goes through; the three queued appends form the next, which fails.
    monkeypatch.setattr(store, "_write", failing)
    held.__exit__(None, None, None)
    leader.join()
    assert leader.error is None
    for t in queued:
        t.join()
    for t in queued:
        assert isinstance(t.error, StorageError)
        assert "disk I/O error" in str(t.error)
    assert 1 == store.head_position()


def test_close_with_queued_appends_does_not_hang(store: SQLiteEventStore) -> None:
    """Closing while appends wait ends each of them: written, or StorageError."""
    appends: list[tuple[Any, ...]] = [((f"s{i}", [Noted(n=i)]), {}) for i in range(3)]
    leader, queued, held = _queue_behind_a_transaction(store, appends)
    closer = threading.Thread(target=store.close)
    closer.start()
    held.__exit__(None, None, None)
    for t in [leader, *queued, closer]:
        t.join(timeout=10)
        assert not t.is_alive()
    for t in [leader, *queued]:
        assert t.error is None or isinstance(t.error, StorageError)
    written = sum(1 for t in [leader, *queued] if t.error is None)
    with SQLiteEventStore(store.path, codec=Codec(registry)) as again:
        assert written == again.head_position()
