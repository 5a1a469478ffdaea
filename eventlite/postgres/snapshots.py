"""Snapshots in the ``snapshots`` table of an eventlite PostgreSQL schema."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..store.snapshots import Snapshot, SnapshotStore
from ._database import PostgresDatabase

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresSnapshotStore"]

_SAVE = (
    "INSERT INTO snapshots (stream_id, version, fingerprint, state) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, "
    "fingerprint = excluded.fingerprint, state = excluded.state "
    "WHERE excluded.version > snapshots.version"
)
_LOAD = "SELECT version, fingerprint, state FROM snapshots WHERE stream_id = %s"


class PostgresSnapshotStore(SnapshotStore):
    """Snapshots in the ``snapshots`` table; a save inside an open transaction of the same
    thread joins it."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""

    def save(self, snapshot: Snapshot) -> None:
        """See :meth:`SnapshotStore.save`."""
        params = (snapshot.stream_id, snapshot.version, snapshot.fingerprint, snapshot.state)

        def save(conn: psycopg.Connection[Any]) -> None:
            conn.execute(_SAVE, params)

        self.database.run("saving a snapshot", save)

    def load(self, stream_id: str) -> Snapshot | None:
        """See :meth:`SnapshotStore.load`."""
        row = self.database.run(
            "loading a snapshot", lambda conn: conn.execute(_LOAD, (stream_id,)).fetchone()
        )
        if row is None:
            return None
        return Snapshot(stream_id, int(row[0]), row[1], row[2])
