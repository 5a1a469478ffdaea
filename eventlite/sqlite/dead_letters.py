"""Dead letters in the ``dead_letters`` table of an eventlite SQLite file."""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from ..clock import to_datetime
from ..store.dead_letters import (
    DeadLetter,
    DeadLetterNotFound,
    DeadLetterStatus,
    DeadLetterStore,
    Failure,
    correlation_of,
    correlation_set,
    safe_text,
    storable_message,
)
from ._database import Database, Transaction, storage_error, where_equal

__all__ = ["SQLiteDeadLetterStore"]

_DEAD = DeadLetterStatus.DEAD.value
_PARKED = DeadLetterStatus.PARKED.value
_RETRYING = DeadLetterStatus.RETRYING.value

_COLUMNS = (
    "id, source, key, status, message, type_name, message_id, position, error_type, "
    "error_message, traceback, attempts, first_failed_at, last_failed_at, created_at, "
    "queue_group"
)
_MESSAGE = 4  # the column kept as bytes when it is not valid text
_SELECT = f"SELECT {_COLUMNS} FROM dead_letters"
_INSERT = (
    "INSERT INTO dead_letters (source, key, status, message, type_name, message_id, "
    "position, error_type, error_message, traceback, attempts, first_failed_at, "
    "last_failed_at, created_at, queue_group) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BLOCKED = "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE source = ? AND key = ?)"


class _RawText(bytes):
    """A TEXT value that is not valid UTF-8 (written by another program)."""


def _text_or_raw(value: bytes) -> str | bytes:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return _RawText(value)


def fetch_all(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] = (), *, binary: Sequence[int] = ()
) -> list[tuple[Any, ...]]:
    """The rows of a query, even when a TEXT value in them is not valid UTF-8.

    Python's ``sqlite3`` refuses to read such a value; then the query runs again and the
    columns numbered in ``binary`` give those values as bytes, the others as text with
    the bad bytes replaced. So a row another program wrote cannot stop a reader.
    """
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    factory = conn.text_factory
    conn.text_factory = _text_or_raw
    try:
        rows = conn.execute(sql, params).fetchall()
    finally:
        conn.text_factory = factory
    return [
        tuple(
            (bytes(v) if i in binary else safe_text(v.decode("utf-8", "replace")))
            if isinstance(v, _RawText)
            else v
            for i, v in enumerate(row)
        )
        for row in rows
    ]


def _optional(text: str | None) -> str | None:
    return None if text is None else safe_text(text)


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else to_datetime(seconds)


def row_to_dead_letter(row: Sequence[Any]) -> DeadLetter:
    """A ``SELECT {columns}`` row of ``dead_letters`` as a :class:`DeadLetter`."""
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


