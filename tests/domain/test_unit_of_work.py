"""Repository, unit of work, snapshots and the App composition root, on both stores."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlite.aggregate import Aggregate, applies
from eventlite.app import App
from eventlite.clock import FakeClock
from eventlite.envelope import Envelope, current_envelope
from eventlite.exceptions import AggregateNotFound, CommandRejected, ConcurrencyError
from eventlite.messages import Registry, command, event
from eventlite.store import Snapshot
from eventlite.store.claims import AlreadyClaimed
from eventlite.unit_of_work import UnitOfWork

registry = Registry()


@event(registry=registry)
class Opened:
    owner: str


@event(registry=registry)
class Deposited:
    amount: Decimal


@event(registry=registry)
class Withdrawn:
    amount: Decimal


@command(registry=registry)
class Deposit:
    account_id: str
    amount: Decimal


class Account(Aggregate):
    owner: str = ""
    balance: Decimal = Decimal(0)
    moves: int = 0

    @classmethod
    def open(cls, account_id: str, owner: str) -> Account:
        acc = cls(account_id)
        acc.record(Opened(owner))
        return acc

    def deposit(self, amount: Decimal) -> None:
        self.record(Deposited(amount))

    def withdraw(self, amount: Decimal) -> None:
        if amount > self.balance:
            raise ValueError(f"cannot withdraw {amount} from {self.balance}")
        self.record(Withdrawn(amount))

    @applies(Opened)
    def _opened(self, e: Opened) -> None:
        self.owner = e.owner

    @applies(Deposited)
    def _deposited(self, e: Deposited) -> None:
        self.balance += e.amount
        self.moves += 1

    @applies(Withdrawn)
    def _withdrawn(self, e: Withdrawn) -> None:
        self.balance -= e.amount
        self.moves += 1


class SnappyAccount(Account):
    stream_prefix = "Account"
    snapshot_every = 3


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    """An App on the in-memory store and one on a SQLite file."""
    db = None if request.param == "memory" else tmp_path / "app.db"
    with App(db, registry=registry) as the_app:
        yield the_app


def _published(app: App) -> list[Envelope]:
    seen: list[Envelope] = []

    def record(_: Any) -> None:
        env = current_envelope()
        assert env is not None
        seen.append(env)

    app.bus.subscribe(object, record)
    return seen


def test_commit_appends_every_aggregate_then_publishes(app: App) -> None:
    """One commit appends the events of every touched aggregate; they are published after."""
    published = _published(app)
    with app.unit_of_work() as uow:
        uow.add(Account.open("a", "ann"))
        uow.add(Account.open("b", "bob"))
        assert [] == published
    assert [Opened("ann"), Opened("bob")] == [e.message for e in published]
    assert [1, 2] == [e.position for e in published]
    assert "ann" == app.repository(Account).get("a").owner


def test_exception_rolls_back_and_publishes_nothing(app: App) -> None:
    """An exception in the block writes nothing and publishes nothing."""
    published = _published(app)
    with pytest.raises(RuntimeError), app.unit_of_work() as uow:
        uow.add(Account.open("a", "ann"))
        raise RuntimeError("boom")
    assert [] == published
    assert 0 == app.store.head_position()
    assert app.repository(Account).find("a") is None


def test_conflict_writes_nothing_of_the_whole_unit(app: App) -> None:
    """If one stream moved since it was loaded, no stream of the unit is written."""
    app.repository(Account).add(Account.open("a", "ann"))
    first, second = app.unit_of_work(), app.unit_of_work()
    with first:
        a1 = first.get(Account, "a")
    with pytest.raises(ConcurrencyError) as info, second:
        second.get(Account, "a").deposit(Decimal(1))
        second.add(Account.open("b", "bob"))
        with app.unit_of_work() as third:
            third.get(Account, "a").deposit(Decimal(5))
    assert ("Account-a", 1, 2) == (info.value.stream_id, info.value.expected, info.value.actual)
    assert app.repository(Account).find("b") is None
    assert Decimal(5) == app.repository(Account).get("a").balance
    assert "ann" == a1.owner


def test_identity_map_and_not_found(app: App) -> None:
    """Within a unit the same id is the same object; unknown ids are None or an error."""
    app.repository(Account).add(Account.open("a", "ann"))
    with app.unit_of_work() as uow:
        assert uow.get(Account, "a") is uow.repository(Account).get("a")
        assert uow.find(Account, "zzz") is None
        with pytest.raises(AggregateNotFound, match="'zzz'"):
            uow.get(Account, "zzz")


def test_new_aggregate_over_existing_stream_conflicts(app: App) -> None:
    """Adding a new aggregate whose stream exists raises ConcurrencyError (NO_STREAM)."""
    app.repository(Account).add(Account.open("a", "ann"))
    with pytest.raises(ConcurrencyError):
        app.repository(Account).add(Account.open("a", "eve"))
    assert "ann" == app.repository(Account).get("a").owner


def test_handler_gets_uow_and_events_are_correlated(app: App) -> None:
    """A command handler asking for ``uow`` gets one; its events are caused by the command."""
    published = _published(app)
    app.repository(Account).add(Account.open("a", "ann"))
    published.clear()

    @app.handles(Deposit)
    def deposit(cmd: Deposit, uow: UnitOfWork) -> Decimal:
        acc = uow.get(Account, cmd.account_id)
        acc.deposit(cmd.amount)
        env = current_envelope()
        assert env is not None
        seen_command.append(env)
        return acc.balance

    seen_command: list[Envelope] = []
    assert Decimal(7) == app.dispatch(Deposit("a", Decimal(7)))
    (stored,) = published
    cmd_env = seen_command[0]
    assert (cmd_env.correlation_id, cmd_env.id) == (stored.correlation_id, stored.causation_id)
    assert ("Account-a", 2) == (stored.stream_id, stored.version)


def test_conflict_retries_rerun_the_handler(app: App) -> None:
    """A handler whose commit conflicts is run again on fresh state, up to the bound."""
    app.repository(Account).add(Account.open("a", "ann"))
    runs: list[int] = []

    @app.handles(Deposit, conflict_retries=2)
    def deposit(cmd: Deposit, uow: UnitOfWork) -> Decimal:
        acc = uow.get(Account, cmd.account_id)
        runs.append(acc.version)
        if len(runs) == 1:  # somebody else writes between our load and our commit
            app.repository(Account).add(_deposited_elsewhere(app))
        acc.deposit(cmd.amount)
        return acc.balance

    assert Decimal(8) == app.dispatch(Deposit("a", Decimal(5)))
    assert [1, 2] == runs


def _deposited_elsewhere(app: App) -> Account:
    acc = app.repository(Account).get("a")
    acc.deposit(Decimal(3))
    return acc


def test_conflict_retries_are_bounded(app: App) -> None:
    """When every run conflicts, the error reaches the caller after the last retry."""
    app.repository(Account).add(Account.open("a", "ann"))
    runs = 0

    @app.handles(Deposit, conflict_retries=1)
    def deposit(cmd: Deposit, uow: UnitOfWork) -> None:
        nonlocal runs
        runs += 1
        acc = uow.get(Account, cmd.account_id)
        app.repository(Account).add(_deposited_elsewhere(app))
        acc.deposit(cmd.amount)

    with pytest.raises(ConcurrencyError):
        app.dispatch(Deposit("a", Decimal(5)))
    assert 2 == runs


def test_unknown_dependency_is_refused_at_registration(app: App) -> None:
    """A handler naming a dependency the app lacks is refused when registered."""

    def handler(cmd: Deposit, mailer: object) -> None: ...

    with pytest.raises(TypeError, match="'mailer'"):
        app.register(Deposit, handler)
    app.provide(mailer="the mailer")
    got: list[object] = []
    app.register(Deposit, lambda cmd, mailer: got.append(mailer))
    app.dispatch(Deposit("a", Decimal(1)))
    assert ["the mailer"] == got


def test_two_threads_depositing_lose_no_update(app: App) -> None:
    """Concurrent handlers with conflict retries apply every deposit exactly once."""
    app.repository(Account).add(Account.open("a", "ann"))

    @app.handles(Deposit, conflict_retries=50)
    def deposit(cmd: Deposit, uow: UnitOfWork) -> None:
        uow.get(Account, cmd.account_id).deposit(cmd.amount)

    def work() -> None:
        for _ in range(20):
            app.dispatch(Deposit("a", Decimal(1)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acc = app.repository(Account).get("a")
    assert (Decimal(80), 81) == (acc.balance, acc.version)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    amounts=st.lists(st.integers(min_value=1, max_value=100), max_size=25),
    batch=st.integers(min_value=1, max_value=4),
)
def test_snapshot_plus_tail_equals_full_replay(app: App, amounts: list[int], batch: int) -> None:
    """For random histories saved in random batches, loading from snapshots gives the same
    state as a full replay."""
    stream_owner = f"acc-{len(amounts)}-{batch}-{sum(amounts)}-{app.store.head_position()}"
    app.repository(SnappyAccount).add(SnappyAccount.open(stream_owner, "ann"))  # type: ignore[arg-type]
    for i in range(0, len(amounts), batch):
        with app.unit_of_work() as uow:
            acc = uow.get(SnappyAccount, stream_owner)
            for amount in amounts[i : i + batch]:
                if amount % 3 == 0 and acc.balance >= amount:
                    acc.withdraw(Decimal(amount))
                else:
                    acc.deposit(Decimal(amount))
    from_snapshot = app.repository(SnappyAccount).get(stream_owner)
    replayed = Account._rehydrate(
        stream_owner, [e.message for e in app.store.read_stream(f"Account-{stream_owner}")]
    )
    assert (replayed.owner, replayed.balance, replayed.moves, replayed.version) == (
        from_snapshot.owner,
        from_snapshot.balance,
        from_snapshot.moves,
        from_snapshot.version,
    )
    snap = app.snapshots.load(f"Account-{stream_owner}") if app.snapshots else None
    if len(amounts) + 1 >= 3:
        assert snap is not None and snap.version >= 3


def test_snapshot_load_reads_only_later_events(app: App) -> None:
    """With a snapshot at version 9, loading reads the stream from version 10 on."""
    acc = SnappyAccount.open("s", "ann")
    for _ in range(9):
        acc.deposit(Decimal(1))
    app.repository(SnappyAccount).add(acc)  # type: ignore[arg-type]  # version 10; snapshot at 10
    acc = app.repository(SnappyAccount).get("s")
    acc.deposit(Decimal(1))
    app.repository(SnappyAccount).add(acc)  # version 11, no new snapshot
    reads: list[int] = []
    original = app.store.read_stream

    def spy(stream_id: str, from_version: int = 1, *args: Any, **kwargs: Any) -> Any:
        reads.append(from_version)
        return original(stream_id, from_version, *args, **kwargs)

    app.store.read_stream = spy  # type: ignore[method-assign]
    loaded = app.repository(SnappyAccount).get("s")
    assert [11] == reads
    assert (Decimal(10), 11) == (loaded.balance, loaded.version)


def test_snapshot_of_another_shape_falls_back_to_replay(app: App) -> None:
    """A snapshot taken under a different state shape is ignored: full replay."""
    acc = SnappyAccount.open("s", "ann")
    for _ in range(5):
        acc.deposit(Decimal(2))
    app.repository(SnappyAccount).add(acc)  # type: ignore[arg-type]
    assert app.snapshots is not None
    # the same stream, stored under a class whose state has another shape
    app.snapshots.save(Snapshot("Account-s", 6, "not-this-shape", '{"balance": "999"}'))
    loaded = app.repository(SnappyAccount).get("s")
    assert (Decimal(10), 6) == (loaded.balance, loaded.version)


def test_undecodable_snapshot_falls_back_to_replay(app: App) -> None:
    """A snapshot whose state no longer decodes is ignored: full replay."""
    acc = SnappyAccount.open("s", "ann")
    acc.deposit(Decimal(2))
    app.repository(SnappyAccount).add(acc)  # type: ignore[arg-type]
    assert app.snapshots is not None
    fingerprint = SnappyAccount.state_fingerprint()
    app.snapshots.save(Snapshot("Account-s", 9, fingerprint, '{"balance": "x"}'))
    loaded = app.repository(SnappyAccount).get("s")
    assert (Decimal(2), 2) == (loaded.balance, loaded.version)


def test_upcast_on_read_through_the_app(tmp_path: Path) -> None:
    """Events stored at v1 load as v3 through two upcasters; the stored rows stay v1."""
    old = Registry()

    @event(registry=old, name="Renamed")
    class RenamedV1:
        full_name: str

    with App(tmp_path / "u.db", registry=old) as app_v1:
        app_v1.store.append("Person-p", [RenamedV1("Ada Lovelace")])

    new = Registry()

    @event(registry=new, name="Renamed", version=3)
    class Renamed:
        first: str
        last: str
        title: str

    @new.upcaster("Renamed", from_version=1)
    def split(data: dict[str, Any]) -> dict[str, Any]:
        first, last = data.pop("full_name").split(" ", 1)
        return {"first": first, "last": last}

    @new.upcaster("Renamed", from_version=2)
    def titled(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "title": ""}

    class Person(Aggregate):
        first: str = ""

        @applies(Renamed)
        def _renamed(self, e: Renamed) -> None:
            self.first = e.first

    with App(tmp_path / "u.db", registry=new) as app_v3:
        assert "Ada" == app_v3.repository(Person).get("p").first
        assert app_v3.database is not None
        with app_v3.database.read() as conn:
            row = conn.execute("SELECT schema_version, data FROM events").fetchone()
    assert (1, '{"full_name":"Ada Lovelace"}') == tuple(row)


def test_handler_that_committed_part_of_its_work_is_not_rerun(app: App) -> None:
    """A conflict after a handler's own early commit is raised, not retried: re-running
    would write the committed part twice."""
    runs = 0

    @app.handles(Deposit, conflict_retries=3)
    def deposit(cmd: Deposit, uow: UnitOfWork) -> None:
        nonlocal runs
        runs += 1
        uow.append("payments", [Deposited(cmd.amount)])
        uow.commit()
        uow.append("shipping", [Opened("x")], expected_version=5)

    with pytest.raises(ConcurrencyError):
        app.dispatch(Deposit("a", Decimal(1)))
    assert 1 == runs
    assert [Deposited(Decimal(1))] == [e.message for e in app.store.read_stream("payments")]


def test_unit_inside_an_outer_transaction_publishes_only_after_its_commit(
    tmp_path: Path,
) -> None:
    """Events of a unit of work nested in the caller's transaction are published when the
    outer transaction commits, and never if it rolls back."""
    with App(tmp_path / "n.db", registry=registry) as app:
        published = _published(app)
        assert app.database is not None
        with pytest.raises(RuntimeError), app.database.transaction():
            with app.unit_of_work() as uow:
                uow.add(Account.open("a", "ann"))
            assert [] == published
            raise RuntimeError("the outer work fails")
        assert ([], 0) == (published, app.store.head_position())
        with app.database.transaction():
            with app.unit_of_work() as uow:
                uow.add(Account.open("b", "bob"))
            assert [] == published
        assert [Opened("bob")] == [e.message for e in published]


def test_snapshot_that_cannot_be_taken_does_not_block_saving(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """An aggregate whose state will not encode still saves its events; the snapshot is
    skipped with a warning naming the stream."""

    class Clocked(Aggregate):
        stream_prefix = "Clocked"
        snapshot_every = 1
        seen: datetime | None = None

        @applies(Opened)
        def _opened(self, e: Opened) -> None:
            self.seen = datetime(2024, 1, 1)  # naive: the codec refuses it

    agg = Clocked("c")
    agg.record(Opened("ann"))
    app.repository(Clocked).add(agg)
    assert 1 == app.store.stream_version("Clocked-c")
    assert "Clocked-c" in caplog.text


def test_app_subscriber_can_be_unsubscribed_by_its_function(app: App) -> None:
    """A subscriber added through the App (dependencies injected) is removed by passing the
    function itself to bus.unsubscribe."""
    got: list[object] = []

    @app.subscribes(Opened)
    def on_opened(event: Opened, store: object) -> None:
        got.append(event)

    assert app.bus.unsubscribe(on_opened)  # type: ignore[arg-type]
    app.publish(Opened("ann"))
    assert [] == got


def test_close_finishes_every_step_when_one_fails(tmp_path: Path) -> None:
    """If stopping one part raises, the app still stops the bus and closes the file, then
    raises that first error."""
    app = App(tmp_path / "c.db", registry=registry)
    projector = app.projector

    def broken_close(timeout: float | None = None) -> None:
        raise RuntimeError("projector would not stop")

    projector.close = broken_close  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="would not stop"):
        app.close()
    assert (True, True) == (app.bus.closed, app.database is not None and app.database.closed)


# -- unique claims across aggregates ------------------------------------------------------


def test_a_claim_commits_with_the_events(app: App) -> None:
    """A unit of work claims an owner's e-mail address with the account's events; another
    account asking for it is refused at once, naming the value and the holder, and its
    unit writes nothing."""
    with app.unit_of_work() as uow:
        uow.add(Account.open("a1", "ann"))
        uow.claim("email", "ann@example.com", "a1")
    with pytest.raises(AlreadyClaimed) as info, app.unit_of_work() as uow:
        uow.add(Account.open("a2", "ann again"))
        uow.claim("email", "ann@example.com", "a2")
    assert ("email", "ann@example.com", "a1") == (
        info.value.scope,
        info.value.value,
        info.value.owner,
    )
    assert 0 == app.store.stream_version(Account.stream_id_for("a2"))
    assert "a1" == app.storage.claims.holder("email", "ann@example.com")


def test_a_rolled_back_unit_claims_nothing(app: App) -> None:
    """A unit of work that fails after claiming leaves the value free."""
    with pytest.raises(ValueError), app.unit_of_work() as uow:
        uow.add(Account.open("a1", "ann"))
        uow.claim("email", "ann@example.com", "a1")
        raise ValueError("changed my mind")
    assert None is app.storage.claims.holder("email", "ann@example.com")


def test_racing_claims_commit_once(app: App) -> None:
    """Eight units of work claiming one value at once: exactly one commits its events; the
    others raise AlreadyClaimed and store nothing."""
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_account(n: int) -> None:
        try:
            with app.unit_of_work() as uow:
                uow.add(Account.open(f"a{n}", "same"))
                barrier.wait()
                uow.claim("email", "same@example.com", f"a{n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_account, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    holder = app.storage.claims.holder("email", "same@example.com")
    assert 7 == len(errors) and all(isinstance(e, AlreadyClaimed) for e in errors), errors
    stored = [n for n in range(8) if app.store.stream_version(Account.stream_id_for(f"a{n}"))]
    assert [f"a{n}" for n in stored] == [holder]


def test_release_claim_frees_the_value_at_commit(app: App) -> None:
    """release_claim frees the value when the unit commits, so another owner can have it."""
    with app.unit_of_work() as uow:
        uow.claim("email", "x@example.com", "a1")
    with app.unit_of_work() as uow:
        uow.release_claim("email", "x@example.com", "a1")
        assert "a1" == app.storage.claims.holder("email", "x@example.com")
    with app.unit_of_work() as uow:
        uow.claim("email", "x@example.com", "a2")
    assert "a2" == app.storage.claims.holder("email", "x@example.com")


# -- refusals that keep their events; the app's clock -----------------------------------


class NotEnough(CommandRejected):
    """A refusal of the tests' domain."""


