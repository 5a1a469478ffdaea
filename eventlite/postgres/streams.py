"""Stream processors' state entries and status rows in an eventlite PostgreSQL schema (the
``stream_processors`` and ``stream_processor_state`` tables), and the rows they write into
read-model tables of the same schema."""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..store.retries import storable_text
from ..store.streams import (
    LIVE,
    REBUILDING,
    Changes,
    StreamProgress,
    StreamRecord,
    StreamStateStore,
)
from ._database import PostgresDatabase
from .projections import load_text, store_text
from .read_model import quote

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStreamStateStore"]

_COLUMNS = "name, position, status, watermarks, open, late, error, updated_at, rebuilt_at"
_GET = f"SELECT {_COLUMNS} FROM stream_processors WHERE name = %s"
_LIST = f'SELECT {_COLUMNS} FROM stream_processors ORDER BY name COLLATE "C"'
_REGISTER = (
    "INSERT INTO stream_processors (name, position, status, watermarks, open, late, "
    "updated_at) VALUES (%s, 0, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING"
)
_ENTRY = "SELECT value FROM stream_processor_state WHERE stream = %s AND operator = %s AND key = %s"
_ENTRIES = (
    "SELECT key, value FROM stream_processor_state WHERE stream = %s AND operator = %s "
    'ORDER BY key COLLATE "C"'
)
_PUT = (
    "INSERT INTO stream_processor_state (stream, operator, key, value) "
    "VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (stream, operator, key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM stream_processor_state WHERE stream = %s AND operator = %s AND key = %s"
_EMPTY = "{}"
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=True).encode
_JSON_TEXT = json.JSONEncoder(default=repr, ensure_ascii=False).encode
_COLUMN_TYPES: dict[type[Any], str] = {
    int: "bigint",
    bool: "bigint",
    float: "double precision",
    Decimal: "double precision",
    bytes: "bytea",
}


def _cell(value: Any) -> Any:
    """A value as the SQLite backend stores it (sqlite-utils' conversions), so rows read
    back alike on both backends; booleans as 0 and 1, text with NUL kept reversibly."""
    t = type(value)
    if t is str:
        return store_text(value)
    if t is bool:
        return int(value)
    if t in (int, float, bytes) or value is None:
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dict, list, tuple)):
        return store_text(_JSON_TEXT(value))
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (timedelta, uuid.UUID)):
        return str(value)
    return value


def _record(row: Any) -> StreamRecord:
    name, position, status, watermarks, open_, late, error, updated_at, rebuilt_at = row
    return StreamRecord(
        load_text(name),
        int(position),
        status,
        json.loads(watermarks),
        json.loads(open_),
        json.loads(late),
        None if error is None else load_text(error),
        float(updated_at),
        None if rebuilt_at is None else float(rebuilt_at),
    )


