"""The given/when/then toolkit tests itself: passing scenarios pass, and failing ones fail
with a message that shows what was expected beside what happened."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from eventlite.aggregate import Aggregate, applies
from eventlite.app import App
from eventlite.exceptions import CommandRejected
from eventlite.messages import Registry, command, event, query
from eventlite.testing import ANYTHING, AggregateScenario, AppScenario, ScenarioFailed
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


@event(registry=registry)
class Noted:
    text: str


@event(registry=registry)
class Audited:
    account_id: str
    amount: Decimal


@command(registry=registry)
class Withdraw:
    account_id: str
    amount: Decimal


@command(registry=registry)
class Transfer:
    source: str
    target: str
    amount: Decimal


@query(registry=registry)
class Balance:
    account_id: str


class InsufficientFunds(Exception):
    """A withdrawal larger than the balance."""


class Account(Aggregate):
    owner: str = ""
    balance: Decimal = Decimal(0)

    @classmethod
    def open(cls, account_id: str, owner: str) -> Account:
        account = cls(account_id)
        account.record(Opened(owner))
        return account

    def deposit(self, amount: Decimal) -> None:
        self.record(Deposited(amount))

    def withdraw(self, amount: Decimal) -> None:
        if amount > self.balance:
            raise InsufficientFunds(f"{self.id}: balance {self.balance} < {amount}")
        if amount:
            self.record(Withdrawn(amount))

    def note(self, text: str) -> None:
        self.record(Noted(text))

    def audit(self, amount: Decimal) -> None:
        self.record(Audited(self.id, amount))

    @applies(Opened)
    def _opened(self, e: Opened) -> None:
        if self.owner:
            raise ValueError("opened twice")
        self.owner = e.owner

    @applies(Deposited)
    def _deposited(self, e: Deposited) -> None:
        self.balance += e.amount

    @applies(Withdrawn)
    def _withdrawn(self, e: Withdrawn) -> None:
        self.balance -= e.amount


FUNDED = AggregateScenario(Account, "acc-1").given(Opened("ann"), Deposited(Decimal(5)))


# -- aggregates: passing ---------------------------------------------------------------------


def test_then_passes_and_returns_the_aggregate() -> None:
    """The recorded events match: then() returns the aggregate, with its state updated."""
    account = FUNDED.when(lambda a: a.withdraw(Decimal(3))).then(Withdrawn(Decimal(3)))
    assert (Decimal(2), 3) == (account.balance, account.version)


def test_an_action_that_makes_the_aggregate_returns_it() -> None:
    """A factory's aggregate, returned by the action, is the one whose events count."""
    scenario = AggregateScenario(Account).when(lambda _: Account.open("acc-9", "bob"))
    account = scenario.then(Opened("bob"))
    assert "acc-9" == account.id


def test_then_checks_what_the_action_returned() -> None:
    """then(returns=...) compares the action's return value; a different one fails naming
    both values."""

    def quote(account: Account) -> Decimal:
        account.note("quoted")
        return account.balance * 2

    FUNDED.when(quote).then(Noted("quoted"), returns=Decimal(10))
    with pytest.raises(ScenarioFailed, match=r"returned Decimal\('10'\), expected 11"):
        FUNDED.when(quote).then(Noted("quoted"), returns=11)


def test_then_nothing_passes_when_nothing_is_recorded() -> None:
    """An action that changes nothing passes then_nothing()."""
    account = FUNDED.when(lambda a: a.withdraw(Decimal(0))).then_nothing()
    assert Decimal(5) == account.balance


def test_then_raises_returns_the_exception() -> None:
    """The expected exception, with a matching message, is returned."""
    error = FUNDED.when(lambda a: a.withdraw(Decimal(9))).then_raises(
        InsufficientFunds, match=r"balance 5 < 9"
    )
    assert "acc-1: balance 5 < 9" == str(error)


def test_anything_matches_any_field_value() -> None:
    """ANYTHING in an expected event matches whatever the field holds."""
    FUNDED.when(lambda a: a.note("generated")).then(Noted(ANYTHING))


