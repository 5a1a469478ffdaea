"""Fixtures shared by the delivery tests (relay, inbox, retries, dead letters, queues).

Add fixtures here as new test modules need them; each test module keeps its own message
registry, so an ``app`` fixture stays in the module that knows its registry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eventlite.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A clock the tests move by hand."""
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a new SQLite file."""
    return tmp_path / "app.db"
