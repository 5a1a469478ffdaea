"""The sequenced dead-letter queue: messages that exhausted their retries, kept in order.

A dead letter is a message some consumer (a durable subscriber, a bridge, a work queue)
could not handle: its envelope as wire JSON (or the raw text, when it could not even be
decoded), who failed (the *source*: a subscriber name, or ``queue:<name>`` for a work
queue), the error with its traceback, how many attempts were made and when.

**Sequenced.** Messages with the same ordering *key* must reach a consumer in order. While
a message of key ``K`` is dead for source ``S``, later messages of ``K`` for ``S`` are
*parked* behind it (stored, in order, with status ``parked``) instead of overtaking it;
other keys flow on. The entries of one source and key form a *line*, ordered by id, and
after every change the line is kept in this shape:

- every entry before the first ``dead`` one is ``retrying`` (due for redelivery, in order);
- every entry after it is ``parked``, except other ``dead`` ones, which stay dead.

So :meth:`DeadLetterQueue.retry` of the first dead letter releases it and the parked
entries behind it, up to the next dead one; :meth:`~DeadLetterQueue.discard` of it releases
them too; :meth:`~DeadLetterQueue.fail_again` puts the line back to sleep. Messages without
a key (``key=None``) have no order to keep: each is a line of its own, and never parks
anything.

**Work queues are not sequenced.** A work queue records its dead letters with
``key=None``, a FIFO group only in :attr:`DeadLetter.group`. So the DLQ does not hold a
group behind its dead message: the queue hands out the group's next message at once, and
a retried one goes back to the end of its group, after the messages of the group that
overtook it (see :mod:`eventlite.queue`).

**Who redelivers.** The DLQ only keeps state; the consumer that owns a source redelivers
its ``retrying`` entries (:meth:`~DeadLetterQueue.claim_retries`, then
:meth:`~DeadLetterQueue.resolve` or :meth:`~DeadLetterQueue.fail_again`, or all of that
through :meth:`~DeadLetterQueue.redeliver`). Because the state is in the file, the CLI in
another process can ask for a retry and the consumer picks it up. A work queue puts its own
retried dead letters back into the queue (see :mod:`eventlite.queue`).

**Transactions.** Every write joins the calling thread's open
``database.transaction()`` when there is one, so a relay can dead-letter a message and
move its checkpoint atomically.
"""

from __future__ import annotations

import builtins
import enum
import json
import logging
import sqlite3
import traceback as _traceback
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any, Final

import attrs

from .clock import Clock, SystemClock, to_datetime
from .codec import Codec
from .envelope import Envelope
from .exceptions import EventliteError
from .sqlite._database import Database, Transaction, where_equal

__all__ = [
    "AlertHook",
    "DeadLetter",
    "DeadLetterNotFound",
    "DeadLetterQueue",
    "DeadLetterStatus",
    "queue_source",
]

_log = logging.getLogger("eventlite.dlq")

AlertHook = Callable[[int, "DeadLetter"], object]
"""``on_alert(count, dead_letter)``: told that the DLQ holds ``count`` entries (at least the
threshold) right after ``dead_letter`` was added."""

QUEUE_SOURCE_PREFIX: Final = "queue:"
"""Sources of dead letters from work queues start with this (``queue:<name>``)."""


def queue_source(name: str) -> str:
    """The DLQ source of the work queue called ``name``: ``"queue:" + name``."""
    return QUEUE_SOURCE_PREFIX + name


class DeadLetterStatus(enum.Enum):
    """Where a dead letter stands."""

    DEAD = "dead"
    """Failed after all its attempts; waits for an operator's ``retry`` or ``discard``."""
    PARKED = "parked"
    """Never failed itself: waits behind a dead letter of the same source and key."""
    RETRYING = "retrying"
    """Released for redelivery; the consumer of its source will deliver it, in order."""


_DEAD = DeadLetterStatus.DEAD.value
_PARKED = DeadLetterStatus.PARKED.value
_RETRYING = DeadLetterStatus.RETRYING.value


class DeadLetterNotFound(EventliteError, LookupError):
    """No dead letter has this id (it was never added, or was resolved, discarded or
    purged)."""

    def __init__(self, id: int) -> None:
        self.id = id
        super().__init__(f"no dead letter with id {id} (resolved, discarded or never added)")


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else to_datetime(seconds)


