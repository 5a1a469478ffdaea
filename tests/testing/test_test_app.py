"""The test app of eventlite.testing: the real composition root on a fake clock, a record of
what was dispatched, published, dead-lettered and scheduled, and a run_until_idle that
settles every kind of background work without sleeping, the same way on every run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from eventlite.app import App
from eventlite.bus import MessageBus
from eventlite.clock import FakeClock
from eventlite.messages import Registry, command, event
from eventlite.metrics import CountingMetrics
from eventlite.retry import RetryPolicy
from eventlite.testing import Record, TestApp
from eventlite.unit_of_work import UnitOfWork

registry = Registry()


@command(registry=registry)
class PlaceOrder:
    order_id: str


@command(registry=registry)
class ReserveStock:
    order_id: str


@command(registry=registry)
class SendReceipt:
    order_id: str


@event(registry=registry)
class OrderPlaced:
    order_id: str


@event(registry=registry)
class StockReserved:
    order_id: str


@event(registry=registry)
class ReceiptSent:
    order_id: str


@event(registry=registry)
class Pinged:
    note: str


def build(db: str | None = None, **options: Any) -> App:
    """The shop's composition root: placing an order stores OrderPlaced; a background
    subscriber reserves stock; the durable ``receipts`` subscriber fails its first attempt
    for every order and succeeds on its delayed retry 30 s later; the durable ``audit``
    subscriber has a bug with order o-2 and dead-letters it."""
    app = App(db, registry=registry, **options)
    attempts: dict[str, int] = {}

    @app.handles(PlaceOrder)
    def place_order(c: PlaceOrder, uow: UnitOfWork) -> None:
        uow.append(f"Order-{c.order_id}", [OrderPlaced(c.order_id)])

    @app.handles(ReserveStock)
    def reserve_stock(c: ReserveStock, uow: UnitOfWork) -> None:
        uow.append(f"Stock-{c.order_id}", [StockReserved(c.order_id)])

    @app.handles(SendReceipt)
    def send_receipt(c: SendReceipt, uow: UnitOfWork) -> None:
        uow.append(f"Receipt-{c.order_id}", [ReceiptSent(c.order_id)])

    @app.subscribes(OrderPlaced, background=True)
    def reserve(e: OrderPlaced, app: App) -> None:
        app.dispatch(ReserveStock(e.order_id))

    if db is not None:

        @app.subscribes(
            OrderPlaced,
            durable=True,
            name="receipts",
            retry=RetryPolicy(max_attempts=1, delayed_attempts=1, initial=30, jitter=0),
        )
        def receipts(e: OrderPlaced, app: App) -> None:
            attempts[e.order_id] = attempts.get(e.order_id, 0) + 1
            if attempts[e.order_id] == 1:
                raise ConnectionError("mail server busy")
            app.dispatch(SendReceipt(e.order_id))

        @app.subscribes(
            StockReserved, durable=True, name="audit", retry=RetryPolicy(max_attempts=2)
        )
        def audit(e: StockReserved) -> None:
            if e.order_id == "o-2":
                raise KeyError(e.order_id)

    return app


def shop_flow() -> list[str]:
    """Three orders through the whole shop, then 30 s later; the recorded trace."""
    with TestApp(build, registry=registry) as t:
        for order_id in ("o-1", "o-2", "o-3"):
            t.dispatch(PlaceOrder(order_id))
        t.run_until_idle()
        t.advance(timedelta(seconds=30))
        return t.trace()  # type: ignore[no-any-return]


def order_trace(n: str, audit_failed: bool = False) -> list[str]:
    """The expected trace of order ``n``."""
    lines = [
        f"dispatch PlaceOrder(order_id='{n}')",
        f"  event OrderPlaced(order_id='{n}') in Order-{n} v1",
        f"    dispatch ReserveStock(order_id='{n}')",
        f"      event StockReserved(order_id='{n}') in Stock-{n} v1",
    ]
    if audit_failed:
        lines.append(
            f"        dead letter StockReserved(order_id='{n}') from audit: KeyError: '{n}'"
        )
    lines += [
        f"    dispatch SendReceipt(order_id='{n}')",
        f"      event ReceiptSent(order_id='{n}') in Receipt-{n} v1",
        f"    retry OrderPlaced(order_id='{n}') #1 by receipts",
    ]
    return lines


def test_run_until_idle_gives_the_same_trace_every_time() -> None:
    """Background and durable subscribers on their own threads, a delayed retry fired by
    the fake clock, a dead letter: fifty runs record the same causation trace, and it is
    the expected one."""
    expected = order_trace("o-1") + order_trace("o-2", audit_failed=True) + order_trace("o-3")
    traces = [shop_flow() for _ in range(50)]
    assert [expected] * 50 == traces


def test_what_is_recorded() -> None:
    """The flat lists: commands dispatched, events published or stored, retries
    scheduled, dead letters added; each kind in the order it happened."""
    with TestApp(build, registry=registry) as t:
        t.dispatch(PlaceOrder("o-2"))
        t.run_until_idle()
        before = (list(t.dispatched), [r.message for r in t.scheduled], len(t.dead_letters))
        t.advance(30)
        assert (
            [PlaceOrder("o-2"), ReserveStock("o-2")],
            [OrderPlaced("o-2")],
            1,
        ) == before
        assert [PlaceOrder("o-2"), ReserveStock("o-2"), SendReceipt("o-2")] == t.dispatched
        assert [OrderPlaced("o-2"), StockReserved("o-2"), ReceiptSent("o-2")] == t.published
        (dead,) = t.dead_letters
        assert ("audit", "StockReserved", "KeyError") == (
            dead.source,
            dead.type_name,
            dead.error_type,
        )


def test_run_until_idle_waits_for_nothing_that_is_not_due() -> None:
    """Before the clock reaches a delayed retry, run_until_idle returns with the retry
    waiting; the retry's effects appear only after advance()."""
    with TestApp(build, registry=registry) as t:
        t.dispatch(PlaceOrder("o-1"))
        t.run_until_idle()
        t.run_until_idle()
        assert [] == [m for m in t.published if isinstance(m, ReceiptSent)]
        t.advance(29)
        assert [] == [m for m in t.published if isinstance(m, ReceiptSent)]
        t.advance(1)
        assert [ReceiptSent("o-1")] == [m for m in t.published if isinstance(m, ReceiptSent)]


