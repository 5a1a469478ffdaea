"""Where the tests find PostgreSQL, and a schema of their own for each test."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import uuid
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from eventlite.testing.services import REQUIRE_ENV, require, tcp_open

if TYPE_CHECKING:
    from eventlite.codec import Codec
    from eventlite.postgres import PostgresStorage

URL = os.environ.get("EVENTLITE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The server the tests use (trust auth on the CI machines); override with the variable."""


def _reachable() -> bool:
    import psycopg  # noqa: F401  (the extra must be installed)
    import psycopg_pool  # noqa: F401

    parts = urlsplit(URL)
    return tcp_open(parts.hostname or "127.0.0.1", parts.port or 5432)


def require_postgres() -> str:
    """The URL, after skipping the test (or failing it under EVENTLITE_REQUIRE_SERVICES=1)
    when psycopg is missing or the server does not answer."""
    parts = urlsplit(URL)
    require(
        "PostgreSQL (with eventlite[postgres] installed)",
        _reachable,
        f"{parts.hostname}:{parts.port or 5432}",
    )
    return URL


def new_schema() -> str:
    """A schema name no other test run uses."""
    return f"el_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"


def drop_schema(schema: str) -> None:
    """Drop ``schema`` and everything in it (the tests' own schemas only)."""
    import psycopg

    assert schema.startswith("el_test_"), schema
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def psycopg_or_skip() -> ModuleType:
    """The psycopg module; without it, skip the whole test module (fail it under
    EVENTLITE_REQUIRE_SERVICES=1)."""
    try:
        import psycopg
    except ImportError:
        message = "psycopg is not installed (pip install 'eventlite[postgres]')"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{message}, and {REQUIRE_ENV}=1 requires it", pytrace=False)
        pytest.skip(message, allow_module_level=True)
    return psycopg


# Schemas emptied by a closed recycled storage, ready for the next one of this process:
# emptying the tables takes a few milliseconds, creating them anew a hundred (the
# contracts' state machines open a storage per example).
_free: list[str] = []
_made: set[str] = set()
_lock = threading.Lock()


def _drop_recycled() -> None:
    for schema in sorted(_made):
        with contextlib.suppress(Exception):  # the server may be gone: nothing to clean
            drop_schema(schema)


def recycled_storage(url: str, codec: Codec, **kwargs: Any) -> PostgresStorage:
    """A new, empty storage on a schema of its own, for one test: its schema is emptied
    when it is closed (every row deleted, identity numbers restarted, every read-model
    table dropped) and handed to the next one; this process drops them all at exit."""
    from eventlite.postgres import PostgresStorage

    with _lock:
        if not _made:
            atexit.register(_drop_recycled)
        schema = _free.pop() if _free else new_schema()
        _made.add(schema)

    class Recycled(PostgresStorage):
        recycled = False

        def close(self) -> None:
            super().close()
            if not self.recycled:
                self.recycled = True
                _empty(url, schema)
                with _lock:
                    _free.append(schema)

    kwargs.setdefault("pool_min_size", 0)
    # Commits not waiting for the WAL flush: the contracts test no server crash, and on a
    # shared machine a flush per commit is most of their time.
    fast = url + ("&" if "?" in url else "?") + "options=-c%20synchronous_commit%3Doff"
    return Recycled(fast, schema=schema, codec=codec, **kwargs)


_cleaner: Any = None  # one connection per process empties the schemas


def _empty(url: str, schema: str) -> None:
    """Make ``schema`` what a new eventlite schema is: its tables empty, its identity
    numbers at 1, no table but eventlite's own."""
    global _cleaner
    import psycopg

    from eventlite.postgres.projections import _schema_tables
    from eventlite.postgres.schema import MIGRATIONS

    own = _schema_tables(len(MIGRATIONS))
    with _lock:
        if _cleaner is None or _cleaner.closed:
            _cleaner = psycopg.connect(url, autocommit=True)
        conn = _cleaner
        with conn.transaction():
            statements = []
            for table, column in conn.execute(
                "SELECT c.relname, a.attname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attidentity <> '' "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
                (schema,),
            ).fetchall():
                if table not in own:
                    statements.append(f'DROP TABLE IF EXISTS {schema}."{table}" CASCADE')
                elif table != "eventlite_schema":
                    statements.append(f'DELETE FROM {schema}."{table}"')
                    if column is not None:
                        statements.append(
                            f'ALTER TABLE {schema}."{table}" ALTER COLUMN "{column}" RESTART'
                        )
            conn.execute("; ".join(statements).encode())
