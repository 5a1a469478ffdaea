"""Durable subscribers' checkpoints in the ``subscriber_checkpoints`` table."""

from __future__ import annotations

import builtins
import sqlite3
from typing import Any

from ..store.checkpoints import (
    Checkpoint,
    CheckpointMoved,
    CheckpointStore,
    check_name,
    check_position,
    check_time,
)
from ._database import Database, storage_error

__all__ = ["SQLiteCheckpointStore"]

_CREATE = (
    "INSERT INTO subscriber_checkpoints (name, position, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO NOTHING"
)
_GET = "SELECT name, position, updated_at FROM subscriber_checkpoints WHERE name = ?"
_LIST = "SELECT name, position, updated_at FROM subscriber_checkpoints ORDER BY name"
_MOVE = (
    "UPDATE subscriber_checkpoints SET position = ?, updated_at = ? WHERE name = ? AND position = ?"
)


class SQLiteCheckpointStore(CheckpointStore):
    """The :class:`~eventlite.store.checkpoints.CheckpointStore` contract in the
    ``subscriber_checkpoints`` table of an eventlite file."""

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        db = self.database
        try:
            return db.read_connection().execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading checkpoints", db.path) from exc
        except UnicodeEncodeError as exc:
            raise ValueError(f"a checkpoint name must be valid Unicode text: {exc}") from None

    def create(self, name: str, position: int, at: float) -> Checkpoint:
        """See :meth:`CheckpointStore.create`."""
        check_name(name)
        check_position(position)
        try:
            with self.database.transaction() as tx:
                tx.execute(_CREATE, (name, position, check_time(at, "at")))
                row = tx.execute(_GET, (name,)).fetchone()
        except UnicodeEncodeError as exc:
            raise ValueError(f"a checkpoint name must be valid Unicode text: {exc}") from None
        return Checkpoint(*row)

    def get(self, name: str) -> Checkpoint | None:
        """See :meth:`CheckpointStore.get`."""
        rows = self._read(_GET, (name,))
        return Checkpoint(*rows[0]) if rows else None

    def list(self) -> builtins.list[Checkpoint]:
        """See :meth:`CheckpointStore.list`."""
        return [Checkpoint(*row) for row in self._read(_LIST, ())]

    def move(self, name: str, expected: int, position: int, at: float) -> None:
        """See :meth:`CheckpointStore.move`: one ``UPDATE ... WHERE position = expected``."""
        check_name(name)
        check_position(expected, "expected")
        check_position(position)
        try:
            with self.database.transaction() as tx:
                moved = tx.execute(_MOVE, (position, check_time(at, "at"), name, expected))
                if moved.rowcount != 1:
                    row = tx.execute(_GET, (name,)).fetchone()
                    raise CheckpointMoved(name, expected, None if row is None else row[1])
        except UnicodeEncodeError as exc:
            raise ValueError(f"a checkpoint name must be valid Unicode text: {exc}") from None

    def __repr__(self) -> str:
        return f"<SQLiteCheckpointStore {self.database.path!r}>"
