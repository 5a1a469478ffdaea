"""The App wires the read side and long-running processes: inline and tracking projections,
sagas (started by events, resumed by start()), process managers, and run_until_idle and
close() over all of them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from eventlite.aggregate import Aggregate, applies
from eventlite.app import App
from eventlite.clock import FakeClock
from eventlite.exceptions import ConcurrencyError
from eventlite.messages import Registry, command, event, query
from eventlite.process import ProcessContext, ProcessManager, ProcessManagers
from eventlite.projection import Projection, ProjectionError, Projector, projects
from eventlite.saga import Saga, SagaOrchestrator, SagaStatus, SagaStep, StepContext
from eventlite.store import NO_STREAM
from eventlite.unit_of_work import UnitOfWork

registry = Registry()


@command(registry=registry, name="wiring.Open")
class Open:
    account: str
    fail: bool = False


@query(registry=registry, name="wiring.Parts")
class Parts:
    pass


@event(registry=registry, name="wiring.Opened")
class Opened:
    account: str


@event(registry=registry, name="wiring.Closed")
class Closed:
    account: str


@event(registry=registry, name="wiring.Expired")
class Expired:
    account: str


class Account(Aggregate):
    opened: bool = False

    @applies(Opened)
    def _opened(self, e: Opened) -> None:
        self.opened = True

    @applies(Closed)
    def _closed(self, e: Closed) -> None:
        self.opened = False


class Accounts(Projection):
    """A read model of accounts: one row per account, with its state."""

    name = "accounts"
    tables = ("accounts",)
    broken = False

    def setup(self, db: sqlite_utils.Database) -> None:
        db.table("accounts").create(
            {"account": str, "state": str}, pk="account", if_not_exists=True
        )

    @projects(Opened)
    def _opened(self, e: Opened, db: sqlite_utils.Database) -> None:
        if self.broken:
            raise ValueError("the read model is broken")
        db.table("accounts").insert({"account": e.account, "state": "open"})

    @projects(Closed)
    def _closed(self, e: Closed, db: sqlite_utils.Database) -> None:
        db.table("accounts").update(e.account, {"state": "closed"})


def rows(app: App) -> dict[str, str]:
    """The read model as {account: state}."""
    return {r["account"]: r["state"] for r in app.projector.reader().table("accounts").rows}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with App(tmp_path / "app.db", registry=registry, synchronous="normal", clock=FakeClock()) as a:

        @a.handles(Open)
        def open_account(cmd: Open, uow: UnitOfWork) -> None:
            account = Account(cmd.account)
            account.record(Opened(cmd.account))
            uow.add(account)
            if cmd.fail:
                raise RuntimeError("refused after recording")

        yield a


def test_an_inline_projection_rolls_back_with_a_failed_unit_of_work(app: App) -> None:
    """An inline projection is written in the unit of work's commit: visible at once after
    a command, and absent when the unit of work raised or its commit met a conflict."""
    app.projection(Accounts(), mode="inline")
    app.dispatch(Open("a-1"))
    assert {"a-1": "open"} == rows(app)
    with pytest.raises(RuntimeError, match="refused"):
        app.dispatch(Open("a-2", fail=True))
    with pytest.raises(ConcurrencyError):
        app.dispatch(Open("a-1"))  # the stream exists: the commit fails
    assert ({"a-1": "open"}, 1) == (rows(app), app.store.head_position())


def test_an_inline_projection_sees_every_unit_of_work_of_the_app(app: App) -> None:
    """Events recorded through a repository, a plain append in a unit of work and a durable
    subscriber's unit of work all reach the inline read model in their own commit."""
    app.projection(Accounts(), mode="inline")
    account = Account("a-1")
    account.record(Opened("a-1"))
    app.repository(Account).add(account)
    with app.unit_of_work() as uow:
        uow.append("Account-a-2", [Opened("a-2")], expected_version=NO_STREAM)

    @app.subscribes(Opened, durable=True, name="closer", start="beginning")
    def close_it(e: Opened, uow: UnitOfWork) -> None:
        uow.append(f"Account-{e.account}", [Closed(e.account)])

    app.run_until_idle()
    assert {"a-1": "closed", "a-2": "closed"} == rows(app)


