"""Idempotency keys in the ``idempotency_keys`` table of an eventlite PostgreSQL schema.

A claim is ``INSERT ... ON CONFLICT DO NOTHING``; when the key is taken, its row is read
``FOR UPDATE`` and replaced only if it is no longer live. Of two callers claiming one key
at the same moment, in any processes, one gets it and the other gets the winner's record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..store.idempotency import IdempotencyRecord, IdempotencyStore
from ._database import PostgresDatabase

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresIdempotencyStore"]

_SELECT = (
    "SELECT key, owner, started_at, lease_until, result, expires_at, state "
    "FROM idempotency_keys WHERE key = %s"
)
_INSERT = (
    "INSERT INTO idempotency_keys (key, state, owner, started_at, lease_until) "
    "VALUES (%s, 'running', %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING key"
)
_REPLACE = (
    "UPDATE idempotency_keys SET state = 'running', owner = %s, started_at = %s, "
    "lease_until = %s, result = NULL, expires_at = NULL WHERE key = %s"
)


def _record(row: Any) -> IdempotencyRecord | None:
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


class PostgresIdempotencyStore(IdempotencyStore):
    """The :class:`IdempotencyStore` contract in the schema (see the module doc); every
    write joins the calling thread's open transaction of ``database``."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""

    def find(self, key: str) -> IdempotencyRecord | None:
        """See :meth:`IdempotencyStore.find`."""
        return _record(
            self.database.run(
                "reading an idempotency key", lambda conn: conn.execute(_SELECT, (key,)).fetchone()
            )
        )

    def claim(
        self, key: str, owner: str, *, now: float, lease_until: float
    ) -> tuple[bool, IdempotencyRecord | None]:
        """See :meth:`IdempotencyStore.claim`."""
        with self.database.transaction() as tx:
            while True:
                if tx.execute(_INSERT, (key, owner, now, lease_until)).fetchone():
                    return True, None
                found = _record(tx.execute(_SELECT + " FOR UPDATE", (key,)).fetchone())
                if found is None:
                    continue  # deleted since the insert looked: try again
                if found.live(now):
                    return False, found
                tx.execute(_REPLACE, (owner, now, lease_until, key))
                return True, found

    def _write(self, action: str, sql: str, params: tuple[Any, ...]) -> int:
        def write(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(sql, params).rowcount

        return self.database.run(action, write, repeat=False)

    def complete(self, key: str, owner: str, result: str, *, expires_at: float) -> bool:
        """See :meth:`IdempotencyStore.complete`."""
        return 1 == self._write(
            "completing an idempotency key",
            "UPDATE idempotency_keys SET state = 'done', result = %s, expires_at = %s "
            "WHERE key = %s AND owner = %s AND state = 'running'",
            (result, expires_at, key, owner),
        )

    def release(self, key: str, owner: str) -> bool:
        """See :meth:`IdempotencyStore.release`."""
        return 1 == self._write(
            "releasing an idempotency key",
            "DELETE FROM idempotency_keys WHERE key = %s AND owner = %s AND state = 'running'",
            (key, owner),
        )

    def forget(self, key: str) -> bool:
        """See :meth:`IdempotencyStore.forget`."""
        return 1 == self._write(
            "forgetting an idempotency key",
            "DELETE FROM idempotency_keys WHERE key = %s",
            (key,),
        )

    def purge_expired(self, now: float) -> int:
        """See :meth:`IdempotencyStore.purge_expired`."""
        return self._write(
            "purging idempotency keys",
            "DELETE FROM idempotency_keys WHERE state = 'done' AND expires_at <= %s",
            (now,),
        )

    def __repr__(self) -> str:
        return f"<PostgresIdempotencyStore {self.database.description}>"
