"""Where the tests find PostgreSQL, and a schema of their own for each test."""

from __future__ import annotations

import os
import uuid
from types import ModuleType
from urllib.parse import urlsplit

import pytest

from eventlite.testing.services import REQUIRE_ENV, require, tcp_open

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
