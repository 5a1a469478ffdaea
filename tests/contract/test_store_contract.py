"""Every event store backend runs the one contract suite; a new backend is a new fixture."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("eventlite.testing.store_contract")

from eventlite.codec import Codec  # noqa: E402
from eventlite.memory import InMemoryEventStore  # noqa: E402
from eventlite.sqlite import SQLiteEventStore  # noqa: E402
from eventlite.store.events import EventStore  # noqa: E402
from eventlite.testing.store_contract import EventStoreContract, StoreFactory  # noqa: E402
from tests.postgres._pg import drop_schema, new_schema, require_postgres  # noqa: E402


class TestInMemoryStore(EventStoreContract):
    """The in-memory store, encoding through the codec like a durable store."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        return lambda codec: InMemoryEventStore(codec=codec)


class TestInMemoryStoreWithoutCodec(EventStoreContract):
    """The in-memory store keeping the message objects themselves."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        return lambda codec: InMemoryEventStore()


class TestSQLiteStore(EventStoreContract):
    """The SQLite store, one new file per store, with the default synchronous=FULL."""

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> StoreFactory:
        numbers = itertools.count()

        def make(codec: Codec) -> SQLiteEventStore:
            return SQLiteEventStore(tmp_path / f"store-{next(numbers)}.db", codec=codec)

        return make


@pytest.mark.services
class TestPostgresStore(EventStoreContract):
    """The PostgreSQL store, one new schema per store (dropped after the test)."""

    state_machine_examples = 15

    @pytest.fixture
    def make_store(self) -> Iterator[StoreFactory]:
        from eventlite.postgres import PostgresStorage

        url = require_postgres()
        made: list[PostgresStorage] = []
        schemas: list[str] = []

        def make(codec: Codec) -> EventStore:
            schemas.append(new_schema())
            storage = PostgresStorage(url, schema=schemas[-1], codec=codec, pool_min_size=0)
            made.append(storage)
            return storage.events

        yield make
        for storage in made:
            storage.close()
        for schema in schemas:
            drop_schema(schema)
