"""How a runner writes a batch's outputs: event ids, events, read-model rows.

The row writes go through the storage's read-model helper (on SQLite a
``sqlite_utils.Database``) in the two functions :func:`write_rows` and
:func:`empty_tables`; a backend with another helper needs another pair, nothing else.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from ..envelope import Envelope, Metadata
from .outputs import AppendEvent, DeleteRow, UpsertRow

__all__ = [
    "empty_tables",
    "event_id",
    "output_envelopes",
    "row_problem",
    "row_writes",
    "write_rows",
]

_NAMESPACE = uuid.UUID("6c1f2f0e-7a55-4f63-9a3d-53a2d51e5c7a")
"""The namespace of the ids of events streams append (UUIDv5)."""


def event_id(stream: str, position: int, index: int) -> str:
    """The id of the ``index``-th event (from 0) stream ``stream`` appends while processing
    the input at ``position``: the same on every run, so a re-run or a rebuild that makes
    it again finds it already in the log."""
    return str(uuid.uuid5(_NAMESPACE, f"{stream}\n{position}\n{index}"))


def output_envelopes(
    stream: str,
    appends: Sequence[AppendEvent],
    inputs: Mapping[int, Envelope],
    default_stream_id: str,
    fallback_position: int,
) -> list[tuple[str, list[Envelope]]]:
    """The events of ``appends`` as ``(stream_id, envelopes)`` parts for ``append_many``,
    in order (consecutive events of one event stream share a part).

    Each envelope has its deterministic :func:`event_id`, the correlation of the input
    that produced it (whose id is its causation), and that input's timestamp: a re-run
    makes the same envelope.
    """
    parts: list[tuple[str, list[Envelope]]] = []
    counts: dict[int, int] = {}
    for out in appends:
        position = out.position if out.position is not None else fallback_position
        index = counts.get(position, 0)
        counts[position] = index + 1
        source = inputs.get(position)
        if source is not None:
            metadata = Metadata(
                correlation_id=source.correlation_id,
                causation_id=source.id,
                user_id=source.metadata.user_id,
            )
            timestamp = source.timestamp
        else:  # pragma: no cover - every output comes from an input of its batch
            metadata = None
            timestamp = None
        eid = event_id(stream, position, index)
        if metadata is None:
            metadata = Metadata(correlation_id=eid)
        env = Envelope(out.message, id=eid, metadata=metadata, timestamp=timestamp)
        sid = out.stream_id if out.stream_id is not None else default_stream_id
        if parts and parts[-1][0] == sid:
            parts[-1][1].append(env)
        else:
            parts.append((sid, [env]))
    return parts


_CELLS = (
    str,
    int,
    float,
    bool,
    type(None),
    bytes,
    datetime,
    date,
    time,
    timedelta,
    Decimal,
    uuid.UUID,
    list,
    dict,
    tuple,
)
"""What a column may hold: what the read model stores (containers as JSON text)."""


def row_problem(out: UpsertRow | DeleteRow) -> str | None:
    """Why the read model cannot store this row, or None when it can: a column name that
    is not a non-empty str, a value of a type it does not store, a primary-key column
    holding None (which never matches a row)."""
    cells = out.row if isinstance(out, UpsertRow) else out.key
    for column, cell in cells.items():
        if type(column) is not str or not column:
            return f"the column name {column!r} is not a non-empty str"
        if not isinstance(cell, _CELLS):
            return f"column {column!r} holds a {type(cell).__name__}, which a table cannot store"
    pk = out.pk if isinstance(out, UpsertRow) else tuple(out.key)
    for column in pk:
        if cells.get(column) is None:
            return f"its primary-key column {column!r} holds None"
    return None


RowWrite = tuple[bool, "dict[str, Any] | None", tuple[str, ...], tuple[Any, ...]]
"""What one row of a table ends as after a batch: ``(delete_first, row, pk, key)``: the
row whose primary-key columns ``pk`` hold ``key`` is deleted first when
``delete_first``, then ``row`` is upserted unless it is None."""


def row_writes(
    outputs: Iterable[UpsertRow | DeleteRow],
) -> dict[str, dict[tuple[Any, ...], RowWrite]]:
    """A batch's row outputs folded to one write per row (by table, then primary key),
    with the effect of applying them one after the other: upserts of one row merge their
    columns, a delete drops what came before it."""
    tables: dict[str, dict[tuple[Any, ...], RowWrite]] = {}
    for out in outputs:
        rows = tables.get(out.table)
        if rows is None:
            rows = tables[out.table] = {}
        if isinstance(out, UpsertRow):
            pk = out.pk
            key = tuple(out.row[c] for c in pk)
            ident = tuple(map(_hashable, key))
            before = rows.get(ident)
            if before is None:
                rows[ident] = (False, dict(out.row), pk, key)
            elif before[1] is None:
                rows[ident] = (True, dict(out.row), pk, key)
            else:
                rows[ident] = (before[0], {**before[1], **out.row}, pk, key)
        else:
            pk = tuple(out.key)
            key = tuple(out.key[c] for c in pk)
            rows[tuple(map(_hashable, key))] = (True, None, pk, key)
    return tables


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, dict, set)):
        return json.dumps(value, sort_keys=True, default=repr)
    return value


def write_rows(db: Any, tables: Mapping[str, Mapping[tuple[Any, ...], RowWrite]]) -> None:
    """Apply :func:`row_writes` to the read model ``db`` (a ``sqlite_utils.Database``
    bound to the open transaction): the deletes, then one ``upsert_all`` per table and
    primary key (which creates the table, and adds columns, as rows need)."""
    from sqlite_utils.db import NotFoundError, jsonify_if_needed

    for table, rows in tables.items():
        target = db[table]
        if target.exists():
            for first, _, _, key in rows.values():
                if first:
                    with contextlib.suppress(NotFoundError):
                        target.delete([jsonify_if_needed(v) for v in key])
        by_pk: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for _, row, pk, _ in rows.values():
            if row is not None:
                by_pk.setdefault(pk, []).append(row)
        for pk, upserts in by_pk.items():
            target.upsert_all(upserts, pk=pk[0] if len(pk) == 1 else pk, alter=True)


def empty_tables(db: Any, tables: Iterable[str]) -> None:
    """Delete every row of the read-model ``tables`` that exist (a rebuild starts them
    over)."""
    for table in tables:
        if db[table].exists():
            db[table].delete_where()
