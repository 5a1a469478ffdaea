"""Fixtures of the saga and process-manager tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlite.sqlite import SQLiteStorage


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SQLiteStorage]:
    """A SQLite storage on a temporary file (synchronous=NORMAL), closed after the test."""
    s = SQLiteStorage(tmp_path / "sagas.db", synchronous="normal")
    yield s
    s.close()
