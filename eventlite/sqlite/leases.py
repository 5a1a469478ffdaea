"""Leases in the ``leases`` table of an eventlite SQLite file."""

from __future__ import annotations

import sqlite3
import time

from ..clock import Clock
from ..store.leases import Lease, LeaseLost, LeaseStore, validate
from ._database import Database, storage_error

__all__ = ["SQLiteLeaseStore"]

_ROW = "SELECT owner, generation, expires_at FROM leases WHERE name = ?"


class SQLiteLeaseStore(LeaseStore):
    """The :class:`~eventlite.store.leases.LeaseStore` contract in the eventlite file.

    Every call is one ``BEGIN IMMEDIATE`` transaction (or joins the thread's open one), so
    processes sharing the file see one order of acquisitions and checks. The time is
    :attr:`clock`'s, else the system clock: the processes share one machine.
    """

    def __init__(self, database: Database, *, clock: Clock | None = None) -> None:
        self.database = database
        """The eventlite file."""
        self.clock = clock

    def _now(self) -> float:
        clock = self.clock
        return clock.now() if clock is not None else time.time()

    def _row(self, conn: sqlite3.Connection, name: str) -> Lease | None:
        row = conn.execute(_ROW, (name,)).fetchone()
        if row is None or row[0] is None:
            return None
        return Lease(name, row[0], int(row[1]), float(row[2]))

    def acquire(self, name: str, owner: str, ttl: float) -> Lease | None:
        """See :meth:`LeaseStore.acquire`."""
        validate(name, owner, ttl)
        try:
            with self.database.transaction() as tx:
                now = self._now()
                row = tx.execute(_ROW, (name,)).fetchone()
                if row is None:
                    generation = 1
                    tx.execute(
                        "INSERT INTO leases (name, owner, generation, expires_at) "
                        "VALUES (?, ?, ?, ?)",
                        (name, owner, generation, now + ttl),
                    )
                    return Lease(name, owner, generation, now + ttl)
                held_by, generation, expires_at = row
                if held_by == owner:
                    pass
                elif held_by is None or expires_at <= now:
                    generation += 1
                else:
                    return None
                tx.execute(
                    "UPDATE leases SET owner = ?, generation = ?, expires_at = ? WHERE name = ?",
                    (owner, generation, now + ttl, name),
                )
                return Lease(name, owner, int(generation), now + ttl)
        except sqlite3.Error as exc:
            raise storage_error(exc, "acquiring a lease", self.database.path) from exc

    def renew(self, name: str, owner: str, generation: int, ttl: float) -> Lease:
        """See :meth:`LeaseStore.renew`."""
        validate(name, owner, ttl)
        try:
            with self.database.transaction() as tx:
                now = self._now()
                changed = tx.execute(
                    "UPDATE leases SET expires_at = ? "
                    "WHERE name = ? AND owner = ? AND generation = ?",
                    (now + ttl, name, owner, generation),
                ).rowcount
                if not changed:
                    raise LeaseLost(name, owner, generation, self._row(tx.conn, name))
                return Lease(name, owner, generation, now + ttl)
        except sqlite3.Error as exc:
            raise storage_error(exc, "renewing a lease", self.database.path) from exc

    def release(self, name: str, owner: str, generation: int) -> bool:
        """See :meth:`LeaseStore.release`."""
        validate(name, owner)
        try:
            with self.database.transaction() as tx:
                changed = tx.execute(
                    "UPDATE leases SET owner = NULL, expires_at = NULL "
                    "WHERE name = ? AND owner = ? AND generation = ?",
                    (name, owner, generation),
                ).rowcount
                return bool(changed)
        except sqlite3.Error as exc:
            raise storage_error(exc, "releasing a lease", self.database.path) from exc

    def holder(self, name: str) -> Lease | None:
        """See :meth:`LeaseStore.holder`."""
        try:
            return self._row(self.database.read_connection(), name)
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading a lease", self.database.path) from exc

    def leases(self, prefix: str = "") -> list[Lease]:
        """See :meth:`LeaseStore.leases`."""
        try:
            rows = (
                self.database.read_connection()
                .execute(
                    "SELECT name, owner, generation, expires_at FROM leases "
                    "WHERE owner IS NOT NULL AND substr(name, 1, ?) = ? ORDER BY name",
                    (len(prefix), prefix),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading leases", self.database.path) from exc
        return [Lease(n, o, int(g), float(e)) for n, o, g, e in rows]

    def check(self, name: str, owner: str, generation: int) -> None:
        """See :meth:`LeaseStore.check`: a read inside the caller's ``BEGIN IMMEDIATE``
        transaction, which no other writer can interleave with."""
        validate(name, owner)
        try:
            with self.database.transaction() as tx:
                lease = self._row(tx.conn, name)
        except sqlite3.Error as exc:
            raise storage_error(exc, "checking a lease", self.database.path) from exc
        if lease is None or (lease.owner, lease.generation) != (owner, generation):
            raise LeaseLost(name, owner, generation, lease)
