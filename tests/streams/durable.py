"""Helpers of the durable runner's tests: a storage in a fresh file, the inputs as the log
holds them, and what a stream's outputs must leave in the store (the model: the engine run
over the same inputs in memory, its row outputs applied to dicts)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlite_utils.db import jsonify_if_needed

from eventlite import Envelope
from eventlite.dlq import DeadLetterQueue
from eventlite.sqlite import SQLiteStorage
from eventlite.streams import (
    AppendEvent,
    DeadLetterEvent,
    DeleteRow,
    MemoryState,
    Output,
    Stream,
    StreamEngine,
    UpsertRow,
    dead_letter_source,
)
from eventlite.streams.tables import Table

from .conftest import codec

Rows = dict[str, list[str]]
"""Each table's rows, each as sorted JSON text (order-free, comparable)."""


@contextmanager
def fresh_storage() -> Iterator[SQLiteStorage]:
    """A storage in a new temporary file (synchronous NORMAL), closed and removed after."""
    with tempfile.TemporaryDirectory(prefix="eventlite-streams-") as tmp:
        storage = SQLiteStorage(os.path.join(tmp, "streams.db"), codec=codec, synchronous="normal")
        try:
            yield storage
        finally:
            storage.close()


def append_batches(storage: SQLiteStorage, batches: Iterable[Sequence[Any]]) -> None:
    """Store each batch in one append_many: each event in a stream of its key."""
    for batch in batches:
        if batch:
            storage.events.append_many([(f"input-{e.key}", [e]) for e in batch])


def inputs(storage: SQLiteStorage, types: Iterable[str]) -> list[Envelope]:
    """The stored events of ``types``, as the runner reads them."""
    return list(storage.events.read_all(types=list(types)))


def model(
    stream: Stream, envelopes: Sequence[Envelope], tables: Mapping[str, Table] | None = None
) -> list[Output]:
    """The outputs of the engine over ``envelopes`` in one batch, in memory."""
    engine = StreamEngine(stream, MemoryState(), codec=codec, tables=tables)
    return engine.process(envelopes).outputs


def _cell(value: Any) -> Any:
    return jsonify_if_needed(value)


def _text(row: Mapping[str, Any]) -> str:
    return json.dumps({k: _cell(v) for k, v in row.items()}, sort_keys=True)


def model_rows(outputs: Iterable[Output]) -> Rows:
    """The tables ``outputs`` leave when applied in order, with the values as the read
    model stores them."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for out in outputs:
        if isinstance(out, UpsertRow):
            rows = tables.setdefault(out.table, {})
            ident = json.dumps([_cell(out.row[c]) for c in out.pk])
            rows[ident] = {**rows.get(ident, {}), **out.row}
        elif isinstance(out, DeleteRow):
            rows = tables.setdefault(out.table, {})
            rows.pop(json.dumps([_cell(out.key[c]) for c in out.key]), None)
    return {t: sorted(_text(r) for r in rows.values()) for t, rows in tables.items() if rows}


def stored_rows(storage: SQLiteStorage, tables: Iterable[str]) -> Rows:
    """The rows the read model holds in ``tables`` (those with any)."""
    db = storage.projections.read_model()
    found = {}
    for table in tables:
        if db[table].exists():
            rows = sorted(_text(r) for r in db[table].rows)
            if rows:
                found[table] = rows
    return found


def model_events(outputs: Iterable[Output]) -> list[tuple[str | None, Any]]:
    """``(stream_id, message)`` of every event ``outputs`` append, in order (None: the
    runner's default stream)."""
    return [(o.stream_id, o.message) for o in outputs if isinstance(o, AppendEvent)]


def stored_events(
    storage: SQLiteStorage, types: Iterable[str], default: str
) -> list[tuple[str | None, Any]]:
    """``(stream_id, message)`` of the stored events of ``types`` in log order, with the
    runner's ``default`` stream id shown as None."""
    return [
        (None if e.stream_id == default else e.stream_id, e.message)
        for e in storage.events.read_all(types=list(types))
    ]


def model_dead(outputs: Iterable[Output]) -> list[tuple[int | None, str]]:
    """``(position, operator)`` of every input the outputs refuse, in order."""
    return [(o.position, o.operator) for o in outputs if isinstance(o, DeadLetterEvent)]


def stored_dead(storage: SQLiteStorage, name: str) -> list[tuple[int | None, str | None]]:
    """``(position, error type)`` of stream ``name``'s dead letters, in order."""
    dlq = DeadLetterQueue(storage, codec)
    return [
        (d.position, (d.error_type or "").rsplit(".", 1)[-1])
        for d in dlq.list(dead_letter_source(name), limit=None)
    ]
