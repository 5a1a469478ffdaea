"""Fixtures shared by the delivery tests (dead letters, work queues, idempotency keys, the
relay): a fake clock and a SQLite storage in a new file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlite.clock import FakeClock
from eventlite.sqlite import SQLiteStorage


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand."""
    return FakeClock()


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SQLiteStorage]:
    """A new eventlite file (synchronous=NORMAL, for speed), closed after the test."""
    with SQLiteStorage(tmp_path / "delivery.db", synchronous="normal") as storage:
        yield storage
