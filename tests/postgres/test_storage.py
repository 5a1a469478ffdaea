"""PostgresStorage: URLs and errors, the schema and its migrations, transactions."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

import eventlite
from eventlite.exceptions import SchemaError, StorageError
from eventlite.postgres import PostgresStorage, mask_url
from eventlite.postgres.schema import SCHEMA_VERSION
from eventlite.store.snapshots import Snapshot
from eventlite.testing.store_contract import CONTRACT_REGISTRY, Noted

from ._pg import psycopg_or_skip

pytestmark = pytest.mark.services

psycopg = psycopg_or_skip()

Open = Callable[..., PostgresStorage]


def _tables(url: str, schema: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "ORDER BY table_name",
            (schema,),
        ).fetchall()
    return [r[0] for r in rows]


def test_import_eventlite_needs_no_psycopg() -> None:
    """``import eventlite`` (and eventlite.postgres) imports neither psycopg nor its pool."""
    code = (
        "import sys, eventlite, eventlite.postgres; "
        "print(sorted(m for m in sys.modules if m.startswith('psycopg')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]" == out.stdout.strip()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cr%40t@db:5432/shop", "postgresql://app:***@db:5432/shop"),
        ("postgres://app@db/shop?sslmode=require", "postgres://app@db/shop?sslmode=require"),
        ("postgresql://db/shop?password=s3cret&x=1", "postgresql://db/shop?password=***&x=1"),
        ("host=db password=s3cret dbname=shop", "host=db password=*** dbname=shop"),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    """Passwords in the userinfo, in the query or in keyword form are masked."""
    assert masked == mask_url(url)


def test_description_and_errors_mask_the_password(pg_url: str, schema: str) -> None:
    """An unreachable server gives a StorageError naming the masked URL, never the
    password."""
    with pytest.raises(StorageError) as info:
        PostgresStorage("postgresql://app:s3cret@127.0.0.1:1/shop", connect_timeout=1)
    assert "s3cret" not in str(info.value)
    assert "postgresql://app:***@127.0.0.1:1/shop" in str(info.value)
    assert "s3cret" not in repr(info.value.__cause__ or "")


def test_opening_creates_the_schema_once(open_storage: Open, pg_url: str, schema: str) -> None:
    """The first open creates the schema and its tables at the current version; the next
    ones find them and change nothing."""
    first = open_storage()
    first.events.append("a", [Noted(n=1)])
    second = open_storage()
    assert SCHEMA_VERSION == second.database.schema_version
    assert 1 == second.events.head_position()
    assert schema == second.schema
    assert {"events", "streams", "snapshots", "leases", "eventlite_schema"} <= set(
        _tables(pg_url, schema)
    )


def test_schema_in_the_url(pg_url: str, schema: str) -> None:
    """``?schema=`` in the URL selects the schema like ``schema=``, and the App takes
    such a URL."""
    with eventlite.App(f"{pg_url}?schema={schema}", registry=CONTRACT_REGISTRY) as app:
        assert isinstance(app.storage, PostgresStorage)
        assert schema == app.storage.schema
        app.store.append("a", [Noted(n=1)])
    assert "events" in _tables(pg_url, schema)


def test_foreign_schema_is_refused_untouched(pg_url: str, schema: str) -> None:
    """A schema holding tables that are not eventlite's is refused with SchemaError, and
    nothing is created in it."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.customers (id int)")
    with pytest.raises(SchemaError) as info:
        PostgresStorage(pg_url, schema=schema)
    assert "customers" in str(info.value)
    assert ["customers"] == _tables(pg_url, schema)


def test_newer_schema_is_refused_untouched(open_storage: Open, pg_url: str, schema: str) -> None:
    """A schema written by a newer eventlite is refused, and its version stays."""
    open_storage().close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.eventlite_schema SET version = version + 1")
    with pytest.raises(SchemaError) as info:
        PostgresStorage(pg_url, schema=schema)
    assert "newer" in str(info.value)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(f"SELECT version FROM {schema}.eventlite_schema").fetchone()
    assert (SCHEMA_VERSION + 1,) == row


