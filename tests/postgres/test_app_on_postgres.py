"""An App on a ``postgresql://`` URL runs its durable parts there: durable subscribers
(plain and with a unit of work), delayed retries and dead letters, and a restart that
resumes from the stored checkpoints with nothing lost and no unit-of-work effect twice;
and a backend connection terminated mid-delivery is survived."""

from __future__ import annotations

import time
from typing import Any

import pytest

from eventlite import App, Registry, event
from eventlite.retry import RetryPolicy
from eventlite.unit_of_work import UnitOfWork

from ._pg import psycopg_or_skip

pytestmark = pytest.mark.services

registry = Registry()


@event(registry=registry, name="pgapp.Deposited")
class Deposited:
    account: str
    amount: int


@event(registry=registry, name="pgapp.Noted")
class Noted:
    account: str
    total: int


@pytest.fixture
def url(pg_url: str, schema: str) -> str:
    """The test's own schema in the URL, and its connections named after it (so that a
    test terminates its own connections only)."""
    joiner = "&" if "?" in pg_url else "?"
    return f"{pg_url}{joiner}schema={schema}&application_name={schema}"


def _wire(app: App, seen: list[tuple[str, int]]) -> None:
    """A plain durable subscriber recording what it saw, and one with a unit of work
    appending a Noted event per deposit (its effect, committed with its checkpoint)."""

    def record(e: Deposited) -> None:
        seen.append((e.account, e.amount))

    def note(e: Deposited, uow: UnitOfWork) -> None:
        uow.append(f"notes-{e.account}", [Noted(e.account, e.amount)])

    app.subscribe(Deposited, record, durable=True, name="recorder", start="beginning")
    app.subscribe(Deposited, note, durable=True, name="noter", start="beginning")


def _notes(app: App) -> list[int]:
    return sorted(e.message.total for e in app.store.read_all() if isinstance(e.message, Noted))


def test_durable_subscribers_resume_after_a_restart(url: str) -> None:
    """Events appended before and after a restart reach both subscribers once each; the
    unit-of-work subscriber's effects exist exactly once."""
    seen: list[tuple[str, int]] = []
    with App(url, registry=registry) as app:
        _wire(app, seen)
        app.start()
        for n in range(1, 6):
            app.store.append(f"acct-{n % 2}", [Deposited(f"acct-{n % 2}", n)])
        app.run_until_idle()
        assert [1, 2, 3, 4, 5] == sorted(amount for _, amount in seen)
        assert [1, 2, 3, 4, 5] == _notes(app)
        positions = {c.name: c.position for c in app.storage.checkpoints.list()}
    with App(url, registry=registry) as app:
        _wire(app, seen)
        assert positions == {c.name: c.position for c in app.storage.checkpoints.list()}
        app.store.append("acct-9", [Deposited("acct-9", 6)])
        app.start()
        app.run_until_idle()
        assert [1, 2, 3, 4, 5, 6] == sorted(amount for _, amount in seen)
        assert [1, 2, 3, 4, 5, 6] == _notes(app)


def test_a_failing_handler_is_retried_then_dead_lettered(url: str) -> None:
    """A handler that keeps failing is tried per its policy, then its message is a dead
    letter on PostgreSQL, and the others still flow; retrying the dead letter after the
    fault is fixed delivers it."""
    broken = {"on": True}
    handled: list[int] = []

    def picky(e: Deposited) -> None:
        if broken["on"] and e.amount == 2:
            raise RuntimeError(f"cannot take {e.amount}")
        handled.append(e.amount)

    with App(url, registry=registry) as app:
        app.subscribe(
            Deposited,
            picky,
            durable=True,
            name="picky",
            start="beginning",
            retry=RetryPolicy(max_attempts=2, initial=0, jitter=0),
        )
        app.start()
        for n in (1, 2, 3):
            app.store.append(f"acct-{n}", [Deposited(f"acct-{n}", n)])
        app.run_until_idle()
        assert [1, 3] == handled
        [dead] = app.dlq.list()
        assert ("RuntimeError", "cannot take 2") == (dead.error_type, dead.error_message)
        broken["on"] = False
        app.dlq.retry(dead.id)
        app.run_until_idle()
        assert [1, 2, 3] == sorted(handled)
        assert 0 == app.dlq.count()


def test_delivery_survives_its_connection_being_terminated(
    url: str, pg_url: str, schema: str
) -> None:
    """Every backend of the test's schema is terminated while a durable subscriber with a
    unit of work is delivering: it recovers (the pool reconnects), nothing is lost, and
    no effect is committed twice."""
    psycopg = psycopg_or_skip()
    total = 200
    with App(url, registry=registry) as app:
        slow_seen: list[int] = []

        def note(e: Deposited, uow: UnitOfWork) -> None:
            slow_seen.append(e.amount)
            time.sleep(0.002)
            uow.append(f"notes-{e.account}", [Noted(e.account, e.amount)])

        app.subscribe(Deposited, note, durable=True, name="noter", start="beginning")
        for n in range(1, total + 1):
            app.store.append(f"acct-{n % 7}", [Deposited(f"acct-{n % 7}", n)])
        app.start()
        deadline = time.monotonic() + 30
        while len(slow_seen) < total // 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(slow_seen) >= total // 4, "delivery did not start"
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s",
                (schema,),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        app.run_until_idle(timeout=60)
        assert list(range(1, total + 1)) == _notes(app)


def test_a_stream_runs_on_postgres_and_continues_after_a_restart(url: str) -> None:
    """app.stream(...) over the log on PostgreSQL: its events reach a durable subscriber,
    its rows are in the schema, and a new app continues where the last one stopped."""
    from tests.streams.test_app import Counted, per_minute, registry, views

    seen: list[Any] = []
    with App(url, registry=registry) as app:
        app.subscribe(Counted, seen.append, durable=True, name="counted", start="beginning")
        app.stream(per_minute())
        app.store.append("views", views(5, 20, 70))
        app.run_until_idle()
        assert [Counted("/home", "09:00", 2)] == seen
    with App(url, registry=registry) as app:
        app.subscribe(Counted, seen.append, durable=True, name="counted")
        app.stream(per_minute())
        app.store.append("views", views(130))
        app.run_until_idle()
        assert [Counted("/home", "09:00", 2), Counted("/home", "09:01", 1)] == seen
        rows = app.projector.reader()["views_per_minute"].rows
        assert [1, 2] == sorted(r["value"] for r in rows)
