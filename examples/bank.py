"""An event-sourced bank account on a SQLite file: ``python -m examples.bank``.

Shows an aggregate with snapshots, and an event whose schema changed: deposits written by
"last year's" version of the app (amounts in cents) are upcast on read to today's shape
(a Decimal amount and a currency). The stored rows are never rewritten.
"""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import eventlite
from eventlite import Aggregate, App, UnitOfWork, applies

# -- last year's app: one registry, deposits in cents ---------------------------------
old = eventlite.Registry()


@eventlite.event(registry=old, name="AccountOpened")
class OldAccountOpened:
    owner: str


@eventlite.event(registry=old, name="MoneyDeposited")
class OldMoneyDeposited:
    amount_cents: int


# -- today's app ------------------------------------------------------------------------
registry = eventlite.Registry()


@eventlite.event(registry=registry)
class AccountOpened:
    owner: str


@eventlite.event(registry=registry, version=2)
class MoneyDeposited:
    amount: Decimal
    currency: str


@eventlite.event(registry=registry)
class MoneyWithdrawn:
    amount: Decimal


@registry.upcaster("MoneyDeposited", from_version=1)
def cents_to_decimal(data: dict[str, Any]) -> dict[str, Any]:
    """v1 stored whole cents; v2 stores a Decimal amount and its currency."""
    return {"amount": str(Decimal(data["amount_cents"]) / 100), "currency": "EUR"}


@eventlite.command(registry=registry)
class Deposit:
    account_id: str
    amount: Decimal


@eventlite.command(registry=registry)
class Withdraw:
    account_id: str
    amount: Decimal


class InsufficientFunds(Exception):
    """A withdrawal larger than the balance."""


class Account(Aggregate):
    snapshot_every = 50

    owner: str = ""
    balance: Decimal = Decimal("0.00")

    def deposit(self, amount: Decimal) -> None:
        self.record(MoneyDeposited(amount, "EUR"))

    def withdraw(self, amount: Decimal) -> None:
        if amount > self.balance:
            raise InsufficientFunds(f"{self.id}: balance {self.balance} < {amount}")
        self.record(MoneyWithdrawn(amount))

    @applies(AccountOpened)
    def _opened(self, event: AccountOpened) -> None:
        self.owner = event.owner

    @applies(MoneyDeposited)
    def _deposited(self, event: MoneyDeposited) -> None:
        self.balance += event.amount

    @applies(MoneyWithdrawn)
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        self.balance -= event.amount


def main() -> None:
    """Write old-format history, then run today's app over it."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bank.db"

        with App(db, registry=old) as last_year:
            last_year.store.append(
                "Account-acc-1",
                [OldAccountOpened("ada"), OldMoneyDeposited(1250), OldMoneyDeposited(99)],
            )
        print("last year's app stored 3 events, deposits in cents")

        with App(db, registry=registry) as app:

            @app.handles(Deposit, conflict_retries=3)
            def deposit(command: Deposit, uow: UnitOfWork) -> Decimal:
                account = uow.get(Account, command.account_id)
                account.deposit(command.amount)
                return account.balance

            @app.handles(Withdraw, conflict_retries=3)
            def withdraw(command: Withdraw, uow: UnitOfWork) -> Decimal:
                account = uow.get(Account, command.account_id)
                account.withdraw(command.amount)
                return account.balance

            account = app.repository(Account).get("acc-1")
            print(f"today's app reads them upcast: {account.owner} has {account.balance}")

            for _ in range(120):
                app.dispatch(Deposit("acc-1", Decimal("1.00")))
            print("after 120 deposits:", app.dispatch(Withdraw("acc-1", Decimal("0.49"))))
            try:
                app.dispatch(Withdraw("acc-1", Decimal("1000")))
            except InsufficientFunds as exc:
                print("refused:", exc)

            assert app.snapshots is not None
            snap = app.snapshots.load("Account-acc-1")
            assert snap is not None
            account = app.repository(Account).get("acc-1")
            print(
                f"loaded from the snapshot at version {snap.version} plus "
                f"{account.version - snap.version} later events: version {account.version}, "
                f"balance {account.balance}"
            )
            assert app.database is not None
            with app.database.read() as conn:
                (v1_rows,) = conn.execute(
                    "SELECT count(*) FROM events WHERE type = 'MoneyDeposited' "
                    "AND schema_version = 1"
                ).fetchone()
            print(f"stored rows still at schema version 1: {v1_rows}")


if __name__ == "__main__":
    main()
