"""Projections: handlers, inline updates in the unit of work's transaction, tracking threads,
rebuilds, failures and the checkpoint that keeps the read model and the log in step."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlite import App, Codec, Envelope
from eventlite.aggregate import Aggregate, applies
from eventlite.exceptions import ConcurrencyError
from eventlite.projection import Projection, ProjectionError, Projector, projects
from eventlite.sqlite import SQLiteEventStore, SQLiteStorage

from .ledger import (
    BigDeposited,
    Deposited,
    Ledger,
    Noted,
    Opened,
    ScratchLedger,
    fill,
    fold,
    read_model,
    registry,
    wait_until,
)

# -- handlers -------------------------------------------------------------------------------


def test_handlers_are_found_by_type_and_base_type() -> None:
    """A handler of a base event class handles subclasses; a subclass's own handler wins."""

    class Base(Projection):
        tables = ("t",)

        @projects(Deposited)
        def dep(self, e: Deposited, db: Any) -> None:
            pass

    class Child(Base):
        @projects(BigDeposited, Noted)
        def big(self, e: Any, db: Any) -> None:
            pass

    assert "Base" == Base.name
    assert "Child" == Child.name
    assert frozenset({Deposited}) == Base.handled_types()
    assert frozenset({Deposited, BigDeposited, Noted}) == Child.handled_types()


def test_two_handlers_of_one_type_in_a_class_are_refused() -> None:
    """Projecting one event type twice in one class is a TypeError naming both methods."""
    with pytest.raises(TypeError, match=r"\.one and \.two both project Deposited"):

        class Twice(Projection):
            tables = ("t",)

            @projects(Deposited)
            def one(self, e: Any, db: Any) -> None:
                pass

            @projects(Deposited)
            def two(self, e: Any, db: Any) -> None:
                pass


def test_projects_needs_classes() -> None:
    """@projects() without a type, or with something that is not a class, is refused."""
    with pytest.raises(TypeError):
        projects()
    with pytest.raises(TypeError):
        projects("proj.Deposited")  # type: ignore[arg-type]


def test_add_refuses_bad_projections(projector: Projector) -> None:
    """No tables and no reset, an eventlite table, a second name, an unknown mode: refused."""

    class NoTables(Projection):
        pass

    class Evil(Projection):
        tables = ("events",)

    with pytest.raises(TypeError, match="no tables and no reset"):
        projector.add(NoTables())
    with pytest.raises(ValueError, match="eventlite's own"):
        projector.add(Evil())
    projector.add(Ledger())
    with pytest.raises(ValueError, match="already added"):
        projector.add(Ledger())
    with pytest.raises(ValueError, match="mode"):
        projector.add(ScratchLedger(), mode="lazy")  # type: ignore[arg-type]


def test_catch_up_and_rebuild_refuse_to_run_inside_a_transaction(
    storage: SQLiteStorage, projector: Projector
) -> None:
    """Their batches commit on their own, so inside a transaction they are refused."""
    projector.add(Ledger())
    with storage.transaction():
        with pytest.raises(ProjectionError, match="outside a database transaction"):
            projector.catch_up()
        with pytest.raises(ProjectionError, match="outside a database transaction"):
            projector.rebuild("ledger")


# -- tracking -------------------------------------------------------------------------------


def test_catch_up_applies_every_event_once(store: SQLiteEventStore, projector: Projector) -> None:
    """catch_up() brings a tracking projection to the head, in batches, subclasses included;
    the checkpoint is the head."""
    fill(store)
    store.append("acc-0", [BigDeposited("a0", 1000, "bonus")])
    ledger = projector.add(Ledger())
    projector.catch_up()
    assert fold(list(store.read_all())) == read_model(projector, ledger)  # type: ignore[arg-type]
    [status] = projector.status("ledger")
    assert (store.head_position(), "live", 0) == (status.position, status.state, status.lag)


