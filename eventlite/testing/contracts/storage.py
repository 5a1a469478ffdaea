"""The :class:`~eventlite.store.Storage` contract beyond its stores: what
:meth:`~eventlite.store.Storage.info` and :meth:`~eventlite.store.Storage.keeps` say
(see :mod:`eventlite.testing.contracts`)."""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest

from ...codec import Codec
from ...exceptions import StorageError
from ...messages import Registry, event
from ...store.storage import STORES, Storage
from . import StorageFactory

__all__ = ["StorageContract"]

_REGISTRY = Registry()


@event(registry=_REGISTRY, name="contract.storage.Counted")
@attrs.frozen
class Counted:
    """A contract event."""

    n: int


class StorageContract:
    """The storage contract, as pytest tests over a ``make_storage`` fixture."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Iterator[Storage]:
        """A new, empty storage."""
        storage = make_storage(Codec(_REGISTRY))
        yield storage
        storage.close()

    def test_info_of_an_empty_storage(self, storage: Storage) -> None:
        """A new storage holds no event and no stream; it names its backend and itself,
        and keeps at least the event store and snapshots."""
        info = storage.info()
        assert (0, 0, 0) == (info.events, info.head_position, info.streams)
        assert (storage.description, True) == (info.description, bool(info.backend))
        assert {"events", "snapshots"} <= set(info.stores)
        assert list(info.stores) == [name for name in STORES if name in info.stores]

    def test_info_counts_events_and_streams(self, storage: Storage) -> None:
        """info counts the events and streams the log holds, and gives its head; a
        versioned schema is the one this eventlite writes."""
        storage.events.append("a", [Counted(1), Counted(2)])
        storage.events.append("b", [Counted(3)])
        info = storage.info()
        assert (3, 3, 2) == (info.events, info.head_position, info.streams)
        assert info.schema_version == info.latest_schema_version

    def test_keeps_says_which_stores_are_there(self, storage: Storage) -> None:
        """keeps(name) is True exactly for the stores that can be asked for without
        StorageError, and info lists the same; an unknown name raises ValueError."""
        kept = []
        for name in STORES:
            try:
                getattr(storage, name)
            except StorageError:
                assert not storage.keeps(name)
            else:
                assert storage.keeps(name)
                kept.append(name)
        assert tuple(kept) == storage.info().stores
        with pytest.raises(ValueError):
            storage.keeps("nothing")

    def test_a_new_storage_is_writable(self, storage: Storage) -> None:
        """A storage made by the backend's factory is not read-only."""
        assert not storage.readonly
