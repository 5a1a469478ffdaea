"""Given/when/then for process managers: the scenario runs the real app on a temporary
file and a fake clock, stores the given events, then an event or the passing of time, and a
scenario that does not hold fails with a message that says what differs and what the action
caused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
import pytest

from eventlite.app import App
from eventlite.clock import FAKE_EPOCH
from eventlite.messages import Registry, command, event
from eventlite.process import ProcessContext, ProcessManager
from eventlite.retry import RetryPolicy
from eventlite.testing import ANYTHING, ProcessScenario, ScenarioFailed
from eventlite.unit_of_work import UnitOfWork

registry = Registry()


@event(registry=registry, name="sc.OrderPlaced")
class OrderPlaced:
    order_id: str


@event(registry=registry, name="sc.PaymentTaken")
class PaymentTaken:
    order_id: str


@event(registry=registry, name="sc.PaymentOverdue")
class PaymentOverdue:
    order_id: str


@event(registry=registry, name="sc.ReminderDue")
class ReminderDue:
    order_id: str


@command(registry=registry, name="sc.RemindCustomer")
class RemindCustomer:
    order_id: str


@command(registry=registry, name="sc.CancelOrder")
class CancelOrder:
    order_id: str


@attrs.define
class Payment:
    """The state of one order's payment follow-up."""

    reminded: bool = False
    paid: bool = False


payments: ProcessManager[Payment] = ProcessManager(
    "payment-follow-up",
    state=Payment,
    correlate={OrderPlaced: lambda e: e.order_id, PaymentTaken: lambda e: e.order_id},
)


@payments.starts(OrderPlaced)
def _placed(event: OrderPlaced, process: ProcessContext[Payment]) -> None:
    process.schedule(ReminderDue(event.order_id), after=timedelta(minutes=30), name="reminder")
    process.schedule(PaymentOverdue(event.order_id), after=timedelta(hours=2), name="overdue")


@payments.handles(ReminderDue)
def _reminder(event: ReminderDue, process: ProcessContext[Payment]) -> None:
    process.state.reminded = True
    process.dispatch(RemindCustomer(event.order_id))


@payments.handles(PaymentOverdue)
def _overdue(event: PaymentOverdue, process: ProcessContext[Payment]) -> None:
    process.dispatch(CancelOrder(event.order_id))
    process.complete()


@payments.handles(PaymentTaken)
def _paid(event: PaymentTaken, process: ProcessContext[Payment]) -> None:
    process.state.paid = True
    process.complete()


def test_an_event_starts_an_instance_that_schedules_timeouts() -> None:
    """The starting event dispatches nothing, leaves two timeouts waiting, and a fresh
    state."""
    outcome = (
        ProcessScenario(payments, registry=registry)
        .when(OrderPlaced("o-1"))
        .then(
            dispatched=[],
            scheduled=[ReminderDue("o-1"), PaymentOverdue("o-1")],
            state=Payment(),
            done=False,
        )
    )
    assert [FAKE_EPOCH + 1800, FAKE_EPOCH + 7200] == [
        t.due_at.timestamp() for t in outcome.scheduled
    ]


def test_time_passing_fires_the_timeouts_that_fall_due() -> None:
    """Thirty minutes on, the reminder fires: a command is dispatched and the state
    changes; two hours on, the overdue timeout cancels the order and completes the
    instance."""
    placed = ProcessScenario(payments, registry=registry).given(OrderPlaced("o-1"))
    placed.when_time_passes(timedelta(minutes=30)).then(
        dispatched=[RemindCustomer("o-1")],
        scheduled=[PaymentOverdue("o-1")],
        state=Payment(reminded=True),
    )
    placed.given(timedelta(minutes=30)).when_time_passes(timedelta(hours=2)).then(
        dispatched=[CancelOrder("o-1")], scheduled=[], done=True
    )


def test_an_event_that_completes_the_instance_cancels_its_timeouts() -> None:
    """Payment taken: nothing is dispatched, no timeout waits any more, the instance is
    done."""
    ProcessScenario(payments, registry=registry).given(OrderPlaced("o-1")).when(
        PaymentTaken("o-1")
    ).then(dispatched=[], scheduled=[], state=Payment(paid=True), done=True)


