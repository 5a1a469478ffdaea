"""``async def`` handlers of commands and queries, registered on the facade: they run on the
loop of whoever awaits them, with their envelope current, and are refused clearly
everywhere else."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings

import pytest

import eventlite
from eventlite import App, UnitOfWork
from eventlite.aio import AsyncApp

from .conftest import Noticed, Place, Placed, Refused, registry

pytestmark = pytest.mark.anyio


@eventlite.command(registry=registry)
class Checkout:
    order_id: str


@eventlite.query(registry=registry)
class Quote:
    item: str


@eventlite.command(registry=registry)
class Misregistered:
    pass


async def test_an_async_command_handler_runs_on_the_callers_loop(app: App) -> None:
    """The handler runs in the loop's thread and its result is returned."""
    aio = AsyncApp(app)

    @aio.handles(Checkout)
    async def checkout(command: Checkout) -> str:
        await asyncio.sleep(0)
        return f"{command.order_id} on {threading.current_thread().name}"

    async with aio:
        assert f"o-1 on {threading.current_thread().name}" == await aio.dispatch(Checkout("o-1"))


async def test_what_an_async_handler_dispatches_is_correlated_to_it(app: App) -> None:
    """The async handler's envelope is current while it runs: it is caused by the caller's
    envelope, and the command it dispatches through the facade (to a thread) is caused by
    it, in the same flow, down to the stored event."""
    aio = AsyncApp(app)
    handler_ids: list[str] = []

    @aio.handles(Checkout)
    async def checkout(command: Checkout) -> tuple[str, str | None, str]:
        env = eventlite.current_envelope()
        assert env is not None
        handler_ids.append(env.id)
        result: tuple[str, str | None, str] = await aio.dispatch(Place(command.order_id))
        return result

    request = eventlite.Envelope(Noticed("request"))
    async with aio:
        with eventlite.envelope.message_context(request):
            correlation, causation, thread = await aio.dispatch(Checkout("o-1"))
        assert thread.startswith("eventlite-aio")
        assert request.correlation_id == correlation
        assert handler_ids == [causation]
        (stored,) = app.store.read_all()
        assert request.correlation_id == stored.correlation_id


async def test_an_async_query_handler_answers_ask(app: App) -> None:
    """ask runs an async query handler on the loop."""
    aio = AsyncApp(app)

    @aio.handles(Quote)
    async def quote(query: Quote) -> str:
        return f"{query.item}: 4.25"

    async with aio:
        assert "cup: 4.25" == await aio.ask(Quote("cup"))
        with pytest.raises(TypeError, match="is a query"):
            await aio.dispatch(Quote("cup"))


async def test_its_exceptions_and_cancellation_reach_it_and_its_caller(app: App) -> None:
    """The async handler's exception reaches the caller unchanged; cancelling the await
    raises CancelledError inside the handler, which can clean up."""
    aio = AsyncApp(app)
    cleaned: list[str] = []
    entered = asyncio.Event()

    @aio.handles(Checkout)
    async def checkout(command: Checkout) -> None:
        if command.order_id == "bad":
            raise Refused("bad order")
        try:
            entered.set()
            await asyncio.sleep(10)
        finally:
            cleaned.append(command.order_id)

    async with aio:
        with pytest.raises(Refused, match="bad order"):
            await aio.dispatch(Checkout("bad"))
        call = asyncio.ensure_future(aio.dispatch(Checkout("slow")))
        await entered.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert ["slow"] == cleaned


async def test_dispatching_its_type_synchronously_is_refused(app: App) -> None:
    """The type is claimed on the app's bus: app.dispatch of it (from a thread, a durable
    subscriber, a process manager) raises TypeError naming the async handler."""
    aio = AsyncApp(app)

    @aio.handles(Checkout)
    async def checkout(command: Checkout) -> None:
        pass

    with pytest.raises(TypeError, match=r"Checkout has an async handler \(.*checkout\)"):
        app.dispatch(Checkout("o-1"))
    with pytest.raises(eventlite.exceptions.HandlerAlreadyRegistered):
        app.register(Checkout, lambda command: None)
    await aio.aclose()
    with pytest.raises(eventlite.BusClosed):
        await aio.dispatch(Checkout("o-1"))


def test_what_cannot_be_an_async_handler_is_refused(app: App) -> None:
    """A plain function, an async function that asks for more than the message (a unit
    of work), a second handler and an event type are refused, and leave nothing
    registered."""
    aio = AsyncApp(app)

    def plain(command: Checkout) -> None:
        pass

    async def wants_uow(command: Checkout, uow: UnitOfWork) -> None:
        pass

    async def takes_nothing() -> None:
        pass

    async def handler(message: object, optional: int = 0) -> None:
        pass

    with pytest.raises(TypeError, match="not an async def function"):
        aio.register(Checkout, plain)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes the message only"):
        aio.register(Checkout, wants_uow)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes the message only"):
        aio.register(Checkout, takes_nothing)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is an event"):
        aio.register(Placed, handler)
    with pytest.raises(eventlite.exceptions.HandlerAlreadyRegistered):
        aio.register(Place, handler)
    assert Checkout not in app.bus.handlers()
    aio.register(Checkout, handler)  # an optional parameter is fine
    assert Checkout in app.bus.handlers()


async def test_an_async_handler_registered_on_the_app_is_refused_clearly(app: App) -> None:
    """An async def registered with app.handles would hand a coroutine to a thread: the
    facade closes it (no 'never awaited' warning) and raises TypeError saying where to
    register it."""

    @app.handles(Misregistered)
    async def misregistered(command: Misregistered) -> None:
        pass

    async with AsyncApp(app) as aio:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(TypeError, match=r"register it with AsyncApp.register\(\)"):
                await aio.dispatch(Misregistered())
            gc.collect()
        assert [] == [w for w in caught if "never awaited" in str(w.message)]