def test_older_schema_is_migrated(open_storage: Open, pg_url: str, schema: str) -> None:
    """A schema at an older version gets the missing steps and keeps its events."""
    storage = open_storage()
    storage.events.append("a", [Noted(n=1)])
    storage.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # what the last step creates
        conn.execute(f"DROP TABLE {schema}.stream_processors, {schema}.stream_processor_state")
        conn.execute(f"UPDATE {schema}.eventlite_schema SET version = version - 1")
    again = open_storage()
    assert SCHEMA_VERSION == again.database.schema_version
    assert 1 == again.events.head_position()
    assert "s" == again.streams.register("s", 1.0).name  # the tables the step made back


@pytest.mark.parametrize("bad", ["Shop", "a-b", "x" * 64, "1abc", ""])
def test_bad_schema_names_are_refused(pg_url: str, bad: str) -> None:
    """A schema name must be a plain lower-case SQL name."""
    with pytest.raises(ValueError):
        PostgresStorage(pg_url, schema=bad)


def test_writes_of_one_transaction_commit_together(storage: PostgresStorage) -> None:
    """Events, a snapshot and a lease written in one transaction commit together, reads
    inside it see them, and on_commit callbacks run after the commit only."""
    calls: list[str] = []
    storage.on_every_commit(lambda: calls.append("every"))
    with storage.transaction() as tx:
        tx.on_commit(lambda: calls.append("tx"))
        storage.events.append("a", [Noted(n=1)])
        storage.snapshots.save(Snapshot("a", 1, "f", "{}"))
        storage.leases.acquire("relay", "p1", 10)
        assert 1 == storage.events.stream_version("a")
        assert [] == calls
    assert ["tx", "every"] == calls
    assert (1, 1) == (storage.events.head_position(), storage.snapshots.load("a").version)  # type: ignore[union-attr]


def test_failed_transaction_writes_nothing(storage: PostgresStorage) -> None:
    """An exception in the block rolls back every store's writes, and its callbacks are
    dropped."""
    calls: list[str] = []
    with pytest.raises(RuntimeError), storage.transaction() as tx:
        tx.on_commit(lambda: calls.append("tx"))
        storage.events.append("a", [Noted(n=1)])
        storage.snapshots.save(Snapshot("a", 1, "f", "{}"))
        raise RuntimeError("boom")
    assert (0, None, []) == (
        storage.events.head_position(),
        storage.snapshots.load("a"),
        calls,
    )
    assert 1 == storage.events.append("b", [Noted(n=2)])[0].position


def test_nested_transaction_is_a_savepoint(storage: PostgresStorage) -> None:
    """A failed inner block rolls back only itself (and its callbacks); the outer one
    commits the rest, positions staying gap-free."""
    calls: list[str] = []
    with storage.transaction():
        storage.events.append("a", [Noted(n=1)])
        with pytest.raises(RuntimeError), storage.transaction() as inner:
            inner.on_commit(lambda: calls.append("inner"))
            storage.events.append("b", [Noted(n=2)])
            raise RuntimeError("boom")
        storage.events.append("c", [Noted(n=3)])
    assert [] == calls
    assert [("a", 1), ("c", 2)] == [(e.stream_id, e.position) for e in storage.events.read_all()]


def test_a_swallowed_sql_error_fails_the_commit(storage: PostgresStorage) -> None:
    """A statement that failed inside the transaction, its error caught, makes the commit
    raise StorageError rather than roll back quietly."""
    with pytest.raises(StorageError, match="rolled back"), storage.transaction() as tx:
        storage.events.append("a", [Noted(n=1)])
        with pytest.raises(psycopg.Error):
            tx.execute("SELECT no_such_column FROM events")
    assert 0 == storage.events.head_position()


def test_sql_errors_become_storage_errors(storage: PostgresStorage) -> None:
    """A psycopg error inside the block leaves it as a StorageError naming the URL."""
    with pytest.raises(StorageError) as info, storage.transaction() as tx:
        tx.execute("SELECT no_such_column FROM events")
    assert storage.description in str(info.value)
    assert isinstance(info.value.__cause__, psycopg.Error)


def test_closed_storage_refuses_calls(open_storage: Open) -> None:
    """After close every store raises StorageError; close is idempotent."""
    storage = open_storage()
    storage.close()
    storage.close()
    with pytest.raises(StorageError):
        storage.events.append("a", [Noted(n=1)])
    with pytest.raises(StorageError):
        storage.snapshots.load("a")
    with pytest.raises(StorageError):
        storage.leases.holder("a")
    with pytest.raises(StorageError), storage.transaction():
        pass
