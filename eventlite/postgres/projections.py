"""Projection checkpoints in the ``projections`` table of an eventlite PostgreSQL schema;
read models as tables of the same schema, written through :mod:`eventlite.postgres.read_model`.

A checkpoint moves by one ``UPDATE ... WHERE position = <expected>``: of two writers
moving it from the same position, in any processes, the second waits for the first's
row lock, finds the position moved and changes nothing.
"""

from __future__ import annotations

import builtins
import functools
import re
from typing import TYPE_CHECKING, Any

from ..store.projections import LIVE, REBUILDING, ProjectionRecord, ProjectionStore
from ._database import PostgresDatabase
from .schema import MIGRATIONS

if TYPE_CHECKING:
    import psycopg

    from .read_model import PostgresReadModel

__all__ = ["PostgresProjectionStore"]

_COLUMNS = "name, mode, position, status, error, updated_at, rebuilt_at"
_GET = f"SELECT {_COLUMNS} FROM projections WHERE name = %s"
_LIST = f'SELECT {_COLUMNS} FROM projections ORDER BY name COLLATE "C"'
_CREATED = re.compile(r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)", re.I)

# A text column cannot hold NUL characters, which an error description may: they are
# stored as ESC "0", and ESC itself as ESC ESC. Text holding neither is stored as it is.
_ESC = "\x1b"


def store_text(text: str) -> str:
    """``text`` in a form a text column keeps (see :func:`load_text`)."""
    if "\x00" not in text and _ESC not in text:
        return text
    return text.replace(_ESC, _ESC + _ESC).replace("\x00", _ESC + "0")


def load_text(stored: str) -> str:
    """The text :func:`store_text` was given."""
    if _ESC not in stored:
        return stored
    out: list[str] = []
    chars = iter(stored)
    for char in chars:
        if char == _ESC:
            following = next(chars, "")
            out.append("\x00" if following == "0" else following)
        else:
            out.append(char)
    return "".join(out)


def _record(row: Any) -> ProjectionRecord:
    name, mode, position, status, error, updated_at, rebuilt_at = row
    return ProjectionRecord(
        name,
        mode,
        int(position),
        status,
        None if error is None else load_text(error),
        updated_at,
        rebuilt_at,
    )


@functools.cache
def _schema_tables(steps: int) -> frozenset[str]:
    """The tables the first ``steps`` schema steps create (read from their DDL, so the
    list never drifts from the schema)."""
    return frozenset(
        name.lower()
        for step in MIGRATIONS[:steps]
        for statement in step.statements
        for name in _CREATED.findall(statement)
    )


class PostgresProjectionStore(ProjectionStore):
    """:class:`ProjectionStore` over the ``projections`` table (see the module doc).

    Writes inside an open transaction of the same thread join it; the read model is a
    :class:`~eventlite.postgres.read_model.PostgresReadModel` over the same database.
    """

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""
        self._tables: dict[str, Any] = {}  # the read model's catalog cache

    def _read(self, sql: str, params: tuple[Any, ...], action: str) -> list[Any]:
        return self.database.run(action, lambda conn: conn.execute(sql, params).fetchall())

    def _write(self, action: str, sql: str, params: tuple[Any, ...]) -> int:
        def write(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(sql, params).rowcount

        return self.database.run(action, write, repeat=False)

    def register(self, name: str, mode: str, now: float) -> ProjectionRecord:
        """See :meth:`ProjectionStore.register`."""
        row = self.database.run(
            "registering a projection",
            lambda conn: conn.execute(
                "INSERT INTO projections (name, mode, position, status, updated_at) "
                "VALUES (%s, %s, 0, %s, %s) ON CONFLICT (name) DO UPDATE SET mode = excluded.mode "
                f"RETURNING {_COLUMNS}",
                (name, mode, LIVE, now),
            ).fetchone(),
        )
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
        if live:
            return 1 == self._write(
                "moving a projection's checkpoint",
                "UPDATE projections SET position = %s, status = %s, error = NULL, "
                "updated_at = %s WHERE name = %s AND position = %s",
                (position, LIVE, now, name, expected),
            )
        return 1 == self._write(
            "moving a projection's checkpoint",
            "UPDATE projections SET position = %s, error = NULL, updated_at = %s "
            "WHERE name = %s AND position = %s",
            (position, now, name, expected),
        )

    def fail(self, name: str, error: str) -> None:
        """See :meth:`ProjectionStore.fail`."""
        self._write(
            "recording a projection's failure",
            "UPDATE projections SET error = %s WHERE name = %s",
            (store_text(error), name),
        )

    def begin_rebuild(self, name: str, now: float) -> None:
        """See :meth:`ProjectionStore.begin_rebuild`."""
        self._write(
            "starting a projection's rebuild",
            "UPDATE projections SET position = 0, status = %s, error = NULL, "
            "updated_at = %s, rebuilt_at = %s WHERE name = %s",
            (REBUILDING, now, now, name),
        )

    def read_model(self) -> PostgresReadModel:
        """See :meth:`ProjectionStore.read_model`: a
        :class:`~eventlite.postgres.read_model.PostgresReadModel` (the portable subset of
        sqlite-utils' API) whose statements run in the calling thread's open transaction
        when there is one, else each on its own."""
        from .read_model import PostgresReadModel

        return PostgresReadModel(self.database, cache=self._tables)

    def reserved_tables(self) -> frozenset[str]:
        """See :meth:`ProjectionStore.reserved_tables`: every table of the schema."""
        return _schema_tables(len(MIGRATIONS))

    def __repr__(self) -> str:
        return f"<PostgresProjectionStore {self.database.description}>"
