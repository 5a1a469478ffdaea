"""An order flow on one SQLite file, orchestrated by a saga: ``python -m examples.orders``.

A ``PlaceOrder`` command changes the ``Order`` aggregate; its ``OrderPlaced`` event, stored
in the event store, starts the fulfilment saga (reserve inventory, process payment, create
shipment, confirm order) through ``app.saga(..., started_by=OrderPlaced)``. An inline
projection keeps the ``order_summaries`` read model that the ``GetOrder`` query reads. The
second order's card is declined: the saga compensates what it did, last first.

The domain (messages, aggregates, command handlers, projection) is shared with
``examples.orders_process``, which runs the same flow with a process manager.
"""

from __future__ import annotations

import contextvars
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlite_utils

import eventlite
from eventlite import Aggregate, App, UnitOfWork, applies
from eventlite.projection import Projection, Projector, projects
from eventlite.saga import Saga, SagaStep, StepContext

registry = eventlite.Registry()
PRICES = {"kettle": Decimal("30.00"), "teapot": Decimal("24.50")}
DECLINED_CARD = "0000"
SLOW_CARD = "5555"

# -- messages -----------------------------------------------------------------------------


@eventlite.command(registry=registry)
class PlaceOrder:
    order_id: str
    customer: str
    sku: str
    quantity: int
    card: str


@eventlite.command(registry=registry)
class AddStock:
    sku: str
    quantity: int


@eventlite.command(registry=registry)
class ReserveInventory:
    order_id: str
    sku: str
    quantity: int


@eventlite.command(registry=registry)
class ReleaseInventory:
    order_id: str
    sku: str


@eventlite.command(registry=registry)
class ProcessPayment:
    order_id: str
    amount: Decimal
    card: str


@eventlite.command(registry=registry)
class CreateShipment:
    order_id: str


@eventlite.command(registry=registry)
class ConfirmOrder:
    order_id: str


@eventlite.command(registry=registry)
class CancelOrder:
    order_id: str
    reason: str


@eventlite.query(registry=registry)
class GetOrder:
    order_id: str


@eventlite.event(registry=registry)
class OrderPlaced:
    order_id: str
    customer: str
    sku: str
    quantity: int
    amount: Decimal
    card: str


@eventlite.event(registry=registry)
class StockAdded:
    sku: str
    quantity: int


@eventlite.event(registry=registry)
class InventoryReserved:
    order_id: str
    sku: str
    quantity: int


@eventlite.event(registry=registry)
class InventoryReleased:
    order_id: str
    sku: str
    quantity: int


@eventlite.event(registry=registry)
class PaymentProcessed:
    order_id: str
    amount: Decimal


@eventlite.event(registry=registry)
class PaymentFailed:
    order_id: str
    reason: str


@eventlite.event(registry=registry)
class ShipmentCreated:
    order_id: str
    parcel: str


@eventlite.event(registry=registry)
class OrderConfirmed:
    order_id: str


@eventlite.event(registry=registry)
class OrderCancelled:
    order_id: str
    reason: str


# -- aggregates ---------------------------------------------------------------------------


