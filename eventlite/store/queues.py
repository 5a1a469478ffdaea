"""Work queues' messages: visibility, receipts, FIFO groups, dedupe ids, dead letters.

:class:`QueueStore` is what a backend implements; :class:`~eventlite.queue.WorkQueue` is
the facade users call. The records it exchanges live here (:class:`QueueStats`,
:class:`FailedMessage`), and so do the queue's errors, whose public home is
:mod:`eventlite.queue`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import attrs

from ..exceptions import EventliteError
from .dead_letters import DeadLetter, Failure

__all__ = [
    "FailedMessage",
    "Handout",
    "MaxReceivesExceeded",
    "MessageExpired",
    "QueueError",
    "QueueStats",
    "QueueStore",
    "StaleReceipt",
]

T = TypeVar("T")

Handout = tuple[T, str, int, str | None]
"""One message handed out by :meth:`QueueStore.receive`: (the decoded body, its receipt,
its receive count with this one, its group)."""


class QueueError(EventliteError):
    """A work queue operation failed."""

    __module__ = "eventlite.queue"


class StaleReceipt(QueueError):
    """A receipt that no longer holds its message: acked or nacked already, dead-lettered,
    expired, or handed out again after its visibility timeout ran out.

    ``receipt`` is the receipt given; ``reason`` says which of these happened.
    """

    __module__ = "eventlite.queue"

    def __init__(self, queue: str, receipt: str, reason: str) -> None:
        self.queue = queue
        self.receipt = receipt
        self.reason = reason
        super().__init__(f"queue {queue!r}: receipt {receipt!r} is stale: {reason}")


class MaxReceivesExceeded(QueueError):
    """The error a dead letter records for a message received ``max_receives`` times
    without an ack (when no handler error was given)."""

    # Dead letters record the class as ``eventlite.queue.MaxReceivesExceeded``.
    __module__ = "eventlite.queue"


class MessageExpired(QueueError):
    """The error a dead letter records for a message that waited longer than the TTL."""

    __module__ = "eventlite.queue"


@attrs.frozen
class QueueStats:
    """A snapshot of one queue, as the CLI ``queues`` command prints it."""

    name: str
    """The queue's name."""
    depth: int
    """Messages waiting to be received now (including those waiting behind their group)."""
    in_flight: int
    """Messages received and not yet acked, nacked or timed out."""
    delayed: int
    """Messages not visible yet: sent with a delay, or nacked with one."""
    oldest_age: float | None
    """Seconds since the oldest message in the queue was sent; None when it is empty."""

    @property
    def total(self) -> int:
        """Every message in the queue."""
        return self.depth + self.in_flight + self.delayed

    def __str__(self) -> str:
        age = "-" if self.oldest_age is None else f"{self.oldest_age:.1f}s"
        return (
            f"{self.name}: {self.depth} waiting, {self.in_flight} in flight, "
            f"{self.delayed} delayed, oldest {age}"
        )


@attrs.frozen
class FailedMessage:
    """A message that left its queue without an ack: dead-lettered, or dropped when the
    queue keeps no dead letters."""

    queue: str
    """The queue it left."""
    message_id: str
    """Its id."""
    group: str | None
    """Its FIFO group, or None."""
    failure: Failure
    """Why: the handler's last error, :class:`MaxReceivesExceeded`, :class:`MessageExpired`
    or the decoding error."""
    dead_letter: DeadLetter | None
    """The dead letter it became, or None when it was dropped."""