def test_given_and_when_leave_the_scenario_unchanged() -> None:
    """Scenarios are immutable: given() and when() return new ones."""
    more = FUNDED.given(Deposited(Decimal(1)))
    assert (2, 3) == (len(FUNDED.given_events), len(more.given_events))
    assert FUNDED.action is None


# -- aggregates: failing ---------------------------------------------------------------------


def test_a_different_field_fails_with_a_side_by_side_diff() -> None:
    """The message shows both events side by side and names the field that differs."""
    with pytest.raises(ScenarioFailed) as info:
        FUNDED.when(lambda a: a.withdraw(Decimal(3))).then(Withdrawn(Decimal(4)))
    expected = "\n".join(
        [
            "Account 'acc-1' (given 2 events): the recorded events differ from the expected "
            "ones (1 expected, 1 recorded)",
            "       expected                       | recorded",
            "  >> 1 Withdrawn(amount=Decimal('4')) | Withdrawn(amount=Decimal('3'))",
            "        amount: expected Decimal('4'), recorded Decimal('3')",
        ]
    )
    assert expected == str(info.value)


def test_a_missing_and_an_extra_event_fail() -> None:
    """Rows that match are unmarked; a missing event and an unexpected one are marked."""
    scenario = FUNDED.when(lambda a: (a.withdraw(Decimal(1)), a.note("x")))
    with pytest.raises(ScenarioFailed) as info:
        scenario.then(Withdrawn(Decimal(1)))
    expected = "\n".join(
        [
            "Account 'acc-1' (given 2 events): the recorded events differ from the expected "
            "ones (1 expected, 2 recorded)",
            "       expected                       | recorded",
            "     1 Withdrawn(amount=Decimal('1')) | Withdrawn(amount=Decimal('1'))",
            "  >> 2 (nothing)                      | Noted(text='x')",
            "        not expected, but recorded",
        ]
    )
    assert expected == str(info.value)
    with pytest.raises(ScenarioFailed) as info:
        FUNDED.when(lambda a: a.note("x")).then(Noted("x"), Noted("y"))
    assert [">>", "missing"] == [
        str(info.value).splitlines()[3].split()[0],
        str(info.value).splitlines()[4].strip(),
    ]


def test_an_event_of_another_type_fails_naming_both_types() -> None:
    """Events of different classes are reported by type."""
    with pytest.raises(ScenarioFailed) as info:
        FUNDED.when(lambda a: a.note("x")).then(Withdrawn(Decimal(1)))
    assert "type: expected Withdrawn, recorded Noted" == str(info.value).splitlines()[-1].strip()


def test_a_long_event_is_cut_in_the_table_and_shown_whole_below() -> None:
    """Events too wide for a column are cut with ... and printed in full underneath."""
    text = "y" * 80
    with pytest.raises(ScenarioFailed) as info:
        FUNDED.when(lambda a: a.note(text)).then(Noted("z"))
    lines = str(info.value).splitlines()
    assert f"recorded: Noted(text='{text}')" == lines[-1].strip()
    assert lines[2].endswith("...")


def test_an_unexpected_exception_fails_then() -> None:
    """then() fails when the action raises, naming the exception, which is the cause."""
    with pytest.raises(ScenarioFailed) as info:
        FUNDED.when(lambda a: a.withdraw(Decimal(50))).then(Withdrawn(Decimal(50)))
    expected = (
        "Account 'acc-1' (given 2 events): expected Withdrawn(amount=Decimal('50')), but the "
        "action raised InsufficientFunds: acc-1: balance 5 < 50"
    )
    assert expected == str(info.value)
    assert isinstance(info.value.__cause__, InsufficientFunds)


def test_then_nothing_fails_when_events_are_recorded() -> None:
    """then_nothing() shows the events that were recorded."""
    with pytest.raises(ScenarioFailed) as info:
        FUNDED.when(lambda a: a.withdraw(Decimal(1))).then_nothing()
    assert ">> 1 (nothing)" in str(info.value)