class Order(Aggregate):
    """An order: placed, then confirmed or cancelled."""

    status: str = "new"

    @classmethod
    def place(cls, command: PlaceOrder) -> Order:
        order = cls(command.order_id)
        amount = PRICES[command.sku] * command.quantity
        order.record(
            OrderPlaced(
                command.order_id,
                command.customer,
                command.sku,
                command.quantity,
                amount,
                command.card,
            )
        )
        return order

    def confirm(self) -> None:
        if self.status != "placed":
            raise ValueError(f"order {self.id} is {self.status}, it cannot be confirmed")
        self.record(OrderConfirmed(self.id))

    def cancel(self, reason: str) -> None:
        if self.status == "placed":  # cancelling twice is a no-op: redeliveries are safe
            self.record(OrderCancelled(self.id, reason))

    @applies(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.status = "placed"

    @applies(OrderConfirmed)
    def _confirmed(self, event: OrderConfirmed) -> None:
        self.status = "confirmed"

    @applies(OrderCancelled)
    def _cancelled(self, event: OrderCancelled) -> None:
        self.status = "cancelled"


class Stock(Aggregate):
    """The stock of one item, and what each order holds of it."""

    available: int = 0
    held: dict[str, int]

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.held = {}

    def add(self, quantity: int) -> None:
        self.record(StockAdded(self.id, quantity))

    def reserve(self, order_id: str, quantity: int) -> None:
        if order_id in self.held:
            return  # reserved already: a repeated command changes nothing
        if quantity > self.available:
            raise ValueError(f"only {self.available} x {self.id} left")
        self.record(InventoryReserved(order_id, self.id, quantity))

    def release(self, order_id: str) -> None:
        if order_id in self.held:
            self.record(InventoryReleased(order_id, self.id, self.held[order_id]))

    @applies(StockAdded)
    def _added(self, event: StockAdded) -> None:
        self.available += event.quantity

    @applies(InventoryReserved)
    def _reserved(self, event: InventoryReserved) -> None:
        self.available -= event.quantity
        self.held[event.order_id] = event.quantity

    @applies(InventoryReleased)
    def _released(self, event: InventoryReleased) -> None:
        self.available += self.held.pop(event.order_id)


class Payment(Aggregate):
    """The payment of one order (the aggregate id is the order id)."""

    outcome: str = ""

    def process(self, amount: Decimal, card: str) -> None:
        if self.outcome:
            return  # processed already: a repeated command changes nothing
        if card == SLOW_CARD:
            return  # the bank will answer later (examples.orders_process waits for it)
        if card == DECLINED_CARD:
            self.record(PaymentFailed(self.id, "card declined"))
        else:
            self.record(PaymentProcessed(self.id, amount))

    @applies(PaymentProcessed)
    def _processed(self, event: PaymentProcessed) -> None:
        self.outcome = "processed"

    @applies(PaymentFailed)
    def _failed(self, event: PaymentFailed) -> None:
        self.outcome = "failed"


class Shipment(Aggregate):
    """The parcel of one order (the aggregate id is the order id)."""

    @classmethod
    def create(cls, order_id: str) -> Shipment:
        shipment = cls(order_id)
        shipment.record(ShipmentCreated(order_id, f"parcel-{order_id}"))
        return shipment


# -- the read model -----------------------------------------------------------------------


class OrderSummaries(Projection):
    """One row per order, for the ``GetOrder`` query."""

    tables = ("order_summaries",)

    def setup(self, db: sqlite_utils.Database) -> None:
        db.table("order_summaries").create(
            {
                "order_id": str,
                "customer": str,
                "items": str,
                "amount": str,
                "status": str,
                "parcel": str,
                "note": str,
            },
            pk="order_id",
            if_not_exists=True,
        )

    @projects(OrderPlaced)
    def _placed(self, event: OrderPlaced, db: sqlite_utils.Database) -> None:
        db.table("order_summaries").insert(
            {
                "order_id": event.order_id,
                "customer": event.customer,
                "items": f"{event.quantity} x {event.sku}",
                "amount": str(event.amount),
                "status": "placed",
            }
        )

    @projects(ShipmentCreated)
    def _shipped(self, event: ShipmentCreated, db: sqlite_utils.Database) -> None:
        db.table("order_summaries").update(event.order_id, {"parcel": event.parcel})

    @projects(OrderConfirmed)
    def _confirmed(self, event: OrderConfirmed, db: sqlite_utils.Database) -> None:
        db.table("order_summaries").update(event.order_id, {"status": "confirmed"})

    @projects(OrderCancelled)
    def _cancelled(self, event: OrderCancelled, db: sqlite_utils.Database) -> None:
        db.table("order_summaries").update(
            event.order_id, {"status": "cancelled", "note": event.reason}
        )


# -- the trace ----------------------------------------------------------------------------

_indent = contextvars.ContextVar("indent", default="  ")


def say(line: str) -> None:
    """Print one line of the trace at the current indentation."""
    print(f"{_indent.get()}{line}")


@contextmanager
def indented() -> Iterator[None]:
    """Indent the trace lines printed inside the block one step further."""
    token = _indent.set(_indent.get() + "  ")
    try:
        yield
    finally:
        _indent.reset(token)


def describe(event: Any) -> str:
    """One line about an event, without ids or times."""
    if isinstance(event, OrderPlaced):
        return f"{event.order_id}, {event.quantity} x {event.sku}, {event.amount}"
    if isinstance(event, (InventoryReserved, InventoryReleased)):
        return f"{event.quantity} x {event.sku} for {event.order_id}"
    if isinstance(event, PaymentProcessed):
        return f"{event.amount} for {event.order_id}"
    if isinstance(event, (PaymentFailed, OrderCancelled)):
        return f"{event.order_id}, {event.reason}"
    if isinstance(event, ShipmentCreated):
        return f"{event.parcel} for {event.order_id}"
    if isinstance(event, StockAdded):
        return f"{event.quantity} x {event.sku}"
    return str(getattr(event, "order_id", ""))


def report(aggregate: Aggregate) -> None:
    """Print the events a command handler is about to commit. (Printed before the commit,
    in the handler's thread, so the trace comes out in one deterministic order.)"""
    for event in aggregate.pending_events:
        say(f"{type(event).__name__}: {describe(event)}")


def order_line(summary: dict[str, Any]) -> str:
    """The ``GetOrder`` answer as one line."""
    parts = [summary["status"], summary["items"], summary["amount"]]
    parts += [summary[k] for k in ("parcel", "note") if summary[k]]
    return ", ".join(parts)


# -- wiring -------------------------------------------------------------------------------


def build_domain(db: Path, **options: Any) -> App:
    """An app with the command handlers of every service (each prints the events it
    records), the read model and its query; no coordination between the services yet."""
    app = App(db, registry=registry, **options)

    @app.handles(PlaceOrder)
    def place_order(command: PlaceOrder, uow: UnitOfWork) -> None:
        order = Order.place(command)
        uow.add(order)
        report(order)

    @app.handles(AddStock)
    def add_stock(command: AddStock, uow: UnitOfWork) -> None:
        stock = uow.find(Stock, command.sku)
        if stock is None:
            stock = Stock(command.sku)
            uow.add(stock)
        stock.add(command.quantity)
        report(stock)

    @app.handles(ReserveInventory, conflict_retries=3)
    def reserve(command: ReserveInventory, uow: UnitOfWork) -> None:
        stock = uow.get(Stock, command.sku)
        stock.reserve(command.order_id, command.quantity)
        report(stock)

    @app.handles(ReleaseInventory, conflict_retries=3)
    def release(command: ReleaseInventory, uow: UnitOfWork) -> None:
        stock = uow.get(Stock, command.sku)
        stock.release(command.order_id)
        report(stock)

    @app.handles(ProcessPayment)
    def process_payment(command: ProcessPayment, uow: UnitOfWork) -> bool:
        payment = uow.find(Payment, command.order_id)
        if payment is None:
            payment = Payment(command.order_id)
            uow.add(payment)
        payment.process(command.amount, command.card)
        report(payment)
        if not payment.outcome:
            say(f"no answer from the bank yet for {command.order_id}")
        return payment.outcome == "processed"

    @app.handles(CreateShipment)
    def create_shipment(command: CreateShipment, uow: UnitOfWork) -> None:
        if uow.find(Shipment, command.order_id) is None:
            shipment = Shipment.create(command.order_id)
            uow.add(shipment)
            report(shipment)

    @app.handles(ConfirmOrder)
    def confirm_order(command: ConfirmOrder, uow: UnitOfWork) -> None:
        order = uow.get(Order, command.order_id)
        order.confirm()
        report(order)

    @app.handles(CancelOrder)
    def cancel_order(command: CancelOrder, uow: UnitOfWork) -> None:
        order = uow.get(Order, command.order_id)
        order.cancel(command.reason)
        report(order)

    app.projection(OrderSummaries(), mode="inline")

    @app.handles(GetOrder)
    def get_order(query: GetOrder, projector: Projector) -> str:
        return order_line(projector.reader().table("order_summaries").get(query.order_id))

    return app


class PaymentDeclined(Exception):
    """The payment step failed: the saga compensates."""


def fulfilment_saga(app: App) -> Saga:
    """The fulfilment saga: each step dispatches one command and says so in the trace."""

    def traced(name: str, run: Callable[[Any], object]) -> Callable[[StepContext], None]:
        def call(ctx: StepContext) -> None:
            say(f"saga {'undo' if ctx.compensating else 'step'}: {name}")
            with indented():
                run(ctx)

        return call

    def reserve(ctx: StepContext) -> None:
        app.dispatch(ReserveInventory(ctx.data.order_id, ctx.data.sku, ctx.data.quantity))

    def release(ctx: StepContext) -> None:
        app.dispatch(ReleaseInventory(ctx.data.order_id, ctx.data.sku))

    def pay(ctx: StepContext) -> None:
        command = ProcessPayment(ctx.data.order_id, Decimal(ctx.data.amount), ctx.data.card)
        if not app.dispatch(command):
            raise PaymentDeclined("payment failed")

    def cancel(ctx: StepContext) -> None:
        assert ctx.error is not None
        app.dispatch(CancelOrder(ctx.data.order_id, ctx.error.message))

    def ship(ctx: StepContext) -> None:
        app.dispatch(CreateShipment(ctx.data.order_id))

    def confirm(ctx: StepContext) -> None:
        app.dispatch(ConfirmOrder(ctx.data.order_id))

    def nothing(ctx: StepContext) -> None:
        """The order exists already: its event started the saga."""

    steps = [
        ("open order", nothing, cancel),
        ("reserve inventory", reserve, release),
        ("process payment", pay, None),
        ("create shipment", ship, None),
        ("confirm order", confirm, None),
    ]
    return Saga(
        "fulfilment",
        [
            SagaStep(name, traced(name, run), None if undo is None else traced(name, undo))
            for name, run, undo in steps
        ],
    )


def place(app: App, command: PlaceOrder) -> None:
    """Dispatch ``PlaceOrder``, let the flow it starts settle, and print where it ended."""
    card = {DECLINED_CARD: "declined", SLOW_CARD: "slow to answer"}.get(command.card, "accepted")
    print(
        f"PlaceOrder {command.order_id}: {command.customer}, {command.quantity} x "
        f"{command.sku}, card {card}"
    )
    app.dispatch(command)
    app.run_until_idle()
    print(f"GetOrder {command.order_id}: {app.ask(GetOrder(command.order_id))}")


def main() -> None:
    """Run two orders through the saga: one is fulfilled, one is compensated."""
    with tempfile.TemporaryDirectory() as tmp, build_domain(Path(tmp) / "orders.db") as app:
        app.saga(fulfilment_saga(app), started_by=OrderPlaced)
        app.start()
        print("AddStock")
        app.dispatch(AddStock("kettle", 10))
        app.dispatch(AddStock("teapot", 4))
        place(app, PlaceOrder("o-1", "ann", "kettle", 2, "4242"))
        place(app, PlaceOrder("o-2", "bob", "teapot", 1, DECLINED_CARD))
        for instance in app.sagas.list(saga="fulfilment"):
            print(
                f"saga for {instance.data.order_id}: {instance.status.value}, steps done "
                f"{len(instance.completed_steps)}, undone {len(instance.compensated_steps)}"
            )
        stock = {sku: app.repository(Stock).get(sku).available for sku in PRICES}
        print(f"stock: kettle {stock['kettle']}, teapot {stock['teapot']}")
        print(f"events stored: {app.store.head_position()}")


if __name__ == "__main__":
    main()