def test_tracking_thread_follows_commits(store: SQLiteEventStore, projector: Projector) -> None:
    """Started, a tracking projection's thread applies new events after notify()."""
    ledger = projector.add(Ledger())
    projector.start()
    fill(store, deposits=30)
    projector.notify()
    wait_until(lambda: projector.status("ledger")[0].position == store.head_position())
    assert fold(list(store.read_all())) == read_model(projector, ledger)  # type: ignore[arg-type]


def test_tracking_thread_polls_without_notify(
    storage: SQLiteStorage, store: SQLiteEventStore
) -> None:
    """Commits nobody announces (another process, a plain append) are found by polling."""
    with Projector(storage, storage.events.codec, poll_interval=0.01) as projector:
        ledger = projector.add(Ledger())
        projector.start()
        fill(store, deposits=5)
        wait_until(lambda: projector.status("ledger")[0].position == store.head_position())
        assert fold(list(store.read_all())) == read_model(projector, ledger)  # type: ignore[arg-type]


def test_failing_handler_stops_at_its_event_and_retries(
    storage: SQLiteStorage, store: SQLiteEventStore
) -> None:
    """A handler that raises rolls its batch back, is reported with its position, and the
    thread tries again until the handler works; nothing is applied twice."""
    broken = threading.Event()
    broken.set()
    errors: list[tuple[str, BaseException]] = []

    class Fragile(Ledger):
        name = "fragile"
        tables = ("fragile_balances", "fragile_seen")

        @projects(Deposited)
        def _deposited(self, e: Deposited, db: sqlite_utils.Database, envelope: Envelope) -> None:
            if e.amount == 5 and broken.is_set():
                raise RuntimeError("cannot handle five")
            super()._deposited(e, db, envelope)

    fill(store)
    five = next(e.position for e in store.read_all() if getattr(e.message, "amount", None) == 5)
    with Projector(
        storage,
        storage.events.codec,
        batch_size=4,
        poll_interval=0.01,
        max_backoff=0.02,
        on_error=lambda name, exc: errors.append((name, exc)),
    ) as projector:
        fragile = projector.add(Fragile())
        with pytest.raises(ProjectionError) as caught:
            projector.catch_up()
        assert (five, "fragile") == (caught.value.position, caught.value.name)
        status = projector.status("fragile")[0]
        assert status.position < five  # type: ignore[operator]
        projector.start()
        wait_until(lambda: len(errors) >= 2)
        assert "cannot handle five" in (projector.status("fragile")[0].error or "")
        broken.clear()
        wait_until(lambda: projector.status("fragile")[0].position == store.head_position())
        assert None is projector.status("fragile")[0].error
        assert fold(list(store.read_all())) == read_model(projector, fragile)  # type: ignore[arg-type]


def test_batch_hooks_gather_and_write_once_per_batch(
    storage: SQLiteStorage, store: SQLiteEventStore
) -> None:
    """begin_batch/end_batch let a projection write once per batch; a failed batch starts
    again from clean buffers."""
    fail_once = [True]

    class Totals(Projection):
        tables = ("totals",)

        def setup(self, db: sqlite_utils.Database) -> None:
            db["totals"].create({"account": str, "total": int}, pk="account", if_not_exists=True)  # type: ignore[union-attr]

        def begin_batch(self) -> None:
            self.pending: dict[str, int] = {}

        @projects(Deposited)
        def dep(self, e: Deposited, db: Any) -> None:
            self.pending[e.account] = self.pending.get(e.account, 0) + e.amount
            if e.amount == 7 and fail_once[0]:
                fail_once[0] = False
                raise RuntimeError("once")

        def end_batch(self, db: sqlite_utils.Database) -> None:
            db.conn.executemany(
                "INSERT INTO totals VALUES (?, ?) ON CONFLICT (account) "
                "DO UPDATE SET total = total + excluded.total",
                list(self.pending.items()),
            )

    fill(store, deposits=20)
    with Projector(storage, storage.events.codec, batch_size=5) as projector:
        projector.add(Totals())
        with pytest.raises(ProjectionError):
            projector.catch_up()
        projector.catch_up()
        totals = {r["account"]: r["total"] for r in projector.reader()["totals"].rows}
    expected: dict[str, int] = {}
    for i in range(20):
        expected[f"a{i % 3}"] = expected.get(f"a{i % 3}", 0) + i
    assert expected == totals


