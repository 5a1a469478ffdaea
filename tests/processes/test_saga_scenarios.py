"""Given/when/then for orchestrated sagas: the scenario runs the real orchestrator on a
temporary file, makes chosen steps fail, and a scenario that does not hold fails with a
message that says what differs and which steps ran."""

from __future__ import annotations

import pytest

from eventlite.saga import Saga, SagaStep, StepContext, StepTimeout
from eventlite.testing import SagaScenario, ScenarioFailed


def reserve(ctx: StepContext) -> None:
    """Reserve stock: remember a reservation id."""
    ctx.data.reservation = f"r-{ctx.data.order_id}"


def release(ctx: StepContext) -> None:
    """Undo the reservation."""
    ctx.data.reservation = None


def charge(ctx: StepContext) -> None:
    """Charge the card; large totals are declined."""
    if ctx.data.total > 100:
        raise RuntimeError("card declined")
    ctx.data.payment = "p-1"


def refund(ctx: StepContext) -> None:
    """Undo the charge."""
    ctx.data.payment = None


def ship(ctx: StepContext) -> None:
    """Book a courier."""
    ctx.data.shipped = True


CHECKOUT = Saga(
    "checkout",
    [
        SagaStep("reserve", reserve, release),
        SagaStep("charge", charge, refund),
        SagaStep("ship", ship),
    ],
)


def test_a_saga_that_completes() -> None:
    """Every step runs, nothing is compensated, the data holds what the steps stored."""
    outcome = (
        SagaScenario(CHECKOUT)
        .given({"order_id": "o-1", "total": 30})
        .then(
            status="completed",
            completed=["reserve", "charge", "ship"],
            compensated=[],
            failed_step=None,
            data={
                "order_id": "o-1",
                "total": 30,
                "reservation": "r-o-1",
                "payment": "p-1",
                "shipped": True,
            },
        )
    )
    assert ("execute reserve", "execute charge", "execute ship") == outcome.calls


def test_a_step_that_fails_is_compensated_in_reverse() -> None:
    """A step's own failure, or one the scenario injects, compensates the completed steps
    last first."""
    declined = SagaScenario(CHECKOUT).given({"order_id": "o-2", "total": 500})
    declined.then(
        status="failed", completed=["reserve"], compensated=["reserve"], failed_step="charge"
    )
    no_courier = (
        SagaScenario(CHECKOUT)
        .given({"order_id": "o-3", "total": 20})
        .when_step_fails("ship", StepTimeout("s-1", "ship", 5.0))
    )
    outcome = no_courier.then(
        status="failed",
        completed=["reserve", "charge"],
        compensated=["charge", "reserve"],
        failed_step="ship",
        data={"order_id": "o-3", "total": 20, "reservation": None, "payment": None},
    )
    assert (
        "execute reserve",
        "execute charge",
        "execute ship (raised StepTimeout: saga s-1: step 'ship' did not finish within 5 s)",
        "compensate charge",
        "compensate reserve",
    ) == outcome.calls


def test_a_compensation_that_fails() -> None:
    """A failing compensation is reported, and the other compensations still run."""
    SagaScenario(CHECKOUT).given({"order_id": "o-4", "total": 500}).when_step_fails(
        "reserve", compensation=True
    ).then(status="failed", compensated=[], compensation_failed=["reserve"], failed_step="charge")


def test_a_failing_saga_scenario_says_what_differs() -> None:
    """Expecting completion of a saga that fails: the message names the saga and its data,
    each expectation that does not hold with the step's error, and the steps that ran."""
    scenario = SagaScenario(CHECKOUT).given({"order_id": "o-2", "total": 500})
    with pytest.raises(ScenarioFailed) as caught:
        scenario.then(status="completed", completed=["reserve", "charge", "ship"])
    assert [
        "saga 'checkout' given {'order_id': 'o-2', 'total': 500}: the saga did not end as expected",
        "  status: expected 'completed', got 'failed' (charge: RuntimeError: card declined)",
        "  completed: expected ['reserve', 'charge', 'ship'], got ['reserve']",
        "  steps run: execute reserve, execute charge (raised RuntimeError: card declined), "
        "compensate reserve",
    ] == str(caught.value).splitlines()


def test_saga_data_differences_are_listed_field_by_field() -> None:
    """A wrong expected data dict names each key that differs."""
    scenario = SagaScenario(CHECKOUT).given({"order_id": "o-1", "total": 30})
    with pytest.raises(ScenarioFailed) as caught:
        scenario.then(data={"order_id": "o-1", "total": 30, "payment": "p-2", "shipped": True})
    lines = str(caught.value).splitlines()
    assert [
        "  data:",
        "    payment: expected 'p-2', got 'p-1'",
        "    reservation: expected '(missing)', got 'r-o-1'",
    ] == lines[1:4]


def test_a_step_the_saga_does_not_have() -> None:
    """Making an unknown step fail is a mistake in the test, said at once."""
    with pytest.raises(KeyError, match="has no step 'pack'"):
        SagaScenario(CHECKOUT).when_step_fails("pack")
    with pytest.raises(ValueError, match="step 'ship' has no compensation"):
        SagaScenario(CHECKOUT).when_step_fails("ship", compensation=True)
