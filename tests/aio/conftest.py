"""Shared pieces of the asyncio tests: a small order domain, an app on a SQLite file, and
the anyio pytest plugin (installed with httpx) running ``async def`` tests on asyncio."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eventlite
from eventlite import App, UnitOfWork

registry = eventlite.Registry()


@eventlite.command(registry=registry)
class Place:
    order_id: str


@eventlite.command(registry=registry)
class Fail:
    reason: str


@eventlite.query(registry=registry)
class Where:
    pass


@eventlite.event(registry=registry)
class Placed:
    order_id: str


@eventlite.event(registry=registry)
class Noticed:
    what: str


class Refused(Exception):
    """The error the Fail command's handler raises."""


class Seen:
    """What handlers saw, written by handler threads and read by the test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[Any] = []

    def add(self, item: Any) -> None:
        with self.lock:
            self.items.append(item)


def flow() -> tuple[str, str | None, str]:
    """``(correlation_id, causation_id, thread name)`` of the message being handled."""
    env = eventlite.current_envelope()
    assert env is not None
    return env.correlation_id, env.causation_id, threading.current_thread().name


def build(db: str | Path | None, seen: Seen, **options: Any) -> App:
    """An app whose Place handler stores Placed through a unit of work and returns the flow
    it ran in; Fail raises Refused; Where answers with the flow; subscribers note events."""
    app = App(db, registry=registry, **options)

    @app.handles(Place)
    def place(command: Place, uow: UnitOfWork) -> tuple[str, str | None, str]:
        uow.append(f"order-{command.order_id}", [Placed(command.order_id)])
        return flow()

    @app.handles(Fail)
    def fail(command: Fail) -> None:
        raise Refused(command.reason)

    @app.handles(Where)
    def where(query: Where) -> tuple[str, str | None, str]:
        return flow()

    @app.subscribes(Noticed)
    def notice(event: Noticed) -> None:
        seen.add(("noticed", event.what, *flow()))

    @app.subscribes(Placed, background=True)
    def later(event: Placed) -> None:
        seen.add(("background", event.order_id))

    return app


@pytest.fixture
def anyio_backend() -> str:
    """The async tests run on asyncio (what the facade is for)."""
    return "asyncio"


@pytest.fixture
def seen() -> Seen:
    """A fresh record of what handlers saw."""
    return Seen()


@pytest.fixture
def app(tmp_path: Path, seen: Seen) -> Iterator[App]:
    """The app on a fresh SQLite file, closed after the test (if the test did not)."""
    app = build(tmp_path / "app.db", seen)
    yield app
    app.close()