# -- inline ---------------------------------------------------------------------------------


class Account(Aggregate):
    """An account whose events the Ledger projects."""

    owner: str = ""

    @applies(Opened)
    def _opened(self, e: Opened) -> None:
        self.owner = e.owner

    @applies(Deposited)
    def _deposited(self, e: Deposited) -> None:
        pass


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = App(tmp_path / "app.db", registry=registry, synchronous="normal")
    yield a
    a.close()


def _open(uow: Any, projector: Projector, name: str) -> None:
    uow.on_commit_write(projector.hook)
    acc = Account(name)
    acc.record(Opened(name, f"owner-{name}"))
    acc.record(Deposited(name, 10))
    uow.add(acc)


def test_inline_projection_commits_with_the_events(app: App) -> None:
    """Through the unit of work's write hook, the read model and its checkpoint are written
    in the commit's own transaction: visible as soon as the commit returns."""
    projector = Projector(app.storage, app.codec)
    ledger = projector.add(Ledger(), mode="inline")
    projector.start()
    with app.unit_of_work() as uow:
        _open(uow, projector, "a1")
    assert fold(list(app.store.read_all())) == read_model(projector, ledger)  # type: ignore[arg-type]
    assert app.store.head_position() == projector.status("ledger")[0].position


def test_inline_projection_rolls_back_with_a_failed_commit(app: App) -> None:
    """A commit that fails after the projection ran (a later hook raises, or a concurrency
    conflict) leaves neither events nor read-model rows nor a moved checkpoint."""
    projector = Projector(app.storage, app.codec)
    ledger = projector.add(Ledger(), mode="inline")
    with app.unit_of_work() as uow:
        _open(uow, projector, "a1")
    before = read_model(projector, ledger)  # type: ignore[arg-type]

    def explode(tx: Any, recorded: Any) -> None:
        raise RuntimeError("outbox full")

    with pytest.raises(RuntimeError, match="outbox full"), app.unit_of_work() as uow:
        _open(uow, projector, "a2")
        uow.on_commit_write(explode)
    assert before == read_model(projector, ledger)  # type: ignore[arg-type]

    with pytest.raises(ConcurrencyError), app.unit_of_work() as uow:
        _open(uow, projector, "a1")  # the stream exists already
    assert before == read_model(projector, ledger)  # type: ignore[arg-type]
    assert 2 == projector.status("ledger")[0].position == app.store.head_position()


def test_inline_handler_failure_fails_the_commit(app: App) -> None:
    """An inline handler that raises fails the whole unit of work: no event is stored."""

    class Picky(Ledger):
        name = "picky"
        tables = ("picky_b", "picky_s")

        @projects(Opened)
        def _opened(self, e: Opened, db: sqlite_utils.Database, envelope: Envelope) -> None:
            raise ValueError("no new accounts today")

    projector = Projector(app.storage, app.codec)
    projector.add(Picky(), mode="inline")
    with pytest.raises(ProjectionError, match="no new accounts today"), app.unit_of_work() as uow:
        _open(uow, projector, "a1")
    assert 0 == app.store.head_position()


def test_inline_catches_up_events_stored_outside_units_of_work(app: App) -> None:
    """Events appended without the hook are applied, in order, at the next hooked commit."""
    projector = Projector(app.storage, app.codec, batch_size=3)
    ledger = projector.add(Ledger(), mode="inline")
    app.store.append("side", [Opened("s", "side")] + [Deposited("s", k) for k in range(10)])
    with app.unit_of_work() as uow:
        _open(uow, projector, "a1")
    assert fold(list(app.store.read_all())) == read_model(projector, ledger)  # type: ignore[arg-type]


