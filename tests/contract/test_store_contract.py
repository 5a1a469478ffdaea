"""Every event store backend runs the one contract suite; a new backend is a new fixture."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

pytest.register_assert_rewrite("eventlite.testing.store_contract")

from eventlite.codec import Codec  # noqa: E402
from eventlite.memory import InMemoryEventStore  # noqa: E402
from eventlite.sqlite import SQLiteEventStore  # noqa: E402
from eventlite.testing.store_contract import EventStoreContract, StoreFactory  # noqa: E402


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
