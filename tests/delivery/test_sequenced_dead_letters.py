"""Sequenced dead letters end to end: a stream held behind its dead letter while others flow,
released in order by an operator's retry, through the relay and the DLQ together."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlite.app import App
from eventlite.messages import Registry, event
from eventlite.retry import RetryPolicy
from eventlite.unit_of_work import UnitOfWork

registry = Registry()


@event(registry=registry, name="dl.Shipped")
class Shipped:
    n: int


ONCE = RetryPolicy(max_attempts=1)


class Picky:
    """Fails on the event numbers in ``failing``; records what it handled."""

    def __init__(self, *failing: int) -> None:
        self.failing = set(failing)
        self.handled: list[int] = []

    def __call__(self, event: Shipped) -> None:
        if event.n in self.failing:
            raise LookupError(f"no address for {event.n}")
        self.handled.append(event.n)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    """An app on a SQLite file."""
    with App(tmp_path / "app.db", registry=registry) as the_app:
        yield the_app


def test_key_parks_behind_its_dead_letter_while_others_flow(app: App) -> None:
    """K's later events park behind its dead letter, even those committed after it was
    dead-lettered; L flows. An operator's retry releases K, in order."""
    picky = Picky(1)
    app.subscribe(Shipped, picky, durable=True, name="ship", retry=ONCE)
    app.store.append("K", [Shipped(1), Shipped(2)])
    app.store.append("L", [Shipped(3)])
    app.run_until_idle()
    app.store.append("K", [Shipped(4)])
    app.store.append("L", [Shipped(5)])
    app.run_until_idle()
    assert [3, 5] == picky.handled
    letters = app.dlq.list("ship")
    assert [("dead", 1), ("parked", 2), ("parked", 4)] == [
        (d.status.value, d.position) for d in letters
    ]
    assert app.dlq.is_blocked("ship", "K")
    assert (("K",), 3) == (
        app.subscribers()[0].blocked_keys,
        app.subscribers()[0].dead_letters,
    )
    picky.failing.clear()
    app.dlq.retry(letters[0].id)
    app.run_until_idle()
    assert [3, 5, 1, 2, 4] == picky.handled
    assert (0, False) == (app.dlq.count("ship"), app.dlq.is_blocked("ship", "K"))
    app.store.append("K", [Shipped(6)])
    app.run_until_idle()
    assert [3, 5, 1, 2, 4, 6] == picky.handled


def test_a_retry_that_fails_again_puts_the_key_back_to_sleep(app: App) -> None:
    """A redelivery that fails makes the entry dead again, one attempt more, and the
    events behind it stay parked; nothing behind it is delivered."""
    picky = Picky(1)
    app.subscribe(Shipped, picky, durable=True, name="ship", retry=RetryPolicy(max_attempts=2))
    app.store.append("K", [Shipped(1), Shipped(2)])
    app.run_until_idle()
    dead, _ = app.dlq.list("ship")
    app.dlq.retry(dead.id)
    app.run_until_idle()
    assert [] == picky.handled
    again, parked = app.dlq.list("ship")
    assert ("dead", 3, "parked") == (again.status.value, again.attempts, parked.status.value)


def test_a_retried_follower_that_fails_holds_the_rest(app: App) -> None:
    """When the dead letter goes through but an entry parked behind it fails, that entry
    becomes dead and the ones after it stay parked."""
    picky = Picky(1, 2)
    app.subscribe(Shipped, picky, durable=True, name="ship", retry=ONCE)
    app.store.append("K", [Shipped(1), Shipped(2), Shipped(3)])
    app.run_until_idle()
    picky.failing.discard(1)
    app.dlq.retry(app.dlq.list("ship")[0].id)
    app.run_until_idle()
    assert [1] == picky.handled
    assert [("dead", 2), ("parked", 3)] == [
        (d.status.value, d.position) for d in app.dlq.list("ship")
    ]


def test_retry_all_redelivers_through_the_unit_of_work_once(app: App) -> None:
    """A handler writing through the unit of work: redelivered dead letters have their
    effects written once, and the entry resolved in the same transaction."""
    assert app.database is not None
    with app.database.transaction() as tx:
        tx.execute("CREATE TABLE labels (n INTEGER)")
    broken = {1, 3}

    def label(event: Shipped, uow: UnitOfWork) -> None:
        if event.n in broken:
            raise OSError("printer jammed")
        uow.execute("INSERT INTO labels VALUES (?)", (event.n,))

    app.subscribe(Shipped, label, durable=True, name="labels", retry=ONCE)
    app.store.append("A", [Shipped(1), Shipped(2)])
    app.store.append("B", [Shipped(3)])
    app.run_until_idle()
    assert 3 == app.dlq.count("labels")
    broken.clear()
    assert 3 == app.dlq.retry_all("labels")
    app.run_until_idle()
    rows = app.database.read_connection().execute("SELECT n FROM labels").fetchall()
    assert ([1, 2, 3], 0) == (sorted(r[0] for r in rows), app.dlq.count("labels"))


def test_an_operator_retry_from_another_process_is_picked_up(tmp_path: Path) -> None:
    """A retry asked for by another process (the CLI) is found by the relay's poll and
    redelivered, with no drain to prompt it."""
    path = tmp_path / "app.db"
    delivered = threading.Event()
    picky = Picky(1)

    def handle(event: Shipped) -> None:
        picky(event)
        delivered.set()

    with App(path, registry=registry, poll_interval=0.02) as app:
        app.subscribe(Shipped, handle, durable=True, name="ship", retry=ONCE)
        app.store.append("K", [Shipped(1)])
        app.run_until_idle()
        (dead,) = app.dlq.list("ship")
        picky.failing.clear()
        script = (
            "import sys\n"
            "from eventlite.sqlite import SQLiteStorage\n"
            "from eventlite.dlq import DeadLetterQueue\n"
            "with SQLiteStorage(sys.argv[1]) as storage:\n"
            "    DeadLetterQueue(storage).retry(int(sys.argv[2]))\n"
        )
        subprocess.run([sys.executable, "-c", script, str(path), str(dead.id)], check=True)
        assert delivered.wait(10)
        assert [1] == picky.handled
