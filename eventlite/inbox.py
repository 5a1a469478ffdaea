"""The inbox: which messages a consumer has already handled, kept beside its effects.

A consumer that writes its effects to the storage marks the message id in the *same*
transaction. A redelivery of that message (after a crash, an operator's retry, a broker
that delivers twice) finds the mark and is skipped, so its effects happen once::

    with storage.transaction():
        if inbox.mark("billing", envelope.id):   # False: handled before
            ...                                   # write the effects here

Durable subscribers whose handler takes a ``uow`` parameter get this for free (see
``docs/delivery.md``). Marks are kept per consumer name; :meth:`Inbox.purge` forgets old
ones so they do not grow without bound. The marks themselves live in the storage's
:class:`~eventlite.store.inbox.InboxStore`.
"""

from __future__ import annotations

import math
from datetime import timedelta

from .clock import Clock, SystemClock
from .store.storage import Storage

__all__ = ["Inbox"]


class Inbox:
    """Handled message ids per consumer, in ``storage`` (its
    :attr:`~eventlite.store.Storage.inbox`).

    ``clock`` dates each mark (default: the system clock), for :meth:`purge`. Every method
    may be called from any thread. Raises :class:`~eventlite.exceptions.StorageError` for a
    storage that keeps no inbox (in memory).
    """

    def __init__(self, storage: Storage, *, clock: Clock | None = None) -> None:
        self.storage = storage
        """Where the marks are kept."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """Where mark times come from."""
        self._store = storage.inbox

    def contains(self, consumer: str, message_id: str) -> bool:
        """Whether ``consumer`` has marked ``message_id`` as handled (last commit seen)."""
        return self._store.contains(consumer, message_id)

    def mark(self, consumer: str, message_id: str) -> bool:
        """Mark ``message_id`` handled by ``consumer``, in the calling thread's open
        ``storage.transaction()`` (or in a transaction of its own).

        Returns False, writing nothing, when it was marked already: the caller should then
        roll its effects back (raise) or not write them.
        """
        return self._store.mark(consumer, message_id, self.clock.now())

    def purge(self, older_than: float | timedelta, consumer: str | None = None) -> int:
        """Forget marks made more than ``older_than`` (seconds or a ``timedelta``) ago, of
        one consumer or of all; returns how many were deleted.

        A message redelivered after its mark is purged is handled again, so keep marks
        longer than any redelivery can come late.
        """
        if isinstance(older_than, timedelta):
            older_than = older_than.total_seconds()
        if isinstance(older_than, bool) or not (
            isinstance(older_than, (int, float)) and older_than >= 0
        ):
            raise ValueError(f"older_than must be a number of seconds >= 0, got {older_than!r}")
        if math.isinf(older_than):
            return 0
        return self._store.purge(self.clock.now() - older_than, consumer)

    def count(self, consumer: str | None = None) -> int:
        """How many marks are kept (for one consumer, or for all)."""
        return self._store.count(consumer)

    def __repr__(self) -> str:
        return f"<Inbox {self.storage.description}>"
