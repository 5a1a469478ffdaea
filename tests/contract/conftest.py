"""The backends every store contract runs on: a new backend is a new parameter here."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlite.codec import Codec
from eventlite.sqlite import SQLiteStorage
from eventlite.store.storage import Storage
from eventlite.testing.contracts import StorageFactory


@pytest.fixture(params=["sqlite"])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageFactory]:
    """A factory of new, empty storages of one backend; everything made is closed after
    the test."""
    made: list[Storage] = []
    numbers = itertools.count()

    def sqlite(codec: Codec) -> Storage:
        storage = SQLiteStorage(tmp_path / f"contract-{next(numbers)}.db", codec=codec)
        made.append(storage)
        return storage

    factories = {"sqlite": sqlite}
    yield factories[request.param]
    for storage in made:
        storage.close()
