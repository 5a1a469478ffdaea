"""Held streams and unknown types: streams left held after a release stopped part-way,
stored events of types the app does not know, and the checkpoint after a unit of work that
committed before an exception surfaced."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventlite.app import App
from eventlite.clock import FakeClock
from eventlite.dlq import DeadLetterStatus
from eventlite.exceptions import StorageError
from eventlite.messages import Registry, event
from eventlite.retry import RetryPolicy
from eventlite.unit_of_work import UnitOfWork

registry = Registry()


@event(registry=registry, name="review.Tick")
class Tick:
    n: int


@event(registry=registry, name="review.Note")
class Note:
    n: int


older = Registry()  # an earlier release of the app: it knows Tick, not Note


@event(registry=older, name="review.Tick")
class OldTick:
    n: int


DELAYED = RetryPolicy(max_attempts=1, delayed_attempts=2, initial=10.0, jitter=0.0)


class Flaky:
    """Fails on the event numbers in ``failing``; records what it handled."""

    def __init__(self, *failing: int) -> None:
        self.failing = set(failing)
        self.handled: list[int] = []

    def __call__(self, event: Any) -> None:
        if event.n in self.failing:
            raise RuntimeError(f"cannot handle {event.n}")
        self.handled.append(event.n)


@pytest.fixture
def app(tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    """An app on a file with a fake clock."""
    with App(tmp_path / "app.db", registry=registry, clock=clock) as the_app:
        yield the_app


def _retry_rows(app: App) -> list[tuple[Any, ...]]:
    """The stored delayed retries: (position, key, 1 for a head or 0 for a held message)."""
    return [(e.position, e.key, int(e.is_head)) for e in app.storage.retries.entries()]


# -- 1. a release that stopped part-way -------------------------------------------------

CRASHING_CHILD = """
import os, sys
from eventlite.app import App
from eventlite.clock import FakeClock
from eventlite.messages import Registry, event
from eventlite.retry import RetryPolicy

registry = Registry()

@event(registry=registry, name="review.Tick")
class Tick:
    n: int

clock = FakeClock()
app = App(sys.argv[1], registry=registry, clock=clock)
failed = set()

def handle(e):
    if e.n == 1 and not failed:
        failed.add(1)
        raise RuntimeError("transient")
    if e.n == 2:
        os._exit(3)  # the process dies while releasing the first held follower

app.subscribe(Tick, handle, durable=True, name="sub",
              retry=RetryPolicy(max_attempts=1, delayed_attempts=2, initial=10.0, jitter=0.0))
app.store.append("s", [Tick(1), Tick(2), Tick(3)])
app.run_until_idle()
clock.advance(10)
app.run_until_idle()
"""


def test_followers_of_a_release_cut_by_a_crash_are_released_after_a_restart(
    tmp_path: Path,
) -> None:
    """A process that dies while releasing the messages held behind a retry that then
    succeeded leaves them with no due head; after a restart they are delivered, in order,
    and the stream is no longer held."""
    path = tmp_path / "app.db"
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_CHILD, str(path)], capture_output=True, timeout=60
    )
    assert 3 == child.returncode, child.stderr.decode()
    flaky = Flaky()
    with App(path, registry=registry, clock=FakeClock()) as app:
        assert [(2, "s", 0), (3, "s", 0)] == _retry_rows(app)  # held, with no head
        app.subscribe(Tick, flaky, durable=True, name="sub", retry=DELAYED)
        app.store.append("s", [Tick(4)])
        app.run_until_idle()
        status = app.subscribers()[0]
        assert ([2, 3, 4], [], (), 0, 0) == (
            flaky.handled,
            _retry_rows(app),
            status.blocked_keys,
            status.retrying,
            status.parked,
        )


def test_followers_of_a_release_cut_by_a_storage_error_are_released_on_the_next_pass(
    app: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage error while releasing the held messages of a stream stops the release
    part-way; the next pass of the same process finds the stream without a head and
    releases the rest."""
    flaky = Flaky(1)
    record_at = app.store.record_at
    broken = {3}

    def flaky_record_at(position: int) -> Any:
        if position in broken:
            broken.discard(position)
            raise StorageError("disk I/O error")
        return record_at(position)

    monkeypatch.setattr(app.store, "record_at", flaky_record_at)
    app.subscribe(Tick, flaky, durable=True, name="sub", retry=DELAYED)
    app.store.append("s", [Tick(1), Tick(2), Tick(3)])
    app.run_until_idle()
    assert [(1, "s", 1), (2, "s", 0), (3, "s", 0)] == _retry_rows(app)
    flaky.failing.clear()
    clock.advance(10)
    app.run_until_idle()
    app.store.append("s", [Tick(4)])
    app.run_until_idle()
    assert (set(), [1, 2, 3, 4], []) == (broken, flaky.handled, _retry_rows(app))