@attrs.frozen
class DeadLetter:
    """One entry of the dead-letter queue, as stored."""

    id: int
    """The entry's number: increasing in the order entries were added, never reused."""
    source: str
    """Who failed: the subscriber's name, or ``queue:<name>`` for a work queue."""
    key: str | None
    """The ordering key (stream id or publisher's key); None for a message without order."""
    status: DeadLetterStatus
    """``dead``, ``parked`` (waiting behind a dead letter of its key) or ``retrying``."""
    message: str | bytes
    """The envelope as wire JSON, or the raw text received when it could not be decoded."""
    type_name: str | None
    """The message's registered type name, when known."""
    message_id: str | None
    """The envelope id, when known."""
    position: int | None
    """The stored event's global position, for an event from the store."""
    error_type: str | None
    """The last failure's exception class (``module.QualName``; builtins unqualified);
    None for an entry that was parked and never failed."""
    error_message: str | None
    """``str()`` of the last failure's exception."""
    traceback: str | None
    """The last failure's formatted traceback."""
    attempts: int
    """How many delivery attempts failed (0 for a parked entry)."""
    first_failed_at: datetime | None
    """When the first attempt failed (UTC); None for a parked entry."""
    last_failed_at: datetime | None
    """When the last attempt failed (UTC); None for a parked entry."""
    created_at: datetime
    """When the entry was added to the DLQ (UTC)."""
    group: str | None = None
    """The work queue's FIFO group of a message dead-lettered by a queue, else None."""

    def envelope(self, codec: Codec) -> Envelope:
        """The message's envelope, decoded by ``codec``.

        Raises the codec's :class:`~eventlite.exceptions.MessageDecodeError` or
        :class:`~eventlite.exceptions.UnknownMessageType` when the stored text cannot be
        decoded (which may be why it is here).
        """
        return codec.decode_envelope(self.message)

    def __str__(self) -> str:
        head = f"#{self.id} {self.status.value} source={self.source}"
        if self.key is not None:
            head += f" key={self.key}"
        if self.group is not None:
            head += f" group={self.group}"
        what = self.type_name or "<unknown type>"
        if self.message_id is not None:
            what += f" {self.message_id}"
        if self.position is not None:
            what += f" at position {self.position}"
        lines = [head, f"  message: {what}"]
        if self.error_type is not None:
            lines.append(f"  error: {self.error_type}: {self.error_message}")
        if self.first_failed_at is not None and self.last_failed_at is not None:
            lines.append(
                f"  attempts: {self.attempts}, first failed {self.first_failed_at.isoformat()}, "
                f"last failed {self.last_failed_at.isoformat()}"
            )
        if self.status is DeadLetterStatus.PARKED and self.error_type is None:
            lines.append(f"  parked since {self.created_at.isoformat()} behind a dead letter")
        return "\n".join(lines)


_COLUMNS = (
    "id, source, key, status, message, type_name, message_id, position, error_type, "
    "error_message, traceback, attempts, first_failed_at, last_failed_at, created_at, "
    "queue_group"
)
_SELECT = f"SELECT {_COLUMNS} FROM dead_letters"
_INSERT = (
    "INSERT INTO dead_letters (source, key, queue_group, status, message, type_name, "
    "message_id, position, error_type, error_message, traceback, attempts, "
    "first_failed_at, last_failed_at, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BLOCKED = "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE source = ? AND key = ?)"


def _row_to_dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        id=row[0],
        source=row[1],
        key=row[2],
        status=DeadLetterStatus(row[3]),
        message=row[4],
        type_name=row[5],
        message_id=row[6],
        position=row[7],
        error_type=row[8],
        error_message=row[9],
        traceback=row[10],
        attempts=row[11],
        first_failed_at=_when(row[12]),
        last_failed_at=_when(row[13]),
        created_at=to_datetime(row[14]),
        group=row[15],
    )


def error_type_name(error: BaseException) -> str:
    """``module.QualName`` of an exception's class; builtins by their bare name."""
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def error_fields(error: BaseException) -> tuple[str, str, str]:
    """(type name, message, formatted traceback) of an exception, as a dead letter keeps
    them."""
    text = "".join(_traceback.format_exception(type(error), error, error.__traceback__))
    return error_type_name(error), str(error), text


