"""Bad input gets a clear error and changes nothing: undecodable rows, foreign files."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from eventlite import (
    Codec,
    MessageDecodeError,
    NotAMessage,
    Registry,
    SchemaError,
    StorageError,
    UnknownMessageType,
)
from eventlite.memory import InMemoryEventStore
from eventlite.messages import event
from eventlite.sqlite import SQLiteEventStore
from eventlite.sqlite.schema import APPLICATION_ID, SCHEMA_VERSION

registry = Registry()


@event(registry=registry, name="bad.Noted")
class Noted:
    n: int


@event(registry=registry, name="bad.Evolved", version=2)
class Evolved:
    n: int


class Unregistered:
    pass


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A store file holding three events at positions 1-3, closed."""
    p = tmp_path / "events.db"
    with SQLiteEventStore(p, codec=Codec(registry)) as store:
        store.append("s", [Noted(n=1), Noted(n=2), Noted(n=3)])
    return p


def _tamper(path: Path, sql: str, *params: object) -> None:
    raw = sqlite3.connect(path)
    with raw:
        raw.execute(sql, params)
    raw.close()


def test_unknown_type_in_a_row_names_type_and_position(path: Path) -> None:
    """A stored row whose type the registry does not know raises UnknownMessageType with
    the type and the position, from read_stream and from read_all."""
    _tamper(path, "UPDATE events SET type = 'bad.Gone' WHERE position = 2")
    with SQLiteEventStore(path, codec=Codec(registry)) as store:
        with pytest.raises(UnknownMessageType) as info:
            store.read_stream("s")
        assert ("bad.Gone", 2) == (info.value.type_name, info.value.position)
        assert "position 2" in str(info.value)
        iterator = store.read_all()
        assert 1 == next(iterator).position
        with pytest.raises(UnknownMessageType):
            next(iterator)
        assert [3] == [e.position for e in store.read_all(from_position=3)]


def test_corrupt_json_names_the_position(path: Path) -> None:
    """A row whose data is not JSON raises MessageDecodeError naming the position."""
    _tamper(path, "UPDATE events SET data = '{\"n\": ' WHERE position = 3")
    with SQLiteEventStore(path, codec=Codec(registry)) as store:
        with pytest.raises(MessageDecodeError) as info:
            store.read_stream("s")
        assert (3, "bad.Noted") == (info.value.position, info.value.type_name)
        assert "position 3" in str(info.value)


def test_wrong_shaped_data_names_the_position(path: Path) -> None:
    """Valid JSON that does not fit the class raises MessageDecodeError with the position."""
    _tamper(path, 'UPDATE events SET data = \'{"n": "x"}\' WHERE position = 1')
    with (
        SQLiteEventStore(path, codec=Codec(registry)) as store,
        pytest.raises(MessageDecodeError) as info,
    ):
        list(store.read_all())
    assert 1 == info.value.position


def test_corrupt_headers_name_the_position(path: Path) -> None:
    """A row whose headers column is not a JSON object of strings raises
    MessageDecodeError naming the position."""
    _tamper(path, "UPDATE events SET headers = '[1' WHERE position = 2")
    _tamper(path, "UPDATE events SET headers = '{\"a\": 1}' WHERE position = 3")
    with SQLiteEventStore(path, codec=Codec(registry)) as store:
        for position in (2, 3):
            with pytest.raises(MessageDecodeError) as info:
                store.read_stream("s", from_version=position)
            assert position == info.value.position


def test_newer_schema_version_of_a_row(path: Path) -> None:
    """A row written at a schema version newer than the registered class is refused."""
    _tamper(path, "UPDATE events SET schema_version = 5 WHERE position = 1")
    with (
        SQLiteEventStore(path, codec=Codec(registry)) as store,
        pytest.raises(MessageDecodeError) as info,
    ):
        store.read_stream("s", to_version=1)
    assert 1 == info.value.position
    assert "newer" in str(info.value)


