"""A web service on eventlite and asyncio: ``python -m examples.web``.

Needs the ``web`` extra (``pip install -e '.[web]'``: Starlette, uvicorn, httpx). The
service keeps everything in one SQLite file, through an :class:`~eventlite.aio.AsyncApp`
that runs the handlers on a pool of threads while the event loop serves requests:

- ``POST /orders`` dispatches ``PlaceOrder``: the handler places an ``Order`` aggregate
  through a unit of work (201; 409 when the order exists; 422 for a bad body);
- ``GET /orders/{order_id}`` asks ``GetOrder``, answered from the repository (the
  aggregate rebuilt from its events; 404 when there is none);
- ``GET /orders`` asks ``ListOrders``, answered from an inline projection (a read-model
  table written in the same transaction as the events);
- a durable subscriber, ``confirmations``, mails a confirmation of every order placed
  (at least once, after the commit, on the relay's thread).

Every request is one flow: :class:`CorrelationMiddleware` makes an envelope current for the
request (with the client's ``X-Correlation-ID`` when it sends a valid one), so the command,
its event and the confirmation share one correlation id, which the response returns in
its ``X-Correlation-ID`` header.

``main()`` serves the shop with uvicorn on a free port of 127.0.0.1, sends it a few
requests (twenty of them at once), prints what came back, and shuts the server down, which
closes the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import attrs
import httpx
import sqlite_utils
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import eventlite
from eventlite import Aggregate, App, UnitOfWork, applies
from eventlite.aio import AsyncApp
from eventlite.projection import Projection, Projector, projects

registry = eventlite.Registry()


@eventlite.command(registry=registry)
class PlaceOrder:
    order_id: str
    item: str
    quantity: int
    price: Decimal


@eventlite.event(registry=registry)
class OrderPlaced:
    order_id: str
    item: str
    quantity: int
    price: Decimal


@eventlite.query(registry=registry)
class GetOrder:
    order_id: str


@eventlite.query(registry=registry)
class ListOrders:
    pass


class OrderExists(Exception):
    """A second ``PlaceOrder`` for an order id already placed."""


class Order(Aggregate):
    """An order: what was bought, how many, at what price."""

    item: str = ""
    quantity: int = 0
    price: Decimal = Decimal(0)

    @classmethod
    def place(cls, order_id: str, item: str, quantity: int, price: Decimal) -> Order:
        """A new order, with its ``OrderPlaced`` event recorded."""
        order = cls(order_id)
        order.record(OrderPlaced(order_id, item, quantity, price))
        return order

    @property
    def total(self) -> Decimal:
        """What the order costs."""
        return self.quantity * self.price

    @applies(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.item = event.item
        self.quantity = event.quantity
        self.price = event.price


class OrderSummaries(Projection):
    """The read model of ``GET /orders``: one row per order."""

    tables = ("order_summaries",)

    def setup(self, db: sqlite_utils.Database) -> None:
        """Create the table."""
        db.table("order_summaries").create(
            {"order_id": str, "item": str, "quantity": int, "total": str},
            pk="order_id",
            if_not_exists=True,
        )

    @projects(OrderPlaced)
    def _placed(self, event: OrderPlaced, db: sqlite_utils.Database) -> None:
        db.table("order_summaries").insert(
            {
                "order_id": event.order_id,
                "item": event.item,
                "quantity": event.quantity,
                "total": str(event.quantity * event.price),
            }
        )


@attrs.frozen
class Confirmation:
    """A confirmation the mailer was asked to send."""

    order_id: str
    correlation_id: str


class Mailer:
    """Stands in for an email gateway: remembers what it was asked to send. Thread-safe:
    the relay's thread sends, the web service and the tests read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: list[Confirmation] = []

    def send(self, confirmation: Confirmation) -> None:
        """Send one confirmation."""
        with self._lock:
            self._sent.append(confirmation)

    @property
    def sent(self) -> list[Confirmation]:
        """Everything sent so far, in order."""
        with self._lock:
            return list(self._sent)