def insert_dead_letter(
    tx: Transaction,
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
    """Insert one entry in ``tx`` (its line is not reshaped) and return it as stored."""
    values = (
        safe_text(source),
        _optional(key),
        status,
        storable_message(message),
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
    row_id = tx.execute(_INSERT, values).lastrowid
    assert row_id is not None
    return row_to_dead_letter((row_id, *values))


def take_retries(tx: Transaction, source: str) -> builtins.list[DeadLetter]:
    """Delete and return the ``retrying`` entries of ``source``, oldest first (a work
    queue puts them back into itself in the same transaction)."""
    rows = fetch_all(
        tx.conn,
        f"{_SELECT} WHERE source = ? AND status = ? ORDER BY id",
        (source, _RETRYING),
        binary=(_MESSAGE,),
    )
    if rows:
        tx.executemany("DELETE FROM dead_letters WHERE id = ?", [(row[0],) for row in rows])
    return [row_to_dead_letter(row) for row in rows]


def count_all(tx: Transaction) -> int:
    """Every entry, in ``tx``."""
    return int(tx.execute("SELECT count(*) FROM dead_letters").fetchone()[0])


class SQLiteDeadLetterStore(DeadLetterStore):
    """The :class:`DeadLetterStore` contract in the ``dead_letters`` table of the eventlite
    file; every write joins the calling thread's open transaction of ``database``."""

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    def _read(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        conn = self.database.read_connection()
        try:
            return fetch_all(conn, sql, params, binary=(_MESSAGE,))
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading dead letters", self.database.path) from exc

    def _get(self, tx: Transaction | None, id: int) -> DeadLetter:
        sql, params = f"{_SELECT} WHERE id = ?", (id,)
        rows = (
            fetch_all(tx.conn, sql, params, binary=(_MESSAGE,))
            if tx is not None
            else self._read(sql, params)
        )
        if not rows:
            raise DeadLetterNotFound(id)
        return row_to_dead_letter(rows[0])

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
            added = insert_dead_letter(
                tx,
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
            # A dead entry added at the end of its line leaves the line's shape as it was.
            return added

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
        with self.database.transaction() as tx:
            parked = insert_dead_letter(
                tx,
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
            assert parked.key is not None
            self._normalize(tx, parked.source, parked.key)
            return self._get(tx, parked.id)

    def _normalize(self, tx: Transaction, source: str, key: str | None) -> None:
        """Give the line of (source, key) its shape: retrying up to the first dead entry,
        parked after it (see the protocol's doc)."""
        if key is None:
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

    def retry(self, id: int) -> builtins.list[DeadLetter]:
        """See :meth:`DeadLetterStore.retry`."""
        with self.database.transaction() as tx:
            entry = self._get(tx, id)
            if entry.key is None:
                if entry.status is DeadLetterStatus.RETRYING:
                    return []
                tx.execute("UPDATE dead_letters SET status = ? WHERE id = ?", (_RETRYING, id))
                return [self._get(tx, id)]
            before = self._line_statuses(tx, entry.source, entry.key)
            tx.execute("UPDATE dead_letters SET status = ? WHERE id = ?", (_RETRYING, id))
            self._normalize(tx, entry.source, entry.key)
            after = self._line_statuses(tx, entry.source, entry.key)
            released = sorted(
                i for i, s in after.items() if s == _RETRYING and before[i] != _RETRYING
            )
            return [self._get(tx, i) for i in released]

    def retry_all(self, source: str) -> int:
        """See :meth:`DeadLetterStore.retry_all`."""
        with self.database.transaction() as tx:
            cursor = tx.execute(
                "UPDATE dead_letters SET status = ? WHERE source = ? AND status != ?",
                (_RETRYING, safe_text(source), _RETRYING),
            )
            return cursor.rowcount

    def resolve(self, id: int) -> None:
        """See :meth:`DeadLetterStore.resolve`."""
        self.discard(id)

    def fail_again(self, id: int, failure: Failure, *, now: float) -> DeadLetter:
        """See :meth:`DeadLetterStore.fail_again`."""
        with self.database.transaction() as tx:
            entry = self._get(tx, id)
            tx.execute(
                "UPDATE dead_letters SET status = ?, attempts = attempts + 1, "
                "error_type = ?, error_message = ?, traceback = ?, "
                "first_failed_at = coalesce(first_failed_at, ?), last_failed_at = ? "
                "WHERE id = ?",
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
            entry = self._get(tx, id)
            tx.execute("DELETE FROM dead_letters WHERE id = ?", (id,))
            self._normalize(tx, entry.source, entry.key)
            return entry

    def purge(self, source: str | None = None, *, failed_before: float | None = None) -> int:
        """See :meth:`DeadLetterStore.purge`."""
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if source is not None:
            clauses.append("source = ?")
            params.append(safe_text(source))
        if failed_before is not None:
            clauses.append("coalesce(last_failed_at, created_at) <= ?")
            params.append(failed_before)
            # A parked entry is aged by the dead letter it waits behind, not by itself.
            clauses.append("status != ?")
            params.append(_PARKED)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        keyed = " WHERE " + " AND ".join([*clauses, "key IS NOT NULL"])
        with self.database.transaction() as tx:
            lines = tx.execute(
                f"SELECT DISTINCT source, key FROM dead_letters{keyed}", params
            ).fetchall()
            removed = tx.execute(f"DELETE FROM dead_letters{where}", params).rowcount
            for line_source, line_key in lines:
                self._normalize(tx, line_source, line_key)
            return removed

    # -- reads --------------------------------------------------------------------------

    def is_blocked(self, source: str, key: str | None) -> bool:
        """See :meth:`DeadLetterStore.is_blocked`."""
        if key is None:
            return False
        conn = self.database.read_connection()
        try:
            row = conn.execute(_BLOCKED, (safe_text(source), safe_text(key))).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading dead letters", self.database.path) from exc
        return bool(row[0])

    def get(self, id: int) -> DeadLetter:
        """See :meth:`DeadLetterStore.get`."""
        return self._get(None, id)

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
        sql = f"{_SELECT}{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [row_to_dead_letter(row) for row in self._read(sql, params)]

    def find_by_correlation(
        self, correlation_ids: Collection[str], *, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        """See :meth:`DeadLetterStore.find_by_correlation`: only the entries whose message
        holds one of the ids as text are read and parsed."""
        wanted = sorted(correlation_set(correlation_ids, limit))
        found: builtins.list[DeadLetter] = []
        for start in range(0, len(wanted), 100):
            chunk = sorted({form for w in wanted[start : start + 100] for form in _forms(w)})
            if not chunk:
                continue
            test = " OR ".join(["instr(CAST(message AS TEXT), ?) > 0"] * len(chunk))
            found.extend(
                row_to_dead_letter(row)
                for row in self._read(f"{_SELECT} WHERE {test} ORDER BY id", chunk)
            )
        keep = frozenset(wanted)
        seen: set[int] = set()
        out = []
        for letter in sorted(found, key=lambda d: d.id):
            if letter.id not in seen and correlation_of(letter.message) in keep:
                seen.add(letter.id)
                out.append(letter)
        return out if limit is None else out[:limit]

    def count(self, source: str | None = None, *, status: DeadLetterStatus | None = None) -> int:
        """See :meth:`DeadLetterStore.count`."""
        where, params = self._filter(source, status)
        return int(self._read(f"SELECT count(*) FROM dead_letters{where}", params)[0][0])

    def sources(self) -> dict[str, int]:
        """See :meth:`DeadLetterStore.sources`."""
        rows = self._read(
            "SELECT source, count(*) FROM dead_letters GROUP BY source ORDER BY source"
        )
        return {row[0]: row[1] for row in rows}

    def claim_retries(self, source: str, *, limit: int) -> builtins.list[DeadLetter]:
        """See :meth:`DeadLetterStore.claim_retries`."""
        rows = self._read(
            f"{_SELECT} WHERE source = ? AND status = ? ORDER BY id LIMIT ?",
            (safe_text(source), _RETRYING, limit),
        )
        return [row_to_dead_letter(row) for row in rows]

    def __repr__(self) -> str:
        return f"<SQLiteDeadLetterStore {self.database.path!r}>"


def _forms(text: str) -> list[str]:
    """How ``text`` may appear inside stored JSON: as it is (when SQLite can take it: no
    lone surrogate) and escaped as JSON writes it with ``ensure_ascii``."""
    forms = [json.dumps(text)[1:-1]]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return forms
    return [text, *forms]
