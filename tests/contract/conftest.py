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
from tests.postgres._pg import drop_schema, new_schema, require_postgres

POSTGRES_READY = ("TestLeases",)
"""The contract suites whose store the PostgreSQL backend implements so far (by class name
prefix); the others skip there, saying so, until it does."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageFactory]:
    """A factory of new, empty storages of one backend; everything made is closed after
    the test."""
    made: list[Storage] = []
    numbers = itertools.count()

    def sqlite(codec: Codec) -> Storage:
        storage = SQLiteStorage(tmp_path / f"contract-{next(numbers)}.db", codec=codec)
        made.append(storage)
        return storage

    schemas: list[str] = []

    def postgres(codec: Codec) -> Storage:
        from eventlite.postgres import PostgresStorage

        schemas.append(new_schema())
        storage = PostgresStorage(url, schema=schemas[-1], codec=codec, pool_min_size=0)
        made.append(storage)
        return storage

    if request.param == "postgres":
        suite = request.node.cls.__name__ if request.node.cls is not None else ""
        if not suite.startswith(POSTGRES_READY):
            pytest.skip(f"{suite}: its store is not implemented on PostgreSQL yet")
        url = require_postgres()
    factories = {"sqlite": sqlite, "postgres": postgres}
    yield factories[request.param]
    for storage in made:
        storage.close()
    for schema in schemas:
        drop_schema(schema)
