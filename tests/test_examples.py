"""Every example runs as ``python -m examples.<name>`` and prints what the docs promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eventlite.testing.services import require_service

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "bank": """\
last year's app stored 3 events, deposits in cents
today's app reads them upcast: ada has 13.49
after 120 deposits: 133.00
refused: acc-1: balance 133.00 < 1000
loaded from the snapshot at version 100 plus 24 later events: version 124, balance 133.00
stored rows still at schema version 1: 2
""",
    "clickstream": """\
stored 7,429 page views and 341 purchases of 100 users
a child process ran the streams; killed mid-run with SIGKILL: True
after a restart its results equal an uninterrupted run's: True
sessions: 184 closed, 54 still open (30 minutes without a view end one)
  user-036  09:00-09:44  21 views
  user-008  09:00-10:06  50 views
  user-026  09:01-10:13  53 views
conversion per minute, 10:00 to 10:04:
  10:00   13 views  3 purchases  23.1%
  10:01   11 views  2 purchases  18.2%
  10:02   16 views  2 purchases  12.5%
  10:03   16 views  3 purchases  18.8%
  10:04   12 views  6 purchases  50.0%
view-purchase pairs of a user within 30 minutes: 7,969
  user-022 viewed /pricing at 09:03:30 and bought for 159.27 at 09:08:04
""",
    "dead_letters": """\
release 1 runs
  invoice for o-1: 20.00 (coupon SPRING)
  invoice for o-3: 42.00 (coupon VIP)
dead letter 1: OrderPlaced of Order-o-2 from invoices after 2 attempts
  AttributeError: 'NoneType' object has no attribute 'upper'
invoices: lag 0, blocked keys ['Order-o-2']
the operator looks at the dead-letter queue
  1 dead OrderPlaced Order-o-2
  its data: {"order_id": "o-2", "total": "15.00", "coupon": null}
release 2 fixes the handler; the operator asks for a retry
$ python -m eventlite --db shop.db dlq retry 1
  dead letter 1 (OrderPlaced from invoices): marked for retry
  not delivered yet: the app running subscriber 'invoices' redelivers it at its next poll
release 2 runs
  invoice for o-2: 15.00 (no coupon)
dead letters left: 0
invoices: lag 0, blocked keys []
""",
    "orders": """\
AddStock
  StockAdded: 10 x kettle
  StockAdded: 4 x teapot
PlaceOrder o-1: ann, 2 x kettle, card accepted
  OrderPlaced: o-1, 2 x kettle, 60.00
  saga step: open order
  saga step: reserve inventory
    InventoryReserved: 2 x kettle for o-1
  saga step: process payment
    PaymentProcessed: 60.00 for o-1
  saga step: create shipment
    ShipmentCreated: parcel-o-1 for o-1
  saga step: confirm order
    OrderConfirmed: o-1
GetOrder o-1: confirmed, 2 x kettle, 60.00, parcel-o-1
PlaceOrder o-2: bob, 1 x teapot, card declined
  OrderPlaced: o-2, 1 x teapot, 24.50
  saga step: open order
  saga step: reserve inventory
    InventoryReserved: 1 x teapot for o-2
  saga step: process payment
    PaymentFailed: o-2, card declined
  saga undo: reserve inventory
    InventoryReleased: 1 x teapot for o-2
  saga undo: open order
    OrderCancelled: o-2, payment failed
GetOrder o-2: cancelled, 1 x teapot, 24.50, payment failed
saga for o-1: completed, steps done 5, undone 0
saga for o-2: failed, steps done 2, undone 2
stock: kettle 8, teapot 4
events stored: 12
""",
    "orders_process": """\
AddStock
  StockAdded: 10 x kettle
  StockAdded: 4 x teapot
PlaceOrder o-1: ann, 2 x kettle, card accepted
  OrderPlaced: o-1, 2 x kettle, 60.00
  process o-1: OrderPlaced -> ReserveInventory
    InventoryReserved: 2 x kettle for o-1
  process o-1: InventoryReserved -> ProcessPayment
    PaymentProcessed: 60.00 for o-1
  process o-1: PaymentProcessed -> CreateShipment
    ShipmentCreated: parcel-o-1 for o-1
  process o-1: ShipmentCreated -> ConfirmOrder
    OrderConfirmed: o-1
  process o-1: OrderConfirmed -> nothing