class PostgresStreamStateStore(StreamStateStore):
    """:class:`~eventlite.store.streams.StreamStateStore` in PostgreSQL. Writes join the
    calling thread's open transaction (a stream's batch commits its outputs, state and
    checkpoint together); values are stored as compact JSON text."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""

    def _rows(self, action: str, sql: str, params: tuple[Any, ...]) -> builtins.list[Any]:
        rows: builtins.list[Any] = self.database.run(
            action, lambda conn: conn.execute(sql, params).fetchall()
        )
        return rows

    def register(self, name: str, now: float) -> StreamRecord:
        """See :meth:`StreamStateStore.register`."""
        key = store_text(name)
        with self.database.transaction() as tx:
            tx.execute(_REGISTER, (key, LIVE, _EMPTY, _EMPTY, _EMPTY, now))
            row = tx.execute(_GET, (key,)).fetchone()
        return _record(row)

    def get(self, name: str) -> StreamRecord | None:
        """See :meth:`StreamStateStore.get`."""
        rows = self._rows("reading a stream's status", _GET, (store_text(name),))
        return _record(rows[0]) if rows else None

    def list(self) -> builtins.list[StreamRecord]:
        """See :meth:`StreamStateStore.list`."""
        return [_record(r) for r in self._rows("listing streams", _LIST, ())]

    def entry(self, name: str, operator: str, key: str) -> Any | None:
        """See :meth:`StreamStateStore.entry`."""
        params = (store_text(name), store_text(operator), store_text(key))
        rows = self._rows("reading a stream's state", _ENTRY, params)
        return json.loads(rows[0][0]) if rows else None

    def entries(self, name: str, operator: str) -> builtins.list[tuple[str, Any]]:
        """See :meth:`StreamStateStore.entries`."""
        params = (store_text(name), store_text(operator))
        rows = self._rows("reading a stream's state", _ENTRIES, params)
        return sorted(((load_text(k), json.loads(v)) for k, v in rows), key=lambda kv: kv[0])

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
        stream = store_text(name)
        puts: builtins.list[tuple[str, str, str, str]] = []
        deletes: builtins.list[tuple[str, str, str]] = []
        for (operator, key), value in changes.items():
            if value is None:
                deletes.append((stream, store_text(operator), store_text(key)))
            else:
                puts.append((stream, store_text(operator), store_text(key), _dumps(value)))
        status = ", status = %s" if live else ""
        params: tuple[Any, ...] = (
            progress.position,
            _dumps(dict(progress.watermarks)),
            _dumps(dict(progress.open)),
            _dumps(dict(progress.late)),
            now,
        )
        if live:
            params += (LIVE,)
        with self.database.transaction() as tx:
            moved = tx.execute(
                "UPDATE stream_processors SET position = %s, watermarks = %s, open = %s, "
                f"late = %s, error = NULL, updated_at = %s{status} "
                "WHERE name = %s AND position = %s",
                (*params, stream, expected),
            ).rowcount
            if moved != 1:
                return False
            with tx.conn.cursor() as cursor:
                if deletes:
                    cursor.executemany(_DELETE, deletes)
                if puts:
                    cursor.executemany(_PUT, puts)
        return True

    def fail(self, name: str, error: str) -> None:
        """See :meth:`StreamStateStore.fail`."""
        text = store_text(storable_text(error))
        self.database.run(
            "recording a stream's error",
            lambda conn: conn.execute(
                "UPDATE stream_processors SET error = %s WHERE name = %s",
                (text, store_text(name)),
            ),
        )

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
        keys = tuple(pk)
        with self.database.transaction() as tx:
            conn = tx.conn
            columns = self._columns(conn, table)
            if not columns:
                if not upserts:
                    return  # nothing to delete from a table that does not exist
                columns = self._create(conn, table, keys, upserts[0])
            with conn.cursor() as cursor:
                if deletes:
                    where = " AND ".join(f"{quote(c)} = %s" for c in keys)
                    cursor.executemany(
                        f"DELETE FROM {quote(table)} WHERE {where}",
                        [tuple(map(_cell, key)) for key in deletes],
                    )
                groups: dict[tuple[str, ...], builtins.list[tuple[Any, ...]]] = {}
                for row in upserts:
                    names = tuple(row)
                    group = groups.get(names)
                    if group is None:
                        group = groups[names] = []
                        for column in names:
                            if column not in columns:
                                kind = _COLUMN_TYPES.get(type(row[column]), "text")
                                conn.execute(
                                    f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column)} {kind}"
                                )
                                columns.add(column)
                    group.append(tuple(map(_cell, row.values())))
                for names, values in groups.items():
                    cursor.executemany(_upsert_sql(table, names, keys), values)

    @staticmethod
    def _columns(conn: psycopg.Connection[Any], table: str) -> set[str]:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        ).fetchall()
        return {row[0] for row in rows}

    @staticmethod
    def _create(
        conn: psycopg.Connection[Any], table: str, pk: tuple[str, ...], row: Mapping[str, Any]
    ) -> set[str]:
        names = list(row)
        names.extend(c for c in pk if c not in row)
        defs = ", ".join(f"{quote(c)} {_COLUMN_TYPES.get(type(row.get(c)), 'text')}" for c in names)
        keys = ", ".join(map(quote, pk))
        conn.execute(f"CREATE TABLE {quote(table)} ({defs}, PRIMARY KEY ({keys}))")
        return set(names)

    def clear_tables(self, tables: Iterable[str]) -> None:
        """See :meth:`StreamStateStore.clear_tables`."""
        with self.database.transaction() as tx:
            for table in tables:
                if self._columns(tx.conn, table):
                    tx.execute(f"DELETE FROM {quote(table)}")

    def reset(self, name: str, now: float) -> None:
        """See :meth:`StreamStateStore.reset`."""
        stream = store_text(name)
        with self.database.transaction() as tx:
            changed = tx.execute(
                "UPDATE stream_processors SET position = 0, status = %s, watermarks = %s, "
                "open = %s, late = %s, error = NULL, updated_at = %s, rebuilt_at = %s "
                "WHERE name = %s",
                (REBUILDING, _EMPTY, _EMPTY, _EMPTY, now, now, stream),
            ).rowcount
            if changed:
                tx.execute("DELETE FROM stream_processor_state WHERE stream = %s", (stream,))

    def __repr__(self) -> str:
        return f"<PostgresStreamStateStore {self.database.description}>"


def _upsert_sql(table: str, columns: tuple[str, ...], pk: tuple[str, ...]) -> str:
    names = ", ".join(map(quote, columns))
    marks = ", ".join(["%s"] * len(columns))
    target = ", ".join(map(quote, pk))
    rest = [c for c in columns if c not in pk]
    if rest:
        sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in rest)
        action = f"DO UPDATE SET {sets}"
    else:
        action = "DO NOTHING"
    return f"INSERT INTO {quote(table)} ({names}) VALUES ({marks}) ON CONFLICT ({target}) {action}"
