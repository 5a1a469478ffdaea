"""The Aggregate base: recording, applying, replaying and state fields."""

from __future__ import annotations

from decimal import Decimal

import pytest

from eventlite.aggregate import Aggregate, applies
from eventlite.messages import Registry, event

registry = Registry()


@event(registry=registry)
class Opened:
    owner: str


@event(registry=registry)
class Deposited:
    amount: Decimal


@event(registry=registry)
class BonusDeposited(Deposited):
    pass


@event(registry=registry)
class Noted:
    text: str


class Account(Aggregate):
    owner: str = ""
    balance: Decimal = Decimal(0)
    history: list[Decimal] = []  # noqa: RUF012 - the base class copies mutable defaults

    def deposit(self, amount: Decimal) -> None:
        if amount <= 0:
            raise ValueError("deposit must be positive")
        self.record(Deposited(amount))

    @applies(Opened)
    def _opened(self, e: Opened) -> None:
        self.owner = e.owner

    @applies(Deposited)
    def _deposited(self, e: Deposited) -> None:
        self.balance += e.amount
        self.history.append(e.amount)


class SavingsAccount(Account):
    rate: Decimal = Decimal("0.01")

    @applies(BonusDeposited)
    def _bonus(self, e: BonusDeposited) -> None:
        self.balance += e.amount * 2


def test_record_applies_and_keeps_pending() -> None:
    """record() changes state at once, bumps the version and keeps the event pending."""
    acc = Account("a-1")
    acc.record(Opened("ann"))
    acc.deposit(Decimal(5))
    assert ("ann", Decimal(5), 2) == (acc.owner, acc.balance, acc.version)
    assert (Opened("ann"), Deposited(Decimal(5))) == acc.pending_events
    assert 0 == acc.loaded_version


def test_rehydrate_replays_through_the_same_methods() -> None:
    """Replaying history gives the same state as recording it, with nothing pending."""
    history = [Opened("ann"), Deposited(Decimal(2)), Deposited(Decimal(3))]
    acc = Account._rehydrate("a-1", history)
    assert ("ann", Decimal(5), 3, 3) == (acc.owner, acc.balance, acc.version, acc.loaded_version)
    assert () == acc.pending_events


def test_subclass_events_use_the_most_specific_applier() -> None:
    """An event subclass uses its own applier when there is one, else its base's."""
    plain = Account._rehydrate("a", [BonusDeposited(Decimal(1))])
    savings = SavingsAccount._rehydrate("s", [BonusDeposited(Decimal(1)), Deposited(Decimal(1))])
    assert Decimal(1) == plain.balance
    assert Decimal(3) == savings.balance


def test_event_without_applier_counts_toward_version() -> None:
    """An event no method applies leaves state alone but still counts."""
    acc = Account._rehydrate("a", [Noted("hi")])
    assert (Decimal(0), 1) == (acc.balance, acc.version)


def test_mutable_defaults_are_not_shared() -> None:
    """Two instances never share a mutable default."""
    a, b = Account("a"), Account("b")
    a.deposit(Decimal(1))
    assert [] == b.history


def test_nested_mutable_defaults_are_not_shared() -> None:
    """A default holding mutable values (a dict of lists) is copied all the way down."""

    class Shelf(Aggregate):
        bins: dict[str, list[str]] = {"a": []}  # noqa: RUF012 - copied per instance

    first, second = Shelf("1"), Shelf("2")
    first.bins["a"].append("x")
    assert ({"a": []}, {"a": []}) == (second.bins, Shelf.bins)


def test_failed_command_records_nothing() -> None:
    """A method that refuses raises before recording."""
    acc = Account("a")
    with pytest.raises(ValueError, match="positive"):
        acc.deposit(Decimal(0))
    assert () == acc.pending_events


def test_state_fields_and_fingerprint() -> None:
    """State fields are the annotated attributes, bases first; the fingerprint follows shape."""
    assert ("owner", "balance", "history") == Account.state_fields()
    assert ("owner", "balance", "history", "rate") == SavingsAccount.state_fields()
    assert Account.state_fingerprint() != SavingsAccount.state_fingerprint()
    assert Account.state_fingerprint() == Account.state_fingerprint()


def test_stream_ids() -> None:
    """The stream id is the prefix (class name by default) and the id."""

    class Cart(Aggregate):
        stream_prefix = "cart"

    assert "Account-a-1" == Account("a-1").stream_id
    assert "cart-7" == Cart.stream_id_for("7")
