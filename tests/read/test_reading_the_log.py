"""The read side reads the log through the event store only: the same decoding as every
other reader, and nothing of its own to keep in step with a backend."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sqlite_utils

import eventlite
from eventlite import Codec, Envelope
from eventlite.exceptions import MessageDecodeError, StorageError
from eventlite.memory import MemoryStorage
from eventlite.process import ProcessManagers
from eventlite.projection import Projection, ProjectionError, Projector, projects
from eventlite.saga import SagaOrchestrator
from eventlite.sqlite import SQLiteEventStore, SQLiteStorage
from eventlite.store.events import EventStore

from .ledger import Deposited, Ledger, Noted, Opened, fill, registry

PACKAGE = Path(eventlite.__file__).parent


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_the_message_read_decodes_as_the_full_read(tmp_path: Path, backend: str) -> None:
    """read_messages() gives the positions and messages that read_records() and decode()
    give, type filter and limit included, on every backend."""
    codec = Codec(registry)
    storage = (
        SQLiteStorage(tmp_path / "log.db", codec=codec)
        if backend == "sqlite"
        else MemoryStorage(codec=codec)
    )
    store: EventStore = storage.events
    try:
        fill(store, deposits=12)
        names = frozenset({"proj.Deposited"})
        for after, limit, types in [(0, 1000, None), (3, 5, None), (0, 4, names), (7, 100, names)]:
            full = [
                (r.position, store.decode(r).message)
                for r in store.read_records(after, limit, types)
            ]
            assert full == store.read_messages(after, limit, types)
        assert [] == store.read_messages(0, 10, frozenset())
    finally:
        storage.close()


def test_a_projection_decodes_stored_events_as_the_store_does(
    storage: SQLiteStorage, store: SQLiteEventStore, projector: Projector
) -> None:
    """A stored event whose headers the store refuses (a value that is not a string) is
    refused by a projection that takes envelopes too, naming its position: there is one
    decoder, the store's."""
    fill(store, accounts=1, deposits=1)
    with storage.transaction() as tx:
        tx.execute("UPDATE events SET headers = '{\"n\": 1}' WHERE position = 2")
    with pytest.raises(MessageDecodeError, match="headers") as refused:
        list(store.read_all())
    projector.add(Ledger())
    with pytest.raises(MessageDecodeError) as caught:
        projector.catch_up()
    assert (refused.value.position, 2) == (caught.value.position, 2)


def test_a_projection_without_envelopes_reads_only_messages(
    store: SQLiteEventStore, projector: Projector
) -> None:
    """A projection none of whose handlers takes the envelope gets the same messages, in
    the same order, as one whose handlers do."""
    seen: dict[str, list[object]] = {"bare": [], "full": []}

    class Bare(Projection):
        tables = ("bare",)

        @projects(Opened, Deposited)
        def _any(self, event: object, db: sqlite_utils.Database) -> None:
            seen["bare"].append(event)

    class Full(Projection):
        tables = ("full",)

        @projects(Opened, Deposited)
        def _any(self, event: object, db: sqlite_utils.Database, envelope: Envelope) -> None:
            seen["full"].append(envelope.message)

    fill(store, deposits=9)
    projector.add(Bare())
    projector.add(Full())
    projector.catch_up()
    expected = [e.message for e in store.read_all() if not isinstance(e.message, Noted)]
    assert (expected, expected) == (seen["bare"], seen["full"])


def test_the_read_side_needs_durable_storage() -> None:
    """On a storage that keeps no projections, sagas or process state, the facades refuse
    to be built, naming what is missing."""
    memory = MemoryStorage()
    for build, feature in [
        (lambda: Projector(memory), "projections"),
        (lambda: SagaOrchestrator(memory), "sagas"),
        (
            lambda: ProcessManagers(memory, Codec(), clock=eventlite.SystemClock()),
            "process managers",
        ),
    ]:
        with pytest.raises(StorageError) as caught:
            build()  # type: ignore[no-untyped-call]
        assert str(caught.value).startswith(f"{feature} need durable storage")
    with pytest.raises(TypeError, match="needs a Storage"):
        Projector(memory.events)  # type: ignore[arg-type]


@pytest.mark.parametrize("package", ["projection", "saga", "process"])
def test_the_read_side_holds_no_sql(package: str) -> None:
    """The projection, saga and process packages import neither sqlite3 nor the SQLite
    backend, and hold no SQL: their storage is the store protocols'."""
    offending: list[str] = []
    for path in sorted((PACKAGE / package).glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            else:
                names = []
            offending += [f"{path.name}: import {n}" for n in names if "sqlite" in n]
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words = node.value.upper().split()
                if (
                    {"SELECT", "FROM"} <= set(words)
                    or {"UPDATE", "SET"} <= set(words)
                    or ("INSERT" in words and "INTO" in words)
                ):
                    offending.append(f"{path.name}:{node.lineno}: {node.value[:40]!r}")
    assert [] == offending


def test_projection_errors_keep_their_public_name() -> None:
    """Errors are named by the module users import them from (it is what dead letters and
    saga failures record)."""
    assert "eventlite.projection.ProjectionError" == (
        f"{ProjectionError.__module__}.{ProjectionError.__qualname__}"
    )
