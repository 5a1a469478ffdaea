"""Projections on PostgreSQL: one written with the portable read-model calls runs on both
backends alike; rebuilds hand over to live updates with no commit slipping between, while
other threads keep committing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils.db

from eventlite import Envelope
from eventlite.codec import Codec
from eventlite.postgres import PostgresStorage
from eventlite.projection import Projection, Projector, projects
from eventlite.sqlite import SQLiteStorage
from eventlite.store.storage import Storage
from tests.read.ledger import Deposited, Noted, Opened, fold, read_model, registry, wait_until

pytestmark = pytest.mark.services

Open = Callable[..., PostgresStorage]


class PortableLedger(Projection):
    """Balances per account and one row per applied event, written only with the calls
    both read-model helpers share."""

    name = "portable"
    tables = ("portable_balances", "portable_seen")

    def setup(self, db: Any) -> None:
        balances, seen = self.tables
        db[balances].create(
            {"account": str, "owner": str, "balance": int}, pk="account", if_not_exists=True
        )
        db[seen].create({"position": int, "stream": str}, pk="position", if_not_exists=True)

    @projects(Opened)
    def _opened(self, event: Opened, db: Any, envelope: Envelope) -> None:
        db[self.tables[0]].upsert({"account": event.account, "owner": event.owner}, pk="account")
        self._seen(db, envelope)

    @projects(Deposited)
    def _deposited(self, event: Deposited, db: Any, envelope: Envelope) -> None:
        try:
            balance = db[self.tables[0]].get(event.account)["balance"] or 0
        except sqlite_utils.db.NotFoundError:
            balance = 0
        db[self.tables[0]].upsert(
            {"account": event.account, "balance": balance + event.amount}, pk="account"
        )
        self._seen(db, envelope)

    def _seen(self, db: Any, envelope: Envelope) -> None:
        # a second application of one position would break the primary key
        db[self.tables[1]].insert({"position": envelope.position, "stream": envelope.stream_id})


def _commit(storage: Storage, projector: Projector, stream: str, events: list[Any]) -> None:
    """Append in a transaction that runs the inline hook, as a unit of work does."""
    with storage.transaction() as tx:
        recorded = storage.events.append(stream, events)
        projector.hook(tx, recorded)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("mode", ["inline", "tracking"])
def test_a_portable_projection_runs_on_both_backends(
    open_storage: Open, tmp_path: Path, backend: str, mode: str
) -> None:
    """The same projection class over the same events gives the same read model on
    SQLite and PostgreSQL, inline and tracking: the fold of the log."""
    storage: Storage = (
        open_storage(codec=Codec(registry))
        if backend == "postgres"
        else SQLiteStorage(tmp_path / "p.db", codec=Codec(registry))
    )
    projector = Projector(storage, Codec(registry), poll_interval=0.02)
    ledger = projector.add(PortableLedger(), mode=mode)  # type: ignore[arg-type]
    projector.start()
    for i in range(12):
        account = f"a{i % 3}"
        events: list[Any] = [Deposited(account, i), Noted("x")]
        if i < 3:
            events.insert(0, Opened(account, f"owner{i}"))
        _commit(storage, projector, f"acc-{i % 3}", events)
    projector.catch_up()
    assert fold(list(storage.events.read_all())) == read_model(projector, ledger)  # type: ignore[arg-type]
    assert (3, 36) == (
        projector.reader()[ledger.tables[0]].count,
        projector.reader()[ledger.tables[0]].get("a1")["balance"] + 14,
    )
    projector.close()
    if backend == "sqlite":
        storage.close()


def _rebuild_under_load(storage: PostgresStorage, mode: str, rounds: int) -> None:
    projector = Projector(storage, Codec(registry), batch_size=40, poll_interval=0.01)
    ledger = projector.add(PortableLedger(), mode=mode)  # type: ignore[arg-type]
    projector.start()
    for i in range(200):
        storage.events.append(f"pre-{i % 7}", [Deposited(f"p{i % 7}", i)])
    projector.catch_up()
    go = threading.Event()
    errors: list[BaseException] = []

    def write(t: int) -> None:
        go.wait()
        try:
            for i in range(rounds):
                events = [Opened(f"w{t}", f"o{i}"), Deposited(f"w{t}", i)]
                if mode == "inline":
                    _commit(storage, projector, f"w{t}-{i}", events)
                else:
                    storage.events.append(f"w{t}-{i}", events)
                    projector.notify()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    before = storage.events.head_position()
    progress: list[tuple[int, int]] = []

    def report(done: int, total: int) -> None:
        if not progress:  # the writers are committing while the replay runs
            wait_until(lambda: storage.events.head_position() >= before + 20)
        progress.append((done, total))

    go.set()
    projector.rebuild(ledger.name, progress=report)
    for thread in threads:
        thread.join()
    assert [] == errors
    projector.notify()
    projector.catch_up()
    head = storage.events.head_position()
    wait_until(lambda: projector.status(ledger.name)[0].position == head)
    assert fold(list(storage.events.read_all())) == read_model(projector, ledger)  # type: ignore[arg-type]
    [status] = projector.status(ledger.name)
    assert ("live", head) == (status.state, status.position)
    assert progress[-1][0] == progress[-1][1]
    projector.close()


@pytest.mark.parametrize("mode", ["inline", "tracking"])
def test_rebuild_while_four_threads_commit(open_storage: Open, mode: str) -> None:
    """A rebuild racing four threads that commit (inline: through the hook, in their own
    transactions on their own connections) ends equal to the fold of the log, live at
    the head: nothing missed, nothing applied twice."""
    _rebuild_under_load(open_storage(codec=Codec(registry), pool_max_size=12), mode, 25)


class Pausing(PortableLedger):
    """A ledger whose batches, while ``pause`` is set, start an append in another thread
    and give it half a second before they commit."""

    name = "pausing"
    tables = ("pausing_balances", "pausing_seen")

    def __init__(self, append: Callable[[], None]) -> None:
        self.append = append
        self.pause = False
        self.appended = threading.Event()

    def end_batch(self, db: Any) -> None:
        if not self.pause:
            return
        self.pause = False

        def append() -> None:
            self.append()
            self.appended.set()

        threading.Thread(target=append).start()
        self.appended.wait(0.5)


def test_no_commit_slips_into_the_hand_over(open_storage: Open) -> None:
    """While the last batch of an inline projection's rebuild is applied, an event
    committed by another thread (with the inline hook) waits for the hand-over to live,
    then is applied by its own hook: the read model misses nothing, though nothing is
    committed after it."""
    storage = open_storage(codec=Codec(registry))
    projector = Projector(storage, Codec(registry))
    ledger = Pausing(lambda: _commit(storage, projector, "late", [Deposited("a", 100)]))
    projector.add(ledger, mode="inline")
    projector.start()
    for i in range(5):
        _commit(storage, projector, "early", [Deposited("a", i)])
    ledger.pause = True
    projector.rebuild(ledger.name)
    assert ledger.appended.wait(10)
    assert 6 == storage.events.head_position()
    assert fold(list(storage.events.read_all())) == read_model(projector, ledger)  # type: ignore[arg-type]
    assert ("live", 6) == (projector.status()[0].state, projector.status()[0].position)
    projector.close()
