"""The read-model helpers: the portable subset of sqlite-utils behaves the same on SQLite
(sqlite-utils itself) and on PostgreSQL (``eventlite.postgres.read_model``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils.db

from eventlite.codec import Codec
from eventlite.postgres.read_model import NotFoundError, translate
from eventlite.sqlite import SQLiteStorage
from eventlite.store.storage import Storage

from ._pg import drop_schema, new_schema, require_postgres


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """An empty storage of each backend."""
    if request.param == "sqlite":
        made: Storage = SQLiteStorage(tmp_path / "rm.db", codec=Codec())
        yield made
        made.close()
        return
    from eventlite.postgres import PostgresStorage

    url = require_postgres()
    schema = new_schema()
    made = PostgresStorage(url, schema=schema, codec=Codec(), pool_min_size=0)
    try:
        yield made
    finally:
        made.close()
        drop_schema(schema)


def _orders(db: Any) -> Any:
    return db["orders"].create(
        {"id": str, "customer": str, "total": int, "paid": float, "note": str},
        pk="id",
        not_null=["customer"],
        defaults={"total": 0},
        if_not_exists=True,
    )


def test_create_insert_get_and_rows(storage: Storage) -> None:
    """Tables made with Python types hold what is inserted; get finds a row by its key,
    rows_where filters (``?`` and ``:name`` placeholders, a ``%`` in a literal), orders,
    limits and skips; count and count_where count."""
    with storage.transaction():
        db = storage.projections.read_model()
        orders = _orders(db)
        orders.insert({"id": "o1", "customer": "ann", "total": 30, "paid": 1.5, "note": "10%"})
        orders.insert_all(
            [
                {"id": "o2", "customer": "bob", "total": 12},
                {"id": "o3", "customer": "ann", "total": 7, "note": "rush"},
            ]
        )
    db = storage.projections.read_model()
    assert {"id": "o1", "customer": "ann", "total": 30, "paid": 1.5, "note": "10%"} == (
        db["orders"].get("o1")
    )
    assert ["o3", "o1"] == [
        r["id"] for r in db["orders"].rows_where("customer = ?", ["ann"], order_by="total")
    ]
    assert ["o2"] == [
        r["id"]
        for r in db["orders"].rows_where(
            "total > :least and note is null", {"least": 10}, select="id"
        )
    ]
    assert [{"id": "o1"}] == list(db["orders"].rows_where("note like '10%'", select="id"))
    assert ["o2", "o3"] == [
        r["id"] for r in db["orders"].rows_where(order_by="id", limit=2, offset=1)
    ]
    assert (3, 2) == (db["orders"].count, db["orders"].count_where("customer = ?", ["ann"]))
    assert ["id"] == db["orders"].pks
    assert "orders" in db.table_names()


def test_upsert_update_delete(storage: Storage) -> None:
    """upsert inserts or updates only the columns it gives (every NOT NULL one among them:
    sqlite-utils 4 checks them before it looks for the row); update changes a row; delete
    removes one; insert with replace swaps the whole row, with ignore keeps the old one;
    delete_where removes what matches."""
    with storage.transaction():  # on SQLite the helper outside one only reads
        _upsert_update_delete(storage.projections.read_model())


def _upsert_update_delete(db: Any) -> None:
    orders = _orders(db)
    orders.upsert({"id": "o1", "customer": "ann", "total": 5}, pk="id")
    orders.upsert({"id": "o1", "customer": "ann", "total": 8, "note": "again"}, pk="id")
    orders.upsert_all(
        [{"id": "o2", "customer": "bob"}, {"id": "o1", "customer": "ann", "paid": 2.0}]
    )
    assert {"id": "o1", "customer": "ann", "total": 8, "paid": 2.0, "note": "again"} == (
        orders.get("o1")
    )
    assert 0 == orders.get("o2")["total"]  # the default
    orders.update("o2", {"total": 3, "note": "n"})
    assert (3, "n") == (orders.get("o2")["total"], orders.get("o2")["note"])
    orders.insert({"id": "o2", "customer": "cy"}, replace=True)
    assert {"id": "o2", "customer": "cy", "total": 0, "paid": None, "note": None} == (
        orders.get("o2")
    )
    orders.insert({"id": "o2", "customer": "dee"}, ignore=True)
    assert "cy" == orders.get("o2")["customer"]
    orders.delete("o2")
    orders.delete_where("total > ?", [7])
    assert 0 == orders.count


@pytest.mark.parametrize("call", ["get", "update", "delete"])
def test_a_missing_key_raises_sqlite_utils_not_found(storage: Storage, call: str) -> None:
    """get, update and delete of a missing key raise sqlite-utils' NotFoundError (on
    PostgreSQL a subclass of it), on both backends alike; nothing is written, and the
    transaction goes on."""
    with storage.transaction():
        db = storage.projections.read_model()
        orders = _orders(db)
        operations: dict[str, Callable[[], Any]] = {
            "get": lambda: orders.get("nope"),
            "update": lambda: orders.update("nope", {"total": 1}),
            "delete": lambda: orders.delete("nope"),
        }
        with pytest.raises(sqlite_utils.db.NotFoundError):
            operations[call]()
        orders.insert({"id": "o1", "customer": "ann"})
    assert 1 == storage.projections.read_model()["orders"].count


def test_compound_keys_drop_and_exists(storage: Storage) -> None:
    """A table keyed by two columns is read and written by a tuple; drop removes it (and
    with ignore, a missing one is no error); execute and query run plain SQL with
    sqlite-style placeholders."""
    with storage.transaction():
        _compound_keys(storage.projections.read_model())


def _compound_keys(db: Any) -> None:
    lines = db["lines"].create({"order_id": str, "n": int, "sku": str}, pk=("order_id", "n"))
    lines.insert_all([{"order_id": "o1", "n": 1, "sku": "a"}, {"order_id": "o1", "n": 2}])
    lines.upsert({"order_id": "o1", "n": 2, "sku": "b"}, pk=("order_id", "n"))
    assert "b" == lines.get(("o1", 2))["sku"]
    db.execute("UPDATE lines SET sku = ? WHERE n = ?", ["z", 1])
    assert [{"sku": "z"}] == list(db.query("SELECT sku FROM lines WHERE n = :n", {"n": 1}))
    assert (True, ["n", "order_id"]) == (lines.exists(), sorted(lines.pks))
    lines.drop()
    db["lines"].drop(ignore=True)
    assert False is db["lines"].exists()


def test_writes_roll_back_with_the_transaction(storage: Storage) -> None:
    """Rows written inside a transaction that rolls back are gone."""
    with storage.transaction():
        _orders(storage.projections.read_model())
    with pytest.raises(RuntimeError), storage.transaction():
        storage.projections.read_model()["orders"].insert({"id": "o1", "customer": "ann"})
        raise RuntimeError("the batch failed")
    assert 0 == storage.projections.read_model()["orders"].count


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("a = ? AND b = ?", "a = %s AND b = %s"),
        ("a = :x OR b = :long_name", "a = %(x)s OR b = %(long_name)s"),
        ("a::text = '?:x%' AND b LIKE '5%'", "a::text = '?:x%%' AND b LIKE '5%%'"),
        ('"we?ird" = ? -- what?\n', '"we?ird" = %s -- what?\n'),
        ("x = $$?$$ AND y = ?", "x = $$?$$ AND y = %s"),
        ("100 % 7 = ?", "100 %% 7 = %s"),
    ],
)
def test_placeholders_are_translated_outside_literals(sqlite: str, postgres: str) -> None:
    """``?`` and ``:name`` become psycopg's placeholders, a ``%`` is doubled, and quoted
    strings, names, comments and casts stay as they are."""
    assert postgres == translate(sqlite)


def test_not_found_is_sqlite_utils_error() -> None:
    """The PostgreSQL helper's NotFoundError is a sqlite-utils NotFoundError."""
    assert issubclass(NotFoundError, sqlite_utils.db.NotFoundError)