class QueueStore(abc.ABC):
    """The messages of every work queue of a storage, each queue by name.

    **A message's life.** :meth:`send` stores it, visible once ``delay`` has passed.
    :meth:`receive` hands out visible messages, oldest due first (by the time they became
    visible, then in send order), each with a new *receipt* and hidden until the
    visibility timeout runs out. :meth:`ack` deletes it; :meth:`nack` makes it visible
    again after a delay; :meth:`extend` hides it longer. A receipt is *stale* once its
    message was acked, nacked, dead-lettered, expired or handed out again: using it
    raises :class:`StaleReceipt` with the reason, changing nothing.

    **Groups.** Messages of one group are visible one at a time, in send order: the next
    becomes visible (at its own due time) when the one before leaves the queue (acked,
    dead-lettered, expired).

    **Failures.** A message handed out ``max_receives`` times without an ack, one still
    waiting ``ttl`` seconds after it was sent (unless in flight), and one whose body
    ``decode`` rejects, leave the queue in the same transaction: with ``dead_letters``,
    as a ``dead`` entry of the storage's :class:`~eventlite.store.dead_letters.DeadLetterStore`
    with source ``queue:<name>``, ``key=None`` and the group in ``group``; without, dropped.
    Each such call reports them as :class:`FailedMessage`\\ s. :meth:`requeue_retries` (and
    every :meth:`receive` with ``dead_letters``) moves the queue's dead letters released
    for retry back to the end of the queue and of their group, with a fresh receive count
    and TTL.

    **Text.** Queue names, ids, groups and dedupe ids are valid text (the facade refuses
    others); bodies are the codec's text, or whatever another writer put there: a body
    that is not valid text is handed to ``decode`` as bytes, and a failure is safe by
    construction (:class:`~eventlite.store.dead_letters.Failure`).

    **Times and transactions** are as for the dead-letter store: epoch seconds from the
    caller's clock; every write joins the calling thread's open transaction of the same
    storage; backend errors raise :class:`~eventlite.exceptions.StorageError`.
    """

    @abc.abstractmethod
    def send(
        self,
        queue: str,
        messages: Sequence[tuple[str, str]],
        *,
        now: float,
        delay: float = 0.0,
        ttl: float | None = None,
        group: str | None = None,
    ) -> None:
        """Append ``messages`` (id, body), in order, visible at ``now + delay``, expiring
        at ``now + ttl``; one write."""

    @abc.abstractmethod
    def send_deduplicated(
        self,
        queue: str,
        message: tuple[str, str],
        *,
        dedup_id: str,
        window: float,
        now: float,
        delay: float = 0.0,
        ttl: float | None = None,
        group: str | None = None,
    ) -> str:
        """:meth:`send` one message unless a message was sent with ``dedup_id`` less than
        ``window`` seconds before ``now`` (acked since or not); returns the id of the
        message sent, or of that earlier one."""

    @abc.abstractmethod
    def receive(
        self,
        queue: str,
        decode: Callable[[str | bytes], T],
        *,
        max: int,
        now: float,
        visibility_timeout: float,
        max_receives: int,
        ttl: float | None,
        dead_letters: bool,
    ) -> tuple[list[Handout[T]], list[FailedMessage]]:
        """Hand out up to ``max`` visible messages, hidden until ``now +
        visibility_timeout``, each decoded by ``decode``; and the messages that failed on
        the way.

        First (with ``dead_letters``) it requeues the retried dead letters, then expires
        messages past their TTL; then, in due order, a message already handed out
        ``max_receives`` times, or whose ``decode`` raises, fails (the exception is its
        failure) and the next one is looked at, so a batch is full whenever enough
        messages are visible.
        """

    @abc.abstractmethod
    def ack(self, queue: str, receipt: str) -> None:
        """Delete the message ``receipt`` holds (even after its visibility timeout, while
        nobody received it again); the next of its group becomes visible. Raises
        :class:`StaleReceipt`."""

    @abc.abstractmethod
    def ack_many(self, queue: str, receipts: Iterable[str]) -> None:
        """Ack every receipt that holds its message, in one write; then, when some did not
        (a receipt given twice included), raise :class:`StaleReceipt` for the first of them,
        its reason counting the others."""

    @abc.abstractmethod
    def nack(
        self,
        queue: str,
        receipt: str,
        *,
        now: float,
        delay: float,
        failure: Failure | None,
        max_receives: int,
        dead_letters: bool,
    ) -> FailedMessage | None:
        """The message was not handled: visible again at ``now + delay``, ``failure`` kept
        for its dead letter; or, handed out ``max_receives`` times, it fails now (with
        ``failure``, else :class:`MaxReceivesExceeded`) and is returned. Raises
        :class:`StaleReceipt`."""

    @abc.abstractmethod
    def extend(self, queue: str, receipt: str, *, until: float) -> None:
        """Hide the message ``receipt`` holds until ``until``. Raises :class:`StaleReceipt`."""

    @abc.abstractmethod
    def extend_many(self, queue: str, receipts: Iterable[str], *, until: float) -> set[str]:
        """:meth:`extend` each receipt in one write; returns those that were stale (and are
        left alone)."""

    @abc.abstractmethod
    def release(self, queue: str, receipts: Iterable[str], *, now: float) -> None:
        """Give back received messages that were not handled: visible at ``now``, this
        receive not counted. Stale receipts are ignored."""

    @abc.abstractmethod
    def requeue_retries(self, queue: str, *, now: float, ttl: float | None) -> int:
        """Move the queue's dead letters released for retry back into it (see the class
        doc); returns how many."""

    @abc.abstractmethod
    def stats(self, queue: str, *, now: float) -> QueueStats:
        """Waiting, in-flight and delayed counts at ``now``, and the oldest message's age."""

    @abc.abstractmethod
    def count(self, queue: str) -> int:
        """Every message of the queue, whatever its state."""

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Delete every message of the queue, in flight too; returns how many."""

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Every queue that holds messages, by name."""
