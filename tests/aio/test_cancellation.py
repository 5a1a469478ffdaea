"""Cancelling an await of the facade: a call still waiting for a thread never runs; a
handler already running runs to its end, its unit of work committing (or rolling back) as
if nobody had gone away; a failure nobody awaits any more is logged."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

import eventlite
from eventlite import App, UnitOfWork
from eventlite.aio import AsyncApp

from .conftest import Place, Placed, Refused, Seen, registry

pytestmark = pytest.mark.anyio


@eventlite.command(registry=registry)
class Hold:
    order_id: str
    fail: bool = False


def hold_handler(app: App, started: threading.Event, release: threading.Event) -> list[str]:
    """Register a Hold handler that stores Placed in a unit of work once released (or
    raises instead, with fail=True); returns the order ids it began handling."""
    began: list[str] = []

    @app.handles(Hold)
    def hold(command: Hold, uow: UnitOfWork) -> None:
        began.append(command.order_id)
        uow.append(f"order-{command.order_id}", [Placed(command.order_id)])
        started.set()
        assert release.wait(10)
        if command.fail:
            raise Refused(f"{command.order_id} failed after its caller left")

    return began


async def _started(event: threading.Event) -> None:
    for _ in range(1000):
        if event.is_set():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the handler never started")


async def test_a_call_cancelled_while_waiting_for_a_thread_never_runs(app: App) -> None:
    """With the only thread busy, a second call waits; cancelling it removes it, so its
    handler never runs and nothing of it is stored."""
    started, release = threading.Event(), threading.Event()
    began = hold_handler(app, started, release)
    async with AsyncApp(app, threads=1) as aio:
        first = asyncio.ensure_future(aio.dispatch(Hold("o-1")))
        await _started(started)
        second = asyncio.ensure_future(aio.dispatch(Hold("o-2")))
        await asyncio.sleep(0.01)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        release.set()
        await first
        await aio.run_until_idle()
        assert ["o-1"] == began
        assert ["order-o-1"] == [e.stream_id for e in app.store.read_all()]


async def test_a_running_handler_cancelled_commits_its_unit_of_work(app: App, seen: Seen) -> None:
    """Cancelling the await of a running handler does not stop it: it finishes in its
    thread, its unit of work commits, and its events are published (a background
    subscriber receives them)."""
    started, release = threading.Event(), threading.Event()
    hold_handler(app, started, release)
    async with AsyncApp(app) as aio:
        call = asyncio.ensure_future(aio.dispatch(Hold("o-1")))
        await _started(started)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert 0 == app.store.head_position()  # still running: nothing committed yet
        release.set()
        await aio.run_until_idle()  # waits for the abandoned call too
        assert ["order-o-1"] == [e.stream_id for e in app.store.read_all()]
        assert [("background", "o-1")] == seen.items


async def test_a_timeout_is_a_cancellation(app: App) -> None:
    """asyncio.wait_for running out of time cancels the await only: the handler still
    commits."""
    started, release = threading.Event(), threading.Event()
    hold_handler(app, started, release)
    async with AsyncApp(app) as aio:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(aio.dispatch(Hold("o-1")), 0.05)
        release.set()
        await aio.run_until_idle()
        assert ["order-o-1"] == [e.stream_id for e in app.store.read_all()]


async def test_a_running_handler_cancelled_that_fails_rolls_back_and_is_logged(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler whose caller left and which then raises rolls its unit of work back, as
    always; the error, which nobody awaits any more, is logged on eventlite.aio."""
    started, release = threading.Event(), threading.Event()
    hold_handler(app, started, release)
    caplog.set_level(logging.WARNING, logger="eventlite.aio")
    async with AsyncApp(app) as aio:
        call = asyncio.ensure_future(aio.dispatch(Hold("o-1", fail=True)))
        await _started(started)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        release.set()
        await aio.run_until_idle()
        await aio.dispatch(Place("o-2"))  # the facade goes on
        assert ["order-o-2"] == [e.stream_id for e in app.store.read_all()]
    (record,) = [r for r in caplog.records if r.name == "eventlite.aio"]
    assert record.getMessage().startswith("send Hold: the awaiting task was cancelled")
    assert "Refused: o-1 failed after its caller left" in record.getMessage()


async def test_cancelling_run_until_idle_cancels_nothing_else(app: App) -> None:
    """A cancelled run_until_idle leaves the calls it waited for running to their end."""
    started, release = threading.Event(), threading.Event()
    hold_handler(app, started, release)
    async with AsyncApp(app) as aio:
        call = asyncio.ensure_future(aio.dispatch(Hold("o-1")))
        await _started(started)
        settle = asyncio.ensure_future(aio.run_until_idle())
        await asyncio.sleep(0.01)
        settle.cancel()
        with pytest.raises(asyncio.CancelledError):
            await settle
        release.set()
        assert await call is None
        assert ["order-o-1"] == [e.stream_id for e in app.store.read_all()]
