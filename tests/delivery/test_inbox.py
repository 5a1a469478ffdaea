"""The inbox: a durable subscriber writing through the unit of work records each message id
with its effects and its checkpoint, so a redelivered message is skipped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlite.app import App
from eventlite.clock import FakeClock
from eventlite.envelope import current_envelope
from eventlite.inbox import Inbox
from eventlite.messages import Registry, event
from eventlite.retry import RetryPolicy
from eventlite.sqlite import Database, SQLiteStorage
from eventlite.unit_of_work import UnitOfWork

registry = Registry()


@event(registry=registry, name="inbox.Paid")
class Paid:
    n: int


def _prepare(path: Path) -> None:
    with App(path, registry=registry) as app:
        assert app.database is not None
        with app.database.transaction() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS receipts (subscriber TEXT, n INTEGER)")
        app.store.append("p-1", [Paid(1), Paid(2)])


def _receipts(database: Database) -> list[tuple[str, int]]:
    rows = database.read_connection().execute("SELECT subscriber, n FROM receipts ORDER BY n")
    return [(r[0], r[1]) for r in rows]


def _subscribe(app: App, calls: list[int]) -> None:
    def receipt(event: Paid, uow: UnitOfWork) -> None:
        calls.append(event.n)
        uow.execute("INSERT INTO receipts VALUES ('uow', ?)", (event.n,))

    def plain(event: Paid) -> None:
        calls.append(-event.n)

    app.subscribe(Paid, receipt, durable=True, name="receipts", start="beginning")
    app.subscribe(Paid, plain, durable=True, name="plain", start="beginning")


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    """A file with two events and a receipts table."""
    path = tmp_path / "app.db"
    _prepare(path)
    yield path


def test_a_redelivered_message_is_skipped(path: Path) -> None:
    """Rewinding every checkpoint redelivers the log: the unit-of-work subscriber skips what
    its inbox holds (its effects stay single), the plain one is called again."""
    first: list[int] = []
    with App(path, registry=registry) as app:
        _subscribe(app, first)
        app.run_until_idle()
        assert app.database is not None
        with app.database.transaction() as tx:
            tx.execute("UPDATE subscriber_checkpoints SET position = 0")
    again: list[int] = []
    with App(path, registry=registry) as app:
        _subscribe(app, again)
        app.run_until_idle()
        assert app.database is not None
        assert [("uow", 1), ("uow", 2)] == _receipts(app.database)
        assert 2 == app.relay.inbox.count("receipts")
        assert 0 == app.relay.inbox.count("plain")
    assert ([-2, -1, 1, 2], [-1, -2]) == (sorted(first), again)


def test_the_mark_commits_with_the_effects_or_not_at_all(path: Path) -> None:
    """When the unit of work's commit fails, neither the effect nor the inbox mark nor the
    checkpoint is written; the message goes on to its retries."""
    with App(path, registry=registry) as app:

        def broken(event: Paid, uow: UnitOfWork) -> None:
            uow.execute("INSERT INTO receipts VALUES ('uow', ?)", (event.n,))
            uow.execute("INSERT INTO no_such_table VALUES (1)")

        app.subscribe(
            Paid,
            broken,
            durable=True,
            name="broken",
            retry=RetryPolicy(max_attempts=2),
            start="beginning",
        )
        app.run_until_idle()
        assert app.database is not None
        assert [] == _receipts(app.database)
        assert 0 == app.relay.inbox.count("broken")
        assert ["dead", "parked"] == [d.status.value for d in app.dlq.list("broken")]


def test_a_mark_made_meanwhile_rolls_the_effects_back(path: Path) -> None:
    """If the message is marked handled after the inbox was checked (another process won
    the race), the commit finds the mark, its effects are rolled back, and delivery moves
    on."""
    with App(path, registry=registry) as app:
        inbox = app.relay.inbox
        assert app.database is not None
        database = app.database

        def racing(event: Paid, uow: UnitOfWork) -> None:
            env = current_envelope()
            assert env is not None
            with app.storage.transaction():  # the rival commits first
                inbox.mark("racing", env.id)
            uow.execute("INSERT INTO receipts VALUES ('racing', ?)", (event.n,))

        app.subscribe(Paid, racing, durable=True, name="racing", start="beginning")
        app.run_until_idle()
        assert [] == _receipts(database)
        assert (2, 0) == (app.subscribers()[0].checkpoint, app.dlq.count())


def test_inbox_marks_per_consumer_and_purge(tmp_path: Path) -> None:
    """mark() is True once per consumer and message; contains() sees it; purge() forgets
    marks older than the given age by the clock."""
    clock = FakeClock()
    with SQLiteStorage(tmp_path / "inbox.db") as storage:
        inbox = Inbox(storage, clock=clock)
        with storage.transaction():
            assert inbox.mark("a", "m1")
            assert not inbox.mark("a", "m1")
            assert inbox.mark("b", "m1")
        clock.advance(100)
        with storage.transaction():
            assert inbox.mark("a", "m2")
        assert (True, False) == (inbox.contains("a", "m1"), inbox.contains("c", "m1"))
        assert (3, 2) == (inbox.count(), inbox.count("a"))
        assert 2 == inbox.purge(older_than=50)
        assert (False, True) == (inbox.contains("a", "m1"), inbox.contains("a", "m2"))
        assert 0 == inbox.purge(older_than=50, consumer="a")
        with pytest.raises(ValueError, match="older_than"):
            inbox.purge(older_than=-1)


def test_two_apps_running_one_subscriber_do_its_work_once(path: Path) -> None:
    """Two apps on one file running the same durable subscriber (a mistake) still write
    each effect once: the inbox and the checkpoint's compare-and-set stop the loser."""
    with App(path, registry=registry) as first, App(path, registry=registry) as second:
        for app in (first, second):

            def receipt(event: Paid, uow: UnitOfWork) -> None:
                uow.execute("INSERT INTO receipts VALUES ('twice', ?)", (event.n,))

            app.subscribe(Paid, receipt, durable=True, name="twice", start="beginning")
        for i in range(3, 103):
            first.store.append(f"p-{i % 7}", [Paid(i)])
        for _ in range(2):
            first.run_until_idle()
            second.run_until_idle()
        assert first.database is not None
        ns = [n for _, n in _receipts(first.database)]
        assert list(range(1, 103)) == ns
