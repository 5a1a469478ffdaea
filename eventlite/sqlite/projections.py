"""Projection checkpoints in the ``projections`` table; read models as ``sqlite_utils`` tables."""

from __future__ import annotations

import builtins
import functools
import sqlite3
from typing import TYPE_CHECKING, Any

from ..store.projections import LIVE, REBUILDING, ProjectionRecord, ProjectionStore
from ._database import Database, storage_error
from .schema import MIGRATIONS

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["SQLiteProjectionStore"]

_COLUMNS = "name, mode, position, status, error, updated_at, rebuilt_at"
_GET = f"SELECT {_COLUMNS} FROM projections WHERE name = ?"
_LIST = f"SELECT {_COLUMNS} FROM projections ORDER BY name"


def _record(row: tuple[Any, ...]) -> ProjectionRecord:
    return ProjectionRecord(*row)


@functools.cache
def _schema_tables(steps: int) -> frozenset[str]:
    """The tables the first ``steps`` schema steps create, found by running them on a
    scratch in-memory database (so the list never drifts from the schema)."""
    import sqlite_utils

    db = sqlite_utils.Database(memory=True, execute_plugins=False)
    try:
        for step in MIGRATIONS[:steps]:
            step.apply(db)
        return frozenset(db.table_names())
    finally:
        db.close()


class SQLiteProjectionStore(ProjectionStore):
    """:class:`ProjectionStore` over the ``projections`` table of an eventlite file.

    Writes inside an open transaction of the same thread join it; the read model is a
    ``sqlite_utils.Database`` over the thread's connection (the transaction's, inside one).
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    def _read(self, sql: str, params: tuple[Any, ...], action: str) -> list[Any]:
        try:
            return self.database.read_connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, action, self.database.path) from exc

    def register(self, name: str, mode: str, now: float) -> ProjectionRecord:
        """See :meth:`ProjectionStore.register`."""
        with self.database.transaction() as tx:
            tx.execute(
                "INSERT INTO projections (name, mode, position, status, updated_at) "
                "VALUES (?, ?, 0, ?, ?) ON CONFLICT (name) DO UPDATE SET mode = excluded.mode",
                (name, mode, LIVE, now),
            )
            row = tx.execute(_GET, (name,)).fetchone()
        return _record(row)

    def get(self, name: str) -> ProjectionRecord | None:
        """See :meth:`ProjectionStore.get`."""
        rows = self._read(_GET, (name,), "reading a projection")
        return _record(rows[0]) if rows else None

    def list(self) -> builtins.list[ProjectionRecord]:
        """See :meth:`ProjectionStore.list`."""
        return [_record(r) for r in self._read(_LIST, (), "listing projections")]

    def advance(
        self, name: str, *, expected: int, position: int, now: float, live: bool = False
    ) -> bool:
        """See :meth:`ProjectionStore.advance`."""
        with self.database.transaction() as tx:
            if live:
                cursor = tx.execute(
                    "UPDATE projections SET position = ?, status = ?, error = NULL, "
                    "updated_at = ? WHERE name = ? AND position = ?",
                    (position, LIVE, now, name, expected),
                )
            else:
                cursor = tx.execute(
                    "UPDATE projections SET position = ?, error = NULL, updated_at = ? "
                    "WHERE name = ? AND position = ?",
                    (position, now, name, expected),
                )
            return cursor.rowcount == 1

    def fail(self, name: str, error: str) -> None:
        """See :meth:`ProjectionStore.fail`."""
        with self.database.transaction() as tx:
            tx.execute("UPDATE projections SET error = ? WHERE name = ?", (error, name))

    def begin_rebuild(self, name: str, now: float) -> None:
        """See :meth:`ProjectionStore.begin_rebuild`."""
        with self.database.transaction() as tx:
            tx.execute(
                "UPDATE projections SET position = 0, status = ?, error = NULL, "
                "updated_at = ?, rebuilt_at = ? WHERE name = ?",
                (REBUILDING, now, now, name),
            )

    def read_model(self) -> sqlite_utils.Database:
        """See :meth:`ProjectionStore.read_model`: a ``sqlite_utils.Database`` over the
        thread's connection (inside a transaction, the transaction's: sqlite-utils writes
        with savepoints inside it)."""
        import sqlite_utils

        return sqlite_utils.Database(
            self.database.read_connection(), recursive_triggers=False, execute_plugins=False
        )

    def reserved_tables(self) -> frozenset[str]:
        """See :meth:`ProjectionStore.reserved_tables`: every table of the schema."""
        return _schema_tables(len(MIGRATIONS))
