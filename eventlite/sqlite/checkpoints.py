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
from ._statements import write_one

__all__ = ["SQLiteCheckpointStore"]

_CREATE = (
    "INSERT INTO subscriber_checkpoints (name, position, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO NOTHING"
)
_GET = "SELECT name, position, updated_at FROM subscriber_checkpoints WHERE name = ?"
_LIST = "SELECT name, position, updated_at FROM subscriber_checkpoints ORDER BY name"
_WRITING = "writing a checkpoint"
_MAX_POSITION = (1 << 63) - 1
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
            write_one(self.database, _CREATE, (name, position, check_time(at, "at")), _WRITING)
        except UnicodeEncodeError as exc:
            raise ValueError(f"a checkpoint name must be valid Unicode text: {exc}") from None
        return Checkpoint(*self._read(_GET, (name,))[0])

    def get(self, name: str) -> Checkpoint | None:
        """See :meth:`CheckpointStore.get`."""
        rows = self._read(_GET, (name,))
        return Checkpoint(*rows[0]) if rows else None

    def list(self) -> builtins.list[Checkpoint]:
        """See :meth:`CheckpointStore.list`."""
        return [Checkpoint(*row) for row in self._read(_LIST, ())]

    def move(self, name: str, expected: int, position: int, at: float) -> None:
        """See :meth:`CheckpointStore.move`: one ``UPDATE ... WHERE position = expected``."""
        if not (  # the relay's values pass at once; anything else is checked in full
            type(name) is str
            and name
            and type(expected) is int
            and type(position) is int
            and 0 <= expected <= _MAX_POSITION
            and 0 <= position <= _MAX_POSITION
            and type(at) is float
            and at - at == 0.0
        ):
            check_name(name)
            check_position(expected, "expected")
            check_position(position)
            at = check_time(at, "at")
        parameters = (position, at, name, expected)
        try:
            moved = write_one(self.database, _MOVE, parameters, _WRITING)
        except UnicodeEncodeError as exc:
            raise ValueError(f"a checkpoint name must be valid Unicode text: {exc}") from None
        if moved != 1:
            rows = self._read(_GET, (name,))
            raise CheckpointMoved(name, expected, rows[0][1] if rows else None)

    def __repr__(self) -> str:
        return f"<SQLiteCheckpointStore {self.database.path!r}>"
