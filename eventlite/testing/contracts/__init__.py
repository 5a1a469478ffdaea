"""Contract suites for the store protocols: every storage backend passes the same tests.

One module per protocol of :mod:`eventlite.store`, each with a ``<Protocol>Contract``
class of pytest tests. A backend runs them by giving a ``make_storage`` fixture that
returns a :data:`StorageFactory`, then subclassing each contract::

    import pytest
    from eventlite.sqlite import SQLiteStorage
    from eventlite.testing.contracts.dead_letters import DeadLetterStoreContract

    @pytest.fixture
    def make_storage(tmp_path):
        paths = iter(range(1_000_000))
        return lambda codec: SQLiteStorage(tmp_path / f"{next(paths)}.db", codec=codec)

    class TestDeadLetters(DeadLetterStoreContract):
        pass

A new backend is a new fixture, never new tests. The suites need ``pytest`` and
``hypothesis``. Every storage a factory returns is new and empty, and the suite closes it.
"""

from __future__ import annotations

from collections.abc import Callable

from ...codec import Codec
from ...store.storage import Storage

__all__ = ["StorageFactory"]

StorageFactory = Callable[[Codec], Storage]
"""What a backend's ``make_storage`` fixture returns: a codec in, a new empty storage out."""