def test_expectations_may_leave_values_open() -> None:
    """ANYTHING in an expected command or state matches any value."""
    ProcessScenario(payments, registry=registry).given(OrderPlaced("o-7")).when_time_passes(
        3600
    ).then(
        dispatched=[RemindCustomer(ANYTHING)],
        scheduled=[PaymentOverdue("o-7")],
        state=Payment(reminded=ANYTHING),
    )


def test_a_failing_process_scenario_says_what_differs() -> None:
    """Wrong commands, timeouts and state: the message puts each side by side, names the
    state's fields that differ, and shows what the action caused."""
    scenario = (
        ProcessScenario(payments, registry=registry)
        .given(OrderPlaced("o-1"))
        .when_time_passes(timedelta(minutes=30))
    )
    with pytest.raises(ScenarioFailed) as caught:
        scenario.then(
            dispatched=[CancelOrder("o-1")],
            scheduled=[PaymentOverdue("o-1")],
            state=Payment(reminded=False),
        )
    assert [
        "process manager 'payment-follow-up' given 1 event, when 0:30:00 passes: the outcome "
        "differs from the expected one",
        "  dispatched (1 expected, 1 dispatched):",
        "         expected                    | dispatched",
        "    >> 1 CancelOrder(order_id='o-1') | RemindCustomer(order_id='o-1')",
        "          type: expected CancelOrder, dispatched RemindCustomer",
        "  state of instance 'o-1':",
        "    reminded: expected False, got True",
        "  what the action caused:",
        "    event ReminderDue(order_id='o-1') in process:payment-follow-up/o-1 v1",
        "      dispatch RemindCustomer(order_id='o-1')",
    ] == str(caught.value).splitlines()


def test_a_handler_that_fails_fails_the_scenario() -> None:
    """A handling that raises (and is dead-lettered) fails the scenario with its error."""
    broken: ProcessManager[dict[str, Any]] = ProcessManager(
        "broken", correlate={OrderPlaced: lambda e: e.order_id}
    )

    @broken.starts(OrderPlaced)
    def placed(event: OrderPlaced, process: ProcessContext[dict[str, Any]]) -> None:
        raise LookupError("no such customer")

    def build(db: str | None = None, **options: Any) -> App:
        app = App(db, registry=registry, **options)
        app.process_manager(broken, retry=RetryPolicy(max_attempts=1), start="beginning")
        return app

    with pytest.raises(ScenarioFailed) as caught:
        ProcessScenario(broken, registry=registry, build=build).when(OrderPlaced("o-1")).then()
    assert (
        "process manager 'broken' given 0 events, when OrderPlaced(order_id='o-1'): handling "
        "the action failed: sc.OrderPlaced (LookupError: no such customer)"
    ) == str(caught.value)


def test_the_apps_own_handlers_run_when_a_root_is_given() -> None:
    """With the application's composition root, the commands the manager dispatches reach
    their real handlers, and the events those store are part of the trace."""

    def build(db: str | None = None, **options: Any) -> App:
        app = App(db, registry=registry, **options)

        @app.handles(RemindCustomer)
        def remind(c: RemindCustomer, uow: UnitOfWork) -> None:
            uow.append(f"Reminders-{c.order_id}", [ReminderDue(c.order_id)])

        return app

    outcome = (
        ProcessScenario(payments, registry=registry, build=build)
        .given(OrderPlaced("o-1"))
        .when_time_passes(timedelta(minutes=30))
        .then(dispatched=[RemindCustomer("o-1")], scheduled=[PaymentOverdue("o-1")])
    )
    assert "        event ReminderDue(order_id='o-1') in Reminders-o-1 v1" in [
        "    " + line for line in outcome.trace
    ]


def test_a_scenario_without_an_action() -> None:
    """then() before when() is a mistake in the test, said at once."""
    with pytest.raises(TypeError, match="no action"):
        ProcessScenario(payments, registry=registry).given(OrderPlaced("o-1")).then()