def _check_key(key: object) -> str | None:
    if key is not None and not isinstance(key, str):
        raise TypeError(f"a dead letter's key must be a str or None, got {key!r}")
    return key


def _seconds(value: datetime | None, default: float) -> float:
    if value is None:
        return default
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} (attach a timezone, e.g. UTC)")
    return value.timestamp()


class DeadLetterQueue:
    """The dead letters of every consumer, in the shared SQLite file (see the module doc).

    ``database`` is the file (shared with the event store, outbox and queues); ``codec``
    encodes the envelopes it is given (default: a :class:`Codec` over the default
    registry); ``clock`` dates every entry (default: the system clock).

    ``alert_threshold`` and ``on_alert``: after each committed :meth:`add` that leaves the
    DLQ holding ``alert_threshold`` entries or more (every status, every source, the new one
    included), ``on_alert(count, dead_letter)`` is called in the thread that committed,
    after the commit. It is called again on every further add while the count stays at or
    above the threshold; parking, retries and removals never call it. An exception from the
    hook is logged, not raised. With a threshold and no hook, the alert is a warning on the
    ``eventlite.dlq`` logger.

    Safe to use from many threads: every operation is one transaction of ``database``.
    """

    def __init__(
        self,
        database: Database,
        codec: Codec | None = None,
        *,
        clock: Clock | None = None,
        alert_threshold: int | None = None,
        on_alert: AlertHook | None = None,
    ) -> None:
        if not isinstance(database, Database):
            raise TypeError(
                f"DeadLetterQueue needs an eventlite Database (for example store.database), "
                f"got {type(database).__name__}"
            )
        if alert_threshold is not None and (
            isinstance(alert_threshold, bool)
            or not isinstance(alert_threshold, int)
            or alert_threshold < 1
        ):
            raise ValueError(f"alert_threshold must be an int >= 1, got {alert_threshold!r}")
        if on_alert is not None and alert_threshold is None:
            raise ValueError("on_alert needs an alert_threshold to know when to call it")
        self._db = database
        self.codec = codec if codec is not None else Codec()
        """The codec that encodes envelopes given to :meth:`add` and :meth:`park`."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """The clock that dates entries and ages them for :meth:`purge`."""
        self.alert_threshold = alert_threshold
        """The entry count at which :attr:`on_alert` is called, or None for no alert."""
        self.on_alert = on_alert
        """The alert hook (see the class doc)."""

    @property
    def database(self) -> Database:
        """The SQLite file the dead letters live in."""
        return self._db

    # -- recording ----------------------------------------------------------------------

    def _message_fields(
        self,
        envelope_or_raw: Envelope | str | bytes,
        type_name: str | None,
        message_id: str | None,
        position: int | None,
    ) -> tuple[str | bytes, str | None, str | None, int | None]:
        if isinstance(envelope_or_raw, Envelope):
            env = envelope_or_raw
            try:
                text: str | bytes = self.codec.encode_envelope(env)
            except Exception as exc:
                # Keep what can be kept: the message's repr is readable, though it cannot
                # be redelivered.
                _log.warning("dead letter %s: cannot encode the envelope (%s)", env.id, exc)
                text = repr(env)
            return (
                text,
                type_name if type_name is not None else env.type,
                message_id if message_id is not None else env.id,
                position if position is not None else env.position,
            )
        if not isinstance(envelope_or_raw, (str, bytes)):
            raise TypeError(
                "a dead letter holds an Envelope, or the raw str or bytes that could not be "
                f"decoded; got {type(envelope_or_raw).__name__}"
            )
        if type_name is None or message_id is None or position is None:
            # Raw text that is JSON at least: show what it says about itself.
            with suppress(ValueError, TypeError, UnicodeDecodeError):
                raw = json.loads(envelope_or_raw)
                if isinstance(raw, dict):
                    if type_name is None and isinstance(raw.get("type"), str):
                        type_name = raw["type"]
                    if message_id is None and isinstance(raw.get("id"), str):
                        message_id = raw["id"]
                    found = raw.get("position")
                    if position is None and isinstance(found, int) and not isinstance(found, bool):
                        position = found
        return envelope_or_raw, type_name, message_id, position

    def _insert(
        self,
        tx: Transaction,
        *,
        source: str,
        key: str | None,
        status: str,
        message: str | bytes,
        type_name: str | None,
        message_id: str | None,
        position: int | None,
        error: tuple[str, str, str] | None,
        attempts: int,
        first_failed_at: float | None,
        last_failed_at: float | None,
        group: str | None = None,
    ) -> int:
        """Insert one entry (no normalizing, no alert) and return its id."""
        if not isinstance(source, str) or not source:
            raise ValueError(f"a dead letter's source must be a non-empty str, got {source!r}")
        error_type, error_message, trace = error if error is not None else (None, None, None)
        cursor = tx.execute(
            _INSERT,
            (
                source,
                key,
                group,
                status,
                message,
                type_name,
                message_id,
                position,
                error_type,
                error_message,
                trace,
                attempts,
                first_failed_at,
                last_failed_at,
                self.clock.now(),
            ),
        )
        row_id = cursor.lastrowid
        assert row_id is not None
        return row_id

    def _after_add(self, tx: Transaction, dead_letter: DeadLetter) -> None:
        threshold = self.alert_threshold
        if threshold is None:
            return
        count = tx.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        if count >= threshold:
            tx.on_commit(lambda: self._alert(count, dead_letter))

    def _alert(self, count: int, dead_letter: DeadLetter) -> None:
        hook = self.on_alert
        if hook is None:
            _log.warning(
                "the dead-letter queue holds %d entries (alert threshold %s); latest: #%d "
                "from %s, %s: %s",
                count,
                self.alert_threshold,
                dead_letter.id,
                dead_letter.source,
                dead_letter.error_type,
                dead_letter.error_message,
            )
            return
        try:
            hook(count, dead_letter)
        except Exception:
            _log.exception("the dead-letter alert hook %r failed", hook)

    def add(
        self,
        source: str,
        envelope_or_raw: Envelope | str | bytes,
        *,
        key: str | None,
        error: BaseException,
        attempts: int,
        first_failed_at: datetime | None = None,
        position: int | None = None,
        type_name: str | None = None,
        message_id: str | None = None,
    ) -> DeadLetter:
        """Record a message that failed ``attempts`` times, ``error`` being the last failure.

        ``envelope_or_raw`` is the envelope (stored as wire JSON; type name, id and position
        are taken from it unless given) or the raw ``str``/``bytes`` that could not be
        decoded. ``key`` is its ordering key: while this entry is dead, later messages of
        the same source and key should be :meth:`park`\\ ed. ``first_failed_at`` defaults
        to now; the last failure is now. Returns the stored entry (status ``dead``).
        """
        key = _check_key(key)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
            raise ValueError(f"attempts must be an int >= 0, got {attempts!r}")
        if not isinstance(error, BaseException):
            raise TypeError(f"error must be the exception that failed, got {error!r}")
        message, type_name, message_id, position = self._message_fields(
            envelope_or_raw, type_name, message_id, position
        )
        now = self.clock.now()
        first = _seconds(first_failed_at, now)
        with self._db.transaction() as tx:
            row_id = self._insert(
                tx,
                source=source,
                key=key,
                status=_DEAD,
                message=message,
                type_name=type_name,
                message_id=message_id,
                position=position,
                error=error_fields(error),
                attempts=attempts,
                first_failed_at=first,
                last_failed_at=now,
            )
            dead_letter = self._get(tx.conn, row_id)
            self._after_add(tx, dead_letter)
        return dead_letter

    def park(
        self,
        source: str,
        envelope_or_raw: Envelope | str | bytes,
        *,
        key: str,
        position: int | None = None,
        type_name: str | None = None,
        message_id: str | None = None,
    ) -> DeadLetter:
        """Store a message of ``key`` behind the dead letter that blocks its key, undelivered.

        Call it instead of delivering when :meth:`is_blocked` says so. The entry is
        ``parked`` while a dead letter of its line is ahead of it. When the line ahead is
        only being retried (or is empty: the block was lifted meanwhile), it joins the
        retries at once and comes back ``retrying``, so the consumer still sees it after
        the others, in order.
        """
        if not isinstance(key, str):
            raise TypeError(
                f"only a message with a key can be parked (a str), got {key!r}; a message "
                "without a key has no order to keep, so deliver it"
            )
        message, type_name, message_id, position = self._message_fields(
            envelope_or_raw, type_name, message_id, position
        )
        with self._db.transaction() as tx:
            row_id = self._insert(
                tx,
                source=source,
                key=key,
                status=_PARKED,
                message=message,
                type_name=type_name,
                message_id=message_id,
                position=position,
                error=None,
                attempts=0,
                first_failed_at=None,
                last_failed_at=None,
            )
            self._normalize(tx, source, key)
            return self._get(tx.conn, row_id)

    def is_blocked(self, source: str, key: str | None) -> bool:
        """Whether a message of ``key`` for ``source`` must be parked rather than delivered.

        True while any entry (dead, parked or retrying) of that source and key is in the
        DLQ; always False for ``key=None``. One indexed lookup in the file, so it sees what
        other processes (the CLI) did.
        """
        if key is None:
            return False
        conn = self._db.read_connection()
        return bool(conn.execute(_BLOCKED, (source, key)).fetchone()[0])

    # -- keeping lines in order -----------------------------------------------------------

    def _normalize(self, tx: Transaction, source: str, key: str | None) -> None:
        """Give the line of (source, key) its shape: retrying up to the first dead entry,
        parked after it (see the module doc)."""
        if key is None:
            # A message without a key is a line of its own and never parks.
            return
        first_dead = tx.execute(
            "SELECT min(id) FROM dead_letters WHERE source = ? AND key = ? AND status = ?",
            (source, key, _DEAD),
        ).fetchone()[0]
        if first_dead is None:
            tx.execute(
                "UPDATE dead_letters SET status = ? WHERE source = ? AND key = ? AND status = ?",
                (_RETRYING, source, key, _PARKED),
            )
            return
        tx.execute(
            "UPDATE dead_letters SET status = ? "
            "WHERE source = ? AND key = ? AND status = ? AND id < ?",
            (_RETRYING, source, key, _PARKED, first_dead),
        )
        tx.execute(
            "UPDATE dead_letters SET status = ? "
            "WHERE source = ? AND key = ? AND status = ? AND id > ?",
            (_PARKED, source, key, _RETRYING, first_dead),
        )

    def _line_statuses(self, tx: Transaction, source: str, key: str) -> dict[int, str]:
        rows = tx.execute(
            "SELECT id, status FROM dead_letters WHERE source = ? AND key = ?", (source, key)
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    # -- reading ------------------------------------------------------------------------

    def _get(self, conn: sqlite3.Connection, id: int) -> DeadLetter:
        row = conn.execute(f"{_SELECT} WHERE id = ?", (id,)).fetchone()
        if row is None:
            raise DeadLetterNotFound(id)
        return _row_to_dead_letter(row)

    def get(self, id: int) -> DeadLetter:
        """The entry with this id; raises :class:`DeadLetterNotFound`."""
        return self._get(self._db.read_connection(), id)

    def list(
        self,
        source: str | None = None,
        *,
        status: DeadLetterStatus | str | None = None,
        limit: int | None = 100,
    ) -> builtins.list[DeadLetter]:
        """Entries in the order they were added, optionally of one source and one status,
        at most ``limit`` of them (None for all)."""
        where, params = self._filter(source, status)
        sql = f"{_SELECT}{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._db.read_connection().execute(sql, params).fetchall()
        return [_row_to_dead_letter(row) for row in rows]

    def count(
        self, source: str | None = None, *, status: DeadLetterStatus | str | None = None
    ) -> int:
        """How many entries the DLQ holds, optionally of one source and one status."""
        where, params = self._filter(source, status)
        row = (
            self._db.read_connection()
            .execute(f"SELECT count(*) FROM dead_letters{where}", params)
            .fetchone()
        )
        return int(row[0])

    def sources(self) -> dict[str, int]:
        """Every source with entries, and how many it has."""
        rows = (
            self._db.read_connection()
            .execute("SELECT source, count(*) FROM dead_letters GROUP BY source ORDER BY source")
            .fetchall()
        )
        return {row[0]: row[1] for row in rows}

    @staticmethod
    def _filter(
        source: str | None, status: DeadLetterStatus | str | None
    ) -> tuple[str, builtins.list[Any]]:
        return where_equal(
            source=source, status=None if status is None else DeadLetterStatus(status).value
        )

    # -- redelivery -----------------------------------------------------------------------

    def retry(self, id: int) -> builtins.list[DeadLetter]:
        """Release an entry for redelivery by its consumer, with the entries parked behind it.

        Returns the entries this call made ``retrying``, in order: the entry and the parked
        ones behind it up to the next dead entry of its line. An entry behind an earlier
        dead letter of its key cannot overtake it: it becomes ``parked`` and is released
        with that one. Raises :class:`DeadLetterNotFound`.
        """
        with self._db.transaction() as tx:
            entry = self._get(tx.conn, id)
            if entry.key is None:
                if entry.status is DeadLetterStatus.RETRYING:
                    return []
                tx.execute("UPDATE dead_letters SET status = ? WHERE id = ?", (_RETRYING, id))
                return [self._get(tx.conn, id)]
            before = self._line_statuses(tx, entry.source, entry.key)
            tx.execute("UPDATE dead_letters SET status = ? WHERE id = ?", (_RETRYING, id))
            self._normalize(tx, entry.source, entry.key)
            after = self._line_statuses(tx, entry.source, entry.key)
            released = sorted(
                i for i, s in after.items() if s == _RETRYING and before[i] != _RETRYING
            )
            return [self._get(tx.conn, i) for i in released]

    def retry_all(self, source: str) -> int:
        """Release every entry of ``source`` for redelivery; returns how many changed."""
        with self._db.transaction() as tx:
            cursor = tx.execute(
                "UPDATE dead_letters SET status = ? WHERE source = ? AND status != ?",
                (_RETRYING, source, _RETRYING),
            )
            return cursor.rowcount

    def claim_retries(self, source: str, *, limit: int = 100) -> builtins.list[DeadLetter]:
        """The ``retrying`` entries of ``source``, oldest first: what its consumer must
        redeliver now, in this order.

        It changes nothing: an entry stays ``retrying`` until :meth:`resolve` or
        :meth:`fail_again`, so a consumer that crashes mid-way redelivers it on restart
        (at least once). Expects one consumer per source. After a failure, skip the rest of
        that key in the list: :meth:`fail_again` parked them again.
        """
        rows = (
            self._db.read_connection()
            .execute(
                f"{_SELECT} WHERE source = ? AND status = ? ORDER BY id LIMIT ?",
                (source, _RETRYING, limit),
            )
            .fetchall()
        )
        return [_row_to_dead_letter(row) for row in rows]

    def resolve(self, id: int) -> None:
        """The entry was delivered: remove it. Raises :class:`DeadLetterNotFound` (an
        operator may have discarded it meanwhile)."""
        with self._db.transaction() as tx:
            entry = self._get(tx.conn, id)
            tx.execute("DELETE FROM dead_letters WHERE id = ?", (id,))
            self._normalize(tx, entry.source, entry.key)

    def fail_again(self, id: int, error: BaseException) -> DeadLetter:
        """A redelivery failed: the entry is ``dead`` again with one more attempt and this
        error, and the entries behind it that were retrying are parked again. Raises
        :class:`DeadLetterNotFound`."""
        if not isinstance(error, BaseException):
            raise TypeError(f"error must be the exception that failed, got {error!r}")
        error_type, error_message, trace = error_fields(error)
        now = self.clock.now()
        with self._db.transaction() as tx:
            entry = self._get(tx.conn, id)
            tx.execute(
                "UPDATE dead_letters SET status = ?, attempts = attempts + 1, "
                "error_type = ?, error_message = ?, traceback = ?, "
                "first_failed_at = coalesce(first_failed_at, ?), last_failed_at = ? "
                "WHERE id = ?",
                (_DEAD, error_type, error_message, trace, now, now, id),
            )
            self._normalize(tx, entry.source, entry.key)
            return self._get(tx.conn, id)

    def redeliver(
        self, source: str, deliver: Callable[[DeadLetter], object], *, limit: int = 100
    ) -> int:
        """Redeliver the ``retrying`` entries of ``source`` in order; returns how many were
        delivered.

        ``deliver(dead_letter)`` delivers one (decode it with :meth:`DeadLetter.envelope`).
        On success the entry is resolved; on an exception it is dead again
        (:meth:`fail_again`) and the rest of its key waits. Entries removed meanwhile by an
        operator are skipped.
        """
        failed: set[str] = set()
        delivered = 0
        for entry in self.claim_retries(source, limit=limit):
            if entry.key is not None and entry.key in failed:
                continue
            try:
                deliver(entry)
            except Exception as exc:
                if entry.key is not None:
                    failed.add(entry.key)
                with suppress(DeadLetterNotFound):
                    self.fail_again(entry.id, exc)
                continue
            with suppress(DeadLetterNotFound):
                self.resolve(entry.id)
            delivered += 1
        return delivered

    # -- removing -----------------------------------------------------------------------

    def discard(self, id: int) -> DeadLetter:
        """Drop an entry for good and return it. The entries parked behind it are released
        for redelivery, in order (up to the next dead one). Raises
        :class:`DeadLetterNotFound`."""
        with self._db.transaction() as tx:
            entry = self._get(tx.conn, id)
            tx.execute("DELETE FROM dead_letters WHERE id = ?", (id,))
            self._normalize(tx, entry.source, entry.key)
            return entry

    def purge(self, source: str | None = None, *, older_than: timedelta | None = None) -> int:
        """Drop entries (of one source, or all) and return how many.

        With ``older_than``, only ``dead`` and ``retrying`` entries whose last failure is
        at least that old by the clock. A ``parked`` entry is never purged by its own age:
        it waits behind the dead letter of its line and goes (released for redelivery, as
        with :meth:`discard`) only when that one is purged or discarded, so a purge never
        leaves a dead head without the messages queued behind it. Without ``older_than``
        every entry of the source (or of all sources) goes, parked ones included.
        """
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if source is not None:
            clauses.append("source = ?")
            params.append(source)
        if older_than is not None:
            if not isinstance(older_than, timedelta):
                raise TypeError(f"older_than must be a timedelta, got {older_than!r}")
            clauses.append("coalesce(last_failed_at, created_at) <= ?")
            params.append(self.clock.now() - older_than.total_seconds())
            # A parked entry is aged by the dead letter it waits behind, not by itself:
            # purging it alone would break its line's order (see the docstring).
            clauses.append("status != ?")
            params.append(_PARKED)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        keyed = " WHERE " + " AND ".join([*clauses, "key IS NOT NULL"])
        with self._db.transaction() as tx:
            lines = tx.execute(
                f"SELECT DISTINCT source, key FROM dead_letters{keyed}", params
            ).fetchall()
            removed = tx.execute(f"DELETE FROM dead_letters{where}", params).rowcount
            for line_source, line_key in lines:
                self._normalize(tx, line_source, line_key)
            return removed

    # -- for work queues ----------------------------------------------------------------

    def _take_retries(self, tx: Transaction, source: str) -> builtins.list[DeadLetter]:
        """Remove and return the retrying entries of ``source``, oldest first (a work queue
        puts them back into itself in the same transaction)."""
        rows = tx.execute(
            f"{_SELECT} WHERE source = ? AND status = ? ORDER BY id", (source, _RETRYING)
        ).fetchall()
        if rows:
            tx.executemany("DELETE FROM dead_letters WHERE id = ?", [(row[0],) for row in rows])
        return [_row_to_dead_letter(row) for row in rows]

    def _record(
        self,
        tx: Transaction,
        source: str,
        message: str | bytes,
        *,
        group: str | None,
        type_name: str | None,
        message_id: str | None,
        error: tuple[str, str, str],
        attempts: int,
        first_failed_at: float | None,
        last_failed_at: float,
    ) -> DeadLetter:
        """Add a dead letter without a key in an open transaction (a work queue's)."""
        _, type_name, message_id, _ = self._message_fields(message, type_name, message_id, None)
        row_id = self._insert(
            tx,
            source=source,
            key=None,
            status=_DEAD,
            message=message,
            type_name=type_name,
            message_id=message_id,
            position=None,
            error=error,
            attempts=attempts,
            first_failed_at=first_failed_at if first_failed_at is not None else last_failed_at,
            last_failed_at=last_failed_at,
            group=group,
        )
        dead_letter = self._get(tx.conn, row_id)
        self._after_add(tx, dead_letter)
        return dead_letter

    def __repr__(self) -> str:
        return f"<DeadLetterQueue {self._db.path!r}>"
