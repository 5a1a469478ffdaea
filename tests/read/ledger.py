"""What the read-side tests project: a ledger of accounts, its reference model, and
helpers to fill a store and wait for a tracking thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from eventlite import Envelope, Registry, event
from eventlite.projection import Projection, Projector, projects
from eventlite.store.events import EventStore

registry = Registry()


@event(registry=registry, name="proj.Opened")
class Opened:
    account: str
    owner: str


@event(registry=registry, name="proj.Deposited")
class Deposited:
    account: str
    amount: int


@event(registry=registry, name="proj.BigDeposited")
class BigDeposited(Deposited):
    reason: str = ""


@event(registry=registry, name="proj.Noted")
class Noted:
    text: str


class Ledger(Projection):
    """Balances per account, and one row per applied event (a second application of the
    same position would break the primary key)."""

    name = "ledger"
    tables = ("ledger_balances", "ledger_seen")

    def setup(self, db: sqlite_utils.Database) -> None:
        t_bal, t_seen = self.tables
        db[t_bal].create(  # type: ignore[union-attr]
            {"account": str, "owner": str, "balance": int}, pk="account", if_not_exists=True
        )
        db[t_seen].create({"position": int, "stream": str}, pk="position", if_not_exists=True)  # type: ignore[union-attr]

    @projects(Opened)
    def _opened(self, e: Opened, db: sqlite_utils.Database, envelope: Envelope) -> None:
        db[self.tables[0]].upsert({"account": e.account, "owner": e.owner}, pk="account")  # type: ignore[union-attr]
        self._seen(db, envelope)

    @projects(Deposited)
    def _deposited(self, e: Deposited, db: sqlite_utils.Database, envelope: Envelope) -> None:
        db.execute(
            f"INSERT INTO {self.tables[0]} (account, balance) VALUES (?, ?) ON CONFLICT "
            "(account) DO UPDATE SET balance = coalesce(balance, 0) + excluded.balance",
            (e.account, e.amount),
        )
        self._seen(db, envelope)

    def _seen(self, db: sqlite_utils.Database, envelope: Envelope) -> None:
        db[self.tables[1]].insert({"position": envelope.position, "stream": envelope.stream_id})  # type: ignore[union-attr]


class ScratchLedger(Ledger):
    """The same projection under other tables, built from scratch for comparison."""

    name = "scratch"
    tables = ("scratch_balances", "scratch_seen")


def fold(envelopes: list[Envelope]) -> tuple[dict[str, tuple[str | None, int | None]], list[int]]:
    """What a Ledger's tables must hold after these events: the reference model."""
    balances: dict[str, tuple[str | None, int | None]] = {}
    seen = []
    for env in envelopes:
        m = env.message
        if isinstance(m, Opened):
            owner, bal = balances.get(m.account, (None, None))
            balances[m.account] = (m.owner, bal)
        elif isinstance(m, Deposited):
            owner, bal = balances.get(m.account, (None, None))
            balances[m.account] = (owner, (bal or 0) + m.amount)
        else:
            continue
        assert env.position is not None
        seen.append(env.position)
    return balances, seen


def read_model(projector: Projector, projection: Ledger) -> tuple[dict[str, Any], list[int]]:
    """A Ledger's tables, in the shape :func:`fold` returns."""
    db = projector.reader()
    t_bal, t_seen = projection.tables
    balances = {r["account"]: (r["owner"], r["balance"]) for r in db[t_bal].rows}
    seen = [r["position"] for r in db[t_seen].rows_where(order_by="position")]
    return balances, seen


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail the test if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.002)


def fill(store: EventStore, accounts: int = 3, deposits: int = 10) -> None:
    for a in range(accounts):
        store.append(f"acc-{a}", [Opened(f"a{a}", f"owner{a}")])
    for i in range(deposits):
        store.append(f"acc-{i % accounts}", [Deposited(f"a{i % accounts}", i), Noted("x")])
