"""Fixtures of the read-side tests: a SQLite storage on a temporary file, its event
store, and a projector over it with small batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlite import Codec
from eventlite.projection import Projector
from eventlite.sqlite import SQLiteEventStore, SQLiteStorage

from .ledger import registry


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SQLiteStorage]:
    """A SQLite storage over the ledger's registry (synchronous=NORMAL)."""
    s = SQLiteStorage(tmp_path / "events.db", codec=Codec(registry), synchronous="normal")
    yield s
    s.close()


@pytest.fixture
def store(storage: SQLiteStorage) -> SQLiteEventStore:
    """The storage's event store."""
    return storage.events


@pytest.fixture
def projector(storage: SQLiteStorage) -> Iterator[Projector]:
    """A projector over the storage: batches of 7, tracking threads polling every 10 ms."""
    p = Projector(storage, storage.events.codec, batch_size=7, poll_interval=0.01)
    yield p
    p.close()
