"""Fixtures of the PostgreSQL backend's tests: a URL, and schemas dropped afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from eventlite.codec import Codec
from eventlite.postgres import PostgresStorage
from eventlite.testing.store_contract import CONTRACT_REGISTRY

from ._pg import drop_schema, new_schema, require_postgres


@pytest.fixture
def pg_url() -> str:
    """The test server's URL (skips or fails when it is not there)."""
    return require_postgres()


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    """A new schema name, dropped after the test."""
    name = new_schema()
    try:
        yield name
    finally:
        drop_schema(name)


@pytest.fixture
def open_storage(pg_url: str, schema: str) -> Iterator[Callable[..., PostgresStorage]]:
    """Opens storages on the test's schema; each is closed after the test."""
    made: list[PostgresStorage] = []

    def open_storage(**kwargs: object) -> PostgresStorage:
        kwargs.setdefault("codec", Codec(CONTRACT_REGISTRY))
        storage = PostgresStorage(pg_url, schema=schema, **kwargs)  # type: ignore[arg-type]
        made.append(storage)
        return storage

    yield open_storage
    for storage in made:
        storage.close()


@pytest.fixture
def storage(open_storage: Callable[..., PostgresStorage]) -> PostgresStorage:
    """A storage on the test's own schema."""
    return open_storage()
