"""Stream processors' state entries and status rows in an eventlite SQLite file."""

from __future__ import annotations

import builtins
import functools
import json
import sqlite3
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from ..store.streams import (
    LIVE,
    REBUILDING,
    Changes,
    StreamProgress,
    StreamRecord,
    StreamStateStore,
)
from ._database import Database, storage_error

__all__ = ["SQLiteStreamStateStore"]

_COLUMNS = "name, position, status, watermarks, open, late, error, updated_at, rebuilt_at"
_GET = f"SELECT {_COLUMNS} FROM stream_processors WHERE name = ?"
_LIST = f"SELECT {_COLUMNS} FROM stream_processors ORDER BY name"
_ENTRY = "SELECT value FROM stream_processor_state WHERE stream = ? AND operator = ? AND key = ?"
_ENTRIES = (
    "SELECT key, value FROM stream_processor_state WHERE stream = ? AND operator = ? ORDER BY key"
)
_PUT = (
    "INSERT INTO stream_processor_state (stream, operator, key, value) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (stream, operator, key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM stream_processor_state WHERE stream = ? AND operator = ? AND key = ?"
_EMPTY = "{}"
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=True).encode


_JSON_TEXT = json.JSONEncoder(default=repr, ensure_ascii=False).encode
_PLAIN = (str, int, float, bool, bytes, type(None))
_COLUMN_TYPES: dict[type[Any], str] = {
    int: "INTEGER",
    bool: "INTEGER",
    float: "FLOAT",
    Decimal: "FLOAT",
    bytes: "BLOB",
}


def _cell(value: Any) -> Any:
    """A value as sqlite-utils stores it (``jsonify_if_needed``)."""
    t = type(value)
    if t in _PLAIN:
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dict, list, tuple)):
        return _JSON_TEXT(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (timedelta, uuid.UUID)):
        return str(value)
    return value


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@functools.lru_cache(maxsize=256)
def _upsert_sql(table: str, columns: tuple[str, ...], pk: tuple[str, ...]) -> str:
    names = ", ".join(map(_quote, columns))
    marks = ", ".join("?" * len(columns))
    target = ", ".join(map(_quote, pk))
    rest = [c for c in columns if c not in pk]
    if rest:
        sets = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in rest)
        action = f"DO UPDATE SET {sets}"
    else:
        action = "DO NOTHING"
    return f"INSERT INTO {_quote(table)} ({names}) VALUES ({marks}) ON CONFLICT ({target}) {action}"


def _record(row: tuple[Any, ...]) -> StreamRecord:
    name, position, status, watermarks, open_, late, error, updated_at, rebuilt_at = row
    return StreamRecord(
        name,
        int(position),
        status,
        json.loads(watermarks),
        json.loads(open_),
        json.loads(late),
        error,
        float(updated_at),
        None if rebuilt_at is None else float(rebuilt_at),
    )