def test_a_stranded_follower_that_fails_becomes_a_head_with_its_first_retry(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A held message released after an interrupted release that fails waits for its
    first delayed retry (not a negative one) and still holds the message behind it."""
    path = tmp_path / "app.db"
    with App(path, registry=registry, clock=clock) as app:
        app.subscribe(Tick, Flaky(1), durable=True, name="sub", retry=DELAYED)
        app.store.append("s", [Tick(1), Tick(2), Tick(3)])
        app.run_until_idle()
    with sqlite3.connect(path) as conn:  # the head's success committed, then a crash
        conn.execute("DELETE FROM delivery_retries WHERE position = 1")
    flaky = Flaky(2)
    with App(path, registry=registry, clock=clock) as app:
        app.subscribe(Tick, flaky, durable=True, name="sub", retry=DELAYED)
        app.run_until_idle()
        assert ([], [(2, "s", 1), (3, "s", 0)]) == (flaky.handled, _retry_rows(app))
        flaky.failing.clear()
        clock.advance(9.9)
        app.run_until_idle()
        assert [] == flaky.handled  # the first delayed retry comes after `initial`
        clock.advance(0.1)
        app.run_until_idle()
        assert ([2, 3], []) == (flaky.handled, _retry_rows(app))


# -- 2. unknown event types -------------------------------------------------------------


def test_an_unknown_type_is_dead_lettered_without_holding_its_stream(tmp_path: Path) -> None:
    """A stored event whose type this app's registry does not know is dead-lettered with
    no key, for the operator to see; the later events of its stream are still delivered
    to a subscriber that never wanted that type."""
    path = tmp_path / "app.db"
    with App(path, registry=registry) as newer, App(path, registry=older) as app:
        got: list[int] = []
        app.subscribe(OldTick, lambda e: got.append(e.n), durable=True, name="mailer")
        newer.store.append("order-1", [Note(1)])
        newer.store.append("order-1", [Tick(2)])
        app.run_until_idle()
        (letter,) = app.dlq.list("mailer")
        status = app.subscribers()[0]
        assert ([2], DeadLetterStatus.DEAD, None, "review.Note", 1) == (
            got,
            letter.status,
            letter.key,
            letter.type_name,
            letter.position,
        )
        assert "UnknownMessageType" in (letter.error_type or "")
        assert ((), 2, 1) == (status.blocked_keys, status.checkpoint, status.dead_letters)


def test_an_unknown_type_is_not_parked_behind_a_delayed_retry(tmp_path: Path) -> None:
    """An unknown type in a stream held behind a delayed retry is dead-lettered at once,
    without a key, rather than parked: when the retry succeeds, the stream goes on."""
    path = tmp_path / "app.db"
    clock = FakeClock()
    flaky = Flaky(1)
    with (
        App(path, registry=registry, clock=clock) as newer,
        App(path, registry=older, clock=clock) as app,
    ):
        app.subscribe(OldTick, flaky, durable=True, name="sub", retry=DELAYED)
        newer.store.append("s", [Tick(1), Note(2), Tick(3)])
        app.run_until_idle()
        assert [(1, "s", 1), (3, "s", 0)] == _retry_rows(app)
        flaky.failing.clear()
        clock.advance(10)
        app.run_until_idle()
        (letter,) = app.dlq.list("sub")
        assert ([1, 3], [], None, 2) == (
            flaky.handled,
            _retry_rows(app),
            letter.key,
            letter.position,
        )


def test_a_held_message_of_a_type_no_longer_known_does_not_stop_the_release(
    tmp_path: Path,
) -> None:
    """A message parked behind a retry whose type the registry no longer knows (parked by
    an earlier release of the app) is dead-lettered without a key when the stream is
    released; the messages after it are delivered."""
    path = tmp_path / "app.db"
    clock = FakeClock()
    with App(path, registry=registry, clock=clock) as app:
        app.subscribe(Tick, Flaky(1), durable=True, name="sub", retry=DELAYED)
        app.store.append("s", [Tick(1), Note(2), Tick(3)])
        app.run_until_idle()
        assert [(1, "s", 1), (3, "s", 0)] == _retry_rows(app)
    with sqlite3.connect(path) as conn:  # as the relay used to park it
        conn.execute(
            "INSERT INTO delivery_retries (subscriber, position, key, attempts) "
            "VALUES ('sub', 2, 's', 0)"
        )
    flaky = Flaky()
    with App(path, registry=older, clock=clock) as app:
        app.subscribe(OldTick, flaky, durable=True, name="sub", retry=DELAYED)
        clock.advance(10)
        app.run_until_idle()
        (letter,) = app.dlq.list("sub")
        assert ([1, 3], [], None, "review.Note") == (
            flaky.handled,
            _retry_rows(app),
            letter.key,
            letter.type_name,
        )


def test_a_known_type_that_cannot_be_decoded_still_holds_its_stream(app: App) -> None:
    """A stored event of a known type with corrupt data is dead-lettered with its key:
    the subscriber wanted it, so the later events of its stream park behind it."""
    got: list[int] = []
    app.subscribe(Tick, lambda e: got.append(e.n), durable=True, name="sub")
    assert app.database is not None
    with app.database.transaction() as tx:
        app.store.append("s", [Tick(1)])
        tx.execute("UPDATE events SET data = '{not json' WHERE stream_id = 's'")
    app.store.append("s", [Tick(2)])
    app.run_until_idle()
    dead, parked = app.dlq.list("sub")
    assert ([], ("s", "dead"), ("s", "parked")) == (
        got,
        (dead.key, dead.status.value),
        (parked.key, parked.status.value),
    )


# -- 3. a unit of work that committed before an exception surfaced ----------------------


def test_no_false_checkpoint_warning_after_a_commit_then_an_exception(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """When a handler's unit of work commits (inbox mark and checkpoint) and an exception
    surfaces afterwards, the next attempt is skipped by the inbox and the relay takes the
    moved checkpoint as its own: no "moved by another process" warning, and later events
    are delivered once."""
    assert app.database is not None
    with app.database.transaction() as tx:
        tx.execute("CREATE TABLE effects (n INTEGER)")
    raised: list[int] = []

    def handle(event: Tick, uow: UnitOfWork) -> None:
        uow.execute("INSERT INTO effects VALUES (?)", (event.n,))
        uow.commit()
        if event.n == 1 and not raised:
            raised.append(1)
            raise RuntimeError("after the commit")

    app.subscribe(Tick, handle, durable=True, name="sub")
    with caplog.at_level(logging.WARNING, logger="eventlite.relay"):
        app.store.append("s", [Tick(1)])
        app.run_until_idle()
        app.store.append("s", [Tick(2)])
        app.run_until_idle()
    rows = app.database.read_connection().execute("SELECT n FROM effects").fetchall()
    moved = [r.getMessage() for r in caplog.records if "moved by another" in r.getMessage()]
    assert ([(1,), (2,)], [], 2, 0) == (
        rows,
        moved,
        app.subscribers()[0].checkpoint,
        app.dlq.count("sub"),
    )