def build(db: str | os.PathLike[str] | None, mailer: Mailer, **options: Any) -> App:
    """The composition root: the app on its SQLite file, with its handlers, read model and
    durable subscriber. ``options`` go to ``App`` (``TestApp`` passes its bus and clock)."""
    app = App(db, registry=registry, **options)
    app.projection(OrderSummaries(), mode="inline")
    app.provide(mailer=mailer)

    @app.handles(PlaceOrder)
    def place_order(command: PlaceOrder, uow: UnitOfWork) -> Decimal:
        if uow.find(Order, command.order_id) is not None:
            raise OrderExists(f"order {command.order_id} already exists")
        order = Order.place(command.order_id, command.item, command.quantity, command.price)
        uow.add(order)
        return order.total

    @app.handles(GetOrder)
    def get_order(query: GetOrder, app: App) -> dict[str, Any] | None:
        order = app.repository(Order).find(query.order_id)
        if order is None:
            return None
        return {
            "order_id": order.id,
            "item": order.item,
            "quantity": order.quantity,
            "price": str(order.price),
            "total": str(order.total),
            "version": order.version,
        }

    @app.handles(ListOrders)
    def list_orders(query: ListOrders, projector: Projector) -> list[dict[str, Any]]:
        table = projector.reader()["order_summaries"]
        return list(table.rows_where(order_by="order_id"))

    @app.subscribes(OrderPlaced, durable=True, name="confirmations", start="beginning")
    def confirm(event: OrderPlaced, mailer: Mailer) -> None:
        envelope = eventlite.current_envelope()
        assert envelope is not None
        mailer.send(Confirmation(event.order_id, envelope.correlation_id))

    return app


# -- the web layer ------------------------------------------------------------------------

CORRELATION_HEADER = "x-correlation-id"
_VALID_CORRELATION = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@attrs.frozen
class HttpRequest:
    """An HTTP request as eventlite sees it: the cause of the messages the request sends.
    It is never registered, dispatched or stored; only its envelope is made current."""

    method: str
    path: str


class CorrelationMiddleware:
    """ASGI middleware that makes each HTTP request one flow.

    It makes an :class:`~eventlite.Envelope` of the request current while the request is
    served, so every message the endpoint sends (across the facade's hop to a thread) is
    correlated to it. The correlation id is the client's ``X-Correlation-ID`` when that is
    1 to 128 letters, digits or ``._:-``, else the request envelope's own new id; the
    response carries it in ``X-Correlation-ID``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, CORRELATION_HEADER)
        metadata = None
        if given is not None and _VALID_CORRELATION.fullmatch(given):
            metadata = eventlite.Metadata(correlation_id=given)
        request = eventlite.Envelope(HttpRequest(scope["method"], scope["path"]), metadata=metadata)
        header = (CORRELATION_HEADER.encode(), request.correlation_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        with eventlite.envelope.message_context(request):
            await self.app(scope, receive, send_with_id)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope["headers"]:
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


class BadRequest(ValueError):
    """A request body that does not make a command."""


def place_order_command(body: object) -> PlaceOrder:
    """The ``PlaceOrder`` a ``POST /orders`` body asks for; :class:`BadRequest` says what
    is wrong with it."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    for name in ("order_id", "item"):
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(f"{name} must be a non-empty string")
    quantity = body.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise BadRequest("quantity must be an integer >= 1")
    raw_price = body.get("price")
    try:
        if isinstance(raw_price, bool) or not isinstance(raw_price, (str, int)):
            raise InvalidOperation
        price = Decimal(raw_price)
    except InvalidOperation:
        raise BadRequest('price must be a decimal number, as a string ("30.00")') from None
    if not price.is_finite() or price <= 0:
        raise BadRequest("price must be greater than 0")
    return PlaceOrder(body["order_id"], body["item"], quantity, price)


def web_app(aio: AsyncApp) -> Starlette:
    """The Starlette application over the facade. Its lifespan closes the facade (and so
    the eventlite app) when the server shuts down."""

    async def place(request: Request) -> JSONResponse:
        try:
            command = place_order_command(await request.json())
        except ValueError as exc:  # BadRequest, or a body that is not JSON
            message = str(exc) if isinstance(exc, BadRequest) else "the body must be JSON"
            return JSONResponse({"error": message}, status_code=422)
        try:
            total = await aio.dispatch(command)
        except (OrderExists, eventlite.ConcurrencyError):
            error = f"order {command.order_id} already exists"
            return JSONResponse({"error": error}, status_code=409)
        return JSONResponse(
            {"order_id": command.order_id, "total": str(total)},
            status_code=201,
            headers={"location": f"/orders/{command.order_id}"},
        )

    async def get_one(request: Request) -> JSONResponse:
        order_id = request.path_params["order_id"]
        order = await aio.ask(GetOrder(order_id))
        if order is None:
            return JSONResponse({"error": f"no order {order_id}"}, status_code=404)
        return JSONResponse(order)

    async def get_all(request: Request) -> JSONResponse:
        return JSONResponse(await aio.ask(ListOrders()))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with aio:
            yield

    return Starlette(
        routes=[
            Route("/orders", place, methods=["POST"]),
            Route("/orders", get_all, methods=["GET"]),
            Route("/orders/{order_id}", get_one, methods=["GET"]),
        ],
        middleware=[Middleware(CorrelationMiddleware)],
        lifespan=lifespan,
    )