@pytest.mark.parametrize(
    ("amount", "exception", "match", "message"),
    [
        (
            Decimal(1),
            InsufficientFunds,
            None,
            "Account 'acc-1' (given 2 events): expected InsufficientFunds to be raised, but "
            "nothing was raised (recorded Withdrawn(amount=Decimal('1')))",
        ),
        (
            Decimal(9),
            KeyError,
            None,
            "Account 'acc-1' (given 2 events): expected KeyError to be raised, but got "
            "InsufficientFunds: acc-1: balance 5 < 9",
        ),
        (
            Decimal(9),
            InsufficientFunds,
            "overdraft",
            "Account 'acc-1' (given 2 events): InsufficientFunds was raised, but its message "
            "does not match 'overdraft':\n  message: 'acc-1: balance 5 < 9'",
        ),
    ],
    ids=["nothing-raised", "other-exception", "message-mismatch"],
)
def test_then_raises_fails_clearly(
    amount: Decimal, exception: type[Exception], match: str | None, message: str
) -> None:
    """then_raises() fails when nothing, something else, or another message is raised."""
    with pytest.raises(ScenarioFailed) as info:
        FUNDED.when(lambda a: a.withdraw(amount)).then_raises(exception, match=match)
    assert message == str(info.value)


def test_anything_does_not_hide_other_fields() -> None:
    """ANYTHING matches its field only: another field that differs still fails, and is the
    only field reported."""
    with pytest.raises(ScenarioFailed) as info:
        FUNDED.when(lambda a: a.audit(Decimal(1))).then(Audited(ANYTHING, Decimal(2)))
    details = [line.strip() for line in str(info.value).splitlines()[3:]]
    assert "amount: expected Decimal('2'), recorded Decimal('1')" == details[0]
    assert [] == [d for d in details if d.startswith("account_id")]


def test_given_events_that_cannot_be_applied_fail() -> None:
    """A history the aggregate refuses is reported as such, not as the action's fault."""
    scenario = FUNDED.given(Opened("again")).when(lambda a: a.note("x"))
    with pytest.raises(ScenarioFailed) as info:
        scenario.then(Noted("x"))
    expected = (
        "Account 'acc-1' (given 3 events): the given events could not be applied: "
        "ValueError: opened twice"
    )
    assert expected == str(info.value)


def test_a_scenario_without_when_is_a_usage_error() -> None:
    """then() without when() raises TypeError, not a scenario failure."""
    with pytest.raises(TypeError, match=r"call \.when"):
        FUNDED.then()


def test_scenario_failed_is_an_assertion_error() -> None:
    """pytest and unittest report a ScenarioFailed as a test failure."""
    assert issubclass(ScenarioFailed, AssertionError)


# -- command handlers through an App -----------------------------------------------------------


def wire(app: App) -> App:
    """The handlers under test."""

    @app.handles(Withdraw)
    def withdraw(command: Withdraw, uow: UnitOfWork) -> Decimal:
        account = uow.get(Account, command.account_id)
        account.withdraw(command.amount)
        return account.balance

    @app.handles(Transfer)
    def transfer(command: Transfer, uow: UnitOfWork) -> None:
        uow.get(Account, command.source).withdraw(command.amount)
        uow.get(Account, command.target).deposit(command.amount)

    @app.handles(Balance)
    def balance(q: Balance, uow: UnitOfWork) -> Decimal:
        return uow.get(Account, q.account_id).balance

    return app


def in_memory() -> App:
    """A fresh, wired in-memory app."""
    return wire(App(registry=registry))


BANK = AppScenario(in_memory).given("Account-a", Opened("ann"), Deposited(Decimal(5)))


def test_app_then_passes_with_the_handlers_result() -> None:
    """The command stores the expected events; the outcome has its result and envelopes."""
    outcome = BANK.when(Withdraw("a", Decimal(2))).then("Account-a", Withdrawn(Decimal(2)))
    assert Decimal(3) == outcome.result
    assert [("Account-a", 3, 3)] == [(e.stream_id, e.version, e.position) for e in outcome.events]


def test_app_then_streams_checks_every_stream() -> None:
    """then_streams() takes the events of several streams, each in order."""
    scenario = BANK.given("Account-b", Opened("bob")).when(Transfer("a", "b", Decimal(4)))
    scenario.then_streams({"Account-a": [Withdrawn(Decimal(4))], "Account-b": [Deposited(4)]})  # type: ignore[arg-type]


