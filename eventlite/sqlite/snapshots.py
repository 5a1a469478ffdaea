"""Snapshots in the ``snapshots`` table of an eventlite SQLite file."""

from __future__ import annotations

from ..store.snapshots import Snapshot, SnapshotStore
from ._database import Database

__all__ = ["SQLiteSnapshotStore"]


class SQLiteSnapshotStore(SnapshotStore):
    """Snapshots in the ``snapshots`` table of the eventlite file; a save inside an open
    transaction of the same thread joins it."""

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    def save(self, snapshot: Snapshot) -> None:
        """See :meth:`SnapshotStore.save`."""
        with self.database.transaction() as tx:
            tx.execute(
                "INSERT INTO snapshots (stream_id, version, fingerprint, state) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET "
                "version = excluded.version, fingerprint = excluded.fingerprint, "
                "state = excluded.state WHERE excluded.version > snapshots.version",
                (snapshot.stream_id, snapshot.version, snapshot.fingerprint, snapshot.state),
            )

    def load(self, stream_id: str) -> Snapshot | None:
        """See :meth:`SnapshotStore.load`."""
        with self.database.read() as conn:
            row = conn.execute(
                "SELECT version, fingerprint, state FROM snapshots WHERE stream_id = ?",
                (stream_id,),
            ).fetchone()
        if row is None:
            return None
        return Snapshot(stream_id, row[0], row[1], row[2])
