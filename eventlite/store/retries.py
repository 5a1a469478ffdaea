"""Deliveries waiting for a delayed retry, and the messages of the same key held behind them."""

from __future__ import annotations

import abc
from typing import NamedTuple

__all__ = ["RetryEntry", "RetryStore", "storable_text"]


class RetryEntry(NamedTuple):
    """One stored row of a subscriber's delayed retries: a head or a held follower."""

    subscriber: str
    """The durable subscriber it belongs to."""
    position: int
    """The log position of the message."""
    key: str
    """Its ordering key (the stream id)."""
    attempts: int
    """Attempts made so far (0 for a follower that was never tried)."""
    due_at: float | None
    """When the next delayed retry is due (epoch seconds); None for a held follower."""
    first_failed_at: float | None
    """When its first attempt failed; None for a follower that was never tried."""
    error: str | None
    """The last failure, as text; None for a follower that was never tried."""

    @property
    def is_head(self) -> bool:
        """Whether it waits for a delayed retry (rather than behind one)."""
        return self.due_at is not None


class RetryStore(abc.ABC):
    """Delayed retries of durable subscribers, as rows that survive a restart.

    Per subscriber, each row is one message of the log (by its position) with its ordering
    key. A **head** is a message whose handler failed and that waits for a delayed retry:
    it has attempts, a due time, the time of its first failure and the last error. A
    **follower** (a held message) is a later message of the same key, kept behind the head
    so that the key's order holds: it has no due time. A key's head, when it has one, is
    its lowest position. A key whose rows are all followers is **stranded**: its head was
    settled, but the release of the messages behind it stopped part-way (a crash, a
    storage error); the subscriber releases it on its next pass.

    **Transactions.** Every write joins the calling thread's open
    :meth:`Storage.transaction() <eventlite.store.Storage.transaction>` (as a savepoint of
    it), so a row is stored or deleted together with the checkpoint move or the dead letter
    it goes with; outside one it commits on its own. Reads see the last commit, and inside
    a transaction its own writes.

    **Values.** Subscriber names and keys are non-empty strings, positions and attempts
    ints >= 0, times epoch seconds given by the caller (the store keeps no clock). Error
    text is stored whatever it holds: a lone surrogate comes back escaped (``\\udc80``),
    as :func:`storable_text` makes it. Bad arguments raise ``ValueError``; the storage
    failing raises :class:`~eventlite.exceptions.StorageError`.
    """

    @abc.abstractmethod
    def schedule(
        self,
        subscriber: str,
        position: int,
        key: str,
        *,
        attempts: int,
        due_at: float,
        first_failed_at: float,
        error: str,
    ) -> None:
        """Store the message at ``position`` as a head of ``key`` waiting for a retry due
        at ``due_at`` (replacing any row at that position)."""

    @abc.abstractmethod
    def hold(self, subscriber: str, position: int, key: str) -> None:
        """Store the message at ``position`` as a follower of ``key``, held behind its head
        (replacing any row at that position)."""

    @abc.abstractmethod
    def reschedule(
        self,
        subscriber: str,
        position: int,
        *,
        attempts: int,
        due_at: float,
        error: str,
        first_failed_at: float,
    ) -> bool:
        """Make the row at ``position`` (a head, or a follower that failed in its turn) a
        head with these attempts, due time and error; its ``first_failed_at`` is kept when
        it has one, else set to the one given. Returns False when there is no such row."""

    @abc.abstractmethod
    def forget(self, subscriber: str, position: int) -> bool:
        """Delete the row at ``position``; returns whether there was one."""

    @abc.abstractmethod
    def drop(self, subscriber: str, key: str) -> int:
        """Delete every row of ``key``; returns how many there were."""

    @abc.abstractmethod
    def due(self, subscriber: str, now: float) -> list[RetryEntry]:
        """The heads due at ``now`` (``due_at <= now``), by due time then position."""

    @abc.abstractmethod
    def next_due(self, subscriber: str) -> float | None:
        """The earliest due time of the subscriber's heads, or None when it has none."""

    @abc.abstractmethod
    def keys(self, subscriber: str) -> frozenset[str]:
        """The keys with at least one row (held back for this subscriber)."""

    @abc.abstractmethod
    def stranded(self, subscriber: str) -> list[str]:
        """The keys whose rows are all followers, by their lowest position."""

    @abc.abstractmethod
    def followers(self, subscriber: str, key: str, after: int = 0) -> list[int]:
        """The positions of the rows of ``key`` above ``after``, in order (after a head's
        position: the messages held behind it)."""

    @abc.abstractmethod
    def entries(self, subscriber: str | None = None) -> list[RetryEntry]:
        """Every row, of one subscriber or of all, by subscriber then position."""


def storable_text(text: str) -> str:
    """``text`` with every lone surrogate escaped (``\\udc80``): what any backend can store
    as UTF-8. Text that is valid already is returned as it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
