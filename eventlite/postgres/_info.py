"""What a PostgreSQL store holds: :meth:`PostgresStorage.info`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..store.storage import STORES, StorageInfo
from ._database import PostgresDatabase
from .schema import SCHEMA_VERSION, VERSION_TABLE

if TYPE_CHECKING:
    import psycopg

    from . import PostgresStorage

__all__ = ["info"]

_TABLES = (
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname"
)


def info(storage: PostgresStorage, database: PostgresDatabase) -> StorageInfo:
    """The facts of the schema, read in one transaction."""

    def read(conn: psycopg.Connection[Any]) -> tuple[int, int, int, int, str, list[str]]:
        with conn.transaction():
            version_row = conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
            events = conn.execute("SELECT count(*) FROM events").fetchone()
            head = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
            streams = conn.execute("SELECT count(*) FROM streams").fetchone()
            server = conn.execute("SHOW server_version").fetchone()
            tables = [str(r[0]) for r in conn.execute(_TABLES, (database.schema,)).fetchall()]
        return (
            int(version_row[0]) if version_row else 0,
            int(events[0]) if events else 0,
            int(head[0]) if head else 0,
            int(streams[0]) if streams else 0,
            str(server[0]) if server else "?",
            tables,
        )

    version, events, head, streams, server, tables = database.run("reading the store's facts", read)
    details: dict[str, Any] = {
        "schema": database.schema,
        "server_version": server,
        "tables": tables,
    }
    return StorageInfo(
        backend="postgres",
        description=storage.description,
        schema_version=version,
        latest_schema_version=SCHEMA_VERSION,
        events=events,
        head_position=head,
        streams=streams,
        stores=tuple(name for name in STORES if storage.keeps(name)),
        details=details,
    )
