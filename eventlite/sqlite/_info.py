"""What a SQLite store holds: :meth:`SQLiteStorage.info` and :meth:`SQLiteStorage.keeps`."""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING, Any

from ..store.storage import STORES, StorageInfo
from ._database import Database, storage_error
from .schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from . import SQLiteStorage

__all__ = ["has_store", "info"]

_TABLES = {
    "events": "events",
    "snapshots": "snapshots",
    "checkpoints": "subscriber_checkpoints",
    "inbox": "inbox",
    "retries": "delivery_retries",
    "dead_letters": "dead_letters",
    "queues": "queue_messages",
    "idempotency": "idempotency_keys",
    "sagas": "sagas",
    "processes": "process_instances",
    "projections": "projections",
    "leases": "leases",
    "claims": "claims",
    "streams": "stream_processors",
}
"""The table each store keeps its rows in (a file from an older eventlite lacks some)."""

_LIST_TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
)


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [str(row[0]) for row in conn.execute(_LIST_TABLES)]


def has_store(database: Database, store: str) -> bool:
    """Whether the file has the table of ``store``: always when it was opened writable
    (opening migrated it), and read-only when its schema version has it."""
    if not database.readonly:
        return True
    table = _TABLES.get(store)
    if table is None:
        return True
    try:
        return table in _tables(database.read_connection())
    except sqlite3.Error as exc:
        raise storage_error(exc, "reading the schema", database.path) from exc


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def info(storage: SQLiteStorage, database: Database) -> StorageInfo:
    """The facts of the file, read in one snapshot."""
    try:
        with database.read() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
            tables = _tables(conn)
            events = head = streams = 0
            if "events" in tables:
                events = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
                head = int(
                    conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
                )
            if "streams" in tables:
                streams = int(conn.execute("SELECT count(*) FROM streams").fetchone()[0])
    except sqlite3.Error as exc:
        raise storage_error(exc, "reading the store's facts", database.path) from exc
    path = os.path.abspath(database.path)
    details: dict[str, Any] = {
        "path": path,
        "journal_mode": journal,
        "file_size": _size(path),
        "wal_size": _size(path + "-wal"),
        "tables": tables,
    }
    present = set(tables)
    return StorageInfo(
        backend="sqlite",
        description=storage.description,
        schema_version=version,
        latest_schema_version=SCHEMA_VERSION,
        events=events,
        head_position=head,
        streams=streams,
        stores=tuple(name for name in STORES if _TABLES[name] in present),
        details=details,
    )
