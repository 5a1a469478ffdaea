"""How a runner prepares a batch's outputs for the store: event ids and envelopes, rows
folded to one write each and checked."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from ..envelope import Envelope, Metadata
from .outputs import AppendEvent, DeleteRow, UpsertRow

__all__ = ["event_id", "output_envelopes", "row_problem", "row_writes"]

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


RowWrite = tuple[bool, "Mapping[str, Any] | None", tuple[str, ...], tuple[Any, ...]]
"""What one row of a table ends as after a batch: ``(delete_first, row, pk, key)``: the
row whose primary-key columns ``pk`` hold ``key`` is deleted first when
``delete_first``, then ``row`` is upserted unless it is None."""

TableWrites = tuple[tuple[str, ...], list[tuple[Any, ...]], list[Mapping[str, Any]]]
"""``(pk, deletes, upserts)``: what :meth:`StreamStateStore.write_rows
<eventlite.store.streams.StreamStateStore.write_rows>` takes for one table."""


def row_writes(outputs: Iterable[UpsertRow | DeleteRow]) -> list[tuple[str, TableWrites]]:
    """A batch's row outputs folded to one write per row, with the effect of applying
    them one after the other (upserts of one row merge their columns, a delete drops what
    came before it), grouped by table and primary key."""
    folded: dict[tuple[str, tuple[str, ...]], dict[Any, RowWrite]] = {}
    for out in outputs:
        if type(out) is UpsertRow:
            pk = out.pk
            row = out.row
            key = tuple([row[c] for c in pk])
            rows = folded.get((out.table, pk))
            if rows is None:
                rows = folded[(out.table, pk)] = {}
            ident = _ident(key)
            before = rows.get(ident)
            if before is None:
                rows[ident] = (False, row, pk, key)
            elif before[1] is None:
                rows[ident] = (True, row, pk, key)
            else:
                rows[ident] = (before[0], {**before[1], **row}, pk, key)
        else:
            assert isinstance(out, DeleteRow)
            pk = tuple(out.key)
            key = tuple(out.key.values())
            rows = folded.get((out.table, pk))
            if rows is None:
                rows = folded[(out.table, pk)] = {}
            rows[_ident(key)] = (True, None, pk, key)
    writes = []
    for (table, pk), rows in folded.items():
        deletes = [key for first, _, _, key in rows.values() if first]
        upserts = [row for _, row, _, _ in rows.values() if row is not None]
        writes.append((table, (pk, deletes, upserts)))
    return writes


def _ident(key: tuple[Any, ...]) -> Any:
    """A hashable stand-in for a key (lists and dicts as their JSON)."""
    try:
        hash(key)
    except TypeError:
        return json.dumps(key, sort_keys=True, default=repr)
    return key
