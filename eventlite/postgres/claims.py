"""Unique claims in the ``claims`` table of an eventlite PostgreSQL schema.

The primary key ``(scope, value)`` makes a second holder impossible. A claim is
``INSERT ... ON CONFLICT DO NOTHING`` followed by a look at the holder: when another
transaction has inserted the same value and not committed yet, the insert waits for it,
then does nothing if it committed (the claim is refused, naming that holder) or inserts
if it rolled back. No statement fails, so a refused claim leaves the caller's
transaction usable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..store.claims import AlreadyClaimed, ClaimStore, validate_claim
from ._database import PostgresDatabase

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresClaimStore"]

_INSERT = (
    "INSERT INTO claims (scope, value, owner) VALUES (%s, %s, %s) "
    "ON CONFLICT (scope, value) DO NOTHING RETURNING owner"
)
_HOLDER = "SELECT owner FROM claims WHERE scope = %s AND value = %s"


class PostgresClaimStore(ClaimStore):
    """The :class:`~eventlite.store.claims.ClaimStore` contract in the schema (see the
    module doc); every write joins the calling thread's open transaction."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""

    def claim(self, scope: str, value: str, owner: str) -> None:
        """See :meth:`ClaimStore.claim`."""
        validate_claim(scope, value, owner)

        def claim(conn: psycopg.Connection[Any]) -> str:
            while True:
                if conn.execute(_INSERT, (scope, value, owner)).fetchone() is not None:
                    return owner
                # A new statement, so it sees the commit the insert waited for.
                row = conn.execute(_HOLDER, (scope, value)).fetchone()
                if row is not None:
                    return str(row[0])
                # released since the insert looked: claim it again

        # Safe to repeat after a lost connection: a claim already made is found as ours.
        holder = self.database.run("claiming a value", claim)
        if holder != owner:
            raise AlreadyClaimed(scope, value, holder)

    def release(self, scope: str, value: str, owner: str) -> bool:
        """See :meth:`ClaimStore.release`."""
        validate_claim(scope, value, owner)

        def release(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(
                "DELETE FROM claims WHERE scope = %s AND value = %s AND owner = %s",
                (scope, value, owner),
            ).rowcount

        return 1 == self.database.run("releasing a claim", release, repeat=False)

    def holder(self, scope: str, value: str) -> str | None:
        """See :meth:`ClaimStore.holder`."""
        row = self.database.run(
            "reading a claim", lambda conn: conn.execute(_HOLDER, (scope, value)).fetchone()
        )
        return None if row is None else str(row[0])

    def claims_of(self, scope: str, owner: str) -> list[str]:
        """See :meth:`ClaimStore.claims_of`."""
        rows = self.database.run(
            "reading claims",
            lambda conn: conn.execute(
                "SELECT value FROM claims WHERE scope = %s AND owner = %s "
                'ORDER BY value COLLATE "C"',
                (scope, owner),
            ).fetchall(),
        )
        return [str(r[0]) for r in rows]

    def __repr__(self) -> str:
        return f"<PostgresClaimStore {self.database.description}>"
