"""A bug, its dead letter, the fix, and a retry from the command line:
``python -m examples.dead_letters``.

Release 1 of the shop has a durable subscriber that writes invoices, with a bug: it cannot
invoice an order placed without a coupon. That order is dead-lettered with the reason, and
the orders after it are invoiced all the same. Release 2 fixes the handler. The operator
asks for a retry with ``python -m eventlite --db shop.db dlq retry 1`` in another process;
the command only marks the entry, and when the app of release 2 runs, its relay delivers
the message to the fixed handler.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import eventlite
from eventlite import App, RetryPolicy, UnitOfWork

registry = eventlite.Registry()


@eventlite.command(registry=registry)
class PlaceOrder:
    order_id: str
    total: Decimal
    coupon: str | None = None


@eventlite.event(registry=registry)
class OrderPlaced:
    order_id: str
    total: Decimal
    coupon: str | None = None


def invoice_release_1(event: OrderPlaced) -> None:
    """Write the invoice (the bug: every order was assumed to carry a coupon)."""
    note = "coupon " + event.coupon.upper()  # type: ignore[union-attr]
    print(f"  invoice for {event.order_id}: {event.total} ({note})")


def invoice_release_2(event: OrderPlaced) -> None:
    """Write the invoice, with or without a coupon."""
    note = f"coupon {event.coupon.upper()}" if event.coupon else "no coupon"
    print(f"  invoice for {event.order_id}: {event.total} ({note})")


def build(path: Path, invoice: Callable[[OrderPlaced], None]) -> App:
    """The shop: placing an order stores OrderPlaced; the durable ``invoices`` subscriber
    gets two immediate attempts, then the message is dead-lettered."""
    app = App(path, registry=registry)

    @app.handles(PlaceOrder)
    def place_order(command: PlaceOrder, uow: UnitOfWork) -> None:
        event = OrderPlaced(command.order_id, command.total, command.coupon)
        uow.append(f"Order-{command.order_id}", [event])

    app.subscribe(
        OrderPlaced, invoice, durable=True, name="invoices", retry=RetryPolicy(max_attempts=2)
    )
    return app


def operator(directory: Path, *argv: str) -> list[str]:
    """Run ``python -m eventlite --db shop.db ARGV`` in another process; its output lines."""
    command = [sys.executable, "-m", "eventlite", "--db", "shop.db", *argv]
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def main() -> None:
    """Run the story and print what happens at each step."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = directory / "shop.db"

        print("release 1 runs")
        with build(path, invoice_release_1) as app:
            app.dispatch(PlaceOrder("o-1", Decimal("20.00"), "spring"))
            app.dispatch(PlaceOrder("o-2", Decimal("15.00")))
            app.dispatch(PlaceOrder("o-3", Decimal("42.00"), "vip"))
            app.run_until_idle()
            (dead,) = app.dlq.list()
            print(
                f"dead letter {dead.id}: {dead.type_name} of {dead.key} from {dead.source} "
                f"after {dead.attempts} attempts"
            )
            print(f"  {dead.error_type}: {dead.error_message}")
            (status,) = app.subscribers()
            print(f"invoices: lag {status.lag}, blocked keys {list(status.blocked_keys)}")

        print("the operator looks at the dead-letter queue")
        for line in operator(directory, "dlq", "list", "--json"):
            entry = json.loads(line)
            print(f"  {entry['id']} {entry['status']} {entry['type']} {entry['key']}")
        shown = json.loads(operator(directory, "dlq", "show", str(dead.id), "--json")[0])
        print(f"  its data: {json.dumps(shown['message']['data'])}")

        print("release 2 fixes the handler; the operator asks for a retry")
        print(f"$ python -m eventlite --db shop.db dlq retry {dead.id}")
        for line in operator(directory, "dlq", "retry", str(dead.id)):
            print(f"  {line}")

        print("release 2 runs")
        with build(path, invoice_release_2) as app:
            app.run_until_idle()
            print(f"dead letters left: {app.dlq.count()}")
            (status,) = app.subscribers()
            print(f"invoices: lag {status.lag}, blocked keys {list(status.blocked_keys)}")


if __name__ == "__main__":
    main()
