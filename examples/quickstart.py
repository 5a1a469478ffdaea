"""Commands, queries and events on one SQLite file: ``python -m examples.quickstart``.

A command handler changes an aggregate through a unit of work; the committed events are
published to subscribers, one of which keeps a read model that a query answers from.
"""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

import eventlite
from eventlite import Aggregate, App, UnitOfWork, applies

registry = eventlite.Registry()


@eventlite.command(registry=registry)
class PlaceOrder:
    order_id: str
    item: str
    price: Decimal


@eventlite.command(registry=registry)
class CancelOrder:
    order_id: str


@eventlite.event(registry=registry)
class OrderPlaced:
    order_id: str
    item: str
    price: Decimal


@eventlite.event(registry=registry)
class OrderCancelled:
    order_id: str


@eventlite.query(registry=registry)
class OpenOrders:
    pass


class Order(Aggregate):
    item: str = ""
    cancelled: bool = False

    @classmethod
    def place(cls, order_id: str, item: str, price: Decimal) -> Order:
        order = cls(order_id)
        order.record(OrderPlaced(order_id, item, price))
        return order

    def cancel(self) -> None:
        if self.cancelled:
            raise ValueError(f"order {self.id} is already cancelled")
        self.record(OrderCancelled(self.id))

    @applies(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.item = event.item

    @applies(OrderCancelled)
    def _cancelled(self, event: OrderCancelled) -> None:
        self.cancelled = True


def build(db: Path) -> App:
    """Wire the application: handlers, subscribers and the read model."""
    app = App(db, registry=registry)
    open_orders: dict[str, str] = {}

    @app.handles(PlaceOrder)
    def place_order(command: PlaceOrder, uow: UnitOfWork) -> None:
        print(f"  handling PlaceOrder {command.order_id}")
        uow.add(Order.place(command.order_id, command.item, command.price))

    @app.handles(CancelOrder)
    def cancel_order(command: CancelOrder, uow: UnitOfWork) -> None:
        print(f"  handling CancelOrder {command.order_id}")
        uow.get(Order, command.order_id).cancel()

    @app.handles(OpenOrders)
    def list_open(query: OpenOrders) -> list[str]:
        return sorted(f"{oid}: {item}" for oid, item in open_orders.items())

    @app.subscribes(OrderPlaced)
    def remember(event: OrderPlaced) -> None:
        open_orders[event.order_id] = event.item

    @app.subscribes(OrderCancelled)
    def forget(event: OrderCancelled) -> None:
        open_orders.pop(event.order_id, None)

    @app.subscribes(object)
    def log_event(event: object) -> None:
        env = eventlite.current_envelope()
        assert env is not None
        print(f"  event {env.type} #{env.position} in {env.stream_id} v{env.version}")

    return app


def main() -> None:
    """Place two orders, cancel one, ask what is open, and show a refused command."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "quickstart.db"
        with build(db) as app:
            print("dispatch PlaceOrder o-1")
            app.dispatch(PlaceOrder("o-1", "teapot", Decimal("24.50")))
            print("dispatch PlaceOrder o-2")
            app.dispatch(PlaceOrder("o-2", "kettle", Decimal("39.00")))
            print("dispatch CancelOrder o-1")
            app.dispatch(CancelOrder("o-1"))
            print("ask OpenOrders ->", app.ask(OpenOrders()))
            print("dispatch CancelOrder o-1 again")
            try:
                app.dispatch(CancelOrder("o-1"))
            except ValueError as exc:
                print(f"  refused: {exc}")
        with App(db, registry=registry) as reopened:
            print(f"reopened {db.name}: {reopened.store.head_position()} events stored")
            order = reopened.repository(Order).get("o-1")
            print(f"  Order o-1 at version {order.version}, cancelled={order.cancelled}")


if __name__ == "__main__":
    main()
