"""Two services, two files, one broker, and a SIGKILL: ``python -m examples.two_services``.

An order service and a shipping service run as two processes, each with its own SQLite
file, and talk over RabbitMQ (``--broker nats``, ``redis``, ``kafka`` or ``sqs`` picks
another; Kafka and SQS start a local tansu or moto server for the run):

- the order service places orders and sends its ``OrderPlaced`` events to the broker
  (``app.publish_to``: its checkpoint moves only once the broker confirmed them);
- the shipping service receives them (``app.consume_from``: inbox, one unit of work,
  acknowledged after the commit), ships each order — a ``ShipmentSent`` event in the same
  unit of work — and sends its shipments back the same way;
- the order service receives the shipments.

Half-way, the example kills the shipping service with SIGKILL and starts it again. Nothing
is lost and nothing is doubled: every order is shipped exactly once, and the order service
hears of every shipment exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import eventlite
from eventlite import App, UnitOfWork
from eventlite.bridges import Broker
from eventlite.sqlite import SQLiteStorage

registry = eventlite.Registry()

ORDERS = 30


@eventlite.event(registry=registry)
class OrderPlaced:
    order_id: str
    item: str


@eventlite.event(registry=registry)
class ShipmentSent:
    order_id: str
    parcel: str


# -- the brokers ----------------------------------------------------------------------------


def make_broker(kind: str, address: str) -> Broker:
    """The broker of ``kind`` at ``address`` (a URL, or a host:port for Kafka)."""
    if kind == "rabbitmq":
        from eventlite.bridges.rabbitmq import RabbitMQ

        return RabbitMQ(address)
    if kind == "nats":
        from eventlite.bridges.nats import JetStream

        return JetStream(address)
    if kind == "redis":
        from eventlite.bridges.redis import RedisStreams

        return RedisStreams(address)
    if kind == "kafka":
        from eventlite.bridges.kafka import Kafka

        return Kafka(address)
    if kind == "sqs":
        from eventlite.bridges.sqs import SQS

        return SQS(
            endpoint_url=address,
            region_name="us-east-1",
            aws_access_key_id="example",
            aws_secret_access_key="example",
        )
    raise SystemExit(f"unknown broker {kind!r}")


@contextlib.contextmanager
def broker_address(kind: str) -> Iterator[str]:
    """The address of a broker of ``kind``: the machine's service, or a local tansu/moto
    server started for the run."""
    if kind in ("kafka", "sqs"):
        from eventlite.testing import brokers

        server = brokers.start_tansu() if kind == "kafka" else brokers.start_moto()
        try:
            yield (
                f"127.0.0.1:{server.port}" if kind == "kafka" else f"http://127.0.0.1:{server.port}"
            )
        finally:
            server.stop(remove=True)
        return
    yield {
        "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/%2F",
        "nats": "nats://127.0.0.1:4222",
        "redis": "redis://127.0.0.1:6379/0",
    }[kind]


# -- the services (each runs in a child process) ----------------------------------------------


def order_service(app: App, broker: Broker, prefix: str) -> None:
    """Sends its orders out and hears back about shipments."""
    app.publish_to(broker, OrderPlaced, destination=f"{prefix}orders", start="beginning")
    app.consume_from(broker, source=f"{prefix}shipments", group="orders")


def place_orders(app: App) -> None:
    """The order service's customers, one order every 50 ms."""
    for i in range(1, ORDERS + 1):
        with app.unit_of_work() as uow:
            uow.append(f"order-{i}", [OrderPlaced(f"o-{i}", "kettle")])
        time.sleep(0.05)


def ship(event: OrderPlaced, uow: UnitOfWork) -> None:
    """Ship an order: the shipment is recorded in the unit of work of the order's receipt."""
    time.sleep(0.01)  # packing takes a moment
    uow.append(f"shipment-{event.order_id}", [ShipmentSent(event.order_id, f"p-{event.order_id}")])


def shipping_service(app: App, broker: Broker, prefix: str) -> None:
    """Ships every order it hears of and tells the order service."""
    app.consume_from(
        broker, source=f"{prefix}orders", group="shipping", handler=ship, batch=5, prefetch=10
    )
    app.publish_to(broker, ShipmentSent, destination=f"{prefix}shipments", start="beginning")


def run_service(name: str, path: str, kind: str, address: str, prefix: str) -> None:
    """A service's process: wire it, say so, and run until killed or stopped."""
    broker = make_broker(kind, address)
    app = App(path, registry=registry, lease_seconds=None)
    (order_service if name == "orders" else shipping_service)(app, broker, prefix)
    print("ready", flush=True)
    if name == "orders":
        place_orders(app)
    app.run_forever()


# -- the run --------------------------------------------------------------------------------


def count(path: Path, event_type: type[Any]) -> list[str]:
    """The order ids of the ``event_type`` events stored in ``path`` (read-only)."""
    if not path.exists():
        return []
    with SQLiteStorage(str(path), readonly=True, codec=eventlite.Codec(registry)) as storage:
        head = storage.events.head_position()
        if head == 0:
            return []
        return [
            env.message.order_id
            for env in storage.events.read_all(1, head)
            if isinstance(env.message, event_type)
        ]


def start(name: str, path: Path, kind: str, address: str, prefix: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "examples.two_services",
            "--run",
            name,
            str(path),
            kind,
            address,
            prefix,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if line != "ready":
        child.kill()
        raise SystemExit(f"the {name} service did not start (is the broker running?)")
    return child


def wait_for(what: str, done: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def main(kind: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="two-services-"))
    orders_db, shipping_db = folder / "orders.db", folder / "shipping.db"
    prefix = f"two-services-{uuid.uuid4().hex[:8]}-"
    with broker_address(kind) as address:
        print(f"over {kind}: an order service and a shipping service, each with its own file")
        shipping = start("shipping", shipping_db, kind, address, prefix)
        orders = start("orders", orders_db, kind, address, prefix)
        try:
            wait_for("a few shipments", lambda: len(count(shipping_db, ShipmentSent)) >= 8)
            shipping.send_signal(signal.SIGKILL)
            shipping.wait()
            shipped_before = len(count(shipping_db, ShipmentSent))
            print(
                f"the shipping service shipped some orders, then was killed with SIGKILL: "
                f"{0 < shipped_before < ORDERS}"
            )
            shipping = start("shipping", shipping_db, kind, address, prefix)
            wait_for("every shipment back", lambda: len(count(orders_db, ShipmentSent)) >= ORDERS)
            time.sleep(0.5)  # let any copy in flight arrive, so that a double would show
        finally:
            for child in (orders, shipping):
                child.send_signal(signal.SIGTERM)
            for child in (orders, shipping):
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
            make_broker(kind, address).purge(prefix)
    placed = count(orders_db, OrderPlaced)
    received = count(shipping_db, OrderPlaced)
    shipped = count(shipping_db, ShipmentSent)
    heard = count(orders_db, ShipmentSent)
    print(f"orders placed: {len(placed)}")
    print(
        f"restarted, it shipped the rest: {len(shipped)} shipments, every order once: "
        f"{sorted(shipped) == sorted(placed) == sorted(received)}"
    )
    print(
        f"the order service heard of {len(heard)} shipments, none twice: "
        f"{sorted(heard) == sorted(placed)}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--broker", default="rabbitmq", choices=["rabbitmq", "nats", "redis", "kafka", "sqs"]
    )
    parser.add_argument("--run", nargs=5, metavar=("SERVICE", "FILE", "KIND", "ADDRESS", "PREFIX"))
    args = parser.parse_args()
    if args.run:
        run_service(*args.run)
    else:
        main(args.broker)