def test_inline_without_sqlite_is_refused(tmp_path: Path) -> None:
    """The in-memory store has no transaction to join: the hook refuses to run."""
    storage = SQLiteStorage(tmp_path / "x.db", codec=Codec(registry))
    projector = Projector(storage, storage.events.codec)
    projector.add(Ledger(), mode="inline")
    with (
        App(registry=registry) as memory_app,
        pytest.raises(ProjectionError, match="SQLite file or a database"),
        memory_app.unit_of_work() as uow,
    ):
        _open(uow, projector, "a1")
    storage.close()


# -- rebuild --------------------------------------------------------------------------------


def test_rebuild_with_no_events(projector: Projector) -> None:
    """Rebuilding over an empty log resets, reports (0, 0) and goes live."""
    ledger = projector.add(Ledger())
    calls: list[tuple[int, int]] = []
    assert 0 == projector.rebuild("ledger", progress=lambda d, t: calls.append((d, t)))
    assert [(0, 0)] == calls
    assert ({}, []) == read_model(projector, ledger)  # type: ignore[arg-type]
    assert "live" == projector.status("ledger")[0].state


def test_rebuild_resets_and_reports_progress(store: SQLiteEventStore, projector: Projector) -> None:
    """A rebuild drops a damaged read model, replays from position 1 in batches, and
    reports rising progress that ends at the head."""
    fill(store, deposits=20)
    ledger = projector.add(Ledger())
    projector.catch_up()
    with store.database.transaction() as tx:
        tx.execute("UPDATE ledger_balances SET balance = -1")
    calls: list[tuple[int, int]] = []
    head = store.head_position()
    assert head == projector.rebuild("ledger", progress=lambda d, t: calls.append((d, t)))
    assert fold(list(store.read_all())) == read_model(projector, ledger)  # type: ignore[arg-type]
    assert (head, head) == calls[-1]
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) > 1


