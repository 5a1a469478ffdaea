"""AsyncApp's awaitable dispatch, ask, publish and to_thread: handlers run on the facade's
bounded pool of threads, never on the event loop, with the caller's context (so
correlation and causation are exact), and their exceptions come out unchanged."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

import eventlite
from eventlite import App
from eventlite.aio import AsyncApp

from .conftest import Fail, Noticed, Place, Placed, Refused, Seen, Where, build, registry

pytestmark = pytest.mark.anyio


@eventlite.command(registry=registry)
class Boom:
    pass


@eventlite.command(registry=registry)
class Slow:
    pass


@eventlite.command(registry=registry)
class Wait:
    pass


@eventlite.command(registry=registry)
class Unhandled:
    pass


async def test_dispatch_runs_the_handler_in_a_pool_thread_and_returns_its_result(
    app: App,
) -> None:
    """The handler runs in one of the facade's threads, not the loop's; its unit of work
    committed before the await returns."""
    async with AsyncApp(app) as aio:
        correlation, causation, thread = await aio.dispatch(Place("o-1"))
        assert thread.startswith("eventlite-aio")
        assert threading.current_thread().name != thread
        assert ["order-o-1"] == [e.stream_id for e in app.store.read_all()]
        assert causation is None  # a first message starts its own flow
        assert [correlation] == [e.correlation_id for e in app.store.read_all()]


async def test_ask_answers_in_a_pool_thread(app: App) -> None:
    """ask runs the query's handler in a facade thread and returns its answer."""
    async with AsyncApp(app) as aio:
        _, _, thread = await aio.ask(Where())
        assert thread.startswith("eventlite-aio")


async def test_exceptions_propagate_unchanged(app: App) -> None:
    """The handler's exception object reaches the awaiting caller as it was raised, and so
    do the bus's own errors."""
    raised: list[BaseException] = []

    @app.handles(Boom)
    def boom(command: Boom) -> None:
        error = Refused("kaboom")
        raised.append(error)
        raise error

    async with AsyncApp(app) as aio:
        with pytest.raises(Refused) as caught:
            await aio.dispatch(Boom())
        assert raised == [caught.value]
        with pytest.raises(Refused, match="no stock"):
            await aio.dispatch(Fail("no stock"))
        with pytest.raises(eventlite.NoHandlerError):
            await aio.dispatch(Unhandled())
        with pytest.raises(TypeError, match="is a query"):
            await aio.dispatch(Where())


async def test_a_request_context_flows_into_the_handler_thread(app: App) -> None:
    """A command dispatched while an envelope is current on the loop is correlated to it:
    same correlation id, the envelope's id as causation, in the handler and in the stored
    event."""
    request = eventlite.Envelope(Noticed("request"))
    async with AsyncApp(app) as aio:
        with eventlite.envelope.message_context(request):
            correlation, causation, _ = await aio.dispatch(Place("o-1"))
        assert (request.correlation_id, request.id) == (correlation, causation)
        (stored,) = app.store.read_all()
        assert request.correlation_id == stored.correlation_id


async def test_concurrent_flows_never_mix(app: App) -> None:
    """Two hundred tasks, each with its own current envelope, dispatch at once over four
    threads: every handler and every stored event sees its own task's flow."""
    async with AsyncApp(app, threads=4) as aio:

        async def one(n: int) -> tuple[str, str, tuple[str, str | None, str]]:
            request = eventlite.Envelope(Noticed(f"r-{n}"))
            with eventlite.envelope.message_context(request):
                await asyncio.sleep(0)  # let the others interleave
                got = await aio.dispatch(Place(f"o-{n}"))
            return request.correlation_id, request.id, got

        results = await asyncio.gather(*(one(n) for n in range(200)))
        for correlation, request_id, (seen_correlation, seen_causation, _) in results:
            assert (correlation, request_id) == (seen_correlation, seen_causation)
        by_order = {f"order-o-{n}": results[n][0] for n in range(200)}
        stored = {e.stream_id: e.correlation_id for e in app.store.read_all()}
        assert by_order == stored
        assert 200 == len(set(stored.values()))


