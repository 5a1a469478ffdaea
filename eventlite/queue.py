"""Work queues in the shared SQLite file: the embedded SQS or RabbitMQ.

A :class:`WorkQueue` is a named queue of messages for competing consumers::

    queue = WorkQueue(database, codec, "emails", dlq=dlq)
    queue.send(SendWelcomeEmail("ada@example.com"))
    for item in queue.receive(max=10):
        send_the_email(item.message)
        queue.ack(item.receipt)

How a message moves:

- :meth:`~WorkQueue.send` stores it; with ``delay`` it becomes visible that many seconds
  later. With a ``dedup_id`` seen within ``dedup_window`` seconds (five minutes by
  default, counted from the first send, acked or not), the send returns the first
  message's id and adds nothing.
- :meth:`~WorkQueue.receive` hands out visible messages, oldest due first, each with a
  *receipt* and hidden from other receivers for the visibility timeout.
- :meth:`~WorkQueue.ack` deletes it. :meth:`~WorkQueue.nack` makes it visible again (after
  ``delay``). :meth:`~WorkQueue.extend` hides it longer. If the visibility timeout runs out
  with no ack, the next receive hands it out again, with a new receipt: the old one is
  *stale* and acking with it raises :class:`StaleReceipt`.
- A message received ``max_receives`` times without an ack goes to the dead-letter queue
  (source ``queue:<name>``) instead of being handed out again: at once when it is nacked
  the last time, or at the next receive when its last visibility timeout runs out.
- With a ``ttl``, a message still waiting ``ttl`` seconds after it was sent expires: it is
  dead-lettered with the error ``MessageExpired`` (dropped with a warning when the queue has
  no DLQ). A message in flight does not expire until its visibility timeout runs out.
- Messages of one ``group`` are handed out one at a time, in send order: the next waits
  until the one before is acked, dead-lettered or expired (a nacked or timed-out one is
  handed out again first). The order holds among acked messages only: a dead-lettered
  message leaves its group's line, so the next one is handed out at once and overtakes it
  (the queue's dead letters have ``key=None``: the DLQ parks nothing behind them).
- A message whose envelope cannot be decoded (unknown type, bad JSON) is dead-lettered by
  the receive that meets it, with the decoding error, and is not returned.
- ``dlq.retry(id)`` of a dead letter of source ``queue:<name>`` puts the message back: the
  next :meth:`~WorkQueue.receive` (or :meth:`~WorkQueue.requeue_retries`) moves it to the
  end of the queue (and of its group, behind the group's messages still queued) with a
  fresh receive count and TTL.

Every time decision reads the queue's :class:`~eventlite.clock.Clock`, so tests drive time
with a :class:`~eventlite.clock.FakeClock`. Receiving is one indexed range scan: cost grows
with the log of the queue's length, not the length.

:meth:`WorkQueue.consume` runs competing consumer threads around a handler.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final

import attrs

from ._ids import new_id
from .clock import Clock, SystemClock
from .codec import Codec
from .dlq import DeadLetterQueue, error_fields, queue_source
from .envelope import Envelope, message_context
from .exceptions import EventliteError
from .sqlite._database import Database, Transaction

__all__ = [
    "Consumer",
    "MaxReceivesExceeded",
    "MessageExpired",
    "QueueError",
    "QueueStats",
    "Queues",
    "Received",
    "StaleReceipt",
    "WorkQueue",
]

_log = logging.getLogger("eventlite.queue")

DEFAULT_DEDUP_WINDOW: Final = 300.0
"""Seconds a ``dedup_id`` is remembered after the first send that used it."""


class QueueError(EventliteError):
    """A work queue operation failed."""


class StaleReceipt(QueueError):
    """A receipt that no longer holds its message: acked or nacked already, dead-lettered,
    expired, or handed out again after its visibility timeout ran out.

    ``receipt`` is the receipt given; ``reason`` says which of these happened.
    """

    def __init__(self, queue: str, receipt: str, reason: str) -> None:
        self.queue = queue
        self.receipt = receipt
        self.reason = reason
        super().__init__(f"queue {queue!r}: receipt {receipt!r} is stale: {reason}")


class MaxReceivesExceeded(QueueError):
    """The error a dead letter records for a message received ``max_receives`` times
    without an ack (when no handler error was given)."""


class MessageExpired(QueueError):
    """The error a dead letter records for a message that waited longer than the TTL."""


@attrs.frozen
class Received:
    """A message handed out by :meth:`WorkQueue.receive`."""

    envelope: Envelope
    """The message's envelope (id, metadata, timestamp)."""
    receipt: str
    """Proof of this receive: pass it to ``ack``, ``nack`` or ``extend``."""
    receive_count: int
    """How many times the message was handed out, this time included (1 the first time)."""
    group: str | None = None
    """The FIFO group the message was sent with, or None."""

    @property
    def message(self) -> Any:
        """The message object."""
        return self.envelope.message

    @property
    def message_id(self) -> str:
        """The message id (the envelope id), the same on every receive."""
        return self.envelope.id


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