def test_an_inline_projection_that_fails_fails_the_command(app: App) -> None:
    """A handler error of an inline projection fails the commit: no event, no row."""
    accounts = app.projection(Accounts(), mode="inline")
    accounts.broken = True
    with pytest.raises(ProjectionError, match="accounts"):
        app.dispatch(Open("a-1"))
    assert (0, {}) == (app.store.head_position(), rows(app))


def test_a_tracking_projection_catches_up_in_run_until_idle(app: App) -> None:
    """After run_until_idle a tracking projection reflects every event committed before,
    and its status shows no lag."""
    for n in range(20):
        app.dispatch(Open(f"a-{n}"))
    app.projection(Accounts())
    for n in range(20, 40):
        app.dispatch(Open(f"a-{n}"))
    app.run_until_idle()
    [status] = app.projector.status()
    assert (40, "tracking", 0) == (len(rows(app)), status.mode, status.lag)


def test_run_until_idle_raises_when_a_tracking_projection_fails(app: App) -> None:
    """A tracking projection whose handler fails makes run_until_idle raise its
    ProjectionError rather than return as if the read model were current."""
    accounts = app.projection(Accounts())
    accounts.broken = True
    app.dispatch(Open("a-1"))
    with pytest.raises(ProjectionError, match="accounts"):
        app.run_until_idle()


class SagaLog:
    """Saga steps that log what ran and fail for accounts named 'bad'."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def step(self, name: str) -> Any:
        def run(ctx: StepContext) -> None:
            self.log.append(f"{name} {ctx.data.account}")
            if name == "charge" and ctx.data.account == "bad":
                raise RuntimeError("card declined")

        return run

    def saga(self) -> Saga:
        return Saga(
            "welcome",
            [
                SagaStep("greet", self.step("greet"), self.step("ungreet")),
                SagaStep("charge", self.step("charge"), self.step("refund")),
                SagaStep("ship", self.step("ship")),
            ],
        )


def test_a_saga_started_by_an_event_completes_and_a_failing_one_compensates(app: App) -> None:
    """Each Opened event starts one instance through the app: one completes, the one whose
    step fails compensates its completed steps and ends failed."""
    steps = SagaLog()
    app.saga(steps.saga(), started_by=Opened)
    app.dispatch(Open("good"))
    app.dispatch(Open("bad"))
    app.run_until_idle()
    by_account = {i.data.account: i for i in app.sagas.list(saga="welcome")}
    assert (SagaStatus.COMPLETED, SagaStatus.FAILED) == (
        by_account["good"].status,
        by_account["bad"].status,
    )
    assert ["greet good", "charge good", "ship good"] == [
        s for s in steps.log if s.endswith("good")
    ]
    assert ["greet bad", "charge bad", "ungreet bad"] == [s for s in steps.log if s.endswith("bad")]
    assert ("charge", ("greet",)) == (
        by_account["bad"].failed_step,
        by_account["bad"].compensated_steps,
    )


def test_a_saga_interrupted_after_its_start_is_resumed_by_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instance is stored with the event's inbox mark; if the process stops before
    running it, app.start() on the next run resumes it, and the event, delivered once,
    started exactly one instance."""
    path = tmp_path / "app.db"
    steps = SagaLog()
    monkeypatch.setattr(App, "_run_saga", lambda self, saga_id: None)  # "crash" after commit
    with App(path, registry=registry, synchronous="normal") as first:
        first.saga(steps.saga(), started_by=Opened, data=lambda e: {"account": e.account})
        first.store.append("Account-a-1", [Opened("a-1")])
        first.run_until_idle()
        [instance] = first.sagas.list()
        assert (SagaStatus.RUNNING, []) == (instance.status, steps.log)
    monkeypatch.undo()
    with App(path, registry=registry, synchronous="normal") as second:
        second.saga(steps.saga(), started_by=Opened)
        second.start()
        second.run_until_idle()
        [instance] = second.sagas.list()
        assert (SagaStatus.COMPLETED, ["greet a-1", "charge a-1", "ship a-1"]) == (
            instance.status,
            steps.log,
        )


