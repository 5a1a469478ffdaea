"""Review fixes of sagas: a step whose data cannot be stored after it ran is compensated, and
so is a step that timed out (it may have taken effect)."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal

from eventlite.saga import (
    Saga,
    SagaData,
    SagaOrchestrator,
    SagaStatus,
    SagaStep,
    StepContext,
    StepFunction,
    StepTimeout,
)
from eventlite.sqlite import SQLiteStorage


class Shop:
    """Step functions that log what they did."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.errors: list[tuple[str, str | None]] = []

    def do(self, name: str) -> StepFunction:
        def run(ctx: StepContext) -> None:
            self.log.append(f"do {name}")
            setattr(ctx.data, name, "done")

        return run

    def undo(self, name: str) -> StepFunction:
        def run(ctx: StepContext) -> None:
            self.log.append(f"undo {name}")
            self.errors.append((name, None if ctx.error is None else ctx.error.error_type))

        return run


# -- a step whose data cannot be stored ---------------------------------------------------


def test_a_step_whose_data_cannot_be_stored_is_compensated(storage: SQLiteStorage) -> None:
    """A step that ran but left data JSON refuses is recorded as done with the data as it
    was before it, compensated with the earlier steps, and the saga fails with an error
    naming the saga, the step and the cause; later steps do not run."""
    shop = Shop()

    def charge(ctx: StepContext) -> None:
        shop.log.append("do charge")
        ctx.data.amount_charged = Decimal("30.00")  # not a JSON value

    saga = Saga(
        "checkout",
        [
            SagaStep("reserve", shop.do("reserve"), shop.undo("reserve")),
            SagaStep("charge", charge, shop.undo("charge")),
            SagaStep("ship", shop.do("ship")),
        ],
    )
    sagas = SagaOrchestrator(storage)
    instance = sagas.start(saga, {"order_id": "o-1"})

    assert ["do reserve", "do charge", "undo charge", "undo reserve"] == shop.log
    assert (
        SagaStatus.FAILED,
        "charge",
        ("reserve", "charge"),
        ("charge", "reserve"),
        (),
    ) == (
        instance.status,
        instance.failed_step,
        instance.completed_steps,
        instance.compensated_steps,
        instance.compensation_errors,
    )
    assert SagaData(order_id="o-1", reserve="done") == instance.data
    assert instance.error is not None
    assert ("charge", "eventlite.saga.SagaError") == (
        instance.error.step,
        instance.error.error_type,
    )
    message = instance.error.message
    assert [True, True, True, True] == [
        "'checkout'" in message,
        "'charge'" in message,
        "TypeError" in message,
        "Decimal" in message,
    ]
    assert "TypeError" in instance.error.traceback  # the cause's traceback is kept
    assert instance == sagas.get(instance.id)


def test_the_last_step_whose_data_cannot_be_stored_fails_the_saga(storage: SQLiteStorage) -> None:
    """When the last step's data cannot be stored, the saga does not complete: every step,
    the last included, is compensated."""
    shop = Shop()

    def ship(ctx: StepContext) -> None:
        shop.log.append("do ship")
        ctx.data.parcel = object()

    saga = Saga(
        "checkout",
        [
            SagaStep("reserve", shop.do("reserve"), shop.undo("reserve")),
            SagaStep("ship", ship, shop.undo("ship")),
        ],
    )
    instance = SagaOrchestrator(storage).start(saga)

    assert ["do reserve", "do ship", "undo ship", "undo reserve"] == shop.log
    assert (SagaStatus.FAILED, "ship", ("ship", "reserve"), None) == (
        instance.status,
        instance.failed_step,
        instance.compensated_steps,
        instance.step,
    )


def test_a_step_that_raises_is_still_not_compensated(storage: SQLiteStorage) -> None:
    """Only a step that returned is recorded as done: one that raised is not compensated
    and its error is its own."""
    shop = Shop()

    def charge(ctx: StepContext) -> None:
        ctx.data.amount_charged = Decimal("30.00")
        raise RuntimeError("card declined")

    saga = Saga(
        "checkout",
        [
            SagaStep("reserve", shop.do("reserve"), shop.undo("reserve")),
            SagaStep("charge", charge, shop.undo("charge")),
        ],
    )
    instance = SagaOrchestrator(storage).start(saga)

    assert ["do reserve", "undo reserve"] == shop.log
    assert instance.error is not None
    assert (("reserve",), "RuntimeError", "card declined") == (
        instance.completed_steps,
        instance.error.error_type,
        instance.error.message,
    )


# -- a step that timed out ----------------------------------------------------------------


