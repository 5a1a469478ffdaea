"""The web service example (examples/web.py), driven through a real ASGI client: orders are
placed, read and confirmed; bad requests change nothing; under many concurrent requests
every one is answered, no event is lost, and every flow keeps its own correlation id."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from eventlite.aio import AsyncApp
from eventlite.testing import TestApp
from examples.web import (
    CORRELATION_HEADER,
    Confirmation,
    Mailer,
    OrderPlaced,
    PlaceOrder,
    build,
    registry,
    web_app,
)

pytestmark = pytest.mark.anyio


class Shop:
    """The service under test: its test app, facade, mailer and an ASGI client."""

    def __init__(self, test_app: TestApp, aio: AsyncApp, mailer: Mailer) -> None:
        self.test_app = test_app
        self.aio = aio
        self.mailer = mailer
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=web_app(aio)), base_url="http://shop"
        )

    async def post(self, order_id: str, **changes: Any) -> httpx.Response:
        body = {"order_id": order_id, "item": "kettle", "quantity": 2, "price": "30.00"}
        headers = changes.pop("headers", {})
        body.update(changes)
        return await self.client.post("/orders", json=body, headers=headers)

    def stored(self) -> list[Any]:
        return list(self.test_app.app.store.read_all())


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    """The example's app on a test app's temporary file, behind the facade and a client
    (httpx's ASGI transport runs no lifespan: the test closes the facade)."""
    mailer = Mailer()
    test_app = TestApp(functools.partial(build, mailer=mailer), registry=registry)
    aio = AsyncApp(test_app)
    shop = Shop(test_app, aio, mailer)
    async with shop.client:
        yield shop
    await aio.aclose()


async def test_an_order_is_placed_read_and_confirmed(shop: Shop) -> None:
    """POST places the order (201, its total, its location), GET reads it from the
    repository and the listing from the read model, and the durable subscriber mails one
    confirmation under the request's correlation id."""
    response = await shop.post("o-1")
    assert 201 == response.status_code
    assert {"order_id": "o-1", "total": "60.00"} == response.json()
    assert "/orders/o-1" == response.headers["location"]
    correlation = response.headers[CORRELATION_HEADER]

    order = await shop.client.get("/orders/o-1")
    assert 200 == order.status_code
    assert {
        "order_id": "o-1",
        "item": "kettle",
        "quantity": 2,
        "price": "30.00",
        "total": "60.00",
        "version": 1,
    } == order.json()
    listing = await shop.client.get("/orders")
    assert [{"order_id": "o-1", "item": "kettle", "quantity": 2, "total": "60.00"}] == (
        listing.json()
    )

    await shop.aio.run_until_idle()
    assert [Confirmation("o-1", correlation)] == shop.mailer.sent
    (event,) = shop.stored()
    assert OrderPlaced("o-1", "kettle", 2, Decimal("30.00")) == event.message
    assert correlation == event.correlation_id


async def test_a_clients_correlation_id_is_kept_and_a_bad_one_replaced(shop: Shop) -> None:
    """A valid X-Correlation-ID from the client names the flow (stored event, response,
    confirmation); an invalid one is replaced by a new id."""
    given = await shop.post("o-1", headers={"X-Correlation-ID": "checkout-42"})
    assert "checkout-42" == given.headers[CORRELATION_HEADER]
    invalid = await shop.post("o-2", headers={"X-Correlation-ID": "no spaces please"})
    replaced = invalid.headers[CORRELATION_HEADER]
    assert replaced != "no spaces please" and len(replaced) == 36
    await shop.aio.run_until_idle()
    assert ["checkout-42", replaced] == [e.correlation_id for e in shop.stored()]
    assert {"o-1": "checkout-42", "o-2": replaced} == {
        c.order_id: c.correlation_id for c in shop.mailer.sent
    }


async def test_errors_answer_with_their_status_and_change_nothing(shop: Shop) -> None:
    """A second order with the same id is 409, an unknown order 404, and a body that does
    not make a command 422 with what is wrong; none of them stores anything."""
    await shop.post("o-1")
    duplicate = await shop.post("o-1")
    assert (409, {"error": "order o-1 already exists"}) == (
        duplicate.status_code,
        duplicate.json(),
    )
    missing = await shop.client.get("/orders/o-9")
    assert (404, {"error": "no order o-9"}) == (missing.status_code, missing.json())
    bad_bodies: list[tuple[dict[str, Any], str]] = [
        ({"quantity": "two"}, "quantity must be an integer >= 1"),
        ({"quantity": True}, "quantity must be an integer >= 1"),
        ({"quantity": 0}, "quantity must be an integer >= 1"),
        ({"price": 30.0}, "price must be a decimal number"),
        ({"price": "abc"}, "price must be a decimal number"),
        ({"price": "NaN"}, "price must be greater than 0"),
        ({"price": "-1"}, "price must be greater than 0"),
        ({"item": ""}, "item must be a non-empty string"),
    ]
    for change, error in bad_bodies:
        response = await shop.post("o-2", **change)
        assert 422 == response.status_code, change
        assert response.json()["error"].startswith(error), change
    not_json = await shop.client.post("/orders", content=b"{nope")
    assert (422, {"error": "the body must be JSON"}) == (not_json.status_code, not_json.json())
    a_list = await shop.client.post("/orders", json=[1])
    assert 422 == a_list.status_code
    await shop.aio.run_until_idle()
    assert ["o-1"] == [e.message.order_id for e in shop.stored()]
    assert ["o-1"] == [c.order_id for c in shop.mailer.sent]


async def test_many_concurrent_requests_keep_every_event_and_every_flow(shop: Shop) -> None:
    """A hundred POSTs at once, mixed with GETs: every request is answered; the file holds
    exactly one event per order; each event, the command that caused it, and its
    confirmation carry the correlation id returned to that request, and no two requests
    share one."""
    order_ids = [f"o-{n}" for n in range(100)]

    async def read(n: int) -> int:
        return (await shop.client.get(f"/orders/o-{n}")).status_code

    posts = [shop.post(order_id, quantity=n % 3 + 1) for n, order_id in enumerate(order_ids)]
    reads = [read(n) for n in range(0, 100, 5)]
    responses, gets = await asyncio.gather(asyncio.gather(*posts), asyncio.gather(*reads))
    assert {201} == {r.status_code for r in responses}
    assert set(gets) <= {200, 404}
    flows = {
        oid: r.headers[CORRELATION_HEADER] for oid, r in zip(order_ids, responses, strict=True)
    }
    assert 100 == len(set(flows.values()))

    await shop.aio.run_until_idle()
    events = shop.stored()
    assert sorted(order_ids) == sorted(e.message.order_id for e in events)
    assert flows == {e.message.order_id: e.correlation_id for e in events}
    assert flows == {c.order_id: c.correlation_id for c in shop.mailer.sent}
    assert 100 == len(shop.mailer.sent)

    # The causal chain of each flow: request -> PlaceOrder -> OrderPlaced.
    commands = {
        r.id: r.message
        for r in shop.test_app.records
        if r.kind == "dispatch" and isinstance(r.message, PlaceOrder)
    }
    for event in events:
        assert event.message.order_id == commands[event.causation_id].order_id

    listing = (await shop.client.get("/orders")).json()
    assert sorted(order_ids) == sorted(row["order_id"] for row in listing)


async def test_the_lifespan_closes_the_app_with_the_server() -> None:
    """Run with its lifespan (as a server runs it), the service closes the facade and the
    app when it shuts down."""
    mailer = Mailer()
    test_app = TestApp(functools.partial(build, mailer=mailer), registry=registry)
    aio = AsyncApp(test_app)
    web = web_app(aio)
    transport = httpx.ASGITransport(app=web)
    async with web.router.lifespan_context(web):
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            body = {"order_id": "o-1", "item": "cup", "quantity": 1, "price": "4"}
            assert 201 == (await client.post("/orders", json=body)).status_code
        assert not aio.closed
    assert aio.closed and test_app.app.bus.closed
