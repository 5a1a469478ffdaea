"""``--db postgresql://...``: the commands read a PostgreSQL store through the same
library calls, and give the same answers as on a SQLite file holding the same events;
a store the PostgreSQL backend does not keep is refused in one line."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from eventlite.codec import Codec
from eventlite.envelope import Envelope, Metadata
from eventlite.postgres import PostgresStorage
from eventlite.sqlite import SQLiteStorage
from eventlite.store.storage import Storage

from ._run import run
from .conftest import Placed, registry

pytestmark = pytest.mark.services


def _event(n: int, order: str, flow: str, cause: str | None = None) -> Envelope:
    at = datetime(2024, 5, 1, 9, 30, n, 123456, tzinfo=timezone.utc)
    return Envelope(Placed(order), id=f"e-{n}", metadata=Metadata(flow, cause), timestamp=at)


def _events() -> list[tuple[str, list[Envelope]]]:
    """Two flows over three streams, with fixed ids and times."""
    return [
        ("Order-1", [_event(1, "o-1", "flow-1")]),
        ("Stock-1", [_event(2, "s-1", "flow-1", "e-1")]),
        ("Order-2", [_event(3, "o-2", "flow-2")]),
        ("Order-1", [_event(4, "o-1b", "flow-2", "e-3")]),
    ]


def _fill(storage: Storage) -> None:
    for stream, envelopes in _events():
        storage.events.append(stream, envelopes)
    storage.close()


@pytest.fixture
def both(pg_target: str, tmp_path: Path) -> tuple[str, str]:
    """The same events in a SQLite file and in a PostgreSQL schema: (path, URL)."""
    path = tmp_path / "same.db"
    _fill(SQLiteStorage(path, codec=Codec(registry)))
    _fill(PostgresStorage(pg_target, codec=Codec(registry)))
    return str(path), pg_target


SAME = [
    ["event-streams"],
    ["event-streams", "--prefix", "Order-", "--json"],
    ["events"],
    ["events", "--json"],
    ["events", "--stream", "Order-1", "--type", "cli.Placed", "--limit", "1"],
    ["events", "--app", "tests.cli.conftest:registry", "--json"],
    ["trace", "flow-1"],
    ["trace", "e-3"],
    ["trace", "Order-1"],
    ["trace", "#2"],
    ["trace", "nothing-here"],
]


@pytest.mark.parametrize("argv", SAME, ids=[" ".join(a) for a in SAME])
def test_the_same_answers_on_both_backends(both: tuple[str, str], argv: list[str]) -> None:
    """Each reading command prints the same on PostgreSQL as on SQLite for the same
    events (both through the store protocols), with the same exit code."""
    path, url = both
    on_sqlite, on_postgres = run("--db", path, *argv), run("--db", url, *argv)
    assert (on_sqlite.code, on_sqlite.out, on_sqlite.err) == (
        on_postgres.code,
        on_postgres.out,
        on_postgres.err,
    )


def test_info_of_a_postgres_store(both: tuple[str, str]) -> None:
    """``info`` names the URL (password masked), the schema, its version and counts."""
    _, url = both
    facts = json.loads(run("--db", url, "info", "--json").out)
    assert ("postgres", 4, 4, 3) == (
        facts["backend"],
        facts["events"],
        facts["head_position"],
        facts["streams"],
    )
    assert facts["schema_version"] == facts["latest_schema_version"]
    assert {"events", "snapshots"} <= set(facts["stores"])
    text = run("--db", url, "info")
    assert (0, "url:") == (text.code, text.lines[0].split()[0])


FEATURES = [
    (["dlq", "list"], "dead_letters", "dead letters"),
    (["dlq", "purge", "--all"], "dead_letters", "dead letters"),
    (["queues"], "queues", "work queues"),
    (["subscribers"], "checkpoints", "durable subscribers' checkpoints"),
    (["projections", "list"], "projections", "projections"),
    (["sagas", "list"], "sagas", "sagas"),
]


@pytest.mark.parametrize(("argv", "store", "what"), FEATURES, ids=[f[1] for f in FEATURES])
def test_a_store_the_backend_lacks_is_one_line(
    both: tuple[str, str], argv: list[str], store: str, what: str
) -> None:
    """A command over a store the PostgreSQL backend keeps works as on SQLite (here:
    finds nothing, exit code 1); over one it does not keep yet, one line names it, exit
    code 2."""
    _, url = both
    with PostgresStorage(url, readonly=True) as storage:
        kept = storage.keeps(store)
    result = run("--db", url, *argv)
    if kept:
        assert result.code in (0, 1)
    else:
        assert (2, "") == (result.code, result.out)
        assert f"keeps no {what}: the postgres backend" in result.err


def test_a_missing_schema_is_refused_and_not_created(pg_target: str) -> None:
    """A URL naming a schema that holds no store: one line, exit code 2, and nothing is
    created (reading never writes)."""
    result = run("--db", pg_target, "streams")
    assert (2, 1) == (result.code, len(result.err.splitlines()))
    assert "no eventlite store there" in result.err
    schema = pg_target.rsplit("=", 1)[1]
    import psycopg

    url = pg_target.split("?", 1)[0]
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        assert found.fetchone() is None


def test_an_unreachable_server_masks_the_password() -> None:
    """A server that does not answer: one line, exit code 2, the password never shown."""
    result = run("--db", "postgresql://shop:s3cret@127.0.0.1:1/shop", "info")
    assert (2, 1) == (result.code, len(result.err.splitlines()))
    assert "s3cret" not in result.err
    assert "shop:***@127.0.0.1:1" in result.err
