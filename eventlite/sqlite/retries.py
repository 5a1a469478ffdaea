"""Delayed retries in the ``delivery_retries`` table: heads (``due_at`` set) and the
followers held behind them (``due_at`` NULL)."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..store.checkpoints import check_position, check_time
from ..store.retries import RetryEntry, RetryStore, storable_text
from ._database import Database, storage_error
from ._statements import write_one

__all__ = ["SQLiteRetryStore"]

_COLUMNS = "subscriber, position, key, attempts, due_at, first_failed_at, error"
_UPSERT = (
    f"INSERT INTO delivery_retries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (subscriber, position) DO UPDATE SET key = excluded.key, "
    "attempts = excluded.attempts, due_at = excluded.due_at, "
    "first_failed_at = excluded.first_failed_at, error = excluded.error"
)
_RESCHEDULE = (
    "UPDATE delivery_retries SET attempts = ?, due_at = ?, error = ?, "
    "first_failed_at = coalesce(first_failed_at, ?) WHERE subscriber = ? AND position = ?"
)
_FORGET = "DELETE FROM delivery_retries WHERE subscriber = ? AND position = ?"
_DROP = "DELETE FROM delivery_retries WHERE subscriber = ? AND key = ?"
_DUE = (
    f"SELECT {_COLUMNS} FROM delivery_retries WHERE subscriber = ? AND due_at IS NOT NULL "
    "AND due_at <= ? ORDER BY due_at, position"
)
_NEXT_DUE = "SELECT min(due_at) FROM delivery_retries WHERE subscriber = ?"
_KEYS = "SELECT DISTINCT key FROM delivery_retries WHERE subscriber = ?"
_STRANDED = (
    "SELECT key FROM delivery_retries WHERE subscriber = ? GROUP BY key "
    "HAVING count(due_at) = 0 ORDER BY min(position)"
)
_FOLLOWERS = (
    "SELECT position FROM delivery_retries WHERE subscriber = ? AND key = ? AND position > ? "
    "ORDER BY position"
)
_ENTRIES = f"SELECT {_COLUMNS} FROM delivery_retries ORDER BY subscriber, position"
_ENTRIES_OF = f"SELECT {_COLUMNS} FROM delivery_retries WHERE subscriber = ? ORDER BY position"


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty str, got {value!r}")
    return value


def _bad_text(exc: UnicodeEncodeError) -> ValueError:
    return ValueError(f"subscriber names and keys must be valid Unicode text: {exc}")


class SQLiteRetryStore(RetryStore):
    """The :class:`~eventlite.store.retries.RetryStore` contract in the ``delivery_retries``
    table of an eventlite file (primary key: subscriber, position)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        db = self.database
        try:
            return db.read_connection().execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading delayed retries", db.path) from exc
        except UnicodeEncodeError as exc:
            raise _bad_text(exc) from None

    def _write(self, sql: str, parameters: tuple[Any, ...]) -> int:
        try:
            return write_one(self.database, sql, parameters, "writing delayed retries")
        except UnicodeEncodeError as exc:
            raise _bad_text(exc) from None

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
            storable_text(str(error)),
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
        parameters = (
            attempts,
            check_time(due_at, "due_at"),
            storable_text(str(error)),
            check_time(first_failed_at, "first_failed_at"),
            subscriber,
            position,
        )
        return self._write(_RESCHEDULE, parameters) == 1

    def forget(self, subscriber: str, position: int) -> bool:
        """See :meth:`RetryStore.forget`."""
        return self._write(_FORGET, (subscriber, position)) == 1

    def drop(self, subscriber: str, key: str) -> int:
        """See :meth:`RetryStore.drop`."""
        return self._write(_DROP, (subscriber, key))

    def due(self, subscriber: str, now: float) -> list[RetryEntry]:
        """See :meth:`RetryStore.due`."""
        return [RetryEntry(*row) for row in self._read(_DUE, (subscriber, now))]

    def next_due(self, subscriber: str) -> float | None:
        """See :meth:`RetryStore.next_due`."""
        due = self._read(_NEXT_DUE, (subscriber,))[0][0]
        return None if due is None else float(due)

    def keys(self, subscriber: str) -> frozenset[str]:
        """See :meth:`RetryStore.keys`."""
        return frozenset(row[0] for row in self._read(_KEYS, (subscriber,)))

    def stranded(self, subscriber: str) -> list[str]:
        """See :meth:`RetryStore.stranded`."""
        return [row[0] for row in self._read(_STRANDED, (subscriber,))]

    def followers(self, subscriber: str, key: str, after: int = 0) -> list[int]:
        """See :meth:`RetryStore.followers`."""
        return [row[0] for row in self._read(_FOLLOWERS, (subscriber, key, after))]

    def entries(self, subscriber: str | None = None) -> list[RetryEntry]:
        """See :meth:`RetryStore.entries`."""
        if subscriber is None:
            return [RetryEntry(*row) for row in self._read(_ENTRIES, ())]
        return [RetryEntry(*row) for row in self._read(_ENTRIES_OF, (subscriber,))]

    def __repr__(self) -> str:
        return f"<SQLiteRetryStore {self.database.path!r}>"
