"""Unique claims in the ``claims`` table of an eventlite SQLite file."""

from __future__ import annotations

import sqlite3

from ..store.claims import AlreadyClaimed, ClaimStore, validate_claim
from ._database import Database, storage_error

__all__ = ["SQLiteClaimStore"]

_HOLDER = "SELECT owner FROM claims WHERE scope = ? AND value = ?"


class SQLiteClaimStore(ClaimStore):
    """The :class:`~eventlite.store.claims.ClaimStore` contract in the eventlite file: the
    primary key ``(scope, value)`` makes a second holder impossible, across processes."""

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    def claim(self, scope: str, value: str, owner: str) -> None:
        """See :meth:`ClaimStore.claim`."""
        validate_claim(scope, value, owner)
        with self.database.transaction() as tx:
            tx.execute(
                "INSERT INTO claims (scope, value, owner) VALUES (?, ?, ?) "
                "ON CONFLICT (scope, value) DO NOTHING",
                (scope, value, owner),
            )
            holder = tx.execute(_HOLDER, (scope, value)).fetchone()[0]
        if holder != owner:
            raise AlreadyClaimed(scope, value, holder)

    def release(self, scope: str, value: str, owner: str) -> bool:
        """See :meth:`ClaimStore.release`."""
        validate_claim(scope, value, owner)
        with self.database.transaction() as tx:
            cursor = tx.execute(
                "DELETE FROM claims WHERE scope = ? AND value = ? AND owner = ?",
                (scope, value, owner),
            )
            return cursor.rowcount == 1

    def holder(self, scope: str, value: str) -> str | None:
        """See :meth:`ClaimStore.holder`."""
        try:
            row = self.database.read_connection().execute(_HOLDER, (scope, value)).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading a claim", self.database.path) from exc
        return None if row is None else str(row[0])

    def claims_of(self, scope: str, owner: str) -> list[str]:
        """See :meth:`ClaimStore.claims_of`."""
        try:
            rows = (
                self.database.read_connection()
                .execute(
                    "SELECT value FROM claims WHERE scope = ? AND owner = ? ORDER BY value",
                    (scope, owner),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading claims", self.database.path) from exc
        return [str(r[0]) for r in rows]
