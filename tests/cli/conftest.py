"""Fixtures of the CLI tests: a store holding rows eventlite never writes (what another
program, a bad disk or a hand edit leaves), and a PostgreSQL schema."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from eventlite.app import App
from eventlite.dlq import DeadLetterQueue
from eventlite.messages import Registry, event
from eventlite.retry import RetryPolicy
from eventlite.saga import Saga, SagaOrchestrator, SagaStep, StepContext
from tests.postgres._pg import drop_schema, new_schema, require_postgres

registry = Registry()
"""The registry of the corrupt store's good events."""


@event(registry=registry, name="cli.Placed")
class Placed:
    """A good event."""

    order_id: str


DEEP = "[" * 100_000 + "]" * 100_000
"""JSON nested far deeper than any parser's recursion."""

CORRUPT_ROWS: list[tuple[str, str, tuple[object, ...]]] = [
    ("a date past year 9999", "timestamp", (10**18,)),
    ("a date before year 1", "timestamp", (-(10**18),)),
    ("text for a date", "timestamp", ("yesterday",)),
    ("deep JSON data", "data", (DEEP,)),
    ("a BLOB of data", "data", (b"\x00\xff\x10",)),
    ("data that is not UTF-8", "data", ("CAST(x'ff7b7d' AS TEXT)",)),
    ("a lone surrogate in JSON", "data", ('{"name": "caf\\udcc3"}',)),
    ("a number too long to read", "data", ('{"n": ' + "9" * 5000 + "}",)),
    ("data that is not JSON", "data", ("{not json",)),
    ("deep JSON headers", "headers", (DEEP,)),
    ("headers that are a list", "headers", ("[1, 2]",)),
    ("headers as a BLOB", "headers", (b"\xfe\xff",)),
    ("text for a schema version", "schema_version", ("abc",)),
    ("a number for an id", "id", (42,)),
    ("a correlation id that is not UTF-8", "correlation_id", ("CAST(x'c3ff' AS TEXT)",)),
    ("a BLOB for a stream id", "stream_id", (b"\xff\x00",)),
    ("a number for a type", "type", (7,)),
    ("a float for a version", "version", (1.5,)),
]
"""Rows of the corrupt store's log: what is wrong, the column it is wrong in, its value
(text starting ``CAST(`` is SQL, the rest a bound value)."""


@attrs.frozen
class CorruptStore:
    """An eventlite file with good events, a dead letter, a saga and a durable
    subscriber, then one event row per entry of :data:`CORRUPT_ROWS` and dead letters
    whose messages are deep JSON, a BLOB and text that is not UTF-8."""

    path: Path
    good: int
    """How many good events come first."""


def _reserve(ctx: StepContext) -> None:
    ctx.data.reserved = True


def make_corrupt_store(path: Path) -> CorruptStore:
    """Write the store of :class:`CorruptStore` at ``path``."""
    with App(path, registry=registry, synchronous="normal") as app:

        def fails(e: Placed) -> None:
            raise OSError("mail server down: caf\udcc3\udca9")

        app.subscribe(Placed, fails, durable=True, name="mailer", retry=RetryPolicy(max_attempts=1))
        app.store.append("Order-1", [Placed("o-1")])
        app.store.append("Order-2", [Placed("o-2")])
        app.run_until_idle()
        good = app.store.head_position()
        sagas = SagaOrchestrator(app.storage, app.codec, dlq=app.dlq)
        sagas.register(Saga("checkout", [SagaStep("reserve", _reserve)]))
        sagas.start("checkout", {"order_id": "o-1"}, saga_id="saga-1")
        dlq = DeadLetterQueue(app.storage, app.codec)
        error = RuntimeError("\udcff broken")
        for raw in (DEEP, b"\xff\xfe", '{"correlation_id": "caf\\udcc3", "type": 3}'):
            dlq.add("raw", raw, key=None, error=error, attempts=1)
    conn = sqlite3.connect(path)
    try:
        for n, (_, column, (value,)) in enumerate(CORRUPT_ROWS):
            position = good + n + 1
            row: dict[str, object] = {
                "position": position,
                "stream_id": f"Bad-{n}",
                "version": 1,
                "id": f"bad-{n}",
                "type": "cli.Placed",
                "schema_version": 1,
                "data": '{"order_id": "o-9"}',
                "correlation_id": f"bad-flow-{n}",
                "causation_id": None,
                "user_id": None,
                "headers": None,
                "timestamp": 1_700_000_000_000_000,
            }
            row[column] = value
            names = list(row)
            marks = [
                str(row[c]) if isinstance(row[c], str) and str(row[c]).startswith("CAST(") else "?"
                for c in names
            ]
            params = [row[c] for c, m in zip(names, marks, strict=True) if m == "?"]
            conn.execute(
                f"INSERT INTO events ({', '.join(names)}) VALUES ({', '.join(marks)})", params
            )
            stream = row["stream_id"]
            if isinstance(stream, str):
                conn.execute("INSERT INTO streams (stream_id, version) VALUES (?, 1)", (stream,))
        conn.execute("INSERT INTO streams (stream_id, version) VALUES ('Ghost', 99)")
        conn.commit()
    finally:
        conn.close()
    return CorruptStore(path, good)


@pytest.fixture
def corrupt(tmp_path: Path) -> CorruptStore:
    """A store holding rows eventlite never writes (see :class:`CorruptStore`)."""
    return make_corrupt_store(tmp_path / "corrupt.db")


@pytest.fixture
def pg_target() -> Iterator[str]:
    """A ``postgresql://`` URL naming a schema of its own, dropped after the test (the
    schema does not exist yet)."""
    url = require_postgres()
    schema = new_schema()
    try:
        yield f"{url}?schema={schema}"
    finally:
        drop_schema(schema)