# -- the demonstration --------------------------------------------------------------------


async def _exercise(client: httpx.AsyncClient, aio: AsyncApp, mailer: Mailer) -> None:
    flows: dict[str, str] = {}  # order id -> the correlation id its response named

    async def post(body: dict[str, Any], **headers: str) -> httpx.Response:
        response = await client.post("/orders", json=body, headers=headers)
        if response.status_code == 201:
            flows[body["order_id"]] = response.headers[CORRELATION_HEADER]
        return response

    r = await post({"order_id": "o-1", "item": "kettle", "quantity": 2, "price": "30.00"})
    print(f"POST /orders o-1: 2 x kettle at 30.00 -> {r.status_code}, total {r.json()['total']}")
    r = await post(
        {"order_id": "o-2", "item": "teapot", "quantity": 1, "price": "24.50"},
        **{"X-Correlation-ID": "checkout-42"},
    )
    print(f"POST /orders o-2 with X-Correlation-ID: checkout-42 -> {r.status_code}")
    r = await post({"order_id": "o-1", "item": "kettle", "quantity": 1, "price": "30.00"})
    print(f"POST /orders o-1 again -> {r.status_code} {r.json()['error']}")
    r = await post({"order_id": "o-3", "item": "kettle", "quantity": "two", "price": "30.00"})
    print(f'POST /orders o-3 with quantity "two" -> {r.status_code} {r.json()["error"]}')
    r = await client.get("/orders/o-1")
    print(f"GET /orders/o-1 -> {r.status_code} {r.json()}")
    r = await client.get("/orders/o-9")
    print(f"GET /orders/o-9 -> {r.status_code} {r.json()['error']}")

    bodies = [
        {"order_id": f"o-{n}", "item": "cup", "quantity": n % 3 + 1, "price": "4.25"}
        for n in range(10, 30)
    ]
    responses = await asyncio.gather(*(post(body) for body in bodies))
    codes = sorted({r.status_code for r in responses})
    ids = {r.headers[CORRELATION_HEADER] for r in responses}
    print(f"20 POSTs at once -> status {codes}, {len(ids)} distinct correlation ids")
    orders = (await client.get("/orders")).json()
    total = sum(Decimal(row["total"]) for row in orders)
    print(f"GET /orders -> {len(orders)} orders, {total} in all")

    await aio.run_until_idle()  # the durable subscriber has mailed what is committed
    sent = mailer.sent
    mailed = {c.order_id: c.correlation_id for c in sent}
    print(f"confirmations mailed: {len(sent)}, each in its request's flow: {mailed == flows}")
    print(f"o-2 confirmed under correlation id {mailed['o-2']}")


async def _serve(db: Path) -> None:
    mailer = Mailer()
    aio = AsyncApp(build(db, mailer))
    config = uvicorn.Config(web_app(aio), log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # a free port, held from here until the server ends
        port = sock.getsockname()[1]
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if serving.done():
                serving.result()  # it failed to start: say why
            await asyncio.sleep(0.01)
        print("serving the shop on a free port of 127.0.0.1")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await _exercise(client, aio, mailer)
        server.should_exit = True
        await serving
    print(f"server stopped; the app was closed with it: {aio.closed and aio.app.bus.closed}")


def main() -> None:
    """Serve the shop, place and read orders over HTTP, then shut it down."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "shop.db"
        asyncio.run(_serve(db))
        with App(db, registry=registry) as reopened:
            print(f"reopened {db.name}: {reopened.store.head_position()} events stored")


if __name__ == "__main__":
    main()