def test_sagas_registered_after_start_are_resumed_too(tmp_path: Path) -> None:
    """start() before a saga is registered: its unfinished instances are resumed when it
    is registered."""
    path = tmp_path / "app.db"
    steps = SagaLog()
    with App(path, registry=registry) as first:
        first.sagas.create(steps.saga(), {"account": "a-1"})
    with App(path, registry=registry) as second:
        second.start()
        second.saga(steps.saga())
        second.run_until_idle()
        assert [SagaStatus.COMPLETED] == [i.status for i in second.sagas.list()]


def test_saga_options_without_started_by_are_refused(app: App) -> None:
    """data=, name= and retry= only mean something for sagas started by an event."""
    with pytest.raises(ValueError, match="started_by"):
        app.saga(SagaLog().saga(), data=lambda e: {})


def test_run_until_idle_settles_timeouts_commands_and_projections_together(app: App) -> None:
    """With a fake clock, one run_until_idle after the clock passes a process manager's
    timeout covers the timeout, the command its handler dispatches, the event that command
    records and the tracking projection of that event."""
    manager = ProcessManager("expiry", correlate={Opened: lambda e: e.account})

    @manager.starts(Opened)
    def opened(e: Opened, process: ProcessContext[dict[str, Any]]) -> None:
        process.schedule(Expired(e.account), after=timedelta(days=30))

    @manager.handles(Expired)
    def expired(e: Expired, process: ProcessContext[dict[str, Any]]) -> None:
        process.dispatch(Open(f"{e.account}-renewed"))
        process.complete()

    app.process_manager(manager)
    app.projection(Accounts())
    app.dispatch(Open("a-1"))
    app.run_until_idle()
    assert {"a-1": "open"} == rows(app)
    clock = app.clock
    assert isinstance(clock, FakeClock)
    clock.advance(timedelta(days=30).total_seconds())
    app.run_until_idle()
    assert {"a-1": "open", "a-1-renewed": "open"} == rows(app)
    assert ["done", "running"] == [i.status.value for i in app.processes.list("expiry")]


def test_handlers_can_ask_for_the_read_side_by_name(app: App) -> None:
    """projector, sagas and processes are dependencies a handler can name, and names a user
    cannot provide."""

    @app.handles(Parts)
    def parts(
        message: Parts, projector: Projector, sagas: SagaOrchestrator, processes: ProcessManagers
    ) -> list[object]:
        return [projector, sagas, processes]

    assert [app.projector, app.sagas, app.processes] == app.ask(Parts())
    with pytest.raises(ValueError, match="app's own"):
        app.provide(sagas=object())


def test_an_app_in_memory_has_no_read_side(tmp_path: Path) -> None:
    """Projections, sagas and process managers keep their state in the file: in memory
    they raise RuntimeError naming what needs a file."""
    with App(registry=registry) as memory:
        for what in ("projector", "sagas", "processes"):
            with pytest.raises(RuntimeError, match="durable storage"):
                getattr(memory, what)
        with pytest.raises(RuntimeError, match="durable storage"):
            memory.projection(Accounts())
        with pytest.raises(RuntimeError, match="durable storage"):
            memory.saga(SagaLog().saga())
        memory.start()
        memory.run_until_idle()


def test_close_stops_the_projection_threads_and_the_sagas(tmp_path: Path) -> None:
    """close() stops the tracking threads and the saga orchestrator with the relay."""
    app = App(tmp_path / "app.db", registry=registry)
    app.projection(Accounts())
    threads = [t for t in threading.enumerate() if t.name == "eventlite-projection-accounts"]
    assert 1 == len(threads)
    app.close()
    assert [False] == [t.is_alive() for t in threads]
    with pytest.raises(Exception, match="closed"):
        app.sagas.start(SagaLog().saga(), {"account": "late"})
