"""Work queues in the ``queue_messages`` and ``queue_dedup`` tables of an eventlite file.

A queue's failed messages become rows of ``dead_letters`` in the same transaction (see
:mod:`eventlite.sqlite.dead_letters`). Receiving is one range search of the
``queue_messages_ready`` index: its cost grows with the log of the queue's length.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from .._ids import new_id
from ..store.dead_letters import Failure, describe_raw
from ..store.queues import (
    FailedMessage,
    Handout,
    MaxReceivesExceeded,
    MessageExpired,
    QueueStats,
    QueueStore,
    StaleReceipt,
)
from ._database import Database, Transaction, storage_error
from .dead_letters import fetch_all, insert_dead_letter, take_retries

__all__ = ["SQLiteQueueStore"]

T = TypeVar("T")

_ROW = "seq, id, body, queue_group, receives, error_type, error_message, traceback, first_failed_at"
_BODY = 2  # kept as bytes when it is not valid text
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


def _source(queue: str) -> str:
    return "queue:" + queue


def _parse(queue: str, receipt: str) -> tuple[int, int]:
    try:
        seq, count = receipt.split(".")
        return int(seq), int(count)
    except (AttributeError, ValueError):
        raise StaleReceipt(queue, str(receipt), "not a receipt of a work queue") from None


class SQLiteQueueStore(QueueStore):
    """The :class:`QueueStore` contract in the eventlite file; every write joins the
    calling thread's open transaction of ``database``."""

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    # -- sending ------------------------------------------------------------------------

    @staticmethod
    def _insert(
        tx: Transaction,
        queue: str,
        rows: Sequence[tuple[str, str | bytes]],
        *,
        now: float,
        delay: float,
        ttl: float | None,
        group: str | None,
    ) -> None:
        not_before = now + delay
        expires_at = None if ttl is None else now + ttl
        # A message joins its group's line: visible only when it is the group's first.
        first_visible: float | None = not_before
        if (
            group is not None
            and tx.execute(
                "SELECT 1 FROM queue_messages WHERE queue = ? AND queue_group = ? LIMIT 1",
                (queue, group),
            ).fetchone()
            is not None
        ):
            first_visible = None
        tx.executemany(
            "INSERT INTO queue_messages (queue, id, body, queue_group, not_before, "
            "visible_at, expires_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    queue,
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
        """See :meth:`QueueStore.send`."""
        if not messages:
            return
        with self.database.transaction() as tx:
            self._insert(tx, queue, messages, now=now, delay=delay, ttl=ttl, group=group)

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
        """See :meth:`QueueStore.send_deduplicated`."""
        with self.database.transaction() as tx:
            row = tx.execute(
                "SELECT message_id, until FROM queue_dedup WHERE queue = ? AND dedup_id = ?",
                (queue, dedup_id),
            ).fetchone()
            if row is not None and row[1] > now:
                return str(row[0])
            tx.execute(
                "DELETE FROM queue_dedup WHERE queue = ? AND dedup_id IN (SELECT dedup_id "
                "FROM queue_dedup WHERE queue = ? AND until <= ? LIMIT 100)",
                (queue, queue, now),
            )
            tx.execute(
                "INSERT OR REPLACE INTO queue_dedup (queue, dedup_id, message_id, until) "
                "VALUES (?, ?, ?, ?)",
                (queue, dedup_id, message[0], now + window),
            )
            self._insert(tx, queue, [message], now=now, delay=delay, ttl=ttl, group=group)
        return message[0]

    # -- receiving ----------------------------------------------------------------------

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
        """See :meth:`QueueStore.receive`."""
        hidden_until = now + visibility_timeout
        out: list[Handout[T]] = []
        failed: list[FailedMessage] = []
        with self.database.transaction() as tx:
            if dead_letters:
                self._requeue(tx, queue, now, ttl)
            self._expire(tx, queue, now, ttl, dead_letters, failed)
            while len(out) < max:
                rows: list[_Row] = fetch_all(
                    tx.conn,
                    f"SELECT {_ROW} FROM queue_messages WHERE queue = ? AND visible_at <= ? "
                    "ORDER BY visible_at, seq LIMIT ?",
                    (queue, now, max - len(out)),
                    binary=(_BODY,),
                )
                if not rows:
                    break
                taken: list[tuple[int, float, int]] = []
                for row in rows:
                    seq, message_id, body, group, receives = row[:5]
                    error: BaseException | None = None
                    if receives >= max_receives:
                        error = MaxReceivesExceeded(
                            f"message {message_id} of queue {queue!r} was received "
                            f"{receives} times without an ack"
                        )
                        if row[5] is not None:
                            error = MaxReceivesExceeded(
                                f"{error}; the last handler error was {row[5]}: {row[6]}"
                            )
                    else:
                        try:
                            value = decode(body)
                        except Exception as exc:
                            # MessageDecodeError, UnknownMessageType, whatever an upcaster
                            # raised, RecursionError: never let one message stop the queue.
                            error = exc
                    if error is not None:
                        failed.append(
                            self._fail(tx, queue, row, Failure.of(error), now, dead_letters)
                        )
                        if group is not None and self._promote(tx, queue, group):
                            # The group's next message may be due before the rest of this
                            # batch: look again, so messages come out in due order.
                            break
                        continue
                    taken.append((receives + 1, hidden_until, seq))
                    out.append((value, f"{seq}.{receives + 1}", receives + 1, group))
                tx.executemany(
                    "UPDATE queue_messages SET receives = ?, in_flight = 1, visible_at = ? "
                    "WHERE seq = ?",
                    taken,
                )
        return out, failed

    def _requeue(self, tx: Transaction, queue: str, now: float, ttl: float | None) -> int:
        entries = take_retries(tx, _source(queue))
        for entry in entries:
            message_id = entry.message_id if entry.message_id is not None else new_id()
            self._insert(
                tx,
                queue,
                [(message_id, entry.message)],
                now=now,
                delay=0,
                ttl=ttl,
                group=entry.group,
            )
        return len(entries)

    def requeue_retries(self, queue: str, *, now: float, ttl: float | None) -> int:
        """See :meth:`QueueStore.requeue_retries`."""
        with self.database.transaction() as tx:
            return self._requeue(tx, queue, now, ttl)

    def _expire(
        self,
        tx: Transaction,
        queue: str,
        now: float,
        ttl: float | None,
        dead_letters: bool,
        failed: list[FailedMessage],
    ) -> None:
        rows = fetch_all(
            tx.conn,
            f"SELECT {_ROW}, in_flight, visible_at, sent_at, expires_at FROM queue_messages "
            "WHERE queue = ? AND expires_at <= ? ORDER BY expires_at, seq",
            (queue, now),
            binary=(_BODY,),
        )
        groups: set[str] = set()
        for row in rows:
            if row[9] and row[10] > now:
                continue  # in flight: its receiver may still ack it
            waited = ttl if ttl is not None else row[12] - row[11]
            error = MessageExpired(
                f"message {row[1]} of queue {queue!r} waited longer than its TTL ({waited} s)"
            )
            failed.append(self._fail(tx, queue, row, Failure.of(error), now, dead_letters))
            if row[3] is not None:
                groups.add(row[3])
        for group in sorted(groups):
            self._promote(tx, queue, group)

    @staticmethod
    def _fail(
        tx: Transaction,
        queue: str,
        row: Sequence[Any],
        failure: Failure,
        now: float,
        dead_letters: bool,
    ) -> FailedMessage:
        """Move a row to the dead letters (or drop it) in ``tx``."""
        seq, message_id, body, group, receives = row[:5]
        tx.execute("DELETE FROM queue_messages WHERE seq = ?", (seq,))
        dead_letter = None
        if dead_letters:
            dead_letter = insert_dead_letter(
                tx,
                _source(queue),
                body,
                key=None,
                status="dead",
                failure=failure,
                attempts=receives,
                first_failed_at=row[8] if row[8] is not None else now,
                last_failed_at=now,
                created_at=now,
                type_name=describe_raw(body)[0],
                message_id=message_id,
                group=group,
            )
        return FailedMessage(queue, message_id, group, failure, dead_letter)

    @staticmethod
    def _promote(tx: Transaction, queue: str, group: str) -> bool:
        """Make the first message of ``group`` visible when it is not yet; True if it was
        made so."""
        head = tx.execute(
            "SELECT seq, visible_at FROM queue_messages WHERE queue = ? AND queue_group = ? "
            "ORDER BY seq LIMIT 1",
            (queue, group),
        ).fetchone()
        if head is None or head[1] is not None:
            return False
        tx.execute("UPDATE queue_messages SET visible_at = not_before WHERE seq = ?", (head[0],))
        return True

    # -- settling -----------------------------------------------------------------------

    @staticmethod
    def _holder(tx: Transaction, queue: str, receipt: str) -> tuple[int, int, str | None]:
        """(seq, receives, group) of the message a valid receipt holds; raises StaleReceipt."""
        seq, count = _parse(queue, receipt)
        row = tx.execute(
            "SELECT receives, in_flight, queue_group FROM queue_messages "
            "WHERE seq = ? AND queue = ?",
            (seq, queue),
        ).fetchone()
        if row is None:
            raise StaleReceipt(
                queue,
                receipt,
                "the message is no longer in the queue (acked, dead-lettered or expired)",
            )
        if row[0] != count:
            raise StaleReceipt(
                queue,
                receipt,
                f"its visibility timeout ran out and the message was received again "
                f"(receive #{row[0]}); that receiver owns it now",
            )
        if not row[1]:
            raise StaleReceipt(queue, receipt, "the message was nacked with it already")
        return seq, count, row[2]

    def ack(self, queue: str, receipt: str) -> None:
        """See :meth:`QueueStore.ack`."""
        seq, count = _parse(queue, receipt)
        with self.database.transaction() as tx:
            row = tx.execute(
                "DELETE FROM queue_messages WHERE seq = ? AND queue = ? AND receives = ? "
                "AND in_flight = 1 RETURNING queue_group",
                (seq, queue, count),
            ).fetchone()
            if row is None:
                self._holder(tx, queue, receipt)  # raises StaleReceipt, saying why
            elif row[0] is not None:
                self._promote(tx, queue, row[0])

    def ack_many(self, queue: str, receipts: Iterable[str]) -> None:
        """See :meth:`QueueStore.ack_many`."""
        stale: list[StaleReceipt] = []
        parsed: list[tuple[int, int, str]] = []
        for receipt in receipts:
            try:
                seq, count = _parse(queue, receipt)
            except StaleReceipt as exc:
                stale.append(exc)
                continue
            parsed.append((seq, count, receipt))
        with self.database.transaction() as tx:
            for start in range(0, len(parsed), _CHUNK):
                chunk = parsed[start : start + _CHUNK]
                held = {
                    row[0]: row[1:]
                    for row in tx.execute(
                        _held_sql(len(chunk)), (queue, *[seq for seq, _, _ in chunk])
                    )
                }
                gone: list[tuple[int]] = []
                groups: set[str] = set()
                for seq, count, receipt in chunk:
                    state = held.get(seq)
                    if state is None or state[0] != count or not state[1]:
                        try:
                            self._holder(tx, queue, receipt)
                        except StaleReceipt as exc:
                            stale.append(exc)
                        else:  # its row is still there: acked by an earlier receipt here
                            stale.append(StaleReceipt(queue, receipt, "it was given twice"))
                        continue
                    del held[seq]
                    gone.append((seq,))
                    if state[2] is not None:
                        groups.add(state[2])
                tx.executemany("DELETE FROM queue_messages WHERE seq = ?", gone)
                for group in sorted(groups):
                    self._promote(tx, queue, group)
        if stale:
            first = stale[0]
            more = f" (and {len(stale) - 1} more stale receipts)" if len(stale) > 1 else ""
            raise StaleReceipt(queue, first.receipt, first.reason + more)

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
        """See :meth:`QueueStore.nack`."""
        with self.database.transaction() as tx:
            seq, count, group = self._holder(tx, queue, receipt)
            if count >= max_receives:
                row = fetch_all(
                    tx.conn,
                    f"SELECT {_ROW} FROM queue_messages WHERE seq = ?",
                    (seq,),
                    binary=(_BODY,),
                )[0]
                if failure is None:
                    failure = Failure.of(
                        MaxReceivesExceeded(
                            f"message {row[1]} of queue {queue!r} was received {count} times "
                            "without an ack"
                        )
                    )
                failed = self._fail(tx, queue, row, failure, now, dead_letters)
                if group is not None:
                    self._promote(tx, queue, group)
                return failed
            if failure is None:
                tx.execute(
                    "UPDATE queue_messages SET in_flight = 0, visible_at = ? WHERE seq = ?",
                    (now + delay, seq),
                )
            else:
                tx.execute(
                    "UPDATE queue_messages SET in_flight = 0, visible_at = ?, error_type = ?, "
                    "error_message = ?, traceback = ?, "
                    "first_failed_at = coalesce(first_failed_at, ?) WHERE seq = ?",
                    (
                        now + delay,
                        failure.error_type,
                        failure.error_message,
                        failure.traceback,
                        now,
                        seq,
                    ),
                )
        return None

    def extend(self, queue: str, receipt: str, *, until: float) -> None:
        """See :meth:`QueueStore.extend`."""
        with self.database.transaction() as tx:
            seq, _, _ = self._holder(tx, queue, receipt)
            tx.execute("UPDATE queue_messages SET visible_at = ? WHERE seq = ?", (until, seq))

    def extend_many(self, queue: str, receipts: Iterable[str], *, until: float) -> set[str]:
        """See :meth:`QueueStore.extend_many`."""
        lost: set[str] = set()
        with self.database.transaction() as tx:
            for receipt in receipts:
                try:
                    seq, count = _parse(queue, receipt)
                except StaleReceipt:
                    lost.add(receipt)
                    continue
                cursor = tx.execute(
                    "UPDATE queue_messages SET visible_at = ? WHERE seq = ? AND queue = ? "
                    "AND receives = ? AND in_flight = 1",
                    (until, seq, queue, count),
                )
                if cursor.rowcount == 0:
                    lost.add(receipt)
        return lost

    def release(self, queue: str, receipts: Iterable[str], *, now: float) -> None:
        """See :meth:`QueueStore.release`."""
        with self.database.transaction() as tx:
            for receipt in receipts:
                try:
                    seq, count = _parse(queue, receipt)
                except StaleReceipt:
                    continue
                tx.execute(
                    "UPDATE queue_messages SET in_flight = 0, visible_at = ?, "
                    "receives = receives - 1 WHERE seq = ? AND queue = ? AND receives = ? "
                    "AND in_flight = 1",
                    (now, seq, queue, count),
                )

    # -- looking ------------------------------------------------------------------------

    def _one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...]:
        conn = self.database.read_connection()
        try:
            row: tuple[Any, ...] = conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading a work queue", self.database.path) from exc
        return row

    def stats(self, queue: str, *, now: float) -> QueueStats:
        """See :meth:`QueueStore.stats`."""
        in_flight, delayed, total, oldest = self._one(
            "SELECT coalesce(sum(f), 0), coalesce(sum(NOT f AND coalesce(visible_at, "
            "not_before) > ?), 0), count(*), min(sent_at) FROM (SELECT in_flight = 1 "
            "AND visible_at > ? AS f, visible_at, not_before, sent_at FROM queue_messages "
            "WHERE queue = ?)",
            (now, now, queue),
        )
        return QueueStats(
            name=queue,
            depth=total - in_flight - delayed,
            in_flight=in_flight,
            delayed=delayed,
            oldest_age=None if oldest is None else max(0.0, now - oldest),
        )

    def count(self, queue: str) -> int:
        """See :meth:`QueueStore.count`."""
        return int(self._one("SELECT count(*) FROM queue_messages WHERE queue = ?", (queue,))[0])

    def purge(self, queue: str) -> int:
        """See :meth:`QueueStore.purge`."""
        with self.database.transaction() as tx:
            return tx.execute("DELETE FROM queue_messages WHERE queue = ?", (queue,)).rowcount

    def names(self) -> list[str]:
        """See :meth:`QueueStore.names`."""
        conn = self.database.read_connection()
        try:
            rows = fetch_all(conn, "SELECT DISTINCT queue FROM queue_messages ORDER BY queue")
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading work queues", self.database.path) from exc
        return [row[0] for row in rows]

    def __repr__(self) -> str:
        return f"<SQLiteQueueStore {self.database.path!r}>"
