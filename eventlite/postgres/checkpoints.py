"""Durable subscribers' checkpoints in the ``subscriber_checkpoints`` table of an eventlite
PostgreSQL schema."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from ..store.checkpoints import (
    Checkpoint,
    CheckpointMoved,
    CheckpointStore,
    check_name,
    check_position,
    check_time,
)
from ._database import PostgresDatabase
from .projections import load_text, store_text

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresCheckpointStore"]

_CREATE = (
    "INSERT INTO subscriber_checkpoints (name, position, updated_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (name) DO NOTHING"
)
_GET = "SELECT name, position, updated_at FROM subscriber_checkpoints WHERE name = %s"
_LIST = 'SELECT name, position, updated_at FROM subscriber_checkpoints ORDER BY name COLLATE "C"'
_MOVE = (
    "UPDATE subscriber_checkpoints SET position = %s, updated_at = %s "
    "WHERE name = %s AND position = %s"
)


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(load_text(row[0]), int(row[1]), float(row[2]))


def _text(value: str, what: str) -> str:
    """``value`` as a text column keeps it (NUL characters escaped, see
    :func:`~eventlite.postgres.projections.store_text`); ``ValueError`` naming ``what`` for
    text that is not valid Unicode (a lone surrogate), which no backend can store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} must be valid Unicode text: {exc}") from None
    return store_text(value)


class PostgresCheckpointStore(CheckpointStore):
    """The :class:`~eventlite.store.checkpoints.CheckpointStore` contract in PostgreSQL;
    every write joins the calling thread's open transaction of ``database``, so a
    subscriber's checkpoint moves with its handler's effects."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""

    def create(self, name: str, position: int, at: float) -> Checkpoint:
        """See :meth:`CheckpointStore.create`."""
        check_name(name)
        key = _text(name, "a checkpoint name")
        check_position(position)
        at = check_time(at, "at")

        def create(conn: psycopg.Connection[Any]) -> Any:
            conn.execute(_CREATE, (key, position, at))
            return conn.execute(_GET, (key,)).fetchone()

        return _checkpoint(self.database.run("writing a checkpoint", create))

    def get(self, name: str) -> Checkpoint | None:
        """See :meth:`CheckpointStore.get`."""
        try:
            key = _text(name, "a checkpoint name")
        except (ValueError, AttributeError):
            return None  # no such name can be stored
        row = self.database.run(
            "reading a checkpoint", lambda conn: conn.execute(_GET, (key,)).fetchone()
        )
        return None if row is None else _checkpoint(row)

    def list(self) -> builtins.list[Checkpoint]:
        """See :meth:`CheckpointStore.list`."""
        rows = self.database.run("reading checkpoints", lambda conn: conn.execute(_LIST).fetchall())
        return [_checkpoint(row) for row in rows]

    def move(self, name: str, expected: int, position: int, at: float) -> None:
        """See :meth:`CheckpointStore.move`: one ``UPDATE ... WHERE position = expected``."""
        check_name(name)
        check_position(expected, "expected")
        check_position(position)
        at = check_time(at, "at")
        key = _text(name, "a checkpoint name")

        def move(conn: psycopg.Connection[Any]) -> tuple[int, Any]:
            moved = conn.execute(_MOVE, (position, at, key, expected)).rowcount
            if moved == 1:
                return moved, None
            return moved, conn.execute(_GET, (key,)).fetchone()

        moved, row = self.database.run("writing a checkpoint", move, repeat=False)
        if moved != 1:
            raise CheckpointMoved(name, expected, None if row is None else int(row[1]))

    def __repr__(self) -> str:
        return f"<PostgresCheckpointStore {self.database.description}>"