class SQLiteStreamStateStore(StreamStateStore):
    """:class:`~eventlite.store.streams.StreamStateStore` over the ``stream_processors`` and
    ``stream_processor_state`` tables of an eventlite file.

    Writes inside an open transaction of the same thread join it (as a savepoint); reads
    go through the thread's connection, so inside a transaction they see its writes.
    Values are stored as compact JSON text.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    def _read(self, sql: str, params: tuple[Any, ...], action: str) -> builtins.list[Any]:
        try:
            return self.database.read_connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, action, self.database.path) from exc

    def register(self, name: str, now: float) -> StreamRecord:
        """See :meth:`StreamStateStore.register`."""
        try:
            with self.database.transaction() as tx:
                tx.execute(
                    "INSERT INTO stream_processors (name, position, status, watermarks, open, "
                    "late, updated_at) VALUES (?, 0, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                    (name, LIVE, _EMPTY, _EMPTY, _EMPTY, now),
                )
                row = tx.execute(_GET, (name,)).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(exc, "registering a stream", self.database.path) from exc
        return _record(row)

    def get(self, name: str) -> StreamRecord | None:
        """See :meth:`StreamStateStore.get`."""
        rows = self._read(_GET, (name,), "reading a stream's status")
        return _record(rows[0]) if rows else None

    def list(self) -> builtins.list[StreamRecord]:
        """See :meth:`StreamStateStore.list`."""
        return [_record(r) for r in self._read(_LIST, (), "listing streams")]

    def entry(self, name: str, operator: str, key: str) -> Any | None:
        """See :meth:`StreamStateStore.entry`."""
        rows = self._read(_ENTRY, (name, operator, key), "reading a stream's state")
        return json.loads(rows[0][0]) if rows else None

    def entries(self, name: str, operator: str) -> builtins.list[tuple[str, Any]]:
        """See :meth:`StreamStateStore.entries`."""
        loads = json.loads
        rows = self._read(_ENTRIES, (name, operator), "reading a stream's state")
        return [(key, loads(value)) for key, value in rows]

    def save(
        self,
        name: str,
        changes: Changes,
        progress: StreamProgress,
        *,
        expected: int,
        now: float,
        live: bool = False,
    ) -> bool:
        """See :meth:`StreamStateStore.save`: one ``UPDATE`` guarded by the position, then
        the entries with two ``executemany``."""
        puts: builtins.list[tuple[str, str, str, str]] = []
        deletes: builtins.list[tuple[str, str, str]] = []
        dumps = _dumps
        for (operator, key), value in changes.items():
            if value is None:
                deletes.append((name, operator, key))
            else:
                puts.append((name, operator, key, dumps(value)))
        summary = (
            dumps(dict(progress.watermarks)),
            dumps(dict(progress.open)),
            dumps(dict(progress.late)),
        )
        status = ", status = ?" if live else ""
        params: tuple[Any, ...] = (progress.position, *summary, now)
        if live:
            params += (LIVE,)
        try:
            with self.database.transaction() as tx:
                moved = tx.execute(
                    "UPDATE stream_processors SET position = ?, watermarks = ?, open = ?, "
                    f"late = ?, error = NULL, updated_at = ?{status} "
                    "WHERE name = ? AND position = ?",
                    (*params, name, expected),
                ).rowcount
                if moved != 1:
                    return False
                if deletes:
                    tx.conn.executemany(_DELETE, deletes)
                if puts:
                    tx.conn.executemany(_PUT, puts)
        except sqlite3.Error as exc:
            raise storage_error(exc, "saving a stream's state", self.database.path) from exc
        return True

    def fail(self, name: str, error: str) -> None:
        """See :meth:`StreamStateStore.fail`."""
        try:
            with self.database.transaction() as tx:
                tx.execute("UPDATE stream_processors SET error = ? WHERE name = ?", (error, name))
        except sqlite3.Error as exc:
            raise storage_error(exc, "recording a stream's error", self.database.path) from exc

    def write_rows(
        self,
        table: str,
        pk: Sequence[str],
        upserts: Sequence[Mapping[str, Any]],
        deletes: Sequence[Sequence[Any]] = (),
    ) -> None:
        """See :meth:`StreamStateStore.write_rows`: the table made or widened as rows need,
        then one ``executemany`` for the deletes and one per set of columns for the
        upserts (``INSERT ... ON CONFLICT DO UPDATE``)."""
        pk = tuple(pk)
        try:
            with self.database.transaction() as tx:
                conn = tx.conn
                columns = self._columns(conn, table)
                if not columns:
                    if not upserts:
                        return  # nothing to delete from a table that does not exist
                    columns = self._create(conn, table, pk, upserts[0])
                if deletes:
                    where = " AND ".join(f"{_quote(c)} = ?" for c in pk)
                    conn.executemany(
                        f"DELETE FROM {_quote(table)} WHERE {where}",
                        [tuple(map(_cell, key)) for key in deletes],
                    )
                groups: dict[tuple[str, ...], builtins.list[tuple[Any, ...]]] = {}
                for row in upserts:
                    names = tuple(row)
                    group = groups.get(names)
                    if group is None:
                        group = groups[names] = []
                        for name in names:
                            if name not in columns:
                                kind = _COLUMN_TYPES.get(type(row[name]), "TEXT")
                                conn.execute(
                                    f"ALTER TABLE {_quote(table)} ADD COLUMN {_quote(name)} {kind}"
                                )
                                columns.add(name)
                    group.append(tuple(map(_cell, row.values())))
                for names, values in groups.items():
                    conn.executemany(_upsert_sql(table, names, pk), values)
        except sqlite3.Error as exc:
            raise storage_error(exc, f"writing rows of {table!r}", self.database.path) from exc

    @staticmethod
    def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({_quote(table)})")}

    @staticmethod
    def _create(
        conn: sqlite3.Connection, table: str, pk: tuple[str, ...], row: Mapping[str, Any]
    ) -> set[str]:
        names = list(row)
        names.extend(c for c in pk if c not in row)
        defs = ", ".join(
            f"{_quote(c)} {_COLUMN_TYPES.get(type(row.get(c)), 'TEXT')}" for c in names
        )
        keys = ", ".join(map(_quote, pk))
        conn.execute(f"CREATE TABLE {_quote(table)} ({defs}, PRIMARY KEY ({keys}))")
        return set(names)

    def clear_tables(self, tables: Iterable[str]) -> None:
        """See :meth:`StreamStateStore.clear_tables`."""
        try:
            with self.database.transaction() as tx:
                for table in tables:
                    if self._columns(tx.conn, table):
                        tx.execute(f"DELETE FROM {_quote(table)}")
        except sqlite3.Error as exc:
            raise storage_error(exc, "emptying tables", self.database.path) from exc

    def reset(self, name: str, now: float) -> None:
        """See :meth:`StreamStateStore.reset`."""
        try:
            with self.database.transaction() as tx:
                changed = tx.execute(
                    "UPDATE stream_processors SET position = 0, status = ?, watermarks = ?, "
                    "open = ?, late = ?, error = NULL, updated_at = ?, rebuilt_at = ? "
                    "WHERE name = ?",
                    (REBUILDING, _EMPTY, _EMPTY, _EMPTY, now, now, name),
                ).rowcount
                if changed:
                    tx.execute("DELETE FROM stream_processor_state WHERE stream = ?", (name,))
        except sqlite3.Error as exc:
            raise storage_error(exc, "resetting a stream", self.database.path) from exc
