"""Work queues in the ``queue_messages`` and ``queue_dedup`` tables of an eventlite
PostgreSQL schema.

A queue's failed messages become rows of ``dead_letters`` in the same transaction (see
:mod:`eventlite.postgres.dead_letters`).

**Competing consumers.** Receivers in many processes run at once. A receive selects the
visible messages it hands out with ``FOR UPDATE SKIP LOCKED``: a row another receiver
has locked is passed over, and one it hid and committed meanwhile no longer matches
(PostgreSQL checks the condition again on the row's newest version), so no message is
handed out twice within its visibility timeout. Acks, nacks and extensions find their
message by receipt (sequence number and receive count) under the row's lock, so a
receipt whose message was received again is stale, whoever commits first. Expiries and
retried dead letters are taken with ``SKIP LOCKED`` too: each is dead-lettered or
requeued once.

**FIFO groups.** A group shows one message at a time: the first of the group is visible,
the others wait with ``visible_at`` NULL, and whoever removes a group's first message
makes the next one visible. Everything that adds to a group or removes a message from
one takes the group's advisory lock (transaction-level) first, so a send never misses
the removal of the last message of its group, and positions in a group follow commit
order. Locks are taken in one order everywhere (the message's row, then its group's
lock, then the next message of the group), and a receive waits for at most one group
lock (further ones it only tries, leaving the rest of its batch to the next receive), so
two transactions never wait for each other in a circle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

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
from ._database import PostgresDatabase, PostgresTransaction
from .dead_letters import decode_message, encode_message, insert_dead_letter, take_retries

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresQueueStore"]

T = TypeVar("T")

_ROW = (
    "seq, id, body, body_is_text, queue_group, receives, error_type, error_message, "
    "traceback, first_failed_at"
)
# (seq, id, body, group, receives, error_type, error_message, traceback, first_failed_at)
_Row = tuple[int, str, "str | bytes", "str | None", int, "str | None", "str | None", Any, Any]

_INSERT = (
    "INSERT INTO queue_messages (queue, id, body, body_is_text, queue_group, not_before, "
    "visible_at, expires_at, sent_at) "
    "SELECT %s, u.id, u.body, u.is_text, %s, %s, u.visible_at, %s, %s "
    "FROM unnest(%s::text[], %s::bytea[], %s::bool[], %s::float8[]) "
    "WITH ORDINALITY AS u(id, body, is_text, visible_at, n) ORDER BY u.n"
)
_GROUP_BUSY = "SELECT 1 FROM queue_messages WHERE queue = %s AND queue_group = %s LIMIT 1"
_READY = (
    f"SELECT {_ROW} FROM queue_messages WHERE queue = %s AND visible_at <= %s "
    "ORDER BY visible_at, seq LIMIT %s FOR UPDATE SKIP LOCKED"
)
_TAKE = (
    "UPDATE queue_messages AS m SET receives = u.receives, in_flight = true, visible_at = %s "
    "FROM unnest(%s::int8[], %s::int4[]) AS u(seq, receives) WHERE m.seq = u.seq"
)
_EXPIRING = (
    "SELECT seq, queue_group FROM queue_messages WHERE queue = %(queue)s "
    "AND expires_at <= %(now)s AND NOT (in_flight AND visible_at > %(now)s)"
)
_EXPIRED = (
    f"SELECT {_ROW}, sent_at, expires_at FROM queue_messages WHERE seq = ANY(%(seqs)s) "
    "AND expires_at <= %(now)s AND NOT (in_flight AND visible_at > %(now)s) "
    "ORDER BY expires_at, seq FOR UPDATE SKIP LOCKED"
)
_PROMOTE = (
    "UPDATE queue_messages SET visible_at = not_before WHERE seq = (SELECT seq FROM "
    "queue_messages WHERE queue = %s AND queue_group = %s ORDER BY seq LIMIT 1) "
    "AND visible_at IS NULL RETURNING seq"
)
_HOLDER = (
    "SELECT receives, in_flight, queue_group FROM queue_messages WHERE seq = %s AND queue = %s"
)
_STATS = (
    "SELECT count(*) FILTER (WHERE in_flight AND visible_at > %(now)s), "
    "count(*) FILTER (WHERE NOT (in_flight AND visible_at > %(now)s) "
    "AND coalesce(visible_at, not_before) > %(now)s), count(*), min(sent_at) "
    "FROM queue_messages WHERE queue = %(queue)s"
)


def _source(queue: str) -> str:
    return "queue:" + queue


def _parse(queue: str, receipt: str) -> tuple[int, int]:
    try:
        seq, count = receipt.split(".")
        return int(seq), int(count)
    except (AttributeError, ValueError):
        raise StaleReceipt(queue, str(receipt), "not a receipt of a work queue") from None


def _row(row: Sequence[Any]) -> _Row:
    """A ``SELECT {_ROW}`` row with its body decoded (bytes when it is not text)."""
    seq, message_id, body, is_text, group, receives, etype, emessage, trace, first = row[:10]
    return (
        seq,
        message_id,
        decode_message(body, is_text),
        group,
        receives,
        etype,
        emessage,
        trace,
        first,
    )


class PostgresQueueStore(QueueStore):
    """The :class:`QueueStore` contract in the schema (see the module doc for the
    locking); every write joins the calling thread's open transaction of ``database``."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""

    def _group_lock(self, queue: str, group: str) -> int:
        return self.database.lock_key("queue-group", queue, group)

    # -- sending ------------------------------------------------------------------------

    @staticmethod
    def _insert(
        conn: psycopg.Connection[Any],
        queue: str,
        rows: Sequence[tuple[str, str | bytes]],
        *,
        now: float,
        delay: float,
        ttl: float | None,
        group: str | None,
    ) -> None:
        """Insert ``rows`` in order (the caller holds the group's lock, if any)."""
        not_before = now + delay
        # A message joins its group's line: visible only when it is the group's first.
        first_visible: float | None = not_before
        if group is not None and conn.execute(_GROUP_BUSY, (queue, group)).fetchone():
            first_visible = None
        ids, bodies, texts, visible = [], [], [], []
        for i, (message_id, body) in enumerate(rows):
            raw, is_text = encode_message(body)
            ids.append(message_id)
            bodies.append(raw)
            texts.append(is_text)
            visible.append(first_visible if i == 0 or group is None else None)
        conn.execute(
            _INSERT,
            (
                queue,
                group,
                not_before,
                None if ttl is None else now + ttl,
                now,
                ids,
                bodies,
                texts,
                visible,
            ),
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
        if group is None:

            def send(conn: psycopg.Connection[Any]) -> None:
                self._insert(conn, queue, messages, now=now, delay=delay, ttl=ttl, group=None)

            self.database.run("sending to a work queue", send, repeat=False)
            return
        with self.database.transaction() as tx:
            tx.lock([self._group_lock(queue, group)])
            self._insert(tx.conn, queue, messages, now=now, delay=delay, ttl=ttl, group=group)

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
        """See :meth:`QueueStore.send_deduplicated`: the dedup row is claimed with
        ``INSERT ... ON CONFLICT``, so of two senders of one dedup id at the same moment
        one sends and the other gets its id."""
        with self.database.transaction() as tx:
            tx.execute(
                "DELETE FROM queue_dedup WHERE (queue, dedup_id) IN (SELECT queue, dedup_id "
                "FROM queue_dedup WHERE queue = %s AND until <= %s LIMIT 100 "
                "FOR UPDATE SKIP LOCKED)",
                (queue, now),
            )
            claimed = tx.execute(
                "INSERT INTO queue_dedup AS d (queue, dedup_id, message_id, until) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (queue, dedup_id) DO UPDATE SET "
                "message_id = excluded.message_id, until = excluded.until "
                "WHERE d.until <= %s RETURNING message_id",
                (queue, dedup_id, message[0], now + window, now),
            ).fetchone()
            if claimed is None:
                row = tx.execute(
                    "SELECT message_id FROM queue_dedup WHERE queue = %s AND dedup_id = %s",
                    (queue, dedup_id),
                ).fetchone()
                assert row is not None  # locked by the INSERT above until the commit
                return str(row[0])
            if group is not None:
                tx.lock([self._group_lock(queue, group)])
            self._insert(tx.conn, queue, [message], now=now, delay=delay, ttl=ttl, group=group)
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
            held = self._prepare(tx, queue, now, ttl, dead_letters, failed)
            blocked = False
            while len(out) < max and not blocked:
                rows = [_row(r) for r in tx.execute(_READY, (queue, now, max - len(out)))]
                if not rows:
                    break
                taken: list[tuple[int, int]] = []
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
                        if group is not None and not self._lock_group(tx, queue, group, held):
                            # Another transaction holds its group: leave it (and the rest
                            # of the batch) to the next receive rather than wait.
                            blocked = True
                            break
                        failed.append(
                            self._fail(tx.conn, queue, row, Failure.of(error), now, dead_letters)
                        )
                        if group is not None and self._promote(tx.conn, queue, group):
                            # The group's next message may be due before the rest of this
                            # batch: look again, so messages come out in due order.
                            break
                        continue
                    taken.append((seq, receives + 1))
                    out.append((value, f"{seq}.{receives + 1}", receives + 1, group))
                if taken:
                    tx.execute(
                        _TAKE,
                        (hidden_until, [s for s, _ in taken], [c for _, c in taken]),
                    )
        return out, failed

    def _lock_group(self, tx: PostgresTransaction, queue: str, group: str, held: set[str]) -> bool:
        """Take the group's lock inside a receive: waiting for it only when no other group
        lock is held yet (so receives never wait in a circle); False when it is busy."""
        if group in held:
            return True
        key = self._group_lock(queue, group)
        if held:
            row = tx.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()
            if row is None or not row[0]:
                return False
        else:
            tx.lock([key])
        held.add(group)
        return True

    def _prepare(
        self,
        tx: PostgresTransaction,
        queue: str,
        now: float,
        ttl: float | None,
        dead_letters: bool,
        failed: list[FailedMessage],
    ) -> set[str]:
        """A receive's first steps: requeue the retried dead letters (with
        ``dead_letters``), then fail the messages past their TTL. Returns the groups whose
        locks it took (all at once, in order, before any message row)."""
        conn = tx.conn
        entries = take_retries(conn, _source(queue)) if dead_letters else []
        expiring = conn.execute(_EXPIRING, {"queue": queue, "now": now}).fetchall()
        groups = {e.group for e in entries if e.group is not None}
        groups.update(g for _, g in expiring if g is not None)
        tx.lock(self._group_lock(queue, g) for g in groups)
        for entry in entries:
            message_id = entry.message_id if entry.message_id is not None else new_id()
            self._insert(
                conn,
                queue,
                [(message_id, entry.message)],
                now=now,
                delay=0,
                ttl=ttl,
                group=entry.group,
            )
        if expiring:
            self._expire(conn, queue, [s for s, _ in expiring], now, ttl, dead_letters, failed)
        return groups

    def requeue_retries(self, queue: str, *, now: float, ttl: float | None) -> int:
        """See :meth:`QueueStore.requeue_retries`."""
        with self.database.transaction() as tx:
            entries = take_retries(tx.conn, _source(queue))
            tx.lock(self._group_lock(queue, e.group) for e in entries if e.group is not None)
            for entry in entries:
                message_id = entry.message_id if entry.message_id is not None else new_id()
                self._insert(
                    tx.conn,
                    queue,
                    [(message_id, entry.message)],
                    now=now,
                    delay=0,
                    ttl=ttl,
                    group=entry.group,
                )
            return len(entries)

    def _expire(
        self,
        conn: psycopg.Connection[Any],
        queue: str,
        seqs: list[int],
        now: float,
        ttl: float | None,
        dead_letters: bool,
        failed: list[FailedMessage],
    ) -> None:
        """Fail the messages ``seqs`` still past their TTL and not in flight (the caller
        holds their groups' locks); those another transaction holds are left to it."""
        rows = conn.execute(_EXPIRED, {"seqs": seqs, "now": now}).fetchall()
        groups: set[str] = set()
        for raw in rows:
            row = _row(raw)
            sent_at, expires_at = raw[10], raw[11]
            waited = ttl if ttl is not None else expires_at - sent_at
            error = MessageExpired(
                f"message {row[1]} of queue {queue!r} waited longer than its TTL ({waited} s)"
            )
            failed.append(self._fail(conn, queue, row, Failure.of(error), now, dead_letters))
            if row[3] is not None:
                groups.add(row[3])
        for group in sorted(groups):
            self._promote(conn, queue, group)

    @staticmethod
    def _fail(
        conn: psycopg.Connection[Any],
        queue: str,
        row: Sequence[Any],
        failure: Failure,
        now: float,
        dead_letters: bool,
    ) -> FailedMessage:
        """Move a locked row to the dead letters (or drop it)."""
        seq, message_id, body, group, receives = row[:5]
        conn.execute("DELETE FROM queue_messages WHERE seq = %s", (seq,))
        dead_letter = None
        if dead_letters:
            dead_letter = insert_dead_letter(
                conn,
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
    def _promote(conn: psycopg.Connection[Any], queue: str, group: str) -> bool:
        """Make the first message of ``group`` visible when it is not yet (the caller holds
        the group's lock); True if it was made so."""
        return conn.execute(_PROMOTE, (queue, group)).fetchone() is not None

    # -- settling -----------------------------------------------------------------------

    @staticmethod
    def _holder(
        conn: psycopg.Connection[Any], queue: str, receipt: str, *, lock: bool = False
    ) -> tuple[int, int, str | None]:
        """(seq, receives, group) of the message a valid receipt holds, its row locked
        with ``lock``; raises StaleReceipt saying why it is stale."""
        seq, count = _parse(queue, receipt)
        row = conn.execute(_HOLDER + (" FOR UPDATE" if lock else ""), (seq, queue)).fetchone()
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
                "DELETE FROM queue_messages WHERE seq = %s AND queue = %s AND receives = %s "
                "AND in_flight RETURNING queue_group",
                (seq, queue, count),
            ).fetchone()
            if row is None:
                self._holder(tx.conn, queue, receipt)  # raises StaleReceipt, saying why
                raise StaleReceipt(queue, receipt, "it was settled at the same moment")
            if row[0] is not None:
                tx.lock([self._group_lock(queue, row[0])])
                self._promote(tx.conn, queue, row[0])

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
            deleted = {
                (int(s), int(c)): g
                for s, c, g in tx.execute(
                    "DELETE FROM queue_messages WHERE queue = %s AND in_flight AND "
                    "(seq, receives) IN (SELECT * FROM unnest(%s::int8[], %s::int4[])) "
                    "RETURNING seq, receives, queue_group",
                    (queue, [s for s, _, _ in parsed], [c for _, c, _ in parsed]),
                ).fetchall()
            }
            acked: set[tuple[int, int]] = set()
            for seq, count, receipt in parsed:
                if (seq, count) in deleted and (seq, count) not in acked:
                    acked.add((seq, count))
                    continue
                if (seq, count) in acked:
                    stale.append(StaleReceipt(queue, receipt, "it was given twice"))
                    continue
                try:
                    self._holder(tx.conn, queue, receipt)
                except StaleReceipt as exc:
                    stale.append(exc)
                else:
                    stale.append(StaleReceipt(queue, receipt, "it was settled at the same moment"))
            groups = sorted({g for g in deleted.values() if g is not None})
            tx.lock(self._group_lock(queue, g) for g in groups)
            for group in groups:
                self._promote(tx.conn, queue, group)
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
            seq, count, group = self._holder(tx.conn, queue, receipt, lock=True)
            if count >= max_receives:
                row = _row(
                    tx.execute(
                        f"SELECT {_ROW} FROM queue_messages WHERE seq = %s", (seq,)
                    ).fetchall()[0]
                )
                if failure is None:
                    failure = Failure.of(
                        MaxReceivesExceeded(
                            f"message {row[1]} of queue {queue!r} was received {count} times "
                            "without an ack"
                        )
                    )
                if group is not None:
                    tx.lock([self._group_lock(queue, group)])
                failed = self._fail(tx.conn, queue, row, failure, now, dead_letters)
                if group is not None:
                    self._promote(tx.conn, queue, group)
                return failed
            if failure is None:
                tx.execute(
                    "UPDATE queue_messages SET in_flight = false, visible_at = %s WHERE seq = %s",
                    (now + delay, seq),
                )
            else:
                tx.execute(
                    "UPDATE queue_messages SET in_flight = false, visible_at = %s, "
                    "error_type = %s, error_message = %s, traceback = %s, "
                    "first_failed_at = coalesce(first_failed_at, %s) WHERE seq = %s",
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
            seq, _, _ = self._holder(tx.conn, queue, receipt, lock=True)
            tx.execute("UPDATE queue_messages SET visible_at = %s WHERE seq = %s", (until, seq))

    def _held(
        self, receipts: Iterable[str], queue: str
    ) -> tuple[list[tuple[int, int, str]], set[str]]:
        """The receipts that parse, as (seq, count, receipt), and those that do not."""
        parsed: list[tuple[int, int, str]] = []
        bad: set[str] = set()
        for receipt in receipts:
            try:
                seq, count = _parse(queue, receipt)
            except StaleReceipt:
                bad.add(receipt)
                continue
            parsed.append((seq, count, receipt))
        return parsed, bad

    def extend_many(self, queue: str, receipts: Iterable[str], *, until: float) -> set[str]:
        """See :meth:`QueueStore.extend_many`."""
        parsed, lost = self._held(receipts, queue)
        if not parsed:
            return lost
        params = (until, [s for s, _, _ in parsed], [c for _, c, _ in parsed], queue)

        def extend(conn: psycopg.Connection[Any]) -> set[tuple[int, int]]:
            return {
                (int(s), int(c))
                for s, c in conn.execute(
                    "UPDATE queue_messages AS m SET visible_at = %s "
                    "FROM unnest(%s::int8[], %s::int4[]) AS u(seq, receives) "
                    "WHERE m.seq = u.seq AND m.receives = u.receives AND m.queue = %s "
                    "AND m.in_flight RETURNING m.seq, m.receives",
                    params,
                ).fetchall()
            }

        held = self.database.run("extending work queue messages", extend)
        lost.update(r for s, c, r in parsed if (s, c) not in held)
        return lost

    def release(self, queue: str, receipts: Iterable[str], *, now: float) -> None:
        """See :meth:`QueueStore.release`."""
        parsed, _ = self._held(receipts, queue)
        if not parsed:
            return
        params = (now, [s for s, _, _ in parsed], [c for _, c, _ in parsed], queue)

        def release(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "UPDATE queue_messages AS m SET in_flight = false, visible_at = %s, "
                "receives = m.receives - 1 FROM unnest(%s::int8[], %s::int4[]) "
                "AS u(seq, receives) WHERE m.seq = u.seq AND m.receives = u.receives "
                "AND m.queue = %s AND m.in_flight",
                params,
            )

        self.database.run("releasing work queue messages", release, repeat=False)

    # -- looking ------------------------------------------------------------------------

    def _one(self, sql: str, params: Any) -> tuple[Any, ...]:
        row = self.database.run(
            "reading a work queue", lambda conn: conn.execute(sql, params).fetchone()
        )
        assert row is not None
        return tuple(row)

    def stats(self, queue: str, *, now: float) -> QueueStats:
        """See :meth:`QueueStore.stats`."""
        in_flight, delayed, total, oldest = self._one(_STATS, {"now": now, "queue": queue})
        return QueueStats(
            name=queue,
            depth=int(total) - int(in_flight) - int(delayed),
            in_flight=int(in_flight),
            delayed=int(delayed),
            oldest_age=None if oldest is None else max(0.0, now - oldest),
        )

    def count(self, queue: str) -> int:
        """See :meth:`QueueStore.count`."""
        return int(self._one("SELECT count(*) FROM queue_messages WHERE queue = %s", (queue,))[0])

    def purge(self, queue: str) -> int:
        """See :meth:`QueueStore.purge`. Messages another transaction is settling or
        receiving at this instant are left (waiting for them could deadlock)."""
        with self.database.transaction() as tx:
            return tx.execute(
                "DELETE FROM queue_messages WHERE seq IN (SELECT seq FROM queue_messages "
                "WHERE queue = %s FOR UPDATE SKIP LOCKED)",
                (queue,),
            ).rowcount

    def names(self) -> list[str]:
        """See :meth:`QueueStore.names`."""
        rows = self.database.run(
            "reading work queues",
            lambda conn: conn.execute(
                'SELECT queue FROM queue_messages GROUP BY queue ORDER BY queue COLLATE "C"'
            ).fetchall(),
        )
        return [row[0] for row in rows]

    def __repr__(self) -> str:
        return f"<PostgresQueueStore {self.database.description}>"