def test_a_timed_out_step_is_compensated(storage: SQLiteStorage) -> None:
    """A step that outlives its timeout may have taken effect: it is recorded as done
    (without its data changes) and its compensation runs first, told of the timeout, then
    the earlier steps' compensations."""
    shop = Shop()
    gate = threading.Event()

    def charge(ctx: StepContext) -> None:
        ctx.data.payment = "p-1"
        gate.wait()  # ends only after the saga has ended

    saga = Saga(
        "checkout",
        [
            SagaStep("reserve", shop.do("reserve"), shop.undo("reserve")),
            SagaStep("charge", charge, shop.undo("charge"), timeout=0.05),
        ],
    )
    try:
        instance = SagaOrchestrator(storage).start(saga)
    finally:
        gate.set()

    assert ["do reserve", "undo charge", "undo reserve"] == shop.log
    assert [
        ("charge", "eventlite.saga.StepTimeout"),
        ("reserve", "eventlite.saga.StepTimeout"),
    ] == (shop.errors)
    assert (
        SagaStatus.FAILED,
        "charge",
        ("reserve", "charge"),
        ("charge", "reserve"),
        SagaData(reserve="done"),
    ) == (
        instance.status,
        instance.failed_step,
        instance.completed_steps,
        instance.compensated_steps,
        instance.data,
    )


class _OnStepFailure(logging.Handler):
    """Sets ``event`` when the orchestrator logs a step's failure."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__(logging.INFO)
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "failed" in record.getMessage():
            self.event.set()


def test_a_timed_out_step_is_compensated_after_its_late_call_ends(
    storage: SQLiteStorage,
) -> None:
    """A timed-out step that ends late (within its timeout again) is undone after it ends,
    not while it is still running: the undo comes after the deed."""
    shop = Shop()
    gate = threading.Event()

    def charge(ctx: StepContext) -> None:
        gate.wait()  # set once the orchestrator has given up on the step
        shop.log.append("do charge (late)")

    logger = logging.getLogger("eventlite.saga")
    handler = _OnStepFailure(gate)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    saga = Saga(
        "checkout",
        [
            SagaStep("reserve", shop.do("reserve"), shop.undo("reserve")),
            SagaStep("charge", charge, shop.undo("charge"), timeout=1.0),
        ],
    )
    try:
        instance = SagaOrchestrator(storage).start(saga)
    finally:
        gate.set()
        logger.removeHandler(handler)
        logger.setLevel(level)

    assert ["do reserve", "do charge (late)", "undo charge", "undo reserve"] == shop.log
    assert ("charge", "reserve") == instance.compensated_steps


def test_a_timed_out_step_is_compensated_on_resume(storage: SQLiteStorage) -> None:
    """The timed-out step is stored as one to compensate: after the process stops right
    after the timeout, resume compensates it, then the earlier steps."""
    shop = Shop()
    gate = threading.Event()
    first = SagaOrchestrator(storage)

    def charge(ctx: StepContext) -> None:
        first.close()  # as if the process stopped right after the timeout
        gate.wait()

    saga = Saga(
        "checkout",
        [
            SagaStep("reserve", shop.do("reserve"), shop.undo("reserve")),
            SagaStep("charge", charge, shop.undo("charge"), timeout=0.05),
        ],
    )
    try:
        stopped = first.start(saga)
    finally:
        gate.set()
    assert (SagaStatus.COMPENSATING, ("reserve", "charge"), "charge") == (
        stopped.status,
        stopped.completed_steps,
        stopped.step,
    )

    second = SagaOrchestrator(storage)
    second.register(saga)
    [resumed] = second.resume()
    assert ["do reserve", "undo charge", "undo reserve"] == shop.log
    assert (SagaStatus.FAILED, ("charge", "reserve")) == (
        resumed.status,
        resumed.compensated_steps,
    )


def test_a_raised_step_timeout_counts_as_a_timeout(storage: SQLiteStorage) -> None:
    """A step that raises StepTimeout (as a test injects one) is compensated like a step
    that timed out; without a compensation, there is nothing to undo and it is not
    recorded as done."""
    shop = Shop()

    def timing_out(ctx: StepContext) -> None:
        raise StepTimeout(ctx.saga_id, ctx.step, 5.0)

    saga = Saga(
        "checkout",
        [
            SagaStep("reserve", shop.do("reserve"), shop.undo("reserve")),
            SagaStep("charge", timing_out, shop.undo("charge")),
        ],
    )
    bare = Saga("bare", [SagaStep("reserve", shop.do("reserve")), SagaStep("ship", timing_out)])
    sagas = SagaOrchestrator(storage)
    compensated = sagas.start(saga)
    not_compensated = sagas.start(bare)

    assert ["do reserve", "undo charge", "undo reserve", "do reserve"] == shop.log
    assert (("reserve", "charge"), ("charge", "reserve")) == (
        compensated.completed_steps,
        compensated.compensated_steps,
    )
    assert (("reserve",), ("reserve",), "ship") == (
        not_compensated.completed_steps,
        not_compensated.compensated_steps,
        not_compensated.failed_step,
    )
