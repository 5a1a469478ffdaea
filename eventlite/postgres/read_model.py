"""The read-model helper of the PostgreSQL backend: the portable subset of sqlite-utils.

Projection handlers receive the storage's read-model helper as ``db``. On SQLite it is a
``sqlite_utils.Database``; here it is a :class:`PostgresReadModel`, which offers the
part of sqlite-utils' API that reads and writes rows, with the same names, arguments
and results, so a projection written with these calls runs on both backends:

- ``db[name]`` / ``db.table(name)``, ``db.table_names()``;
- ``table.create(columns, pk=, not_null=, defaults=, if_not_exists=)``,
  ``table.drop(ignore=)``, ``table.exists()``;
- ``table.insert(row, replace=, ignore=)``, ``table.insert_all(rows, ...)``,
  ``table.upsert(row, pk=)``, ``table.upsert_all(rows, pk=)``,
  ``table.update(pk, changes)``, ``table.delete(pk)``,
  ``table.delete_where(where, where_args)``;
- ``table.get(pk)``, ``table.rows_where(where, where_args, order_by=, select=, limit=,
  offset=)``, ``table.rows``, ``table.count``, ``table.count_where(where, where_args)``;
- ``db.execute(sql, params)`` and ``db.query(sql, params)`` for anything else (the SQL
  is PostgreSQL's; ``?`` and ``:name`` placeholders work as on SQLite).

``get``, ``update`` and ``delete`` of a missing primary key raise :class:`NotFoundError`,
a subclass of ``sqlite_utils.db.NotFoundError``: catching sqlite-utils' error works on
both backends. Columns are declared with Python types (``str``, ``int``, ``float``,
``bool``, ``bytes``; ``dict`` and ``list`` are JSON text) or SQL type names. Where
clauses, ``order_by`` and ``select`` are SQL fragments, as in sqlite-utils.

Every statement runs in the calling thread's open ``storage.transaction()`` when there
is one (a projection's batch), else on its own, committed at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlite_utils.db

from ._database import PostgresDatabase

if TYPE_CHECKING:
    import psycopg

__all__ = ["NotFoundError", "PostgresReadModel", "PostgresTable"]

_TYPES: dict[Any, str] = {
    str: "text",
    int: "bigint",
    float: "double precision",
    bool: "boolean",
    bytes: "bytea",
    dict: "text",
    list: "text",
    tuple: "text",
    "text": "text",
    "str": "text",
    "integer": "bigint",
    "int": "bigint",
    "float": "double precision",
    "real": "double precision",
    "blob": "bytea",
}
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_ ]*(\([0-9, ]+\))?(\[\])?\Z", re.I)
_PLACEHOLDER = re.compile(
    r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\$([a-z_]*)\$.*?\$\2\$|::)"""
    r"""|(\?)|(?<![:\w]):([a-z_][a-z0-9_]*)|(%)""",
    re.I | re.S,
)


