"""Leases in the ``leases`` table of an eventlite PostgreSQL schema."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..clock import Clock
from ..store.leases import Lease, LeaseLost, LeaseStore, validate
from ._database import PostgresDatabase

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresLeaseStore"]

_SERVER_NOW = "extract(epoch FROM clock_timestamp())::float8"
_ACQUIRE = (
    "INSERT INTO leases AS l (name, owner, generation, expires_at) "
    "VALUES (%(name)s, %(owner)s, 1, {now} + %(ttl)s) "
    "ON CONFLICT (name) DO UPDATE SET "
    "generation = CASE WHEN l.owner = excluded.owner THEN l.generation "
    "ELSE l.generation + 1 END, "
    "owner = excluded.owner, expires_at = excluded.expires_at "
    "WHERE l.owner = excluded.owner OR l.owner IS NULL OR l.expires_at <= {now} "
    "RETURNING owner, generation, expires_at"
)
_RENEW = (
    "UPDATE leases SET expires_at = {now} + %(ttl)s "
    "WHERE name = %(name)s AND owner = %(owner)s AND generation = %(generation)s "
    "RETURNING expires_at"
)
_RELEASE = (
    "UPDATE leases SET owner = NULL, expires_at = NULL "
    "WHERE name = %(name)s AND owner = %(owner)s AND generation = %(generation)s"
)
_HOLDER = "SELECT owner, generation, expires_at FROM leases WHERE name = %s AND owner IS NOT NULL"
_CHECK = "SELECT owner, generation, expires_at FROM leases WHERE name = %s FOR SHARE"
_LEASES = (
    "SELECT name, owner, generation, expires_at FROM leases "
    'WHERE owner IS NOT NULL AND left(name, %s) = %s ORDER BY name COLLATE "C"'
)


class PostgresLeaseStore(LeaseStore):
    """The :class:`~eventlite.store.leases.LeaseStore` contract in PostgreSQL.

    Each call is one statement (or joins the thread's open transaction). Without a
    :attr:`clock`, expiries are the database server's ``clock_timestamp()``: one clock
    for every machine sharing the store. :meth:`check` locks the lease row
    (``FOR SHARE``) until the caller's commit, so a takeover waits for that commit.
    """

    def __init__(self, database: PostgresDatabase, *, clock: Clock | None = None) -> None:
        self.database = database
        """The database."""
        self.clock = clock

    def _sql(self, template: str, params: dict[str, Any]) -> str:
        clock = self.clock
        if clock is None:
            return template.format(now=_SERVER_NOW)
        params["now"] = float(clock.now())
        return template.format(now="%(now)s::float8")

    def acquire(self, name: str, owner: str, ttl: float) -> Lease | None:
        """See :meth:`LeaseStore.acquire`."""
        validate(name, owner, ttl)
        params: dict[str, Any] = {"name": name, "owner": owner, "ttl": float(ttl)}
        sql = self._sql(_ACQUIRE, params)
        row = self.database.run(
            "acquiring a lease", lambda conn: conn.execute(sql, params).fetchone()
        )
        if row is None:
            return None
        return Lease(name, row[0], int(row[1]), float(row[2]))

    def renew(self, name: str, owner: str, generation: int, ttl: float) -> Lease:
        """See :meth:`LeaseStore.renew`."""
        validate(name, owner, ttl)
        params: dict[str, Any] = {
            "name": name,
            "owner": owner,
            "generation": generation,
            "ttl": float(ttl),
        }
        sql = self._sql(_RENEW, params)

        def renew(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
            row = conn.execute(sql, params).fetchone()
            if row is None:
                return (None, conn.execute(_HOLDER, (name,)).fetchone())
            return (row[0], None)

        result = self.database.run("renewing a lease", renew)
        assert result is not None
        expires_at, current = result
        if expires_at is None:
            raise LeaseLost(name, owner, generation, _lease(name, current))
        return Lease(name, owner, generation, float(expires_at))

    def release(self, name: str, owner: str, generation: int) -> bool:
        """See :meth:`LeaseStore.release`."""
        validate(name, owner)
        params = {"name": name, "owner": owner, "generation": generation}
        count = self.database.run(
            "releasing a lease", lambda conn: conn.execute(_RELEASE, params).rowcount
        )
        return bool(count)

    def holder(self, name: str) -> Lease | None:
        """See :meth:`LeaseStore.holder`."""
        row = self.database.run(
            "reading a lease", lambda conn: conn.execute(_HOLDER, (name,)).fetchone()
        )
        return _lease(name, row)

    def leases(self, prefix: str = "") -> list[Lease]:
        """See :meth:`LeaseStore.leases`."""
        rows = self.database.run(
            "reading leases", lambda conn: conn.execute(_LEASES, (len(prefix), prefix)).fetchall()
        )
        return [Lease(n, o, int(g), float(e)) for n, o, g, e in rows]

    def check(self, name: str, owner: str, generation: int) -> None:
        """See :meth:`LeaseStore.check`."""
        validate(name, owner)
        row = self.database.run(
            "checking a lease", lambda conn: conn.execute(_CHECK, (name,)).fetchone()
        )
        lease = _lease(name, row)
        if lease is None or (lease.owner, lease.generation) != (owner, generation):
            raise LeaseLost(name, owner, generation, lease)


def _lease(name: str, row: Any) -> Lease | None:
    if row is None or row[0] is None:
        return None
    return Lease(name, row[0], int(row[1]), float(row[2]))
