"""Delayed retries in the ``delivery_retries`` table of an eventlite PostgreSQL schema:
heads (``due_at`` set) and the followers held behind them (``due_at`` NULL)."""

from __future__ import annotations

from typing import Any

from ..store.checkpoints import check_position, check_time
from ..store.retries import RetryEntry, RetryStore, storable_text
from ._database import PostgresDatabase
from .checkpoints import _text
from .projections import load_text, store_text

__all__ = ["PostgresRetryStore"]

_COLUMNS = "subscriber, position, key, attempts, due_at, first_failed_at, error"
_UPSERT = (
    f"INSERT INTO delivery_retries ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (subscriber, position) DO UPDATE SET key = excluded.key, "
    "attempts = excluded.attempts, due_at = excluded.due_at, "
    "first_failed_at = excluded.first_failed_at, error = excluded.error"
)
_RESCHEDULE = (
    "UPDATE delivery_retries SET attempts = %s, due_at = %s, error = %s, "
    "first_failed_at = coalesce(first_failed_at, %s) WHERE subscriber = %s AND position = %s"
)
_FORGET = "DELETE FROM delivery_retries WHERE subscriber = %s AND position = %s"
_DROP = "DELETE FROM delivery_retries WHERE subscriber = %s AND key = %s"
_DUE = (
    f"SELECT {_COLUMNS} FROM delivery_retries WHERE subscriber = %s AND due_at IS NOT NULL "
    "AND due_at <= %s ORDER BY due_at, position"
)
_NEXT_DUE = "SELECT min(due_at) FROM delivery_retries WHERE subscriber = %s"
_KEYS = "SELECT DISTINCT key FROM delivery_retries WHERE subscriber = %s"
_STRANDED = (
    "SELECT key FROM delivery_retries WHERE subscriber = %s GROUP BY key "
    "HAVING count(due_at) = 0 ORDER BY min(position)"
)
_FOLLOWERS = (
    "SELECT position FROM delivery_retries WHERE subscriber = %s AND key = %s "
    "AND position > %s ORDER BY position"
)
_ENTRIES = f'SELECT {_COLUMNS} FROM delivery_retries ORDER BY subscriber COLLATE "C", position'
_ENTRIES_OF = f"SELECT {_COLUMNS} FROM delivery_retries WHERE subscriber = %s ORDER BY position"


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty str, got {value!r}")
    return _text(value, what)


def _entry(row: Any) -> RetryEntry:
    subscriber, position, key, attempts, due_at, first_failed_at, error = row
    return RetryEntry(
        load_text(subscriber),
        int(position),
        load_text(key),
        int(attempts),
        None if due_at is None else float(due_at),
        None if first_failed_at is None else float(first_failed_at),
        None if error is None else load_text(error),
    )


def _safe(error: str) -> str:
    """Error text as a text column keeps it: lone surrogates escaped (as every backend
    does), NUL characters stored reversibly."""
    return store_text(storable_text(str(error)))


class PostgresRetryStore(RetryStore):
    """The :class:`~eventlite.store.retries.RetryStore` contract in PostgreSQL (primary key:
    subscriber, position); every write joins the calling thread's open transaction."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        count: int = self.database.run(
            "writing delayed retries", lambda conn: conn.execute(sql, params).rowcount
        )
        return count

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        rows: list[Any] = self.database.run(
            "reading delayed retries", lambda conn: conn.execute(sql, params).fetchall()
        )
        return rows

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
        """See :meth:`RetryStore.schedule`."""
        row = (
            _check_text(subscriber, "subscriber"),
            check_position(position),
            _check_text(key, "key"),
            check_position(attempts, "attempts"),
            check_time(due_at, "due_at"),
            check_time(first_failed_at, "first_failed_at"),
            _safe(error),
        )
        self._write(_UPSERT, row)

    def hold(self, subscriber: str, position: int, key: str) -> None:
        """See :meth:`RetryStore.hold`."""
        row = (
            _check_text(subscriber, "subscriber"),
            check_position(position),
            _check_text(key, "key"),
            0,
            None,
            None,
            None,
        )
        self._write(_UPSERT, row)

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
        """See :meth:`RetryStore.reschedule`."""
        check_position(attempts, "attempts")
        params = (
            attempts,
            check_time(due_at, "due_at"),
            _safe(error),
            check_time(first_failed_at, "first_failed_at"),
            _check_text(subscriber, "subscriber"),
            check_position(position),
        )
        return self._write(_RESCHEDULE, params) == 1

    def forget(self, subscriber: str, position: int) -> bool:
        """See :meth:`RetryStore.forget`."""
        return self._write(_FORGET, (_text(subscriber, "subscriber"), position)) == 1

    def drop(self, subscriber: str, key: str) -> int:
        """See :meth:`RetryStore.drop`."""
        return self._write(_DROP, (_text(subscriber, "subscriber"), _text(key, "key")))

    def due(self, subscriber: str, now: float) -> list[RetryEntry]:
        """See :meth:`RetryStore.due`."""
        return [_entry(row) for row in self._read(_DUE, (_text(subscriber, "subscriber"), now))]

    def next_due(self, subscriber: str) -> float | None:
        """See :meth:`RetryStore.next_due`."""
        due = self._read(_NEXT_DUE, (_text(subscriber, "subscriber"),))[0][0]
        return None if due is None else float(due)

    def keys(self, subscriber: str) -> frozenset[str]:
        """See :meth:`RetryStore.keys`."""
        rows = self._read(_KEYS, (_text(subscriber, "subscriber"),))
        return frozenset(load_text(row[0]) for row in rows)

    def stranded(self, subscriber: str) -> list[str]:
        """See :meth:`RetryStore.stranded`."""
        rows = self._read(_STRANDED, (_text(subscriber, "subscriber"),))
        return [load_text(row[0]) for row in rows]

    def followers(self, subscriber: str, key: str, after: int = 0) -> list[int]:
        """See :meth:`RetryStore.followers`."""
        params = (_text(subscriber, "subscriber"), _text(key, "key"), after)
        return [int(row[0]) for row in self._read(_FOLLOWERS, params)]

    def entries(self, subscriber: str | None = None) -> list[RetryEntry]:
        """See :meth:`RetryStore.entries`."""
        if subscriber is None:
            return [_entry(row) for row in self._read(_ENTRIES, ())]
        return [_entry(row) for row in self._read(_ENTRIES_OF, (_text(subscriber, "subscriber"),))]

    def __repr__(self) -> str:
        return f"<PostgresRetryStore {self.database.description}>"
