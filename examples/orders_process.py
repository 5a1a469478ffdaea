"""The order flow of ``examples.orders``, run by a process manager instead of a saga:
``python -m examples.orders_process``.

The ``fulfilment`` process manager starts on ``OrderPlaced`` and reacts to each service's
event with the next command, keeping its state in the file. The payment may never be
answered, so it schedules a ``PaymentOverdue`` timeout when it asks for the payment, and
cancels it when the answer comes. The third order's bank stays silent: when the clock has
passed the deadline the timeout fires, and the process releases the stock and cancels the
order. The clock is a ``FakeClock`` moved by hand, so the example needs no waiting.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

import eventlite
from eventlite import App
from eventlite.clock import FakeClock
from eventlite.process import ProcessContext, ProcessManager

from .orders import (
    DECLINED_CARD,
    SLOW_CARD,
    AddStock,
    CancelOrder,
    ConfirmOrder,
    CreateShipment,
    GetOrder,
    InventoryReserved,
    OrderConfirmed,
    OrderPlaced,
    PaymentFailed,
    PaymentProcessed,
    PlaceOrder,
    ProcessPayment,
    ReleaseInventory,
    ReserveInventory,
    ShipmentCreated,
    build_domain,
    indented,
    place,
    registry,
    say,
)

PAYMENT_DEADLINE = timedelta(minutes=15)


@eventlite.event(registry=registry)
class PaymentOverdue:
    """The payment deadline of an order passed (a timeout of the process manager)."""

    order_id: str


@attrs.define
class Fulfilment:
    """What the process remembers between events."""

    sku: str = ""
    quantity: int = 0
    amount: Decimal = Decimal(0)
    card: str = ""
    stage: str = "new"


def by_order(event: Any) -> str:
    """Every event of the flow names its order."""
    return str(event.order_id)


fulfilment = ProcessManager(
    "fulfilment",
    state=Fulfilment,
    correlate=dict.fromkeys(
        [
            OrderPlaced,
            InventoryReserved,
            PaymentProcessed,
            PaymentFailed,
            ShipmentCreated,
            OrderConfirmed,
        ],
        by_order,
    ),
)


def step(process: ProcessContext[Fulfilment], event: Any, stage: str, *commands: Any) -> None:
    """Move to ``stage`` and dispatch ``commands``, saying so in the trace."""
    names = ", ".join(type(c).__name__ for c in commands) or "nothing"
    say(f"process {process.key}: {type(event).__name__} -> {names}")
    process.state.stage = stage
    with indented():
        for command in commands:
            process.dispatch(command)


@fulfilment.starts(OrderPlaced)
def placed(event: OrderPlaced, process: ProcessContext[Fulfilment]) -> None:
    """Remember the order and reserve its items."""
    state = process.state
    state.sku, state.quantity, state.amount, state.card = (
        event.sku,
        event.quantity,
        event.amount,
        event.card,
    )
    step(process, event, "reserving", ReserveInventory(event.order_id, event.sku, event.quantity))


@fulfilment.handles(InventoryReserved)
def reserved(event: InventoryReserved, process: ProcessContext[Fulfilment]) -> None:
    """Ask for the payment, and give the bank a deadline."""
    state = process.state
    process.schedule(PaymentOverdue(event.order_id), after=PAYMENT_DEADLINE, name="payment")
    step(process, event, "paying", ProcessPayment(event.order_id, state.amount, state.card))


@fulfilment.handles(PaymentProcessed)
def paid(event: PaymentProcessed, process: ProcessContext[Fulfilment]) -> None:
    """The bank answered in time: ship."""
    process.cancel("payment")
    step(process, event, "shipping", CreateShipment(event.order_id))


@fulfilment.handles(ShipmentCreated)
def shipped(event: ShipmentCreated, process: ProcessContext[Fulfilment]) -> None:
    """Confirm the order."""
    step(process, event, "confirming", ConfirmOrder(event.order_id))


@fulfilment.handles(OrderConfirmed)
def confirmed(event: OrderConfirmed, process: ProcessContext[Fulfilment]) -> None:
    """The flow is over."""
    step(process, event, "confirmed")
    process.complete()


def give_up(process: ProcessContext[Fulfilment], event: Any, reason: str) -> None:
    """Undo the reservation, cancel the order, and end the process."""
    order_id = process.key
    release = ReleaseInventory(order_id, process.state.sku)
    step(process, event, "cancelled", release, CancelOrder(order_id, reason))
    process.complete()  # also cancels the payment deadline


@fulfilment.handles(PaymentFailed)
def payment_failed(event: PaymentFailed, process: ProcessContext[Fulfilment]) -> None:
    """The bank said no."""
    give_up(process, event, "payment failed")


@fulfilment.handles(PaymentOverdue)
def payment_overdue(event: PaymentOverdue, process: ProcessContext[Fulfilment]) -> None:
    """The bank said nothing in time."""
    give_up(process, event, "payment timed out")


def main() -> None:
    """Run three orders through the process manager: fulfilled, declined, timed out."""
    clock = FakeClock()
    with (
        tempfile.TemporaryDirectory() as tmp,
        build_domain(Path(tmp) / "orders.db", clock=clock) as app,
    ):
        app.process_manager(fulfilment)
        print("AddStock")
        app.dispatch(AddStock("kettle", 10))
        app.dispatch(AddStock("teapot", 4))
        place(app, PlaceOrder("o-1", "ann", "kettle", 2, "4242"))
        place(app, PlaceOrder("o-2", "bob", "teapot", 1, DECLINED_CARD))
        place(app, PlaceOrder("o-3", "cy", "kettle", 1, SLOW_CARD))
        show_timeouts(app)
        for minutes in (10, 6):
            clock.advance(minutes * 60)
            print(f"clock +{minutes} min")
            app.run_until_idle()
            show_timeouts(app)
        print(f"GetOrder o-3: {app.ask(GetOrder('o-3'))}")
        for instance in app.processes.list("fulfilment"):
            print(f"process {instance.key}: {instance.status.value} at {instance.state.stage}")


def show_timeouts(app: App) -> None:
    """Print the timeouts that wait, without ids or times."""
    waiting = [f"{t.type} for {t.key}" for t in app.processes.timeouts("fulfilment")]
    print(f"  timeouts waiting: {', '.join(waiting) or 'none'}")


if __name__ == "__main__":
    main()