async def test_the_pool_is_bounded(app: App) -> None:
    """With threads=3, never more than three handlers run at once; the rest wait for a
    thread and all are answered."""
    lock = threading.Lock()
    running = [0]
    most = [0]

    @app.handles(Slow)
    def slow(command: Slow) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    async with AsyncApp(app, threads=3) as aio:
        await asyncio.gather(*(aio.dispatch(Slow()) for _ in range(20)))
    assert 3 == most[0]


async def test_a_blocked_handler_never_blocks_the_loop(app: App) -> None:
    """While a handler waits in its thread for something only the loop will do, the loop
    goes on serving other calls and sets it free."""
    release = threading.Event()

    @app.handles(Wait)
    def wait(command: Wait) -> bool:
        return release.wait(10)

    async with AsyncApp(app, threads=2) as aio:
        waiting = asyncio.ensure_future(aio.dispatch(Wait()))
        await aio.dispatch(Place("o-1"))  # served by the other thread meanwhile
        await asyncio.sleep(0.01)
        assert not waiting.done()
        release.set()  # on the loop: possible only because the loop was not blocked
        assert await asyncio.wait_for(waiting, 10) is True


async def test_publish_runs_subscribers_in_a_pool_thread_with_the_callers_flow(
    app: App, seen: Seen
) -> None:
    """publish delivers to synchronous subscribers in a facade thread, correlated to the
    envelope current on the loop."""
    request = eventlite.Envelope(Noticed("request"))
    async with AsyncApp(app) as aio:
        with eventlite.envelope.message_context(request):
            await aio.publish(Noticed("a"), Noticed("b"), key="k")
    ((*_, a_corr, a_cause, a_thread), (*_, b_corr, _, _)) = seen.items
    assert (request.correlation_id, request.id) == (a_corr, a_cause)
    assert request.correlation_id == b_corr
    assert a_thread.startswith("eventlite-aio")


async def test_to_thread_runs_any_call_with_the_callers_context(app: App) -> None:
    """to_thread calls a blocking function in a facade thread, with the caller's current
    envelope and with keyword arguments."""
    request = eventlite.Envelope(Noticed("request"))

    def read(stream: str, *, limit: int) -> tuple[str | None, list[str]]:
        env = eventlite.current_envelope()
        events = list(app.store.read_stream(stream, limit=limit))
        return (None if env is None else env.id), [type(e.message).__name__ for e in events]

    async with AsyncApp(app) as aio:
        await aio.dispatch(Place("o-1"))
        with eventlite.envelope.message_context(request):
            got = await aio.to_thread(read, "order-o-1", limit=5)
    assert (request.id, ["Placed"]) == got


async def test_several_loops_can_share_one_facade(tmp_path: Path, seen: Seen) -> None:
    """The facade holds nothing bound to one event loop: two threads, each running its
    own loop, dispatch through it at the same time."""
    app = build(tmp_path / "app.db", seen)
    aio = AsyncApp(app, threads=4)

    async def batch(prefix: str) -> None:
        await asyncio.gather(*(aio.dispatch(Place(f"{prefix}-{n}")) for n in range(25)))

    errors: list[BaseException] = []

    def other_loop(prefix: str) -> None:
        try:
            asyncio.run(batch(prefix))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=other_loop, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    await batch("c")
    for t in threads:
        t.join(30)
    assert [] == errors
    assert 75 == app.store.head_position()
    await aio.aclose()


def test_bad_arguments_are_refused(app: App) -> None:
    """threads must be an int >= 1, and the facade wraps an App or a TestApp only."""
    for threads in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            AsyncApp(app, threads=threads)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="App or TestApp"):
        AsyncApp(object())  # type: ignore[arg-type]


async def test_background_subscribers_still_run_on_the_bus_workers(app: App, seen: Seen) -> None:
    """What a handler's unit of work publishes reaches background subscribers on the bus's
    own workers, settled by run_until_idle."""
    async with AsyncApp(app) as aio:
        await aio.dispatch(Place("o-1"))
        await aio.run_until_idle()
        assert [("background", "o-1")] == seen.items
        assert [Placed("o-1")] == [e.message for e in app.store.read_all()]
