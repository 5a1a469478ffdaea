"""Idempotency keys in the ``idempotency_keys`` table of an eventlite SQLite file."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..store.idempotency import IdempotencyRecord, IdempotencyStore
from ._database import Database, Transaction, storage_error

__all__ = ["SQLiteIdempotencyStore"]

_SELECT = (
    "SELECT key, owner, started_at, lease_until, result, expires_at, state "
    "FROM idempotency_keys WHERE key = ?"
)


def _record(row: tuple[Any, ...] | None) -> IdempotencyRecord | None:
    if row is None:
        return None
    done = row[6] == "done"
    return IdempotencyRecord(
        key=row[0],
        owner=row[1],
        started_at=row[2],
        lease_until=row[3] if row[3] is not None else row[2],
        result=row[4] if done else None,
        expires_at=row[5] if done else None,
    )


class SQLiteIdempotencyStore(IdempotencyStore):
    """The :class:`IdempotencyStore` contract in the eventlite file; every write joins the
    calling thread's open transaction of ``database``."""

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    def find(self, key: str) -> IdempotencyRecord | None:
        """See :meth:`IdempotencyStore.find`."""
        conn = self.database.read_connection()
        try:
            row = conn.execute(_SELECT, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading an idempotency key", self.database.path) from exc
        return _record(row)

    @staticmethod
    def _find(tx: Transaction, key: str) -> IdempotencyRecord | None:
        return _record(tx.execute(_SELECT, (key,)).fetchone())

    def claim(
        self, key: str, owner: str, *, now: float, lease_until: float
    ) -> tuple[bool, IdempotencyRecord | None]:
        """See :meth:`IdempotencyStore.claim`."""
        with self.database.transaction() as tx:
            found = self._find(tx, key)
            if found is not None:
                if found.live(now):
                    return False, found
                tx.execute("DELETE FROM idempotency_keys WHERE key = ?", (key,))
            tx.execute(
                "INSERT INTO idempotency_keys (key, state, owner, started_at, lease_until) "
                "VALUES (?, 'running', ?, ?, ?)",
                (key, owner, now, lease_until),
            )
        return True, found

    def complete(self, key: str, owner: str, result: str, *, expires_at: float) -> bool:
        """See :meth:`IdempotencyStore.complete`."""
        with self.database.transaction() as tx:
            cursor = tx.execute(
                "UPDATE idempotency_keys SET state = 'done', result = ?, expires_at = ? "
                "WHERE key = ? AND owner = ? AND state = 'running'",
                (result, expires_at, key, owner),
            )
            return cursor.rowcount == 1

    def release(self, key: str, owner: str) -> bool:
        """See :meth:`IdempotencyStore.release`."""
        with self.database.transaction() as tx:
            cursor = tx.execute(
                "DELETE FROM idempotency_keys WHERE key = ? AND owner = ? AND state = 'running'",
                (key, owner),
            )
            return cursor.rowcount == 1

    def forget(self, key: str) -> bool:
        """See :meth:`IdempotencyStore.forget`."""
        with self.database.transaction() as tx:
            return tx.execute("DELETE FROM idempotency_keys WHERE key = ?", (key,)).rowcount == 1

    def purge_expired(self, now: float) -> int:
        """See :meth:`IdempotencyStore.purge_expired`."""
        with self.database.transaction() as tx:
            cursor = tx.execute(
                "DELETE FROM idempotency_keys WHERE state = 'done' AND expires_at <= ?", (now,)
            )
            return cursor.rowcount

    def __repr__(self) -> str:
        return f"<SQLiteIdempotencyStore {self.database.path!r}>"
