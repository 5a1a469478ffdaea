"""While the storage fails (another process holds the write lock past the busy timeout, the
disk is full), a durable subscriber backs off with a bounded, growing delay, never runs a
handler again for a message it already handled, and logs only what really happened."""

from __future__ import annotations

import itertools
import logging
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlite.app import App
from eventlite.codec import Codec
from eventlite.exceptions import StorageError
from eventlite.messages import Registry, event
from eventlite.relay import BACKOFF_MAX
from eventlite.retry import RetryPolicy
from eventlite.sqlite import Database, SQLiteEventStore

registry = Registry()


@event(registry=registry, name="failing.Placed")
class Placed:
    n: int


@pytest.fixture
def app(db_path: Path) -> Iterator[App]:
    """An app whose writers give up on another process's lock after 50 ms."""
    database = Database(db_path, busy_timeout=0.05)
    store = SQLiteEventStore(database, codec=Codec(registry))
    with App(registry=registry, store=store, poll_interval=0.02) as the_app:
        yield the_app


def _blocker(db_path: Path) -> sqlite3.Connection:
    """Another connection to the file (as another process would hold it)."""
    return sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)


def _waits(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The back-off delays the relay announced."""
    found = (re.search(r"trying again in ([0-9.e-]+) s", r.getMessage()) for r in caplog.records)
    return [float(m.group(1)) for m in found if m]


def test_a_plain_subscriber_runs_no_handler_again_while_the_file_is_locked(
    app: App, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the write lock while a plain subscriber has handled an event
    it cannot write its checkpoint for: the subscriber backs off, with growing delays up
    to a bound, and handles nothing more (nothing is left unsaved beyond its promise);
    once the lock is gone every event is handled exactly once and the checkpoint is
    written."""
    calls: Counter[int] = Counter()
    gate = threading.Event()
    first = threading.Event()

    def handle(e: Placed) -> None:
        calls[e.n] += 1
        if e.n == 1:
            first.set()
            assert gate.wait(10)
            time.sleep(0.05)  # past the checkpoint interval: the checkpoint is due now

    blocker = _blocker(db_path)
    with caplog.at_level(logging.INFO, logger="eventlite.relay"):
        app.subscribe(Placed, handle, durable=True, name="mailer")
        app.relay.checkpoint_interval = 0.01
        app.store.append_many([(f"s-{i}", [Placed(i)]) for i in range(1, 21)])
        assert first.wait(10)
        blocker.execute("BEGIN IMMEDIATE")
        gate.set()
        time.sleep(1.6)
        during = (dict(calls), app.subscribers()[0].checkpoint)
        blocker.execute("ROLLBACK")
        app.run_until_idle()
    blocker.close()
    waits = _waits(caplog)
    assert ({1: 1}, 0) == during
    assert 2 <= len(waits) <= 8, waits
    assert sorted(waits) == waits and waits[-1] > waits[0] and max(waits) <= BACKOFF_MAX
    assert ({n: 1 for n in range(1, 21)}, 20) == (dict(calls), app.subscribers()[0].checkpoint)


def test_a_dead_letter_the_file_refused_is_written_later_and_logged_once(
    app: App, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler fails while the file is locked: the dead letter cannot be written, so
    nothing says it was; the handler is not run again while the write is retried with
    back-off, and once the lock is gone the dead letter is written and logged once."""
    blocker = _blocker(db_path)
    calls: list[int] = []

    def handle(e: Placed) -> None:
        calls.append(e.n)
        if not blocker.in_transaction:
            blocker.execute("BEGIN IMMEDIATE")  # the other process takes the lock now
        raise RuntimeError("mail server down")

    with caplog.at_level(logging.INFO, logger="eventlite.relay"):
        app.subscribe(
            Placed, handle, durable=True, name="mailer", retry=RetryPolicy(max_attempts=1)
        )
        app.store.append("s-1", [Placed(1)])
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)
        messages = [r.getMessage() for r in caplog.records]
        during = (list(calls), app.dlq.count("mailer"))
        assert [] == [m for m in messages if "dead-lettered" in m]
        assert any("could not record the dead letter" in m for m in messages), messages
        blocker.execute("ROLLBACK")
        app.run_until_idle()
        messages = [r.getMessage() for r in caplog.records]
    blocker.close()
    assert (([1], 0), [1], 1) == (during, calls, app.dlq.count("mailer"))
    assert 1 == sum("dead-lettered as #1" in m for m in messages)


def test_a_full_disk_backs_off_and_recovers(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """While every checkpoint write fails (the disk is full), the subscriber tries again
    less and less often (a few times a second at most, not every poll), runs no handler
    again, and writes its checkpoint once the disk has room."""
    calls: Counter[int] = Counter()
    tries: list[float] = []
    full = threading.Event()
    full.set()
    checkpoints = app.storage.checkpoints
    move = checkpoints.move

    def failing_move(name: str, expected: int, position: int, at: float) -> None:
        if full.is_set():
            tries.append(time.monotonic())
            raise StorageError(
                "writing failed on app.db: OperationalError: database or disk is full"
            )
        move(name, expected, position, at)

    app.subscribe(Placed, lambda e: calls.update([e.n]), durable=True, name="s")
    app.relay.checkpoint_interval = 0.01
    monkeypatch.setattr(checkpoints, "move", failing_move)
    app.store.append("s-1", [Placed(1), Placed(2)])
    time.sleep(1.5)
    full.clear()
    app.run_until_idle()
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert 3 <= len(tries) <= 8, tries
    assert gaps[-1] > 2 * gaps[0]
    assert ({1: 1, 2: 1}, 2) == (dict(calls), app.subscribers()[0].checkpoint)