@command(registry=registry)
class Overdraw:
    account_id: str
    amount: Decimal


def test_a_rejected_command_keeps_and_publishes_its_events(app: App) -> None:
    """A handler that records an event and raises CommandRejected: the caller gets the
    exception, and the event is stored and published; any other exception stores
    nothing."""
    published = _published(app)

    @app.handles(Overdraw)
    def overdraw(c: Overdraw, uow: UnitOfWork) -> None:
        account = uow.find(Account, c.account_id) or Account.open(c.account_id, "ann")
        uow.add(account)
        account.record(Withdrawn(Decimal(0)))
        if c.amount > 100:
            raise ValueError("not a refusal: rolls back")
        raise NotEnough(f"{c.account_id} cannot pay {c.amount}")

    with pytest.raises(NotEnough, match="a1 cannot pay 5"):
        app.dispatch(Overdraw("a1", Decimal(5)))
    assert [Opened("ann"), Withdrawn(Decimal(0))] == [
        e.message for e in app.store.read_stream(Account.stream_id_for("a1"))
    ]
    assert [Opened("ann"), Withdrawn(Decimal(0))] == [e.message for e in published]
    with pytest.raises(ValueError):
        app.dispatch(Overdraw("a2", Decimal(500)))
    assert 0 == app.store.stream_version(Account.stream_id_for("a2"))


def test_events_are_dated_by_the_apps_clock(tmp_path: Path) -> None:
    """Events a unit of work records carry the app's clock time, not the machine's."""
    clock = FakeClock(datetime(2020, 5, 17, 12, 0, tzinfo=timezone.utc).timestamp())
    with App(tmp_path / "clock.db", registry=registry, clock=clock) as app:
        with app.unit_of_work() as uow:
            uow.add(Account.open("a1", "ann"))
            uow.append("audit", [Deposited(Decimal(1))])
        clock.advance(60)
        app.repository(Account).add(Account.open("a2", "bob"))
        stamps = [e.timestamp for e in app.store.read_all()]
    assert [
        datetime(2020, 5, 17, 12, 0, tzinfo=timezone.utc),
        datetime(2020, 5, 17, 12, 0, tzinfo=timezone.utc),
        datetime(2020, 5, 17, 12, 1, tzinfo=timezone.utc),
    ] == stamps