def _seconds(name: str, value: float, *, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (value > 0 if positive else value >= 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a number of seconds {bound}, got {value!r}")
    return float(value)


_ROW = "seq, id, body, queue_group, receives, error_type, error_message, traceback, first_failed_at"
# (seq, id, body, group, receives, error_type, error_message, traceback, first_failed_at)
_Row = tuple[int, str, "str | bytes", "str | None", int, "str | None", "str | None", Any, Any]


_CHUNK = 500  # receipts per statement in ack_many (SQLite allows 32766 parameters)


@functools.cache
def _held_sql(n: int) -> str:
    marks = ", ".join("?" * n)
    return (
        "SELECT seq, receives, in_flight, queue_group FROM queue_messages "
        f"WHERE queue = ? AND seq IN ({marks})"
    )


class WorkQueue:
    """A named queue in the shared SQLite file (see the module doc for its rules).

    ``database`` is the file; ``codec`` turns messages into wire JSON and back (default: a
    :class:`Codec` over the default registry); ``name`` names the queue (several queues
    share the tables). ``visibility_timeout`` is how many seconds a received message stays
    hidden unless acked; ``max_receives`` how many times it may be handed out;
    ``ttl`` how many seconds it may wait (None: forever); ``dlq`` where messages that
    exhaust their receives, expire or cannot be decoded go (None: they are dropped, with a
    log record); ``dedup_window`` how long a ``dedup_id`` is remembered; ``clock`` the time.

    Safe to share between threads, and between processes on one file.
    """

    def __init__(
        self,
        database: Database,
        codec: Codec | None = None,
        name: str = "default",
        *,
        visibility_timeout: float = 30.0,
        max_receives: int = 5,
        ttl: float | None = None,
        dlq: DeadLetterQueue | None = None,
        dedup_window: float = DEFAULT_DEDUP_WINDOW,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(database, Database):
            raise TypeError(
                f"WorkQueue needs an eventlite Database (for example store.database), got "
                f"{type(database).__name__}"
            )
        if not isinstance(name, str) or not name:
            raise ValueError(f"a queue's name must be a non-empty str, got {name!r}")
        if isinstance(max_receives, bool) or not isinstance(max_receives, int) or max_receives < 1:
            raise ValueError(f"max_receives must be an int >= 1, got {max_receives!r}")
        if dlq is not None and dlq.database is not database:
            raise ValueError(
                "the DLQ must live in the same Database as the queue, so that a message "
                "moves between them in one transaction"
            )
        self._db = database
        self.codec = codec if codec is not None else Codec()
        """The codec that encodes sent messages and decodes received ones."""
        self.name = name
        """The queue's name."""
        self.source = queue_source(name)
        """The DLQ source of this queue's dead letters: ``queue:<name>``."""
        self.visibility_timeout = _seconds("visibility_timeout", visibility_timeout, positive=True)
        """Default seconds a received message stays hidden."""
        self.max_receives = max_receives
        """How many times a message may be handed out before it is dead-lettered."""
        self.ttl = None if ttl is None else _seconds("ttl", ttl, positive=True)
        """Seconds a sent message may wait before it expires; None for no limit."""
        self.dlq = dlq
        """Where failed, expired and undecodable messages go; None to drop them."""
        self.dedup_window = _seconds("dedup_window", dedup_window)
        """Seconds a ``dedup_id`` is remembered after its first send."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """The clock every delay, timeout and TTL is measured with."""
        self._wakeup = threading.Condition()

    @property
    def database(self) -> Database:
        """The SQLite file the queue lives in."""
        return self._db

    # -- sending ------------------------------------------------------------------------

    def _encode(self, message: Any) -> tuple[str, str]:
        env = message if isinstance(message, Envelope) else Envelope(message)
        return env.id, self.codec.encode_envelope(env)

    def _notify(self) -> None:
        with self._wakeup:
            self._wakeup.notify_all()

    def _group_busy(self, tx: Transaction, group: str) -> bool:
        return (
            tx.execute(
                "SELECT 1 FROM queue_messages WHERE queue = ? AND queue_group = ? LIMIT 1",
                (self.name, group),
            ).fetchone()
            is not None
        )

    def _insert(
        self,
        tx: Transaction,
        rows: Sequence[tuple[str, str | bytes]],
        *,
        now: float,
        delay: float,
        group: str | None,
    ) -> None:
        not_before = now + delay
        expires_at = None if self.ttl is None else now + self.ttl
        # A message joins its group's line: visible only when it is the group's first.
        first_visible: float | None = not_before
        if group is not None and self._group_busy(tx, group):
            first_visible = None
        tx.executemany(
            "INSERT INTO queue_messages (queue, id, body, queue_group, not_before, "
            "visible_at, expires_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    self.name,
                    message_id,
                    body,
                    group,
                    not_before,
                    first_visible if i == 0 or group is None else None,
                    expires_at,
                    now,
                )
                for i, (message_id, body) in enumerate(rows)
            ],
        )
        tx.on_commit(self._notify)

    def send(
        self,
        message: Any,
        *,
        delay: float = 0,
        dedup_id: str | None = None,
        group: str | None = None,
    ) -> str:
        """Put a message (or an :class:`Envelope`) in the queue; returns its id.

        ``delay``: seconds before it can be received. ``dedup_id``: if a message was sent
        with the same one less than ``dedup_window`` seconds ago, nothing is added and that
        message's id is returned. ``group``: messages of one group are handed out one at a
        time, in send order. Joins the calling thread's open transaction, if any; raises
        :class:`~eventlite.exceptions.MessageEncodeError` for a message the codec cannot
        encode.
        """
        delay = _seconds("delay", delay)
        message_id, body = self._encode(message)
        now = self.clock.now()
        with self._db.transaction() as tx:
            if dedup_id is not None:
                row = tx.execute(
                    "SELECT message_id, until FROM queue_dedup WHERE queue = ? AND dedup_id = ?",
                    (self.name, dedup_id),
                ).fetchone()
                if row is not None and row[1] > now:
                    return str(row[0])
                tx.execute(
                    "DELETE FROM queue_dedup WHERE queue = ? AND dedup_id IN (SELECT dedup_id "
                    "FROM queue_dedup WHERE queue = ? AND until <= ? LIMIT 100)",
                    (self.name, self.name, now),
                )
                tx.execute(
                    "INSERT OR REPLACE INTO queue_dedup (queue, dedup_id, message_id, until) "
                    "VALUES (?, ?, ?, ?)",
                    (self.name, dedup_id, message_id, now + self.dedup_window),
                )
            self._insert(tx, [(message_id, body)], now=now, delay=delay, group=group)
        return message_id

    def send_many(
        self, messages: Iterable[Any], *, delay: float = 0, group: str | None = None
    ) -> list[str]:
        """Put several messages in the queue in one transaction; returns their ids in order.

        The same as :meth:`send` for each, with one commit (one fsync) for all.
        """
        delay = _seconds("delay", delay)
        rows = [self._encode(message) for message in messages]
        if not rows:
            return []
        now = self.clock.now()
        with self._db.transaction() as tx:
            self._insert(tx, rows, now=now, delay=delay, group=group)
        return [message_id for message_id, _ in rows]

    # -- receiving ----------------------------------------------------------------------

    def receive(self, max: int = 1, visibility_timeout: float | None = None) -> list[Received]:
        """Hand out up to ``max`` visible messages, oldest due first; [] when none is.

        Each stays hidden from other receivers for ``visibility_timeout`` seconds (default:
        the queue's) unless acked, nacked or extended. On the way, this receive puts back
        the queue's dead letters released by ``dlq.retry``, expires messages past their
        TTL, and dead-letters messages that used up ``max_receives`` or cannot be decoded.
        """
        if isinstance(max, bool) or not isinstance(max, int) or max < 1:
            raise ValueError(f"max must be an int >= 1, got {max!r}")
        timeout = (
            self.visibility_timeout
            if visibility_timeout is None
            else _seconds("visibility_timeout", visibility_timeout, positive=True)
        )
        name = self.name
        decode = self.codec.decode_envelope
        now = self.clock.now()
        hidden_until = now + timeout
        out: list[Received] = []
        with self._db.transaction() as tx:
            if self.dlq is not None:
                self._requeue(tx, now)
            self._expire(tx, now)
            while len(out) < max:
                rows: list[_Row] = tx.execute(
                    f"SELECT {_ROW} FROM queue_messages WHERE queue = ? AND visible_at <= ? "
                    "ORDER BY visible_at, seq LIMIT ?",
                    (name, now, max - len(out)),
                ).fetchall()
                if not rows:
                    break
                taken: list[tuple[int, float, int]] = []
                for row in rows:
                    seq, _, body, group, receives = row[:5]
                    error: BaseException | None = None
                    if receives >= self.max_receives:
                        error = MaxReceivesExceeded(
                            f"message {row[1]} of queue {name!r} was received {receives} "
                            "times without an ack"
                        )
                        if row[5] is not None:
                            error = MaxReceivesExceeded(
                                f"{error}; the last handler error was {row[5]}: {row[6]}"
                            )
                    else:
                        try:
                            env = decode(body)
                        except Exception as exc:
                            # MessageDecodeError or UnknownMessageType, or whatever an
                            # upcaster raised: never let one message stop the queue.
                            error = exc
                    if error is not None:
                        self._dead_letter(tx, row, error, now=now, attempts=receives)
                        if group is not None and self._promote(tx, group):
                            # The group's next message may be due before the rest of this
                            # batch: look again, so messages come out in due order.
                            break
                        continue
                    taken.append((receives + 1, hidden_until, seq))
                    out.append(Received(env, f"{seq}.{receives + 1}", receives + 1, group))
                tx.executemany(
                    "UPDATE queue_messages SET receives = ?, in_flight = 1, visible_at = ? "
                    "WHERE seq = ?",
                    taken,
                )
        return out

    def _requeue(self, tx: Transaction, now: float) -> None:
        assert self.dlq is not None
        entries = self.dlq._take_retries(tx, self.source)
        for entry in entries:
            message_id = entry.message_id if entry.message_id is not None else new_id()
            self._insert(tx, [(message_id, entry.message)], now=now, delay=0, group=entry.group)

    def requeue_retries(self) -> int:
        """Put back into the queue the dead letters that ``dlq.retry`` released; returns how
        many. :meth:`receive` does this by itself; call it to see them in :meth:`stats`
        before the next receive."""
        if self.dlq is None:
            return 0
        now = self.clock.now()
        with self._db.transaction() as tx:
            before = self._count(tx)
            self._requeue(tx, now)
            return self._count(tx) - before

    def _count(self, tx: Transaction) -> int:
        row = tx.execute("SELECT count(*) FROM queue_messages WHERE queue = ?", (self.name,))
        return int(row.fetchone()[0])

    def _expire(self, tx: Transaction, now: float) -> None:
        rows = tx.execute(
            f"SELECT {_ROW}, in_flight, visible_at FROM queue_messages "
            "WHERE queue = ? AND expires_at <= ? ORDER BY expires_at, seq",
            (self.name, now),
        ).fetchall()
        groups: set[str] = set()
        for row in rows:
            if row[9] and row[10] > now:
                continue  # in flight: its receiver may still ack it
            error = MessageExpired(
                f"message {row[1]} of queue {self.name!r} waited longer than its TTL ({self.ttl} s)"
            )
            self._dead_letter(tx, row, error, now=now, attempts=row[4], promote=False)
            if row[3] is not None:
                groups.add(row[3])
        for group in sorted(groups):
            self._promote(tx, group)

    def _dead_letter(
        self,
        tx: Transaction,
        row: Sequence[Any],
        error: BaseException,
        *,
        now: float,
        attempts: int,
        promote: bool = False,
    ) -> None:
        """Move a row to the DLQ (or drop it, with no DLQ) in ``tx``."""
        seq, message_id, body, group = row[0], row[1], row[2], row[3]
        tx.execute("DELETE FROM queue_messages WHERE seq = ?", (seq,))
        if self.dlq is None:
            _log.error(
                "queue %r: dropped message %s (no dead-letter queue configured): %s: %s",
                self.name,
                message_id,
                type(error).__name__,
                error,
            )
        else:
            self.dlq._record(
                tx,
                self.source,
                body,
                group=group,
                type_name=None,
                message_id=message_id,
                error=error_fields(error),
                attempts=attempts,
                first_failed_at=row[8],
                last_failed_at=now,
            )
        if promote and group is not None:
            self._promote(tx, group)

    def _promote(self, tx: Transaction, group: str) -> bool:
        """Make the first message of ``group`` visible when it is not yet; True if it was
        made so."""
        head = tx.execute(
            "SELECT seq, visible_at FROM queue_messages WHERE queue = ? AND queue_group = ? "
            "ORDER BY seq LIMIT 1",
            (self.name, group),
        ).fetchone()
        if head is None or head[1] is not None:
            return False
        tx.execute("UPDATE queue_messages SET visible_at = not_before WHERE seq = ?", (head[0],))
        return True

    # -- settling -----------------------------------------------------------------------

    def _parse(self, receipt: str) -> tuple[int, int]:
        try:
            seq, count = receipt.split(".")
            return int(seq), int(count)
        except (AttributeError, ValueError):
            raise StaleReceipt(self.name, str(receipt), "not a receipt of a work queue") from None

    def _holder(self, tx: Transaction, receipt: str) -> tuple[int, int, str | None]:
        """(seq, receives, group) of the message a valid receipt holds; raises StaleReceipt."""
        seq, count = self._parse(receipt)
        row = tx.execute(
            "SELECT receives, in_flight, queue_group FROM queue_messages "
            "WHERE seq = ? AND queue = ?",
            (seq, self.name),
        ).fetchone()
        if row is None:
            raise StaleReceipt(
                self.name,
                receipt,
                "the message is no longer in the queue (acked, dead-lettered or expired)",
            )
        if row[0] != count:
            raise StaleReceipt(
                self.name,
                receipt,
                f"its visibility timeout ran out and the message was received again "
                f"(receive #{row[0]}); that receiver owns it now",
            )
        if not row[1]:
            raise StaleReceipt(self.name, receipt, "the message was nacked with it already")
        return seq, count, row[2]

    def ack(self, receipt: str) -> None:
        """The message was handled: delete it. Raises :class:`StaleReceipt` when the
        receipt no longer holds the message. An ack after the visibility timeout ran out
        still succeeds as long as nobody received the message again."""
        seq, count = self._parse(receipt)
        with self._db.transaction() as tx:
            row = tx.execute(
                "DELETE FROM queue_messages WHERE seq = ? AND queue = ? AND receives = ? "
                "AND in_flight = 1 RETURNING queue_group",
                (seq, self.name, count),
            ).fetchone()
            if row is None:
                self._holder(tx, receipt)  # raises StaleReceipt, saying why
            elif row[0] is not None:
                self._promote(tx, row[0])

    def ack_many(self, receipts: Iterable[str]) -> None:
        """Ack several messages in one transaction. Every receipt that still holds its
        message is acked; then, if some were stale, :class:`StaleReceipt` is raised for the
        first of them (``reason`` counts them)."""
        stale: list[StaleReceipt] = []
        parsed: list[tuple[int, int, str]] = []
        for receipt in receipts:
            try:
                seq, count = self._parse(receipt)
            except StaleReceipt as exc:
                stale.append(exc)
                continue
            parsed.append((seq, count, receipt))
        with self._db.transaction() as tx:
            for start in range(0, len(parsed), _CHUNK):
                chunk = parsed[start : start + _CHUNK]
                held = {
                    row[0]: row[1:]
                    for row in tx.execute(
                        _held_sql(len(chunk)), (self.name, *[seq for seq, _, _ in chunk])
                    )
                }
                gone: list[tuple[int]] = []
                groups: set[str] = set()
                for seq, count, receipt in chunk:
                    state = held.get(seq)
                    if state is None or state[0] != count or not state[1]:
                        try:
                            self._holder(tx, receipt)
                        except StaleReceipt as exc:
                            stale.append(exc)
                        else:  # its row is still there: acked by an earlier receipt here
                            stale.append(StaleReceipt(self.name, receipt, "it was given twice"))
                        continue
                    del held[seq]
                    gone.append((seq,))
                    if state[2] is not None:
                        groups.add(state[2])
                tx.executemany("DELETE FROM queue_messages WHERE seq = ?", gone)
                for group in sorted(groups):
                    self._promote(tx, group)
        if stale:
            first = stale[0]
            more = f" (and {len(stale) - 1} more stale receipts)" if len(stale) > 1 else ""
            raise StaleReceipt(self.name, first.receipt, first.reason + more)

    def nack(self, receipt: str, delay: float = 0, *, error: BaseException | None = None) -> None:
        """The message was not handled: hand it out again after ``delay`` seconds.

        ``error`` is the handler's exception, kept for the dead letter. When the message
        has used up ``max_receives`` it goes to the DLQ now instead. Raises
        :class:`StaleReceipt`.
        """
        delay = _seconds("delay", delay)
        now = self.clock.now()
        fields = error_fields(error) if error is not None else None
        with self._db.transaction() as tx:
            seq, count, group = self._holder(tx, receipt)
            if count >= self.max_receives:
                row = tx.execute(
                    f"SELECT {_ROW} FROM queue_messages WHERE seq = ?", (seq,)
                ).fetchone()
                dead = error or MaxReceivesExceeded(
                    f"message {row[1]} of queue {self.name!r} was received {count} times "
                    "without an ack"
                )
                self._dead_letter(tx, row, dead, now=now, attempts=count, promote=group is not None)
                return
            if fields is None:
                tx.execute(
                    "UPDATE queue_messages SET in_flight = 0, visible_at = ? WHERE seq = ?",
                    (now + delay, seq),
                )
            else:
                tx.execute(
                    "UPDATE queue_messages SET in_flight = 0, visible_at = ?, error_type = ?, "
                    "error_message = ?, traceback = ?, "
                    "first_failed_at = coalesce(first_failed_at, ?) WHERE seq = ?",
                    (now + delay, *fields, now, seq),
                )
        if delay == 0:
            self._notify()

    def extend(self, receipt: str, seconds: float) -> None:
        """Keep the message hidden for ``seconds`` from now (as SQS's
        ChangeMessageVisibility). Raises :class:`StaleReceipt`."""
        seconds = _seconds("seconds", seconds)
        now = self.clock.now()
        with self._db.transaction() as tx:
            seq, _, _ = self._holder(tx, receipt)
            tx.execute(
                "UPDATE queue_messages SET visible_at = ? WHERE seq = ?", (now + seconds, seq)
            )

    def _extend_many(self, receipts: Iterable[str], seconds: float) -> set[str]:
        """:meth:`extend` several messages in one transaction; returns the receipts that
        no longer held their message (those are left alone)."""
        now = self.clock.now()
        lost: set[str] = set()
        with self._db.transaction() as tx:
            for receipt in receipts:
                try:
                    seq, count = self._parse(receipt)
                except StaleReceipt:
                    lost.add(receipt)
                    continue
                cursor = tx.execute(
                    "UPDATE queue_messages SET visible_at = ? WHERE seq = ? AND queue = ? "
                    "AND receives = ? AND in_flight = 1",
                    (now + seconds, seq, self.name, count),
                )
                if cursor.rowcount == 0:
                    lost.add(receipt)
        return lost

    def _release(self, receipts: Iterable[str]) -> None:
        """Give back messages that were received but not handled (a consumer stopping):
        visible at once, and this receive not counted."""
        now = self.clock.now()
        with self._db.transaction() as tx:
            for receipt in receipts:
                seq, count = self._parse(receipt)
                tx.execute(
                    "UPDATE queue_messages SET in_flight = 0, visible_at = ?, "
                    "receives = receives - 1 WHERE seq = ? AND queue = ? AND receives = ? "
                    "AND in_flight = 1",
                    (now, seq, self.name, count),
                )
        self._notify()

    # -- looking ------------------------------------------------------------------------

    def stats(self) -> QueueStats:
        """How many messages wait, are in flight, are delayed; the age of the oldest."""
        now = self.clock.now()
        in_flight, delayed, total, oldest = (
            self._db.read_connection()
            .execute(
                "SELECT coalesce(sum(f), 0), coalesce(sum(NOT f AND coalesce(visible_at, "
                "not_before) > ?), 0), count(*), min(sent_at) FROM (SELECT in_flight = 1 "
                "AND visible_at > ? AS f, visible_at, not_before, sent_at FROM queue_messages "
                "WHERE queue = ?)",
                (now, now, self.name),
            )
            .fetchone()
        )
        return QueueStats(
            name=self.name,
            depth=total - in_flight - delayed,
            in_flight=in_flight,
            delayed=delayed,
            oldest_age=None if oldest is None else max(0.0, now - oldest),
        )

    def __len__(self) -> int:
        """Every message in the queue, whatever its state."""
        row = self._db.read_connection().execute(
            "SELECT count(*) FROM queue_messages WHERE queue = ?", (self.name,)
        )
        return int(row.fetchone()[0])

    def purge(self) -> int:
        """Delete every message of the queue (in flight too); returns how many."""
        with self._db.transaction() as tx:
            return tx.execute("DELETE FROM queue_messages WHERE queue = ?", (self.name,)).rowcount

    # -- consuming ----------------------------------------------------------------------

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` real seconds, or until a message is sent (or nacked) in
        this process; for a polling loop. Sends from other processes are seen at the end of
        the timeout."""
        with self._wakeup:
            self._wakeup.wait(timeout)

    def consume(
        self,
        handler: Callable[[Any], object],
        *,
        threads: int = 2,
        prefetch: int = 10,
        backoff: Callable[[int], float] | None = None,
        poll_interval: float = 0.5,
        visibility_timeout: float | None = None,
    ) -> Consumer:
        """Start ``threads`` competing consumer threads running ``handler(message)``; see
        :class:`Consumer`. Stop them with ``consumer.stop()`` or a ``with`` block."""
        consumer = Consumer(
            self,
            handler,
            threads=threads,
            prefetch=prefetch,
            backoff=backoff,
            poll_interval=poll_interval,
            visibility_timeout=visibility_timeout,
        )
        consumer.start()
        return consumer

    def __repr__(self) -> str:
        return f"<WorkQueue {self.name!r} in {self._db.path!r}>"


def default_backoff(attempt: int) -> float:
    """Seconds before delivery attempt ``attempt`` (2 or more) of a nacked message: 0.1 s,
    doubling, at most 30 s. A :class:`~eventlite.retry.RetryPolicy`'s ``delay`` has the
    same signature and can replace it."""
    return min(30.0, 0.1 * 2.0 ** max(0, attempt - 2))


class Consumer:
    """Competing consumer threads over one :class:`WorkQueue`.

    Each thread receives up to ``prefetch`` messages at a time and, for each, runs
    ``handler(message)`` with the message's envelope current (so messages the handler
    sends are correlated to it). A message whose handler returns is acked at once, before
    the next message of the batch is handled (so a long batch cannot outlast the visibility
    timeout of messages already handled); one whose handler raises is nacked with the
    exception and a delay of ``backoff(receive_count + 1)`` seconds, so after
    ``max_receives`` failures it is dead-lettered. Undecodable messages never reach the
    handler: the receive dead-letters them. An idle thread waits ``poll_interval`` seconds
    between receives, less when a message is sent in this process.

    An error outside the handler (a receive, ack, nack or release that fails, for instance
    because the file stays locked) does not end a thread: it is logged on the
    ``eventlite.queue`` logger with its traceback, the rest of the batch is given back,
    and the thread waits ``poll_interval`` seconds and goes on. Messages it could not
    settle come back after their visibility timeout.

    Prefetched messages wait their turn hidden: once half the visibility timeout has
    passed since the receive (or the last extension), the thread extends the messages of
    its batch not handled yet by another timeout before it runs the next handler. So only
    one handler call has to fit in the visibility timeout, not a whole batch.

    :meth:`stop` lets each thread finish the message it is handling, gives back the rest
    of its batch (visible at once, the receive not counted) and joins the threads. A
    ``with`` block stops on exit.
    """

    def __init__(
        self,
        queue: WorkQueue,
        handler: Callable[[Any], object],
        *,
        threads: int = 2,
        prefetch: int = 10,
        backoff: Callable[[int], float] | None = None,
        poll_interval: float = 0.5,
        visibility_timeout: float | None = None,
    ) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be an int >= 1, got {prefetch!r}")
        self.queue = queue
        """The queue consumed."""
        self.handler = handler
        """Called with each message."""
        self.threads = threads
        """How many threads receive and handle."""
        self.prefetch = prefetch
        """How many messages a thread receives at a time."""
        self.backoff = backoff if backoff is not None else default_backoff
        """Seconds before the next attempt of a failed message, by attempt number."""
        self.poll_interval = _seconds("poll_interval", poll_interval, positive=True)
        """Real seconds an idle thread waits before receiving again."""
        self.visibility_timeout = visibility_timeout
        """Visibility timeout of its receives (None: the queue's)."""
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._handled = 0
        self._failed = 0

    @property
    def handled(self) -> int:
        """Messages whose handler returned."""
        return self._handled

    @property
    def failed(self) -> int:
        """Handler calls that raised."""
        return self._failed

    @property
    def running(self) -> bool:
        """Whether the threads run (started and not stopped)."""
        return bool(self._workers) and not self._stopping.is_set()

    def start(self) -> None:
        """Start the threads (once)."""
        with self._lock:
            if self._workers:
                raise RuntimeError("this consumer was started already")
            for i in range(self.threads):
                worker = threading.Thread(
                    target=self._run,
                    name=f"eventlite-queue-{self.queue.name}-{i}",
                    daemon=True,
                )
                self._workers.append(worker)
                worker.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking messages, let the running handlers finish, join the threads (up to
        ``timeout`` seconds each). Idempotent."""
        self._stopping.set()
        self.queue._notify()
        for worker in self._workers:
            if worker is not threading.current_thread():
                worker.join(timeout)

    def __enter__(self) -> Consumer:
        if not self._workers:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        queue = self.queue
        while not self._stopping.is_set():
            try:
                received_at = queue.clock.now()
                batch = queue.receive(max=self.prefetch, visibility_timeout=self.visibility_timeout)
            except Exception:
                _log.exception("queue %r: receive failed; trying again", queue.name)
                self._stopping.wait(self.poll_interval)
                continue
            if not batch:
                if not self._stopping.is_set():
                    queue.wait(self.poll_interval)
                continue
            try:
                self._handle(batch, received_at)
            except Exception:
                # An ack, nack or release that failed (the file busy, say): the messages it
                # did not settle come back after their visibility timeout. Keep the thread.
                _log.exception("queue %r: settling a batch failed; going on", queue.name)
                self._stopping.wait(self.poll_interval)

    def _handle(self, batch: list[Received], received_at: float) -> None:
        """Handle a batch received at ``received_at`` (by the queue's clock), acking each
        message as soon as its handler returns. Once half the visibility timeout has passed
        since the receive (or the last extension), the messages not handled yet are hidden
        for another timeout before the next handler runs; one that went stale meanwhile
        (received again by someone else) is left to its new owner."""
        queue = self.queue
        timeout = (
            queue.visibility_timeout if self.visibility_timeout is None else self.visibility_timeout
        )
        held_since = received_at
        pending = list(batch)  # received, not handled yet
        try:
            while pending:
                now = queue.clock.now()
                if now - held_since >= timeout / 2:
                    lost = queue._extend_many([item.receipt for item in pending], timeout)
                    held_since = now
                    if lost:
                        _log.warning(
                            "queue %r: %d prefetched messages timed out before their turn "
                            "and were received again; leaving them to their new receiver",
                            queue.name,
                            len(lost),
                        )
                        pending = [item for item in pending if item.receipt not in lost]
                        if not pending:
                            break
                item = pending.pop(0)
                try:
                    with message_context(item.envelope):
                        self.handler(item.message)
                except Exception as exc:
                    with self._lock:
                        self._failed += 1
                    _log.warning(
                        "queue %r: handler failed on message %s (receive %d): %s: %s",
                        queue.name,
                        item.message_id,
                        item.receive_count,
                        type(exc).__name__,
                        exc,
                    )
                    try:
                        queue.nack(item.receipt, self.backoff(item.receive_count + 1), error=exc)
                    except StaleReceipt as stale:
                        _log.warning("%s", stale)
                else:
                    with self._lock:
                        self._handled += 1
                    # Ack at once: a handled message must not come back because the rest
                    # of its batch outlasted its visibility timeout.
                    try:
                        queue.ack(item.receipt)
                    except StaleReceipt as stale:
                        _log.warning("%s (the message will be handled again)", stale)
                if self._stopping.is_set():
                    break
        finally:
            if pending:
                queue._release([item.receipt for item in pending])


class Queues:
    """Work queues of one file by name, sharing a codec, DLQ, clock and defaults.

    ``queues["emails"]`` is the :class:`WorkQueue` named ``emails`` (made on first use);
    ``queues.get("emails", max_receives=3)`` makes one with other settings.
    :meth:`names` and :meth:`stats` list every queue holding messages, for the CLI.
    """

    def __init__(
        self,
        database: Database,
        codec: Codec | None = None,
        *,
        dlq: DeadLetterQueue | None = None,
        clock: Clock | None = None,
        **defaults: Any,
    ) -> None:
        self._db = database
        self._codec = codec if codec is not None else Codec()
        self._dlq = dlq
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._defaults = defaults
        self._queues: dict[str, WorkQueue] = {}
        self._lock = threading.Lock()

    def get(self, name: str, **settings: Any) -> WorkQueue:
        """A new :class:`WorkQueue` called ``name`` with these settings over the defaults."""
        return WorkQueue(
            self._db,
            self._codec,
            name,
            dlq=self._dlq,
            clock=self._clock,
            **{**self._defaults, **settings},
        )

    def __getitem__(self, name: str) -> WorkQueue:
        with self._lock:
            queue = self._queues.get(name)
            if queue is None:
                queue = self._queues[name] = self.get(name)
            return queue

    def names(self) -> list[str]:
        """Every queue that holds messages, by name."""
        rows = (
            self._db.read_connection()
            .execute("SELECT DISTINCT queue FROM queue_messages ORDER BY queue")
            .fetchall()
        )
        return [row[0] for row in rows]

    def stats(self) -> list[QueueStats]:
        """:meth:`WorkQueue.stats` of every queue that holds messages."""
        return [self[name].stats() for name in self.names()]