def test_advance_settles_before_moving_the_clock() -> None:
    """Work pending when advance() is called runs at the clock's current time first: the
    30 s retry scheduled by a just-dispatched order fires after advancing 30 s, not 60 s."""
    with TestApp(build, registry=registry) as t:
        t.dispatch(PlaceOrder("o-1"))
        t.advance(timedelta(seconds=30))
        assert [ReceiptSent("o-1")] == [m for m in t.published if isinstance(m, ReceiptSent)]


def test_in_memory_with_a_plain_publish_and_a_failing_subscriber() -> None:
    """In memory: events published without a store are recorded as published; a bus
    subscriber that fails after its retries is recorded as a failure under its event."""
    with TestApp(build, registry=registry, storage="memory") as t:

        @t.app.subscribes(Pinged)  # type: ignore[untyped-decorator]
        def broken(e: Pinged) -> None:
            raise ValueError("bad note")

        t.publish(Pinged("hello"))
        t.run_until_idle()
        assert None is t.app.database
        assert [Pinged("hello")] == t.published
        assert [
            "publish Pinged(note='hello')",
            "  failure Pinged(note='hello') in test_in_memory_with_a_plain_publish_and_a_"
            "failing_subscriber.<locals>.broken: ValueError: bad note",
        ] == t.trace()
        assert ["failure"] == [r.kind for r in t.failures]