def test_old_rows_are_upcast_on_read(tmp_path: Path) -> None:
    """A row stored at schema version 1 is upcast to the registered version 2 on read;
    the stored text stays as written."""
    old = Registry()

    @event(registry=old, name="bad.Evolved", version=1)
    class EvolvedV1:
        count: int

    p = tmp_path / "e.db"
    with SQLiteEventStore(p, codec=Codec(old)) as store:
        store.append("e", [EvolvedV1(count=4)])
    new = Registry()
    new.register(Evolved, registry.by_class(Evolved).kind, name="bad.Evolved", version=2)
    new.add_upcaster("bad.Evolved", 1, lambda d: {"n": d["count"]})
    with SQLiteEventStore(p, codec=Codec(new)) as store:
        assert [Evolved(n=4)] == [e.message for e in store.read_stream("e")]
    raw = sqlite3.connect(p)
    assert [(1, '{"count":4}')] == raw.execute("SELECT schema_version, data FROM events").fetchall()
    raw.close()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: None, id="missing"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
    ],
)
def test_missing_or_empty_file_becomes_a_store(tmp_path: Path, make: object) -> None:
    """A path with no file, or an empty file, becomes a new store."""
    p = tmp_path / "new.db"
    make(p)  # type: ignore[operator]
    with SQLiteEventStore(p, codec=Codec(registry)) as store:
        assert 0 == store.head_position()
    raw = sqlite3.connect(p)
    header = (
        raw.execute("PRAGMA application_id").fetchone()[0],
        raw.execute("PRAGMA user_version").fetchone()[0],
    )
    raw.close()
    assert (APPLICATION_ID, SCHEMA_VERSION) == header


def _foreign(p: Path) -> None:
    raw = sqlite3.connect(p)
    raw.execute("CREATE TABLE people (name TEXT)")
    raw.execute("INSERT INTO people VALUES ('ada')")
    raw.commit()
    raw.close()


def _other_application(p: Path) -> None:
    raw = sqlite3.connect(p)
    raw.execute("PRAGMA application_id = 1234")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()


def _newer(p: Path) -> None:
    SQLiteEventStore(p).close()
    raw = sqlite3.connect(p)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()


def _text(p: Path) -> None:
    p.write_text("name,amount\nada,1\n" * 100)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        pytest.param(_foreign, "not an eventlite store", id="foreign-sqlite"),
        pytest.param(_other_application, "not an eventlite store", id="other-application-id"),
        pytest.param(_newer, "newer", id="newer-schema"),
        pytest.param(_text, "not a SQLite database", id="not-sqlite"),
    ],
)
def test_wrong_file_is_refused_unchanged(tmp_path: Path, make: object, words: str) -> None:
    """A file that is not an eventlite store of a version we know raises SchemaError,
    naming the file, and is left byte for byte as it was, with no WAL file added."""
    p = tmp_path / "other.db"
    make(p)  # type: ignore[operator]
    before, files = _digest(p), _files(p)
    with pytest.raises(SchemaError) as info:
        SQLiteEventStore(p)
    assert words in str(info.value)
    assert str(p) in str(info.value)
    assert (before, files) == (_digest(p), _files(p))


def test_unopenable_path_is_a_storage_error(tmp_path: Path) -> None:
    """A path SQLite cannot open (here a directory) raises StorageError."""
    with pytest.raises(StorageError) as info:
        SQLiteEventStore(tmp_path)
    assert isinstance(info.value.__cause__, sqlite3.Error)


@pytest.mark.parametrize(
    "make_store",
    [
        pytest.param(lambda p: SQLiteEventStore(p / "s.db", codec=Codec(registry)), id="sqlite"),
        pytest.param(lambda p: InMemoryEventStore(codec=Codec(registry)), id="memory"),
    ],
)
def test_unregistered_message_writes_nothing(tmp_path: Path, make_store: object) -> None:
    """A message whose class is not registered raises NotAMessage; nothing is written,
    not even the registered events of the same call."""
    store = make_store(tmp_path)  # type: ignore[operator]
    with pytest.raises(NotAMessage):
        store.append("s", [Noted(n=1), Unregistered()])
    with pytest.raises(TypeError):
        store.append("s", "not a list")
    assert (0, 0) == (store.head_position(), store.stream_version("s"))
    store.close()