class NotFoundError(sqlite_utils.db.NotFoundError):
    """No row of the table has this primary key (a subclass of sqlite-utils' error, so
    code catching that one runs on both backends)."""


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    if "\x00" in name:
        raise ValueError(f"an SQL name cannot hold a NUL character: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def translate(sql: str) -> str:
    """``sql`` with sqlite-style placeholders (``?``, ``:name``) as psycopg's (``%s``,
    ``%(name)s``) and every other ``%`` doubled; quoted strings, quoted names, comments
    and casts (``::``) are left alone."""

    def swap(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return match.group(1).replace("%", "%%")
        if match.group(3) is not None:
            return "%s"
        if match.group(4) is not None:
            return f"%({match.group(4)})s"
        return "%%"

    return _PLACEHOLDER.sub(swap, sql)


def _value(value: Any) -> Any:
    """A row value as stored: dicts, lists and tuples as JSON text (as sqlite-utils)."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=repr, ensure_ascii=False)
    return value


def _column_type(kind: Any) -> str:
    found = _TYPES.get(kind.lower() if isinstance(kind, str) else kind)
    if found is not None:
        return found
    if isinstance(kind, str) and _TYPE_NAME.match(kind):
        return kind
    raise ValueError(
        f"unsupported column type {kind!r}: use str, int, float, bool, bytes, dict, list "
        "or an SQL type name"
    )


def _params(args: Sequence[Any] | Mapping[str, Any] | None) -> Any:
    if args is None:
        return None
    if isinstance(args, Mapping):
        return {k: _value(v) for k, v in args.items()}
    return [_value(v) for v in args]


class PostgresReadModel:
    """The read-model helper over a :class:`~eventlite.postgres.PostgresDatabase` (see the
    module doc). Cheap to make; statements run on the calling thread's transaction
    connection when there is one."""

    def __init__(self, database: PostgresDatabase, *, cache: dict[str, Any] | None = None) -> None:
        self.database = database
        """The database whose schema holds the read-model tables."""
        self._cache: dict[str, Any] = cache if cache is not None else {}

    def __getitem__(self, name: str) -> PostgresTable:
        return self.table(name)

    def table(self, name: str) -> PostgresTable:
        """The table ``name`` (which need not exist yet)."""
        return PostgresTable(self, name)

    def table_names(self) -> list[str]:
        """The tables of the store's schema, eventlite's own included, by name."""
        rows = self._run(
            "listing read-model tables",
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            'ORDER BY tablename COLLATE "C"',
            None,
        )
        return [r[0] for r in rows]

    def execute(
        self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> psycopg.Cursor[Any]:
        """Run one statement (PostgreSQL's SQL; ``?`` and ``:name`` placeholders) and
        return its cursor (``fetchall()``, ``fetchone()``, ``rowcount``)."""
        params = _params(parameters)
        text = translate(sql) if params is not None else sql

        def execute(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
            return conn.execute(text.encode(), params)

        return self.database.run("writing a read model", execute, repeat=False)

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """The rows of a query as dicts (PostgreSQL's SQL; ``?`` and ``:name``
        placeholders)."""
        values = _params(params)
        text = translate(sql) if values is not None else sql

        def query(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            cursor = conn.execute(text.encode(), values)
            names = [c.name for c in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return iter(self.database.run("reading a read model", query))

    # -- for the tables -------------------------------------------------------------------

    def _run(self, action: str, sql: str, params: Any, *, repeat: bool = True) -> list[Any]:
        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            cursor = conn.execute(sql.encode(), params)
            return cursor.fetchall() if cursor.description is not None else []

        return self.database.run(action, run, repeat=repeat)

    def _rowcount(self, action: str, sql: str, params: Any) -> int:
        def run(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(sql.encode(), params).rowcount

        return self.database.run(action, run, repeat=False)

    def _describe(self, name: str) -> tuple[list[str], list[str]]:
        """(primary-key columns, every column) of table ``name``, from the catalog."""
        found = self._cache.get(name)
        if found is not None:
            return found  # type: ignore[no-any-return]
        rows = self._run(
            "reading a read-model table's columns",
            "SELECT a.attname, coalesce(array_position(i.indkey::int2[], a.attnum), -1) "
            "FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid "
            "AND i.indisprimary WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY a.attnum",
            (f"{quote(self.database.schema)}.{quote(name)}",),
        )
        if not rows:
            raise sqlite_utils.db.NoTable(f"no read-model table named {name!r}")
        columns = [r[0] for r in rows]
        pks = [r[0] for r in sorted((r for r in rows if r[1] >= 0), key=lambda r: r[1])]
        self._cache[name] = (pks, columns)
        return pks, columns

    def _forget(self, name: str) -> None:
        self._cache.pop(name, None)

    def _ddl(self, name: str, sql: str) -> None:
        """Run DDL on ``name`` under the schema's DDL lock (processes adding the same
        projection at once would otherwise race in the catalog)."""
        with self.database.transaction() as tx:
            tx.lock([self.database.lock_key("read-model-ddl")])
            tx.execute(sql)
        self._forget(name)

    def __repr__(self) -> str:
        return f"<PostgresReadModel {self.database.description}>"


class PostgresTable:
    """One table of a :class:`PostgresReadModel` (see the module doc for the calls)."""

    def __init__(self, db: PostgresReadModel, name: str) -> None:
        self.db = db
        """The read model it belongs to."""
        self.name = name
        """The table's name."""

    def __repr__(self) -> str:
        return f"<PostgresTable {self.name}>"

    @property
    def _quoted(self) -> str:
        return quote(self.name)

    # -- shape ----------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the table exists."""
        rows = self.db._run(
            "reading the catalog",
            "SELECT to_regclass(%s) IS NOT NULL",
            (f"{quote(self.db.database.schema)}.{self._quoted}",),
        )
        return bool(rows[0][0])

    @property
    def pks(self) -> list[str]:
        """The primary-key columns."""
        return list(self.db._describe(self.name)[0])

    @property
    def columns(self) -> list[str]:
        """The column names, in order."""
        return list(self.db._describe(self.name)[1])

    def create(
        self,
        columns: Mapping[str, Any],
        pk: str | Sequence[str] | None = None,
        not_null: Iterable[str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        if_not_exists: bool = False,
    ) -> PostgresTable:
        """Create the table: ``columns`` maps names to Python types or SQL type names;
        ``pk`` is a column or a tuple of them; ``not_null`` columns refuse NULL;
        ``defaults`` gives default values. With ``if_not_exists``, an existing table is
        left as it is."""
        required = set(not_null or ())
        keys = [pk] if isinstance(pk, str) else list(pk or ())
        parts = []
        for column, kind in columns.items():
            part = f"{quote(column)} {_column_type(kind)}"
            if column in required or column in keys:
                part += " NOT NULL"
            if defaults and column in defaults:
                part += f" DEFAULT {_literal(defaults[column])}"
            parts.append(part)
        if keys:
            parts.append("PRIMARY KEY (" + ", ".join(quote(k) for k in keys) + ")")
        exists = "IF NOT EXISTS " if if_not_exists else ""
        self.db._ddl(self.name, f"CREATE TABLE {exists}{self._quoted} ({', '.join(parts)})")
        return self

    def drop(self, ignore: bool = False) -> None:
        """Drop the table; a missing one is an error unless ``ignore``."""
        exists = "IF EXISTS " if ignore else ""
        self.db._ddl(self.name, f"DROP TABLE {exists}{self._quoted}")

    # -- writing ----------------------------------------------------------------------------

    def _keys(self, pk: str | Sequence[str] | None) -> list[str]:
        if pk is None:
            keys = self.db._describe(self.name)[0]
            if not keys:
                raise ValueError(f"table {self.name!r} has no primary key: pass pk=")
            return keys
        return [pk] if isinstance(pk, str) else list(pk)

    def _write_all(
        self,
        records: Iterable[Mapping[str, Any]],
        conflict: Any,
        action: str,
    ) -> None:
        """Insert ``records``, one statement per set of columns; ``conflict(columns)``
        gives the ON CONFLICT clause."""
        batches: dict[tuple[str, ...], list[list[Any]]] = {}
        for record in records:
            names = tuple(record)
            batches.setdefault(names, []).append([_value(record[n]) for n in names])
        for names, rows in batches.items():
            if not names:
                sql = f"INSERT INTO {self._quoted} DEFAULT VALUES"
            else:
                marks = ", ".join(["%s"] * len(names))
                cols = ", ".join(quote(n) for n in names)
                sql = f"INSERT INTO {self._quoted} ({cols}) VALUES ({marks}){conflict(names)}"

            def insert(conn: psycopg.Connection[Any], sql: str = sql, rows: Any = rows) -> None:
                with conn.cursor() as cursor:
                    if len(rows) == 1:
                        cursor.execute(sql.encode(), rows[0])
                    else:
                        cursor.executemany(sql.encode(), rows)

            self.db.database.run(action, insert, repeat=False)

    def _on_conflict(self, replace: bool, ignore: bool, pk: str | Sequence[str] | None) -> Any:
        if ignore:
            return lambda names: " ON CONFLICT DO NOTHING"
        if not replace:
            return lambda names: ""
        keys = self._keys(pk)
        others = [c for c in self.db._describe(self.name)[1] if c not in keys]

        def clause(names: tuple[str, ...]) -> str:
            target = ", ".join(quote(k) for k in keys)
            if not others:
                return f" ON CONFLICT ({target}) DO NOTHING"
            # excluded.c holds the column's default for a column not given: a REPLACE
            sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in others)
            return f" ON CONFLICT ({target}) DO UPDATE SET {sets}"

        return clause

    def insert(
        self,
        record: Mapping[str, Any],
        pk: str | Sequence[str] | None = None,
        replace: bool = False,
        ignore: bool = False,
    ) -> PostgresTable:
        """Insert one row; with ``replace`` a row of the same primary key is replaced,
        with ``ignore`` it is kept and this one dropped."""
        return self.insert_all([record], pk=pk, replace=replace, ignore=ignore)

    def insert_all(
        self,
        records: Iterable[Mapping[str, Any]],
        pk: str | Sequence[str] | None = None,
        replace: bool = False,
        ignore: bool = False,
    ) -> PostgresTable:
        """:meth:`insert` every row of ``records``."""
        self._write_all(records, self._on_conflict(replace, ignore, pk), "inserting rows")
        return self

    def upsert(
        self, record: Mapping[str, Any], pk: str | Sequence[str] | None = None
    ) -> PostgresTable:
        """Insert the row, or update the columns it gives of the row with its primary key
        (``pk``: the table's own by default)."""
        return self.upsert_all([record], pk=pk)

    def upsert_all(
        self, records: Iterable[Mapping[str, Any]], pk: str | Sequence[str] | None = None
    ) -> PostgresTable:
        """:meth:`upsert` every row of ``records``."""
        keys = self._keys(pk)
        target = ", ".join(quote(k) for k in keys)
        batches: dict[tuple[str, ...], list[list[Any]]] = {}
        for record in records:
            names = tuple(record)
            missing = [k for k in keys if k not in record]
            if missing:
                raise ValueError(f"an upsert into {self.name!r} needs its key {missing}")
            batches.setdefault(names, []).append([_value(record[n]) for n in names])
        for names, rows in batches.items():
            cols = ", ".join(quote(n) for n in names)
            marks = ", ".join(["%s"] * len(names))
            changed = [n for n in names if n not in keys]
            if not changed:
                sql = (
                    f"INSERT INTO {self._quoted} ({cols}) VALUES ({marks}) "
                    f"ON CONFLICT ({target}) DO NOTHING"
                )
                params = rows
            else:
                # An existing row is updated in place, so the columns not given are left
                # as they are (a NOT NULL one included); only a new row is inserted.
                sets = ", ".join(f"{quote(n)} = %s" for n in changed)
                where = " AND ".join(f"{quote(k)} = %s" for k in keys)
                excluded = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in changed)
                sql = (
                    f"WITH updated AS (UPDATE {self._quoted} SET {sets} WHERE {where} "
                    f"RETURNING 1) INSERT INTO {self._quoted} ({cols}) SELECT {marks} "
                    f"WHERE NOT EXISTS (SELECT 1 FROM updated) "
                    f"ON CONFLICT ({target}) DO UPDATE SET {excluded}"
                )
                index = {n: i for i, n in enumerate(names)}
                params = [
                    [row[index[n]] for n in changed] + [row[index[k]] for k in keys] + row
                    for row in rows
                ]

            def upsert(conn: psycopg.Connection[Any], sql: str = sql, rows: Any = params) -> None:
                with conn.cursor() as cursor:
                    if len(rows) == 1:
                        cursor.execute(sql.encode(), rows[0])
                    else:
                        cursor.executemany(sql.encode(), rows)

            self.db.database.run("upserting rows", upsert, repeat=False)
        return self

    def _where_pk(self, pk_values: Any) -> tuple[str, list[Any]]:
        keys = self._keys(None)
        values = list(pk_values) if isinstance(pk_values, (list, tuple)) else [pk_values]
        if len(values) != len(keys):
            raise ValueError(
                f"table {self.name!r} has primary key {keys}: give {len(keys)} value(s), "
                f"got {values!r}"
            )
        return " AND ".join(f"{quote(k)} = %s" for k in keys), values

    def update(self, pk_values: Any, updates: Mapping[str, Any] | None = None) -> PostgresTable:
        """Set the columns of ``updates`` on the row with this primary key; raises
        :class:`NotFoundError` when there is none."""
        where, params = self._where_pk(pk_values)
        if not updates:
            self.get(pk_values)
            return self
        sets = ", ".join(f"{quote(c)} = %s" for c in updates)
        changed = self.db._rowcount(
            "updating a row",
            f"UPDATE {self._quoted} SET {sets} WHERE {where}",
            [*(_value(v) for v in updates.values()), *params],
        )
        if not changed:
            raise NotFoundError(f"no row of {self.name!r} has primary key {pk_values!r}")
        return self

    def delete(self, pk_values: Any) -> PostgresTable:
        """Delete the row with this primary key; raises :class:`NotFoundError` when there
        is none."""
        where, params = self._where_pk(pk_values)
        if not self.db._rowcount(
            "deleting a row", f"DELETE FROM {self._quoted} WHERE {where}", params
        ):
            raise NotFoundError(f"no row of {self.name!r} has primary key {pk_values!r}")
        return self

    def delete_where(
        self,
        where: str | None = None,
        where_args: Sequence[Any] | Mapping[str, Any] | None = None,
    ) -> PostgresTable:
        """Delete the rows matching ``where`` (every row without it)."""
        sql, params = self._filtered(f"DELETE FROM {self._quoted}", where, where_args)
        self.db._rowcount("deleting rows", sql, params)
        return self

    # -- reading ------------------------------------------------------------------------------

    def _filtered(
        self,
        head: str,
        where: str | None,
        where_args: Sequence[Any] | Mapping[str, Any] | None,
    ) -> tuple[str, Any]:
        # Always with parameters (none: []), so psycopg reads the placeholders and the
        # doubled percent signs translate() leaves in the fragments.
        params = _params(where_args)
        if params is None:
            params = []
        if where is None:
            return head, params
        return f"{head} WHERE {translate(where)}", params

    def get(self, pk_values: Any) -> dict[str, Any]:
        """The row with this primary key as a dict; raises :class:`NotFoundError`."""
        where, params = self._where_pk(pk_values)
        rows = list(self._select(f"SELECT * FROM {self._quoted} WHERE {where}", params))
        if not rows:
            raise NotFoundError(f"no row of {self.name!r} has primary key {pk_values!r}")
        return rows[0]

    def _select(self, sql: str, params: Any) -> Iterator[dict[str, Any]]:
        def select(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            cursor = conn.execute(sql.encode(), params)
            names = [c.name for c in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return iter(self.db.database.run("reading a read model", select))

    def rows_where(
        self,
        where: str | None = None,
        where_args: Sequence[Any] | Mapping[str, Any] | None = None,
        order_by: str | None = None,
        select: str = "*",
        limit: int | None = None,
        offset: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The rows matching ``where`` (all without it) as dicts, ordered by ``order_by``,
        ``select`` naming the columns; at most ``limit`` after skipping ``offset``."""
        sql, params = self._filtered(
            f"SELECT {translate(select)} FROM {self._quoted}", where, where_args
        )
        if order_by is not None:
            sql += f" ORDER BY {translate(order_by)}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if offset is not None:
            sql += f" OFFSET {int(offset)}"
        return self._select(sql, params)

    @property
    def rows(self) -> Iterator[dict[str, Any]]:
        """Every row, as dicts."""
        return self.rows_where()

    def count_where(
        self,
        where: str | None = None,
        where_args: Sequence[Any] | Mapping[str, Any] | None = None,
    ) -> int:
        """How many rows match ``where`` (all without it)."""
        sql, params = self._filtered(f"SELECT count(*) FROM {self._quoted}", where, where_args)
        return int(self.db._run("counting rows", sql, params)[0][0])

    @property
    def count(self) -> int:
        """How many rows the table holds."""
        return self.count_where()


def _literal(value: Any) -> str:
    """A default value as an SQL literal (numbers, booleans, text, NULL)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(_value(value))
    if "\x00" in text:
        raise ValueError("a default value cannot hold a NUL character")
    return "'" + text.replace("'", "''") + "'"
