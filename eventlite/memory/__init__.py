"""The in-memory backend: events and snapshots in Python objects, for tests and scripts.

It keeps what a unit of work needs (the event store and snapshots); every other store of
the :class:`~eventlite.store.Storage` seam (checkpoints, dead letters, queues, sagas, …)
raises :class:`~eventlite.exceptions.StorageError` naming the feature: those need a
durable backend.

Transactions here group commit callbacks, not writes: an append is kept at once, and a
rollback does not take it back. Unique claims are the exception: a rollback undoes them,
since a claim left behind by a failed unit of work would refuse its value for good.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..codec import Codec
from ..store.storage import Storage, Transaction
from .claims import InMemoryClaimStore
from .events import InMemoryEventStore
from .snapshots import InMemorySnapshotStore

__all__ = [
    "InMemoryClaimStore",
    "InMemoryEventStore",
    "InMemorySnapshotStore",
    "MemoryStorage",
    "MemoryTransaction",
]


class MemoryTransaction(Transaction):
    """A transaction of :class:`MemoryStorage`: its commit callbacks, nothing more."""

    __slots__ = ("_callbacks", "_undo")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self._undo: list[Callable[[], object]] = []

    def on_rollback(self, undo: Callable[[], object]) -> None:
        """Call ``undo()`` if the transaction (or the savepoint open now) rolls back;
        undos run newest first."""
        self._undo.append(undo)

    def _roll_back(self, mark: int) -> None:
        undos = self._undo[mark:]
        del self._undo[mark:]
        for undo in reversed(undos):
            undo()

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
        self._claims = InMemoryClaimStore(self)
        self._listeners: tuple[Callable[[], None], ...] = ()

    @property
    def description(self) -> str:
        """``"memory"``."""
        return "memory"

    @property
    def durable(self) -> bool:
        """False: everything is lost with the process."""
        return False

    @property
    def claims(self) -> InMemoryClaimStore:
        """See :attr:`Storage.claims`: a dict, undone with a rolled-back transaction."""
        return self._claims

    def current(self) -> MemoryTransaction | None:
        """The calling thread's open transaction, or None."""
        tx: MemoryTransaction | None = getattr(self._local, "tx", None)
        return tx

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        """See :meth:`Storage.transaction`; writes are kept at once (see the module doc)."""
        outer: MemoryTransaction | None = getattr(self._local, "tx", None)
        if outer is not None:
            mark, undo_mark = len(outer._callbacks), len(outer._undo)
            try:
                yield outer
            except BaseException:
                del outer._callbacks[mark:]
                outer._roll_back(undo_mark)
                raise
            return
        tx = MemoryTransaction()
        self._local.tx = tx
        try:
            yield tx
        except BaseException:
            tx._roll_back(0)
            raise
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