def test_app_then_raises_passes_when_nothing_is_stored() -> None:
    """The handler's exception is expected, and the unit of work stored nothing."""
    error = BANK.when(Withdraw("a", Decimal(7))).then_raises(InsufficientFunds, match="< 7")
    assert "a: balance 5 < 7" == str(error)


class Overdrawn(CommandRejected):
    """A refusal whose event is kept."""


@command(registry=registry)
class Overdraw:
    account_id: str
    amount: Decimal


def refusing() -> App:
    """An app whose overdraft handler records a note of the refusal, then refuses."""
    app = in_memory()

    @app.handles(Overdraw)
    def overdraw(command: Overdraw, uow: UnitOfWork) -> None:
        account = uow.get(Account, command.account_id)
        account.note(f"refused {command.amount}")
        raise Overdrawn(f"{command.account_id} cannot go below zero")

    return app


def test_app_then_raises_with_what_was_stored() -> None:
    """A handler refusing with CommandRejected keeps its events: then_raises(stored=...)
    checks the exception and the events together; the default still demands none."""
    scenario = AppScenario(refusing).given("Account-a", Opened("ann"))
    scenario = scenario.when(Overdraw("a", Decimal(9)))
    error = scenario.then_raises(
        Overdrawn, match="below zero", stored={"Account-a": [Noted("refused 9")]}
    )
    assert "a cannot go below zero" == str(error)
    with pytest.raises(ScenarioFailed, match="events were stored anyway"):
        scenario.then_raises(Overdrawn)
    with pytest.raises(ScenarioFailed, match="with Overdrawn raised"):
        scenario.then_raises(Overdrawn, stored={"Account-a": [Noted("refused 8")]})


def test_app_then_nothing_and_queries() -> None:
    """A query is asked (no events); its answer is the outcome's result."""
    assert Decimal(5) == BANK.when(Balance("a")).then_nothing().result


def test_app_when_takes_a_function_of_the_app() -> None:
    """A plain function is called with the app."""
    outcome = BANK.when(lambda app: app.dispatch(Withdraw("a", Decimal(1)))).then(
        "Account-a", Withdrawn(Decimal(1))
    )
    assert Decimal(4) == outcome.result


def test_app_given_events_are_not_published() -> None:
    """Bus subscribers see the command's events only, not the given past."""
    seen: list[Any] = []

    def with_spy() -> App:
        app = in_memory()
        app.subscribe(object, seen.append)
        return app

    scenario = AppScenario(with_spy).given("Account-a", Opened("ann"), Deposited(Decimal(5)))
    scenario.when(Withdraw("a", Decimal(1))).then("Account-a", Withdrawn(Decimal(1)))
    assert [Withdrawn(Decimal(1))] == seen


def test_app_background_subscribers_are_waited_for() -> None:
    """Events stored by a background subscriber count as the command's events."""

    def with_audit() -> App:
        app = in_memory()

        @app.subscribes(Withdrawn, background=True)
        def audit(e: Withdrawn, uow: UnitOfWork) -> None:
            uow.append("Audit", [Audited("a", e.amount)])

        return app

    scenario = AppScenario(with_audit).given("Account-a", Opened("ann"), Deposited(Decimal(5)))
    scenario.when(Withdraw("a", Decimal(1))).then_streams(
        {"Account-a": [Withdrawn(Decimal(1))], "Audit": [Audited("a", Decimal(1))]}
    )


def test_app_durable_subscribers_catch_up_on_the_past_first(tmp_path: Path) -> None:
    """A durable subscriber's reactions to the given events are the past; its reaction to
    the command's event is new."""
    files = iter(range(100))

    def on_file() -> App:
        app = wire(App(tmp_path / f"bank{next(files)}.db", registry=registry))

        @app.subscribes(Withdrawn, durable=True, name="audit")
        def audit(e: Withdrawn, uow: UnitOfWork) -> None:
            uow.append("Audit", [Audited("a", e.amount)])

        return app

    scenario = AppScenario(on_file).given(
        "Account-a", Opened("ann"), Deposited(Decimal(5)), Withdrawn(Decimal(1))
    )
    scenario.when(Withdraw("a", Decimal(2))).then_streams(
        {"Account-a": [Withdrawn(Decimal(2))], "Audit": [Audited("a", Decimal(2))]}
    )


