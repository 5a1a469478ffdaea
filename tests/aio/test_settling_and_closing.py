"""run_until_idle for async tests, and closing: the facade's calls and the app's background
work are settled, and the app is closed, while the event loop goes on."""

from __future__ import annotations

import asyncio
import functools
import os
import threading

import pytest

import eventlite
from eventlite import App
from eventlite.aio import AsyncApp
from eventlite.testing import TestApp

from .conftest import Noticed, Place, Placed, Seen, Where, build, registry

pytestmark = pytest.mark.anyio


@eventlite.command(registry=registry)
class Block:
    pass


def blocking(app: App) -> tuple[threading.Event, threading.Event]:
    """Register a Block handler that waits for ``release``; returns (started, release)."""
    started, release = threading.Event(), threading.Event()

    @app.handles(Block)
    def block(command: Block) -> str:
        started.set()
        assert release.wait(10)
        return "released"

    return started, release


async def _until(event: threading.Event) -> None:
    for _ in range(1000):
        if event.is_set():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never happened")


async def test_run_until_idle_settles_durable_subscribers(app: App, seen: Seen) -> None:
    """After run_until_idle, a durable subscriber has handled every committed event."""
    app.subscribe(Placed, lambda e: seen.add(("durable", e.order_id)), durable=True, name="notes")
    async with AsyncApp(app) as aio:
        for n in range(5):
            await aio.dispatch(Place(f"o-{n}"))
        await aio.run_until_idle()
        durable = sorted(item for item in seen.items if item[0] == "durable")
        assert [("durable", f"o-{n}") for n in range(5)] == durable


async def test_run_until_idle_waits_for_calls_nobody_awaited(app: App, seen: Seen) -> None:
    """A call started in a task nobody awaits yet is finished, and its effects settled,
    when run_until_idle returns."""
    started, release = blocking(app)
    async with AsyncApp(app) as aio:
        call = asyncio.ensure_future(aio.dispatch(Block()))
        placing = asyncio.ensure_future(aio.dispatch(Place("o-1")))
        await _until(started)
        settling = asyncio.ensure_future(aio.run_until_idle())
        await asyncio.sleep(0.02)
        assert not settling.done()
        release.set()
        await settling
        assert call.done() and placing.done()
        assert "released" == call.result()
        assert [("background", "o-1")] == seen.items


async def test_run_until_idle_times_out_without_blocking_the_loop(app: App) -> None:
    """A call that does not finish makes run_until_idle raise TimeoutError after its
    timeout; the loop ran meanwhile."""
    started, release = blocking(app)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    async with AsyncApp(app) as aio:
        ticker = asyncio.ensure_future(tick())
        call = asyncio.ensure_future(aio.dispatch(Block()))
        await _until(started)
        with pytest.raises(TimeoutError, match=r"0\.1 s"):
            await aio.run_until_idle(timeout=0.1)
        assert ticks > 5
        ticker.cancel()
        release.set()
        await call


async def test_async_with_closes_the_app_and_refuses_later_calls(app: App) -> None:
    """Leaving the async with-block closes the app; every later call raises BusClosed
    before any handler runs."""
    async with AsyncApp(app) as aio:
        await aio.dispatch(Place("o-1"))
    assert aio.closed and app.bus.closed
    with pytest.raises(eventlite.BusClosed, match="send Place"):
        await aio.dispatch(Place("o-2"))
    with pytest.raises(eventlite.BusClosed, match="send Where"):
        await aio.ask(Where())
    with pytest.raises(eventlite.BusClosed, match="send Noticed"):
        await aio.publish(Noticed("late"))
    with pytest.raises(eventlite.BusClosed, match="run len"):
        await aio.to_thread(len, "abc")
    with pytest.raises(eventlite.BusClosed, match="settle"):
        await aio.run_until_idle()
    assert "<AsyncApp closed: 8 threads, 0 calls running>" == repr(aio)


async def test_aclose_lets_running_calls_finish_without_blocking_the_loop(app: App) -> None:
    """aclose waits, in a thread of its own, for the call already running; the loop is
    free meanwhile (it is the loop that releases the handler), and the call's result
    still reaches its caller."""
    started, release = blocking(app)
    aio = AsyncApp(app)
    call = asyncio.ensure_future(aio.dispatch(Block()))
    await _until(started)
    closing = asyncio.ensure_future(aio.aclose())
    await asyncio.sleep(0.02)
    assert not closing.done() and not app.bus.closed
    release.set()
    await asyncio.wait_for(closing, 10)
    assert "released" == await call
    assert app.bus.closed


async def test_closing_twice_waits_for_the_first_close(app: App) -> None:
    """Two aclose calls at once both return once the app is closed; a third is a no-op."""
    started, release = blocking(app)
    aio = AsyncApp(app)
    call = asyncio.ensure_future(aio.dispatch(Block()))
    await _until(started)
    first = asyncio.ensure_future(aio.aclose())
    second = asyncio.ensure_future(aio.aclose())
    await asyncio.sleep(0.02)
    assert not first.done() and not second.done()
    release.set()
    await asyncio.gather(first, second, call)
    assert app.bus.closed
    await aio.aclose()


async def test_a_cancelled_aclose_still_closes(app: App) -> None:
    """Cancelling aclose does not stop the closing: the app ends closed, and awaiting
    aclose again waits for it."""
    started, release = blocking(app)
    aio = AsyncApp(app)
    call = asyncio.ensure_future(aio.dispatch(Block()))
    await _until(started)
    closing = asyncio.ensure_future(aio.aclose())
    await asyncio.sleep(0.01)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    release.set()
    await aio.aclose()
    assert app.bus.closed and "released" == await call


async def test_aclose_raises_what_closing_the_app_raised(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error of App.close reaches whoever awaits aclose, unchanged."""
    failure = OSError("disk gone")
    real_close = app.close

    def close() -> None:
        real_close()
        raise failure

    monkeypatch.setattr(app, "close", close)
    aio = AsyncApp(app)
    with pytest.raises(OSError) as caught:
        await aio.aclose()
    assert failure is caught.value


async def test_a_test_app_is_settled_and_recorded(seen: Seen) -> None:
    """Wrapping a TestApp, run_until_idle is the test app's own (it records what was
    stored), and closing removes its temporary file."""
    test_app = TestApp(functools.partial(build, seen=seen), registry=registry)
    path = test_app.app.database.path if test_app.app.database else None
    async with AsyncApp(test_app) as aio:
        assert aio.app is test_app.app
        await aio.dispatch(Place("o-1"))
        await aio.run_until_idle()
        assert [Place("o-1"), Placed("o-1")] == [r.message for r in test_app.records]
    assert path is not None and not os.path.exists(path)
