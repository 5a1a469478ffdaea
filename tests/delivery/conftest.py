"""Fixtures shared by the delivery tests (relay, inbox, retries, dead letters, work queues,
idempotency keys): a fake clock, a SQLite storage in a new file, and a path for one.

Each test module keeps its own message registry, so an ``app`` fixture stays in the module
that knows its registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlite.clock import FakeClock
from eventlite.sqlite import SQLiteStorage


@pytest.fixture
def clock() -> FakeClock:
    """A clock the tests move by hand."""
    return FakeClock()


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SQLiteStorage]:
    """A new eventlite file (synchronous=NORMAL, for speed), closed after the test."""
    with SQLiteStorage(tmp_path / "delivery.db", synchronous="normal") as storage:
        yield storage


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a new SQLite file."""
    return tmp_path / "app.db"