def test_app_a_different_event_fails_with_a_diff_per_stream() -> None:
    """The message shows each stream's expected and stored events side by side."""
    with pytest.raises(ScenarioFailed) as info:
        BANK.when(Withdraw("a", Decimal(2))).then("Account-b", Withdrawn(Decimal(2)))
    expected = "\n".join(
        [
            "scenario when Withdraw(account_id='a', amount=Decimal('2')) (given 2 events): "
            "the stored events differ from the expected ones (1 expected, 1 stored)",
            "  stream 'Account-b':",
            "         expected                       | stored",
            "    >> 1 Withdrawn(amount=Decimal('2')) | (nothing)",
            "          missing",
            "  stream 'Account-a':",
            "         expected  | stored",
            "    >> 1 (nothing) | Withdrawn(amount=Decimal('2'))",
            "          not expected, but stored",
        ]
    )
    assert expected == str(info.value)


def test_app_an_unexpected_exception_fails_then() -> None:
    """then() fails when the command raises, naming the exception."""
    with pytest.raises(ScenarioFailed) as info:
        BANK.when(Withdraw("a", Decimal(9))).then("Account-a", Withdrawn(Decimal(9)))
    expected = (
        "scenario when Withdraw(account_id='a', amount=Decimal('9')) (given 2 events): "
        "expected new events in Account-a, but the command raised InsufficientFunds: "
        "a: balance 5 < 9"
    )
    assert expected == str(info.value)


def test_app_then_raises_fails_when_events_were_stored_anyway() -> None:
    """An exception after a commit is not a clean refusal: the stored events are named."""

    def commit_then_fail(app: App) -> None:
        app.dispatch(Withdraw("a", Decimal(1)))
        raise RuntimeError("too late")

    with pytest.raises(ScenarioFailed) as info:
        BANK.when(commit_then_fail).then_raises(RuntimeError)
    expected = (
        "scenario when test_app_then_raises_fails_when_events_were_stored_anyway.<locals>."
        "commit_then_fail (given 2 events): RuntimeError was raised as expected, but events "
        "were stored anyway: Account-a: Withdrawn(amount=Decimal('1'))"
    )
    assert expected == str(info.value)


def test_app_then_raises_fails_when_nothing_is_raised() -> None:
    """then_raises() names what was stored instead."""
    with pytest.raises(ScenarioFailed) as info:
        BANK.when(Withdraw("a", Decimal(1))).then_raises(InsufficientFunds)
    expected = (
        "scenario when Withdraw(account_id='a', amount=Decimal('1')) (given 2 events): "
        "expected InsufficientFunds to be raised, but nothing was raised (stored "
        "Withdrawn(amount=Decimal('1')))"
    )
    assert expected == str(info.value)


def test_app_a_failing_subscriber_fails_the_scenario() -> None:
    """A subscriber's failure, which the bus only logs, fails the scenario by name."""

    def with_broken() -> App:
        app = in_memory()

        def broken(e: Withdrawn) -> None:
            raise OSError("mail server down")

        app.subscribe(Withdrawn, broken, name="mailer")
        return app

    scenario = AppScenario(with_broken).given("Account-a", Opened("ann"), Deposited(5))  # type: ignore[arg-type]
    with pytest.raises(ScenarioFailed) as info:
        scenario.when(Withdraw("a", Decimal(1))).then("Account-a", Withdrawn(Decimal(1)))
    expected = (
        "scenario when Withdraw(account_id='a', amount=Decimal('1')) (given 2 events): "
        "subscriber mailer failed on Withdrawn (stream Account-a): OSError: mail server down"
    )
    assert expected == str(info.value)


def test_app_each_run_gets_a_fresh_app() -> None:
    """Running the same scenario twice starts from the same given state."""
    scenario = BANK.when(Withdraw("a", Decimal(5)))
    scenario.then("Account-a", Withdrawn(Decimal(5)))
    scenario.then("Account-a", Withdrawn(Decimal(5)))
