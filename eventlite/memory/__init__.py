"""The in-memory backend: events and snapshots in Python objects, for tests and scripts.

It keeps what a unit of work needs (the event store and snapshots); every other store of
the :class:`~eventlite.store.Storage` seam (checkpoints, dead letters, queues, sagas, …)
raises :class:`~eventlite.exceptions.StorageError` naming the feature: those need a
durable backend.

Transactions here group commit callbacks, not writes: an append is kept at once, and a
rollback does not take it back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..codec import Codec
from ..store.storage import Storage, Transaction
from .events import InMemoryEventStore
from .snapshots import InMemorySnapshotStore

__all__ = ["InMemoryEventStore", "InMemorySnapshotStore", "MemoryStorage", "MemoryTransaction"]


class MemoryTransaction(Transaction):
    """A transaction of :class:`MemoryStorage`: its commit callbacks, nothing more."""

    __slots__ = ("_callbacks",)

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        """See :meth:`Transaction.on_commit`."""
        self._callbacks.append(callback)


class MemoryStorage(Storage):
    """The :class:`~eventlite.store.Storage` seam in memory (see the module doc).

    ``codec``, when given, makes the event store encode and decode like a durable one.
    """

    def __init__(self, *, codec: Codec | None = None) -> None:
        self.events: InMemoryEventStore = InMemoryEventStore(codec=codec)
        self.snapshots: InMemorySnapshotStore = InMemorySnapshotStore()
        self._local = threading.local()
        self._listeners: tuple[Callable[[], None], ...] = ()

    @property
    def description(self) -> str:
        """``"memory"``."""
        return "memory"

    @property
    def durable(self) -> bool:
        """False: everything is lost with the process."""
        return False

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        """See :meth:`Storage.transaction`; writes are kept at once (see the module doc)."""
        outer: MemoryTransaction | None = getattr(self._local, "tx", None)
        if outer is not None:
            mark = len(outer._callbacks)
            try:
                yield outer
            except BaseException:
                del outer._callbacks[mark:]
                raise
            return
        tx = MemoryTransaction()
        self._local.tx = tx
        try:
            yield tx
        finally:
            self._local.tx = None
        first_error: BaseException | None = None
        for callback in [*tx._callbacks, *self._listeners]:
            try:
                callback()
            except BaseException as exc:
                if first_error is None:
                    first_error = exc
        if first_error is not None:
            raise first_error

    def in_transaction(self) -> bool:
        """See :meth:`Storage.in_transaction`."""
        return getattr(self._local, "tx", None) is not None

    def on_every_commit(self, listener: Callable[[], None]) -> None:
        """See :meth:`Storage.on_every_commit`."""
        self._listeners = (*self._listeners, listener)

    def close(self) -> None:
        """Forget every event; idempotent."""
        self.events.close()