GetOrder o-1: confirmed, 2 x kettle, 60.00, parcel-o-1
PlaceOrder o-2: bob, 1 x teapot, card declined
  OrderPlaced: o-2, 1 x teapot, 24.50
  process o-2: OrderPlaced -> ReserveInventory
    InventoryReserved: 1 x teapot for o-2
  process o-2: InventoryReserved -> ProcessPayment
    PaymentFailed: o-2, card declined
  process o-2: PaymentFailed -> ReleaseInventory, CancelOrder
    InventoryReleased: 1 x teapot for o-2
    OrderCancelled: o-2, payment failed
GetOrder o-2: cancelled, 1 x teapot, 24.50, payment failed
PlaceOrder o-3: cy, 1 x kettle, card slow to answer
  OrderPlaced: o-3, 1 x kettle, 30.00
  process o-3: OrderPlaced -> ReserveInventory
    InventoryReserved: 1 x kettle for o-3
  process o-3: InventoryReserved -> ProcessPayment
    no answer from the bank yet for o-3
GetOrder o-3: placed, 1 x kettle, 30.00
  timeouts waiting: PaymentOverdue for o-3
clock +10 min
  timeouts waiting: PaymentOverdue for o-3
clock +6 min
  process o-3: PaymentOverdue -> ReleaseInventory, CancelOrder
    InventoryReleased: 1 x kettle for o-3
    OrderCancelled: o-3, payment timed out
  timeouts waiting: none
GetOrder o-3: cancelled, 1 x kettle, 30.00, payment timed out
process o-1: done at confirmed
process o-2: done at cancelled
process o-3: done at cancelled
""",
    "quickstart": """\
dispatch PlaceOrder o-1
  handling PlaceOrder o-1
  event OrderPlaced #1 in Order-o-1 v1
dispatch PlaceOrder o-2
  handling PlaceOrder o-2
  event OrderPlaced #2 in Order-o-2 v1
dispatch CancelOrder o-1
  handling CancelOrder o-1
  event OrderCancelled #3 in Order-o-1 v2
ask OpenOrders -> ['o-2: kettle']
dispatch CancelOrder o-1 again
  handling CancelOrder o-1
  refused: order o-1 is already cancelled
reopened quickstart.db: 3 events stored
  Order o-1 at version 2, cancelled=True
""",
    "scale_out": """\
three workers run subscriber 'fulfil' with segments=3
each worker holds one segment (the fair share of 3 segments among 3): True
appended 90 steps of 30 orders
steps handled per worker: 18, 33, 39
SIGKILL to the worker holding segment 0
appended 90 more steps
segment 0 taken over by a surviving worker: True
every step handled exactly once: True
each order's steps handled in order: True
""",
    "web": """\
serving the shop on a free port of 127.0.0.1
POST /orders o-1: 2 x kettle at 30.00 -> 201, total 60.00
POST /orders o-2 with X-Correlation-ID: checkout-42 -> 201
POST /orders o-1 again -> 409 order o-1 already exists
POST /orders o-3 with quantity "two" -> 422 quantity must be an integer >= 1
GET /orders/o-1 -> 200 {'order_id': 'o-1', 'item': 'kettle', 'quantity': 2, 'price': '30.00', \
'total': '60.00', 'version': 1}
GET /orders/o-9 -> 404 no order o-9
20 POSTs at once -> status [201], 20 distinct correlation ids
GET /orders -> 22 orders, 258.75 in all
confirmations mailed: 22, each in its request's flow: True
o-2 confirmed under correlation id checkout-42
server stopped; the app was closed with it: True
reopened shop.db: 22 events stored
""",
    "two_services": """\
over rabbitmq: an order service and a shipping service, each with its own file
the shipping service shipped some orders, then was killed with SIGKILL: True
orders placed: 30
restarted, it shipped the rest: 30 shipments, every order once: True
the order service heard of 30 shipments, none twice: True
""",
}

NEEDS: dict[str, tuple[str, str, int]] = {"two_services": ("RabbitMQ", "127.0.0.1", 5672)}
"""Examples that talk to a service of the machine."""


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_output(name: str) -> None:
    """The example exits 0 and prints exactly its expected trace."""
    if name in NEEDS:
        require_service(*NEEDS[name])
    result = subprocess.run(
        [sys.executable, "-m", f"examples.{name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 0 == result.returncode, result.stderr
    assert EXPECTED[name] == result.stdout


def test_every_example_is_checked() -> None:
    """Each module in examples/ has an expected output here."""
    modules = {p.stem for p in (ROOT / "examples").glob("*.py") if not p.stem.startswith("_")}
    assert modules == set(EXPECTED)