def test_rebuild_interrupted_is_finished_by_start(
    storage: SQLiteStorage, store: SQLiteEventStore
) -> None:
    """A rebuild that dies midway (here: its progress callback raises) leaves the status
    "rebuilding" with a partial read model; starting a projector finishes it."""
    fill(store, deposits=40)

    def die(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with Projector(storage, storage.events.codec, batch_size=10) as first:
        first.add(Ledger(), mode="inline")
        with pytest.raises(KeyboardInterrupt):
            first.rebuild("ledger", progress=die)
        tenth = [e.position for e in store.read_all() if not isinstance(e.message, Noted)][9]
        [status] = first.status("ledger")
        assert ("rebuilding", tenth) == (status.state, status.position)
    with Projector(storage, storage.events.codec, batch_size=10) as second:
        ledger = second.add(Ledger(), mode="inline")
        second.start()
        [status] = second.status("ledger")
        assert ("live", store.head_position()) == (status.state, status.position)
        assert fold(list(store.read_all())) == read_model(second, ledger)  # type: ignore[arg-type]


def test_inline_rebuild_holds_back_hooks_until_the_hand_over(app: App) -> None:
    """While an inline projection rebuilds, commits leave it alone; the rebuild applies them
    and hands over at the head, after which commits update it again."""
    projector = Projector(app.storage, app.codec, batch_size=2)
    ledger = projector.add(Ledger(), mode="inline")
    for i in range(5):
        with app.unit_of_work() as uow:
            _open(uow, projector, f"a{i}")
    seen: list[int] = []
    held: list[tuple[int, int]] = []

    def commit_during_rebuild(done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == 1:
            with app.unit_of_work() as uow:
                _open(uow, projector, "during")
            held.append((done, projector.status("ledger")[0].position))

    projector.rebuild("ledger", progress=commit_during_rebuild)
    assert [(seen[0], seen[0])] == held  # the commit did not move the rebuilding checkpoint
    with app.unit_of_work() as uow:
        _open(uow, projector, "after")
    assert fold(list(app.store.read_all())) == read_model(projector, ledger)  # type: ignore[arg-type]


def test_status_lists_every_projection_in_the_file(
    storage: SQLiteStorage, store: SQLiteEventStore, projector: Projector
) -> None:
    """status() reads the file: projections added by other projectors show too, with lag."""
    fill(store, deposits=2)
    projector.add(Ledger())
    with Projector(storage, storage.events.codec) as other:
        other.add(ScratchLedger(), mode="inline")
        other.catch_up()
    statuses = {s.name: s for s in projector.status()}
    head = store.head_position()
    assert {"ledger": ("tracking", head), "scratch": ("inline", 0)} == {
        n: (s.mode, s.lag) for n, s in statuses.items()
    }


def test_two_projectors_on_one_file_share_the_work(tmp_path: Path) -> None:
    """Two projectors (two connections, as two processes would have) tracking the same
    projection while four threads append: each batch commits only if the checkpoint is
    still where it was read, so no event is applied twice (the ledger's primary key on
    position would refuse it) and none is skipped."""
    path = tmp_path / "two.db"
    stores = [SQLiteEventStore(path, codec=Codec(registry), synchronous="normal") for _ in "ab"]
    errors: list[BaseException] = []
    projectors = [
        Projector(
            SQLiteStorage(s.database, codec=s.codec),
            s.codec,
            batch_size=5,
            poll_interval=0.005,
            on_error=lambda name, exc: errors.append(exc),
        )
        for s in stores
    ]
    ledgers = [p.add(Ledger()) for p in projectors]
    for p in projectors:
        p.start()

    def write(t: int) -> None:
        for i in range(100):
            stores[t % 2].append(f"w{t}", [Deposited(f"a{t}", i)])
            projectors[t % 2].notify()

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    head = stores[0].head_position()
    wait_until(lambda: projectors[0].status("ledger")[0].position == head)
    for p in projectors:
        p.close()
    assert [] == errors
    assert fold(list(stores[0].read_all())) == read_model(projectors[1], ledgers[1])  # type: ignore[arg-type]
    for s in stores:
        s.close()


# -- a property: any interleaving ends in the reference model -------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 3), st.integers(1, 4)),
        st.tuples(st.just("uow"), st.integers(0, 3), st.integers(1, 3)),
        st.tuples(st.just("catch_up"), st.just(0), st.just(0)),
        st.tuples(st.just("rebuild"), st.sampled_from(["ledger", "scratch"]), st.just(0)),
    ),
    max_size=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_any_interleaving_matches_the_reference(tmp_path_factory: Any, ops: list[Any]) -> None:
    """Appends outside units of work, hooked commits, catch-ups and rebuilds in any order:
    after a final catch-up both an inline and a tracking ledger equal the fold of the log."""
    path = tmp_path_factory.mktemp("prop") / "p.db"
    with App(path, registry=registry, synchronous="normal") as app:
        projector = Projector(app.storage, app.codec, batch_size=3)
        inline = projector.add(Ledger(), mode="inline")
        tracking = projector.add(ScratchLedger(), mode="tracking")
        for n, (op, a, b) in enumerate(ops):
            if op == "append":
                app.store.append(f"s{a}", [Deposited(f"a{a}", k) for k in range(b)])
            elif op == "uow":
                with app.unit_of_work() as uow:
                    uow.on_commit_write(projector.hook)
                    uow.append(f"s{a}", [Opened(f"a{a}", f"o{n}")] + [Deposited(f"a{a}", 1)] * b)
            elif op == "catch_up":
                projector.catch_up()
            else:
                projector.rebuild(a)
        projector.catch_up()
        expected = fold(list(app.store.read_all()))
        assert expected == read_model(projector, inline)  # type: ignore[arg-type]
        assert expected == read_model(projector, tracking)  # type: ignore[arg-type]
        projector.close()
