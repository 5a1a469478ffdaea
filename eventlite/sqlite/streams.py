"""Stream processors' state entries and status rows in an eventlite SQLite file."""

from __future__ import annotations

import builtins
import json
import sqlite3
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
