"""What only the SQLite store does: the file, its settings, shared transactions, migrations."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from eventlite import (
    Codec,
    ConcurrencyError,
    Envelope,
    Metadata,
    Registry,
    SchemaError,
    StorageError,
)
from eventlite.envelope import restored as restore
from eventlite.envelope import stamped as stamp
from eventlite.messages import event
from eventlite.sqlite import Database, SQLiteEventStore
from eventlite.sqlite import _database as _db
from eventlite.sqlite.schema import APPLICATION_ID, SCHEMA_VERSION, Migration
from eventlite.store import NO_STREAM

registry = Registry()


@event(registry=registry, name="sqlite.Noted")
class Noted:
    n: int


@pytest.fixture
def store(tmp_path: Path) -> SQLiteEventStore:  # type: ignore[misc]
    """A new store file, closed after the test."""
    s = SQLiteEventStore(tmp_path / "s.db", codec=Codec(registry))
    yield s
    s.close()


def test_file_settings(tmp_path: Path) -> None:
    """The file is in WAL mode, marked as eventlite's at the current schema version, and
    the write connection uses synchronous=FULL unless told NORMAL."""
    for synchronous, level in (("full", 2), ("normal", 1)):
        p = tmp_path / f"{synchronous}.db"
        with SQLiteEventStore(p, synchronous=synchronous) as store:  # type: ignore[arg-type]
            with store.database.transaction() as tx:
                assert level == tx.execute("PRAGMA synchronous").fetchone()[0]
            assert SCHEMA_VERSION == store.database.schema_version
        raw = sqlite3.connect(p)
        pragmas = [
            raw.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "application_id", "user_version")
        ]
        raw.close()
        assert ["wal", APPLICATION_ID, SCHEMA_VERSION] == pragmas


def test_schema_columns(store: SQLiteEventStore) -> None:
    """The events table has the documented columns, the stored values readable by SQL."""
    env = Envelope(
        Noted(n=5),
        id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        metadata=Metadata("corr", "cause", "user", {"h": "v"}),
        timestamp=datetime(2024, 1, 1, 0, 0, 0, 7, tzinfo=timezone.utc),
    )
    store.append("s", [env])
    raw = sqlite3.connect(store.path)
    raw.row_factory = sqlite3.Row
    row = dict(raw.execute("SELECT * FROM events").fetchone())
    streams = raw.execute("SELECT stream_id, version FROM streams").fetchall()
    raw.close()
    assert {
        "position": 1,
        "stream_id": "s",
        "version": 1,
        "id": env.id,
        "type": "sqlite.Noted",
        "schema_version": 1,
        "data": '{"n":5}',
        "correlation_id": "corr",
        "causation_id": "cause",
        "user_id": "user",
        "headers": '{"h":"v"}',
        "timestamp": 1704067200000007,
    } == row
    assert [("s", 1)] == [tuple(r) for r in streams]


def test_events_survive_reopening(tmp_path: Path) -> None:
    """Events are still there after close and reopen; positions and versions go on."""
    p = tmp_path / "s.db"
    with SQLiteEventStore(p, codec=Codec(registry)) as store:
        first = store.append("s", [Noted(n=1), Noted(n=2)])
    with SQLiteEventStore(p, codec=Codec(registry)) as store:
        assert first == store.read_stream("s")
        (third,) = store.append("s", [Noted(n=3)], expected_version=2)
    assert (3, 3) == (third.version, third.position)


def test_bad_arguments(tmp_path: Path) -> None:
    """An unknown synchronous level or an in-memory path is refused."""
    with pytest.raises(ValueError):
        SQLiteEventStore(tmp_path / "x.db", synchronous="off")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SQLiteEventStore(":memory:")


# -- shared transactions ------------------------------------------------------------------


def test_append_joins_an_open_transaction(store: SQLiteEventStore) -> None:
    """Inside database.transaction(), appends and other writes commit together, and the
    transaction reads its own writes."""
    db = store.database
    with db.transaction() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS outbox (event_id TEXT)")
        (env,) = store.append("s", [Noted(n=1)], expected_version=NO_STREAM)
        tx.execute("INSERT INTO outbox VALUES (?)", (env.id,))
        assert (1, 1) == (store.stream_version("s"), store.head_position())
        assert [env] == store.read_stream("s")
    raw = sqlite3.connect(store.path)
    assert [(env.id,)] == raw.execute("SELECT event_id FROM outbox").fetchall()
    raw.close()


def test_failed_transaction_rolls_back_the_appends(store: SQLiteEventStore) -> None:
    """An exception in the block undoes its appends and its other writes."""
    db = store.database
    with db.transaction() as tx:
        tx.execute("CREATE TABLE outbox (event_id TEXT)")
    with pytest.raises(RuntimeError), db.transaction() as tx:
        (env,) = store.append("s", [Noted(n=1)])
        tx.execute("INSERT INTO outbox VALUES (?)", (env.id,))
        raise RuntimeError("handler failed")
    assert (0, 0) == (store.head_position(), store.stream_version("s"))
    with db.read() as conn:
        assert [] == conn.execute("SELECT * FROM outbox").fetchall()
    (after,) = store.append("s", [Noted(n=2)])
    assert 1 == after.position


def test_conflict_inside_a_transaction_can_be_caught(store: SQLiteEventStore) -> None:
    """A ConcurrencyError inside a transaction undoes only that append."""
    store.append("s", [Noted(n=1)])
    with store.database.transaction():
        store.append("t", [Noted(n=2)])
        with pytest.raises(ConcurrencyError):
            store.append("s", [Noted(n=3), Noted(n=4)], expected_version=0)
        store.append("u", [Noted(n=5)])
    assert [1, 2, 3] == [e.position for e in store.read_all()]
    assert [("s", 1), ("t", 1), ("u", 1)] == [(e.stream_id, e.version) for e in store.read_all()]


def test_on_commit_runs_after_commit_only(store: SQLiteEventStore) -> None:
    """on_commit callbacks run after the outermost commit, in order, never on rollback."""
    calls: list[str] = []
    db = store.database
    with db.transaction() as tx:
        tx.on_commit(lambda: calls.append(f"first {store.head_position()}"))
        store.append("s", [Noted(n=1)])
        with db.transaction() as inner:
            inner.on_commit(lambda: calls.append("second"))
        assert [] == calls
    with pytest.raises(KeyError), db.transaction() as tx:
        tx.on_commit(lambda: calls.append("never"))
        raise KeyError("x")
    assert ["first 1", "second"] == calls


def test_sqlite_errors_become_storage_errors(store: SQLiteEventStore) -> None:
    """A sqlite3 error inside a transaction leaves it as StorageError, cause kept."""
    with pytest.raises(StorageError) as info, store.database.transaction() as tx:
        store.append("s", [Noted(n=1)])
        tx.execute("INSERT INTO no_such_table VALUES (1)")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert 0 == store.head_position()


def test_busy_file_times_out_as_storage_error(tmp_path: Path) -> None:
    """When another connection holds the write lock past the busy timeout, the append
    raises StorageError and writes nothing."""
    p = tmp_path / "s.db"
    store = SQLiteEventStore(p, codec=Codec(registry), busy_timeout=0.05)
    other = sqlite3.connect(p, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError) as info:
            store.append("s", [Noted(n=1)])
        assert "locked" in str(info.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert 0 == store.head_position()
    (env,) = store.append("s", [Noted(n=1)])
    assert 1 == env.position
    store.close()


def test_store_on_a_shared_database(tmp_path: Path) -> None:
    """A store over a Database it did not open leaves the database open when closed."""
    db = Database(tmp_path / "s.db")
    store = SQLiteEventStore(db, codec=Codec(registry))
    store.append("s", [Noted(n=1)])
    store.close()
    with db.read() as conn:
        assert [(1,)] == conn.execute("SELECT count(*) FROM events").fetchall()
    with pytest.raises(StorageError):
        store.head_position()
    db.close()
    with pytest.raises(StorageError):
        db.read_connection()


def test_close_inside_a_transaction_is_refused(tmp_path: Path) -> None:
    """Closing the database from inside its own transaction raises instead of hanging."""
    db = Database(tmp_path / "s.db")
    with db.transaction(), pytest.raises(StorageError):
        db.close()
    db.close()


# -- migrations ---------------------------------------------------------------------------


def test_a_new_migration_step_upgrades_an_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a file one step behind runs the missing step and bumps user_version,
    keeping the events."""
    p = tmp_path / "s.db"
    with SQLiteEventStore(p, codec=Codec(registry)) as store:
        store.append("s", [Noted(n=1)])

    def add_outbox(db: object) -> None:
        db.table("outbox").create({"id": int, "event_id": str}, pk="id")  # type: ignore[attr-defined]

    monkeypatch.setattr(_db, "MIGRATIONS", [*_db.MIGRATIONS, Migration("outbox", add_outbox)])  # type: ignore[attr-defined]
    monkeypatch.setattr(_db, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with SQLiteEventStore(p, codec=Codec(registry)) as store:
        assert SCHEMA_VERSION + 1 == store.database.schema_version
        assert 1 == store.head_position()
        with store.database.read() as conn:
            assert [] == conn.execute("SELECT * FROM outbox").fetchall()


def test_a_failing_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration step that fails raises SchemaError naming it and rolls back."""
    p = tmp_path / "s.db"
    SQLiteEventStore(p).close()

    def broken(db: object) -> None:
        db.table("half").create({"id": int})  # type: ignore[attr-defined]
        raise RuntimeError("boom")

    monkeypatch.setattr(_db, "MIGRATIONS", [*_db.MIGRATIONS, Migration("broken", broken)])  # type: ignore[attr-defined]
    monkeypatch.setattr(_db, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(SchemaError) as info:
        SQLiteEventStore(p)
    assert "broken" in str(info.value)
    raw = sqlite3.connect(p)
    tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    version = raw.execute("PRAGMA user_version").fetchone()[0]
    raw.close()
    assert (SCHEMA_VERSION, False) == (version, "half" in tables)


# -- envelopes built from rows --------------------------------------------------------------


def test_fast_envelope_builders_match_the_public_constructor() -> None:
    """stamp and restore, which skip Envelope's checks, give the envelope the public
    constructor gives."""
    meta = Metadata("corr", "cause", "user", {"k": "v"})
    at = datetime(2024, 2, 3, 4, 5, 6, 789012, tzinfo=timezone.utc)
    public = Envelope(
        Noted(n=1),
        id="the-id",
        metadata=meta,
        timestamp=at,
        stream_id="s",
        version=2,
        position=9,
    )
    fast = restore(
        Noted(n=1), "the-id", 1706933106789012, "corr", "cause", "user", {"k": "v"}, "s", 2, 9
    )
    stamped = stamp(Envelope(Noted(n=1), id="the-id", metadata=meta, timestamp=at), "s", 2, 9)
    for env in (fast, stamped):
        assert public == env
        assert (public.timestamp, public.metadata, public.key, repr(public)) == (
            env.timestamp,
            env.metadata,
            env.key,
            repr(env),
        )


def test_on_commit_callbacks_of_a_rolled_back_savepoint_do_not_run(tmp_path: Path) -> None:
    """A callback registered inside a nested block that rolls back is dropped; the others
    run after the outer commit, all of them even when one raises."""
    from eventlite.sqlite import Database

    ran: list[str] = []
    with Database(tmp_path / "cb.db") as db, pytest.raises(KeyError), db.transaction() as tx:
        tx.on_commit(lambda: ran.append("outer"))
        with pytest.raises(RuntimeError), db.transaction() as inner:
            inner.on_commit(lambda: ran.append("rolled back"))
            raise RuntimeError
        tx.on_commit(lambda: (_ for _ in ()).throw(KeyError("first")))
        tx.on_commit(lambda: ran.append("after the failing one"))
    assert ["outer", "after the failing one"] == ran


def test_commit_listeners_run_after_every_outermost_commit(tmp_path: Path) -> None:
    """A listener added with on_every_commit runs once per outermost commit, never for a
    rollback, and after the transaction's own callbacks."""
    from eventlite.sqlite import Database

    calls: list[str] = []
    with Database(tmp_path / "l.db") as db:
        db.on_every_commit(lambda: calls.append("listener"))
        with db.transaction() as tx:
            tx.on_commit(lambda: calls.append("callback"))
            with db.transaction():
                pass
        with pytest.raises(RuntimeError), db.transaction():
            raise RuntimeError
    assert ["callback", "listener"] == calls
