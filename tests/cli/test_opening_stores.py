"""Opening a store read-only through the library (``SQLiteStorage(path, readonly=True)``,
``PostgresStorage(url, readonly=True)``), as the CLI does: nothing is created, migrated or
changed, every read works, every write is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from eventlite.codec import Codec
from eventlite.exceptions import SchemaError, StorageError
from eventlite.postgres import PostgresStorage
from eventlite.sqlite import SQLiteStorage
from eventlite.sqlite.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

from ._run import digest
from .conftest import CorruptStore, Placed, registry


def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    """Read-only, a path with no file raises StorageError and creates nothing."""
    with pytest.raises(StorageError, match="no such file"):
        SQLiteStorage(tmp_path / "nothing.db", readonly=True)
    assert [] == list(tmp_path.iterdir())


def test_reads_work_and_writes_are_refused(corrupt: CorruptStore) -> None:
    """Every read works on a read-only store; an append, a dead-letter purge and a
    transaction raise StorageError; the file is byte-for-byte as it was."""
    before = digest(corrupt.path)
    with SQLiteStorage(corrupt.path, codec=Codec(registry), readonly=True) as storage:
        assert storage.readonly
        assert corrupt.good + 18 == storage.info().head_position
        assert 5 == storage.dead_letters.count()
        assert 1 == len(storage.sagas.list())
        for write in (
            lambda: storage.events.append("x", [Placed("o-9")]),
            lambda: storage.dead_letters.purge(),
            lambda: storage.checkpoints.create("new", 0, 0.0),
        ):
            with pytest.raises(StorageError, match="read-only"):
                write()
    assert before == digest(corrupt.path)


def test_an_older_file_is_read_as_it_is(tmp_path: Path) -> None:
    """A file from an older eventlite is not migrated: its events read, the stores its
    schema lacks are not kept, and info says which version it is."""
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    for step in MIGRATIONS[:3]:
        step.apply(db)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute("PRAGMA user_version=3")
    db.close()
    before = digest(path)
    with SQLiteStorage(path, readonly=True) as storage:
        info = storage.info()
        kept = (storage.keeps("checkpoints"), storage.keeps("dead_letters"))
    assert ((3, SCHEMA_VERSION), (True, False)) == (
        (info.schema_version, info.latest_schema_version),
        kept,
    )
    assert "dead_letters" not in info.stores
    assert before == digest(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "a SQLite database but not an eventlite store (application_id 0x0)"),
        (b"garbage" * 100, "not a SQLite database"),
    ],
)
def test_foreign_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    """An empty file or one that is not SQLite raises SchemaError, left as it was."""
    path = tmp_path / "x.db"
    path.write_bytes(content)
    with pytest.raises(SchemaError) as info:
        SQLiteStorage(path, readonly=True)
    assert message in str(info.value)
    assert content == path.read_bytes()


def test_a_newer_file_is_refused(corrupt: CorruptStore) -> None:
    """A file written by a newer eventlite raises SchemaError naming both versions."""
    conn = sqlite3.connect(corrupt.path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        SQLiteStorage(corrupt.path, readonly=True)


@pytest.mark.services
def test_postgres_read_only(pg_target: str) -> None:
    """Read-only on PostgreSQL: a missing schema is refused (and not created), a store is
    read, and every write is refused by the library and by the server."""
    with pytest.raises(SchemaError, match="does not exist"):
        PostgresStorage(pg_target, readonly=True)
    with PostgresStorage(pg_target, codec=Codec(registry)) as storage:
        storage.events.append("Order-1", [Placed("o-1")])
    with PostgresStorage(pg_target, codec=Codec(registry), readonly=True) as storage:
        assert (True, 1) == (storage.readonly, storage.events.head_position())
        with pytest.raises(StorageError, match="read-only"):
            storage.events.append("Order-1", [Placed("o-2")])
        with pytest.raises(StorageError, match="read-only"):
            storage.database.run("writing", lambda conn: conn.execute("DELETE FROM events"))
        assert 1 == storage.info().events
