"""Tracking projections under leases: one process at a time applies each, another takes
over when it stops, and a former holder that lost the lease commits nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlite_utils

from eventlite import App, Envelope
from eventlite.projection import Projection, projects
from eventlite.store.leases import LeaseLost
from eventlite.testing.contracts.app_bridges import OrderPlaced, registry

WHO = {"app": ""}


class Orders(Projection):
    """One row per order event, with the app that applied it."""

    name = "orders"
    tables = ("orders_seen",)

    def setup(self, db: sqlite_utils.Database) -> None:
        db[self.tables[0]].create(  # type: ignore[union-attr]
            {"position": int, "applied_by": str}, pk="position", if_not_exists=True
        )

    @projects(OrderPlaced)
    def _placed(self, e: OrderPlaced, db: sqlite_utils.Database, envelope: Envelope) -> None:
        db[self.tables[0]].insert({"position": envelope.position, "applied_by": self.label})  # type: ignore[union-attr]

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label


def wait(what: str, ok: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def rows(app: App) -> list[tuple[int, str]]:
    return [(r["position"], r["applied_by"]) for r in app.projector.reader()["orders_seen"].rows]


def open_app(path: Path) -> App:
    return App(str(path), registry=registry, poll_interval=0.02, lease_seconds=0.6)


def test_one_process_at_a_time_applies_a_tracking_projection(tmp_path: Path) -> None:
    """Two apps on one file with the same tracking projection: one holds its lease and
    applies every event; when it closes, the other takes over and applies the rest."""
    path = tmp_path / "shared.db"
    one, two = open_app(path), open_app(path)
    try:
        one.projection(Orders("one"))
        two.projection(Orders("two"))
        for i in range(20):  # commit by commit, from both apps: both see work to do
            with (one if i % 2 else two).unit_of_work() as uow:
                uow.append("order-1", [OrderPlaced("o", i)])
            time.sleep(0.01)
        wait("20 rows", lambda: len(rows(one)) == 20)
        holders = {who for _, who in rows(one)}
        assert 1 == len(holders)
        [first] = holders
        holder, other = (one, two) if first == "one" else (two, one)
        holder.close()
        with other.unit_of_work() as uow:
            uow.append("order-2", [OrderPlaced("o", i) for i in range(20, 30)])
        wait("30 rows", lambda: len(rows(other)) == 30)
        late = {who for position, who in rows(other) if position > 20}
        assert {"two" if first == "one" else "one"} == late
        assert [p for p, _ in rows(other)] == list(range(1, 31))
    finally:
        one.close()
        two.close()


def test_a_former_holder_commits_nothing_after_losing_its_lease(tmp_path: Path) -> None:
    """The lease is checked in the transaction that moves the checkpoint: a projector whose
    lease was taken over (it was paused past the expiry) rolls its batch back."""
    from eventlite.projection import Projector
    from eventlite.relay import Tenure

    app = App(str(tmp_path / "a.db"), registry=registry, lease_seconds=None)
    projector = Projector(app.storage, app.codec)  # not started: its steps run here
    try:
        projector.add(Orders("paused"))
        with app.unit_of_work() as uow:
            uow.append("order-1", [OrderPlaced("o", 1)])
        leases = app.storage.leases
        mine = Tenure(leases, "orders", "paused-owner", 0.05, lease="projection:orders")
        assert mine.hold()
        time.sleep(0.1)  # past the expiry: another owner takes it
        theirs = Tenure(leases, "orders", "new-owner", 30.0, lease="projection:orders")
        assert theirs.hold()
        entry = projector._entry("orders")
        with pytest.raises(LeaseLost):
            projector._step(entry, mine.check)
        assert 0 == projector.status("orders")[0].position
        assert [] == list(projector.reader()["orders_seen"].rows)
        projector._step(entry, theirs.check)
        assert 1 == projector.status("orders")[0].position
    finally:
        projector.close()
        app.close()
