"""``graph`` of a whole app: aggregates, durable subscribers, projections, sagas and process
managers besides the bus's handlers."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

from eventlite import cli
from eventlite.aggregate import Aggregate, applies
from eventlite.app import App
from eventlite.cli import mermaid
from eventlite.messages import Registry, command, event
from eventlite.process import ProcessContext, ProcessManager
from eventlite.projection import Projection, projects
from eventlite.saga import Saga, SagaStep, StepContext
from eventlite.unit_of_work import UnitOfWork

registry = Registry()


@command(registry=registry)
class PlaceOrder:
    order_id: str


@command(registry=registry)
class ChaseOrder:
    order_id: str


@event(registry=registry)
class OrderPlaced:
    order_id: str


@event(registry=registry)
class PaymentTaken:
    order_id: str


@event(registry=registry)
class PaymentOverdue:
    order_id: str


@event(registry=registry)
class OrderShipped:
    order_id: str


class Order(Aggregate):
    shipped: bool = False

    @applies(OrderPlaced)
    def _placed(self, e: OrderPlaced) -> None:
        pass

    @applies(OrderShipped)
    def _shipped(self, e: OrderShipped) -> None:
        self.shipped = True


class OrderSummaries(Projection):
    tables = ("order_summaries",)

    @projects(OrderPlaced, OrderShipped)
    def _row(self, e: Any, db: Any) -> None:
        pass


def _step(ctx: StepContext) -> None:
    pass


def build(db: str | Path) -> App:
    """An app with one of each: command handlers, an aggregate, a durable subscriber, a
    projection, a saga started by an event and a process manager."""
    app = App(db, registry=registry)

    @app.handles(PlaceOrder)
    def place_order(c: PlaceOrder, uow: UnitOfWork) -> None:
        order = Order(c.order_id)
        order.record(OrderPlaced(c.order_id))
        uow.add(order)

    @app.handles(ChaseOrder)
    def chase_order(c: ChaseOrder) -> None:
        pass

    @app.subscribes(OrderPlaced, durable=True, name="mailer")
    def send_confirmation(e: OrderPlaced) -> None:
        pass

    app.projection(OrderSummaries())
    app.saga(
        Saga("fulfilment", [SagaStep("reserve", _step, _step), SagaStep("ship", _step)]),
        started_by=PaymentTaken,
    )
    payment = ProcessManager(
        "payment",
        correlate={
            OrderPlaced: lambda e: e.order_id,
            PaymentTaken: lambda e: e.order_id,
            PaymentOverdue: lambda e: e.order_id,
        },
    )

    @payment.starts(OrderPlaced)
    def placed(e: OrderPlaced, process: ProcessContext[dict[str, Any]]) -> None:
        pass

    @payment.handles(PaymentTaken)
    def paid(e: PaymentTaken, process: ProcessContext[dict[str, Any]]) -> None:
        process.complete()

    @payment.handles(PaymentOverdue)
    def overdue(e: PaymentOverdue, process: ProcessContext[dict[str, Any]]) -> None:
        process.dispatch(ChaseOrder(e.order_id))

    app.process_manager(payment)
    return app


FLOW = [
    "flowchart LR",
    '    c_ChaseOrder[/"ChaseOrder"/]',
    '    h_chase_order["chase_order"]',
    '    c_PlaceOrder[/"PlaceOrder"/]',
    '    h_place_order["place_order"]',
    '    a_Order[["Order"]]',
    '    e_OrderPlaced(["OrderPlaced"])',
    '    e_OrderShipped(["OrderShipped"])',
    '    d_mailer["mailer"]',
    '    p_OrderSummaries[("OrderSummaries")]',
    '    s_fulfilment>"saga fulfilment: reserve, ship"]',
    '    e_PaymentTaken(["PaymentTaken"])',
    '    pm_payment[/"payment"\\]',
    '    e_PaymentOverdue(["PaymentOverdue"])',
    "    c_ChaseOrder --> h_chase_order",
    "    c_PlaceOrder --> h_place_order",
    "    a_Order -- records --> e_OrderPlaced",
    "    a_Order -- records --> e_OrderShipped",
    "    e_OrderPlaced ==>|durable| d_mailer",
    "    e_OrderPlaced ==> p_OrderSummaries",
    "    e_OrderShipped ==> p_OrderSummaries",
    "    e_PaymentTaken ==>|starts| s_fulfilment",
    "    e_OrderPlaced ==>|starts| pm_payment",
    "    e_PaymentOverdue ==> pm_payment",
    "    e_PaymentTaken ==> pm_payment",
]


def test_mermaid_of_a_whole_app(tmp_path: Path) -> None:
    """Aggregates record events; events go to durable subscribers, projections, the sagas
    they start and process managers (thick arrows); saga starters and process managers
    are not drawn twice as plain durable subscribers."""
    with build(tmp_path / "flow.db") as app:
        actual = mermaid(app, module=__name__)
    assert FLOW == actual


def test_graph_command_draws_the_whole_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same edges from the command line, for an App made in another module: the
    aggregate is drawn because all the events it applies are in the app's registry."""
    (tmp_path / "cli_flow_app.py").write_text(
        "from tests.cli.test_graph import build\napp = build('flow.db')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "cli_flow_app", raising=False)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["graph", "cli_flow_app:app"], stdout=out, stderr=err)
    sys.modules.pop("cli_flow_app").app.close()
    lines = out.getvalue().splitlines()
    edges = [line for line in lines if "==>" in line or "records" in line]
    assert (0, "", FLOW[-9:]) == (code, err.getvalue(), edges)


def test_an_in_memory_app_draws_aggregates_but_no_durable_parts() -> None:
    """In memory there is no relay, projector, saga or process manager: the bus's handlers
    and the aggregates are drawn, and no thick arrow."""
    with App(None, registry=registry) as app:
        actual = mermaid(app, module=__name__)
        durable = app.durable_subscriptions()
    expected = [
        '    a_Order[["Order"]]',
        "    a_Order -- records --> e_OrderPlaced",
        "    a_Order -- records --> e_OrderShipped",
    ]
    assert (expected, [], False) == (
        [line for line in actual if "a_Order" in line],
        durable,
        any("==>" in line for line in actual),
    )


def test_durable_subscriptions_and_saga_starts_are_listed(tmp_path: Path) -> None:
    """The read-only listings the diagram is made from: every durable subscriber with its
    event type, and the event and subscriber that start each saga."""
    with build(tmp_path / "flow.db") as app:
        names = [name for name, _ in app.durable_subscriptions()]
        starts = app.saga_starts()
    assert (
        ["mailer", "saga-start:fulfilment", "payment"],
        {"fulfilment": (PaymentTaken, "saga-start:fulfilment")},
    ) == (names, starts)
