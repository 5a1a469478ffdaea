"""Dead letters in the ``dead_letters`` table of an eventlite PostgreSQL schema.

**Lines under concurrency.** The store keeps each line (the entries of one source and
key) in its shape after every write (see :class:`DeadLetterStore`). On SQLite one writer
at a time makes that true by itself; here transactions of many processes run at once, so
every write to a line first takes the line's advisory lock (transaction-level, held to
the commit): writes to one line run one after the other, each seeing the last one's
commit, and an id is drawn only under the lock, so ids stay in the order entries join
their line. Writes to different lines never wait for each other.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..clock import to_datetime
from ..store.dead_letters import (
    DeadLetter,
    DeadLetterNotFound,
    DeadLetterStatus,
    DeadLetterStore,
    Failure,
    safe_text,
    storable_message,
)
from ._database import PostgresDatabase, PostgresTransaction, where_equal

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresDeadLetterStore"]

_DEAD = DeadLetterStatus.DEAD.value
_PARKED = DeadLetterStatus.PARKED.value
_RETRYING = DeadLetterStatus.RETRYING.value

_COLUMNS = (
    "id, source, key, status, message, message_is_text, type_name, message_id, position, "
    "error_type, error_message, traceback, attempts, first_failed_at, last_failed_at, "
    "created_at, queue_group"
)
_SELECT = f"SELECT {_COLUMNS} FROM dead_letters"
_INSERT = (
    "INSERT INTO dead_letters (source, key, status, message, message_is_text, type_name, "
    "message_id, position, error_type, error_message, traceback, attempts, first_failed_at, "
    "last_failed_at, created_at, queue_group) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)
_GET = f"{_SELECT} WHERE id = %s"
_BLOCKED = "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE source = %s AND key = %s)"
# Retrying before the line's first dead entry, parked after it; other dead ones stay.
_NORMALIZE = (
    "WITH first AS (SELECT min(id) AS dead FROM dead_letters "
    "WHERE source = %(source)s AND key = %(key)s AND status = 'dead') "
    "UPDATE dead_letters AS d SET status = CASE WHEN first.dead IS NULL OR d.id < first.dead "
    "THEN 'retrying' ELSE 'parked' END FROM first "
    "WHERE d.source = %(source)s AND d.key = %(key)s AND d.status IN ('parked', 'retrying') "
    "AND d.status <> CASE WHEN first.dead IS NULL OR d.id < first.dead "
    "THEN 'retrying' ELSE 'parked' END"
)
_LINE = "SELECT id, status FROM dead_letters WHERE source = %s AND key = %s"


def encode_message(message: str | bytes) -> tuple[bytes, bool]:
    """A message as stored: its bytes, and whether it was text (see
    :func:`~eventlite.store.dead_letters.storable_message`)."""
    kept = storable_message(message)
    if isinstance(kept, str):
        return kept.encode("utf-8"), True
    return kept, False


def decode_message(raw: bytes, is_text: bool) -> str | bytes:
    """A stored message as it was given: text when it was text (bytes when another writer
    stored text that is not UTF-8), else bytes."""
    raw = bytes(raw)
    if is_text:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    return raw


def _optional(text: str | None) -> str | None:
    return None if text is None else safe_text(text)


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else to_datetime(seconds)


def row_to_dead_letter(row: Sequence[Any]) -> DeadLetter:
    """A ``SELECT {columns}`` row of ``dead_letters`` as a :class:`DeadLetter`."""
    return DeadLetter(
        id=int(row[0]),
        source=row[1],
        key=row[2],
        status=DeadLetterStatus(row[3]),
        message=decode_message(row[4], row[5]),
        type_name=row[6],
        message_id=row[7],
        position=row[8],
        error_type=row[9],
        error_message=row[10],
        traceback=row[11],
        attempts=row[12],
        first_failed_at=_when(row[13]),
        last_failed_at=_when(row[14]),
        created_at=to_datetime(row[15]),
        group=row[16],
    )


def insert_dead_letter(
    conn: psycopg.Connection[Any],
    source: str,
    message: str | bytes,
    *,
    key: str | None,
    status: str,
    failure: Failure | None,
    attempts: int,
    first_failed_at: float | None,
    last_failed_at: float | None,
    created_at: float,
    type_name: str | None = None,
    message_id: str | None = None,
    position: int | None = None,
    group: str | None = None,
) -> DeadLetter:
    """Insert one entry on ``conn`` (inside a transaction: its line is neither locked nor
    reshaped; the caller does both when ``key`` is not None) and return it as stored."""
    body, is_text = encode_message(message)
    values = (
        safe_text(source),
        _optional(key),
        status,
        body,
        is_text,
        _optional(type_name),
        _optional(message_id),
        position,
        None if failure is None else failure.error_type,
        None if failure is None else failure.error_message,
        None if failure is None else failure.traceback,
        attempts,
        first_failed_at,
        last_failed_at,
        created_at,
        _optional(group),
    )
    row = conn.execute(_INSERT, values).fetchone()
    assert row is not None
    return row_to_dead_letter((row[0], *values))


def take_retries(conn: psycopg.Connection[Any], source: str) -> builtins.list[DeadLetter]:
    """Delete and return the ``retrying`` entries of ``source``, oldest first (a work queue
    puts them back into itself in the same transaction). Entries another transaction is
    taking at the same moment are skipped, so each is taken once."""
    rows = conn.execute(
        f"DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters "
        f"WHERE source = %s AND status = %s FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
        (source, _RETRYING),
    ).fetchall()
    return sorted((row_to_dead_letter(row) for row in rows), key=lambda e: e.id)


class PostgresDeadLetterStore(DeadLetterStore):
    """The :class:`DeadLetterStore` contract in the ``dead_letters`` table (see the module
    doc for the locking); every write joins the calling thread's open transaction of
    ``database``."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""

    def _line_lock(self, source: str, key: str) -> int:
        return self.database.lock_key("dead-letter-line", source, key)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[Any]:
        return self.database.run(
            "reading dead letters", lambda conn: conn.execute(sql, params).fetchall()
        )

    @staticmethod
    def _get(tx: PostgresTransaction, id: int) -> DeadLetter:
        row = tx.execute(_GET, (id,)).fetchone()
        if row is None:
            raise DeadLetterNotFound(id)
        return row_to_dead_letter(row)

    def _locked(self, tx: PostgresTransaction, id: int) -> DeadLetter:
        """The entry, read again after its line's lock is taken (so no other writer of
        the line moves it until the commit); raises DeadLetterNotFound."""
        entry = self._get(tx, id)
        if entry.key is None:
            row = tx.execute(f"{_GET} FOR UPDATE", (id,)).fetchone()
            if row is None:
                raise DeadLetterNotFound(id)
            return row_to_dead_letter(row)
        tx.lock([self._line_lock(entry.source, entry.key)])
        return self._get(tx, id)

    @staticmethod
    def _normalize(tx: PostgresTransaction, source: str, key: str | None) -> None:
        """Give the line its shape (see the protocol's doc); the caller holds its lock."""
        if key is not None:
            tx.execute(_NORMALIZE, {"source": source, "key": key})

    # -- writes -------------------------------------------------------------------------

    def add(
        self,
        source: str,
        message: str | bytes,
        *,
        key: str | None,
        failure: Failure,
        attempts: int,
        first_failed_at: float,
        now: float,
        type_name: str | None = None,
        message_id: str | None = None,
        position: int | None = None,
        group: str | None = None,
    ) -> DeadLetter:
        """See :meth:`DeadLetterStore.add`."""
        with self.database.transaction() as tx:
            if key is not None:
                tx.lock([self._line_lock(safe_text(source), safe_text(key))])
            # A dead entry added at the end of its line (its id drawn under the line's
            # lock) leaves the line's shape as it was.
            return insert_dead_letter(
                tx.conn,
                source,
                message,
                key=key,
                status=_DEAD,
                failure=failure,
                attempts=attempts,
                first_failed_at=first_failed_at,
                last_failed_at=now,
                created_at=now,
                type_name=type_name,
                message_id=message_id,
                position=position,
                group=group,
            )

    def park(
        self,
        source: str,
        message: str | bytes,
        *,
        key: str,
        now: float,
        type_name: str | None = None,
        message_id: str | None = None,
        position: int | None = None,
    ) -> DeadLetter:
        """See :meth:`DeadLetterStore.park`."""
        source, key = safe_text(source), safe_text(key)
        with self.database.transaction() as tx:
            tx.lock([self._line_lock(source, key)])
            parked = insert_dead_letter(
                tx.conn,
                source,
                message,
                key=key,
                status=_PARKED,
                failure=None,
                attempts=0,
                first_failed_at=None,
                last_failed_at=None,
                created_at=now,
                type_name=type_name,
                message_id=message_id,
                position=position,
            )
            self._normalize(tx, source, key)
            return self._get(tx, parked.id)

    @staticmethod
    def _statuses(tx: PostgresTransaction, source: str, key: str) -> dict[int, str]:
        return {int(i): s for i, s in tx.execute(_LINE, (source, key)).fetchall()}

    def retry(self, id: int) -> builtins.list[DeadLetter]:
        """See :meth:`DeadLetterStore.retry`."""
        with self.database.transaction() as tx:
            entry = self._locked(tx, id)
            if entry.key is None:
                if entry.status is DeadLetterStatus.RETRYING:
                    return []
                tx.execute("UPDATE dead_letters SET status = %s WHERE id = %s", (_RETRYING, id))
                return [self._get(tx, id)]
            before = self._statuses(tx, entry.source, entry.key)
            tx.execute("UPDATE dead_letters SET status = %s WHERE id = %s", (_RETRYING, id))
            self._normalize(tx, entry.source, entry.key)
            after = self._statuses(tx, entry.source, entry.key)
            released = sorted(
                i for i, s in after.items() if s == _RETRYING and before.get(i) != _RETRYING
            )
            return [self._get(tx, i) for i in released]

    def retry_all(self, source: str) -> int:
        """See :meth:`DeadLetterStore.retry_all`."""
        source = safe_text(source)
        with self.database.transaction() as tx:
            keys = [
                k
                for (k,) in tx.execute(
                    "SELECT DISTINCT key FROM dead_letters WHERE source = %s AND key IS NOT NULL "
                    "AND status <> %s",
                    (source, _RETRYING),
                ).fetchall()
            ]
            tx.lock(self._line_lock(source, k) for k in keys)
            # Only the lines locked: one that appeared meanwhile is left as if it came after.
            cursor = tx.execute(
                "UPDATE dead_letters SET status = %s WHERE source = %s AND status <> %s "
                "AND (key IS NULL OR key = ANY(%s::text[]))",
                (_RETRYING, source, _RETRYING, keys),
            )
            return cursor.rowcount

    def resolve(self, id: int) -> None:
        """See :meth:`DeadLetterStore.resolve`."""
        self.discard(id)

    def fail_again(self, id: int, failure: Failure, *, now: float) -> DeadLetter:
        """See :meth:`DeadLetterStore.fail_again`."""
        with self.database.transaction() as tx:
            entry = self._locked(tx, id)
            tx.execute(
                "UPDATE dead_letters SET status = %s, attempts = attempts + 1, "
                "error_type = %s, error_message = %s, traceback = %s, "
                "first_failed_at = coalesce(first_failed_at, %s), last_failed_at = %s "
                "WHERE id = %s",
                (
                    _DEAD,
                    failure.error_type,
                    failure.error_message,
                    failure.traceback,
                    now,
                    now,
                    id,
                ),
            )
            self._normalize(tx, entry.source, entry.key)
            return self._get(tx, id)

    def discard(self, id: int) -> DeadLetter:
        """See :meth:`DeadLetterStore.discard`."""
        with self.database.transaction() as tx:
            entry = self._locked(tx, id)
            tx.execute("DELETE FROM dead_letters WHERE id = %s", (id,))
            self._normalize(tx, entry.source, entry.key)
            return entry

    def purge(self, source: str | None = None, *, failed_before: float | None = None) -> int:
        """See :meth:`DeadLetterStore.purge`."""
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if source is not None:
            clauses.append("source = %s")
            params.append(safe_text(source))
        if failed_before is not None:
            clauses.append("coalesce(last_failed_at, created_at) <= %s")
            params.append(failed_before)
            # A parked entry is aged by the dead letter it waits behind, not by itself.
            clauses.append("status <> %s")
            params.append(_PARKED)
        keyed = " AND ".join([*clauses, "key IS NOT NULL"])
        with self.database.transaction() as tx:
            lines = sorted(
                (s, k)
                for s, k in tx.execute(
                    f"SELECT DISTINCT source, key FROM dead_letters WHERE {keyed}", params
                ).fetchall()
            )
            tx.lock(self._line_lock(s, k) for s, k in lines)
            # Only the lines locked: one that appeared meanwhile is left as if it came after.
            where = " AND ".join(
                [
                    *clauses,
                    "(key IS NULL OR (source, key) IN "
                    "(SELECT * FROM unnest(%s::text[], %s::text[])))",
                ]
            )
            removed = tx.execute(
                f"DELETE FROM dead_letters WHERE {where}",
                [*params, [s for s, _ in lines], [k for _, k in lines]],
            ).rowcount
            for line_source, line_key in lines:
                self._normalize(tx, line_source, line_key)
            return removed

    # -- reads --------------------------------------------------------------------------

    def is_blocked(self, source: str, key: str | None) -> bool:
        """See :meth:`DeadLetterStore.is_blocked`."""
        if key is None:
            return False
        rows = self._read(_BLOCKED, (safe_text(source), safe_text(key)))
        return bool(rows[0][0])

    def get(self, id: int) -> DeadLetter:
        """See :meth:`DeadLetterStore.get`."""
        rows = self._read(_GET, (id,))
        if not rows:
            raise DeadLetterNotFound(id)
        return row_to_dead_letter(rows[0])

    @staticmethod
    def _filter(source: str | None, status: DeadLetterStatus | None) -> tuple[str, list[Any]]:
        return where_equal(
            source=None if source is None else safe_text(source),
            status=None if status is None else status.value,
        )

    def list(
        self,
        source: str | None = None,
        *,
        status: DeadLetterStatus | None = None,
        limit: int | None = None,
    ) -> builtins.list[DeadLetter]:
        """See :meth:`DeadLetterStore.list`."""
        where, params = self._filter(source, status)
        params.append(limit)
        rows = self._read(f"{_SELECT}{where} ORDER BY id LIMIT %s", params)
        return [row_to_dead_letter(row) for row in rows]

    def count(self, source: str | None = None, *, status: DeadLetterStatus | None = None) -> int:
        """See :meth:`DeadLetterStore.count`."""
        where, params = self._filter(source, status)
        return int(self._read(f"SELECT count(*) FROM dead_letters{where}", params)[0][0])

    def sources(self) -> dict[str, int]:
        """See :meth:`DeadLetterStore.sources`."""
        rows = self._read(
            'SELECT source, count(*) FROM dead_letters GROUP BY source ORDER BY source COLLATE "C"'
        )
        return {row[0]: int(row[1]) for row in rows}

    def claim_retries(self, source: str, *, limit: int) -> builtins.list[DeadLetter]:
        """See :meth:`DeadLetterStore.claim_retries`."""
        rows = self._read(
            f"{_SELECT} WHERE source = %s AND status = %s ORDER BY id LIMIT %s",
            (safe_text(source), _RETRYING, limit),
        )
        return [row_to_dead_letter(row) for row in rows]

    def __repr__(self) -> str:
        return f"<PostgresDeadLetterStore {self.database.description}>"