def test_a_bare_app_on_a_file_of_your_choice(tmp_path: Path) -> None:
    """Without a composition root, the test app makes a bare App to be wired through
    .app; path= puts it on a given file, which stays after close."""
    path = tmp_path / "kept.db"
    with TestApp(registry=registry, path=path) as t:

        @t.app.handles(PlaceOrder)  # type: ignore[untyped-decorator]
        def place_order(c: PlaceOrder, uow: UnitOfWork) -> None:
            uow.append("Order-x", [OrderPlaced(c.order_id)])

        t.dispatch(PlaceOrder("x"))
        t.run_until_idle()
        assert [
            "dispatch PlaceOrder(order_id='x')",
            "  event OrderPlaced(order_id='x') in Order-x v1",
        ] == (t.trace())
    assert True is path.exists()


def test_clear_forgets_the_records() -> None:
    """clear() starts a new record; events stored directly in the store show up as roots
    at the next run_until_idle."""
    with TestApp(build, registry=registry, storage="memory") as t:
        t.dispatch(PlaceOrder("o-1"))
        t.run_until_idle()
        t.clear()
        t.app.store.append("Order-o-9", [OrderPlaced("o-9")])
        t.run_until_idle()
        assert ["event OrderPlaced(order_id='o-9') in Order-o-9 v1"] == t.trace()
        assert ([], [OrderPlaced("o-9")]) == (t.dispatched, t.published)


def test_the_apps_own_metrics_still_hear_everything() -> None:
    """Metrics given to the test app are passed every hook, the retries included."""
    metrics = CountingMetrics()
    with TestApp(build, registry=registry, metrics=metrics) as t:
        t.dispatch(PlaceOrder("o-1"))
        t.run_until_idle()
        t.advance(30)
    counts = metrics.counts("receipts")
    assert (1, 1, 1) == (counts.failures, counts.retries_scheduled, counts.handled)


def test_records_are_plain_values() -> None:
    """A record compares by what happened, not by when it was recorded."""
    assert Record("dispatch", PlaceOrder("a"), "1", None) == Record(
        "dispatch", PlaceOrder("a"), "1", None, seq=5, from_test=True
    )
    assert (
        "retry OrderPlaced(order_id='a') #1 by receipts"
        == Record("retry", OrderPlaced("a"), None, "1", "#1 by receipts").line()
    )


def _without_bus(db: str | None = None, clock: FakeClock | None = None) -> App:
    return App(db, registry=registry, clock=clock)


def _ignores_the_bus(db: str | None = None, **options: Any) -> App:
    options["bus"] = MessageBus(registry)
    return App(db, registry=registry, **options)


def _ignores_the_clock(db: str | None = None, **options: Any) -> App:
    options.pop("clock")
    return App(db, registry=registry, **options)


@pytest.mark.parametrize(
    ("root", "message"),
    [
        (
            _without_bus,
            "TestApp: _without_bus() must take bus and pass them to App(...), so the test app "
            "can record what the bus carries and move the clock (or take **options and pass "
            "them all on)",
        ),
        (
            _ignores_the_bus,
            "TestApp: the app does not use the bus given to build(): pass bus= on to App()",
        ),
        (
            _ignores_the_clock,
            "TestApp: the app does not use the clock given to build(): pass clock= on to App()",
        ),
        (lambda **options: "not an app", "TestApp: build() returned str, not an App"),
    ],
)
def test_a_root_that_cannot_be_recorded_is_refused(root: Callable[..., Any], message: str) -> None:
    """A composition root that does not take, or does not use, the recording bus and the
    fake clock is refused with a message that says what to change."""
    with pytest.raises(TypeError) as caught:
        TestApp(root, registry=registry)
    assert message == str(caught.value)


def test_the_pytest_fixture(eventlite_test_app: TestApp) -> None:
    """The plugin's eventlite_test_app fixture is a TestApp on the fake_clock."""
    eventlite_test_app.app.subscribe(Pinged, lambda e: None)
    eventlite_test_app.publish(Pinged("x"))
    assert [Pinged("x")] == eventlite_test_app.published
