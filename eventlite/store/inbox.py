"""The inbox: the message ids each consumer has handled, with their effects."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence

__all__ = ["InboxStore", "check_consumer"]


class InboxStore(abc.ABC):
    """The message ids each consumer has handled, kept beside the consumer's effects.

    A consumer (a durable subscriber, a bridge) marks a message id in the same transaction
    as the effects of handling it. A redelivery of that message then finds the mark and is
    skipped, so its effects happen once. Marks are per consumer: the same id marked by two
    consumers is two marks.

    **Transactions.** :meth:`mark` and :meth:`purge` join the calling thread's open
    :meth:`Storage.transaction() <eventlite.store.Storage.transaction>` (as a savepoint of
    it); outside one they commit on their own. A mark rolled back with its transaction is
    gone. Reads see the last commit, and inside a transaction its own writes.

    **Values.** Consumer names are non-empty strings, message ids strings; both are kept
    exactly, and text that cannot be stored (a lone surrogate) raises ``ValueError``.
    Times are epoch seconds given by the caller (the store keeps no clock). Bad arguments
    raise ``ValueError``; the storage failing raises
    :class:`~eventlite.exceptions.StorageError`.
    """

    @abc.abstractmethod
    def mark(self, consumer: str, message_id: str, at: float) -> bool:
        """Mark ``message_id`` handled by ``consumer`` at time ``at``. Returns True when
        the mark is new; False, changing nothing, when it was there already."""

    @abc.abstractmethod
    def contains(self, consumer: str, message_id: str) -> bool:
        """Whether ``consumer`` has marked ``message_id``."""

    def mark_many(self, consumer: str, message_ids: Sequence[str], at: float) -> int:
        """Mark each of ``message_ids`` handled by ``consumer`` at time ``at``; returns how
        many marks are new. The SQLite and PostgreSQL backends write them in one statement,
        all or none (bad arguments mark nothing); this default marks them one by one, which
        is all or none inside :meth:`Storage.transaction()
        <eventlite.store.Storage.transaction>` (an inbound bridge marks its batch there)."""
        for message_id in message_ids:
            if not isinstance(message_id, str):
                raise ValueError(f"a message id must be a str, got {message_id!r}")
        return sum(self.mark(consumer, message_id, at) for message_id in message_ids)

    def handled(self, consumer: str, message_ids: Iterable[str]) -> set[str]:
        """The ones of ``message_ids`` that ``consumer`` has marked. Backends ask in one
        query where they can (an inbound bridge checks a whole batch)."""
        return {m for m in message_ids if self.contains(consumer, m)}

    @abc.abstractmethod
    def purge(self, before: float, consumer: str | None = None) -> int:
        """Delete the marks made before time ``before`` (strictly), of one consumer or of
        all; returns how many were deleted."""

    @abc.abstractmethod
    def count(self, consumer: str | None = None) -> int:
        """How many marks are kept, for one consumer or for all."""

    @abc.abstractmethod
    def consumers(self) -> dict[str, int]:
        """Every consumer that holds marks, with how many, sorted by name."""


def check_consumer(consumer: object) -> str:
    """``consumer`` if it is a non-empty string; else ``ValueError`` (for backends)."""
    if not isinstance(consumer, str) or not consumer:
        raise ValueError(f"a consumer name must be a non-empty str, got {consumer!r}")
    return consumer
