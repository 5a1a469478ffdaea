"""The backends every store contract runs on: a new backend is a new parameter here."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlite.codec import Codec
from eventlite.memory import MemoryStorage
from eventlite.sqlite import SQLiteStorage
from eventlite.store.storage import Storage
from eventlite.testing.contracts import StorageFactory
from tests.postgres._pg import drop_schema, new_schema, require_postgres

BACKENDS: dict[str, tuple[str, ...] | None] = {
    "sqlite": None,
    "postgres": ("TestLeases", "TestStorage"),
    "memory": ("TestClaims", "TestStorage"),
}
"""Each backend, and the contract suites (test classes) it runs: None for every one. A
backend that does not keep some kind of state (the in-memory one keeps no dead letters)
is not run against that suite at all."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each contract suite on every backend that keeps its store."""
    if "make_storage" not in metafunc.fixturenames:
        return
    suite = metafunc.cls.__name__ if metafunc.cls is not None else ""
    params = [
        pytest.param(name, marks=pytest.mark.services) if name == "postgres" else name
        for name, suites in BACKENDS.items()
        if suites is None or suite in suites
    ]
    metafunc.parametrize("make_storage", params, indirect=True)


@pytest.fixture
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
        url = require_postgres()

    def memory(codec: Codec) -> Storage:
        storage = MemoryStorage(codec=codec)
        made.append(storage)
        return storage

    factories = {"sqlite": sqlite, "postgres": postgres, "memory": memory}
    yield factories[request.param]
    for storage in made:
        storage.close()
    for schema in schemas:
        drop_schema(schema)
