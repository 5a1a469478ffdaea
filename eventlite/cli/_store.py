"""The commands that read the event log: ``info``, ``streams``, ``events``, ``trace``."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

import eventlite.cli as _cli

from ..sqlite.schema import SCHEMA_VERSION
from . import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    CommandContext,
    _moment,
    _positive,
    _seconds,
    _show_time,
    _time,
    load_target,
    register_command,
)

if TYPE_CHECKING:
    from ..codec import Codec

__all__ = ["events", "info", "streams", "trace"]

_PAGE = 500


# -- info ------------------------------------------------------------------------------------


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object")


@register_command("info", help="the store's schema, size and counts", arguments=_info_arguments)
def info(ctx: CommandContext) -> int:
    """Print the path, schema version, journal mode, counts, head position and size."""
    conn = ctx.db
    conn.execute("BEGIN")  # one snapshot for every count
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        events = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        head = int(conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])
        streams = int(conn.execute("SELECT count(*) FROM streams").fetchone()[0])
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
    finally:
        conn.execute("COMMIT")
    path = os.path.abspath(ctx.path)
    size = os.path.getsize(path)
    wal = os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    facts: dict[str, Any] = {
        "path": path,
        "schema_version": version,
        "journal_mode": journal,
        "events": events,
        "head_position": head,
        "streams": streams,
        "file_size": size,
        "wal_size": wal,
        "tables": tables,
    }
    if ctx.args.json:
        ctx.emit(json.dumps(facts))
        return EXIT_OK
    known = "" if version == SCHEMA_VERSION else f" (this eventlite writes {SCHEMA_VERSION})"
    rows = [
        ("path", path),
        ("schema version", f"{version}{known}"),
        ("journal mode", journal),
        ("synchronous", "set by each app that opens the file, not stored in it"),
        ("events", str(events)),
        ("head position", str(head)),
        ("streams", str(streams)),
        ("file size", f"{size} bytes (+ {wal} bytes of WAL)"),
        ("tables", ", ".join(tables)),
    ]
    for key, value in rows:
        ctx.emit(f"{key + ':':<16}{value}")
    return EXIT_OK


# -- streams ---------------------------------------------------------------------------------


def _streams_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", help="only streams whose id starts with this")
    parser.add_argument("--limit", type=_positive, help="at most this many streams")
    parser.add_argument("--json", action="store_true", help="one JSON object per stream")


@register_command(
    "streams", help="streams with their version and last event time", arguments=_streams_arguments
)
def streams(ctx: CommandContext) -> int:
    """Print each stream's id, version and the time of its last event, by stream id."""
    args = ctx.args
    sql = (
        "SELECT s.stream_id, s.version, e.timestamp FROM streams s "
        "LEFT JOIN events e ON e.stream_id = s.stream_id AND e.version = s.version"
    )
    params: list[Any] = []
    if args.prefix:
        sql += " WHERE substr(s.stream_id, 1, ?) = ?"
        params += [len(args.prefix), args.prefix]
    sql += " ORDER BY s.stream_id LIMIT ?"
    params.append(args.limit if args.limit is not None else -1)
    rows = ctx.db.execute(sql, params).fetchall()
    if not rows:
        raise CliError(
            "no stream found" if not args.prefix else f"no stream starts with {args.prefix!r}",
            EXIT_NOT_FOUND,
        )
    if args.json:
        for stream_id, version, ts in rows:
            last = None if ts is None else _time(ts).isoformat()
            ctx.emit(json.dumps({"stream_id": stream_id, "version": version, "last": last}))
        return EXIT_OK
    width = max(len("STREAM"), *(len(r[0]) for r in rows))
    ctx.emit(f"{'STREAM':<{width}}  {'VERSION':>7}  LAST EVENT")
    for stream_id, version, ts in rows:
        last = "-" if ts is None else _show_time(ts)
        ctx.emit(f"{stream_id:<{width}}  {version:>7}  {last}")
    return EXIT_OK


# -- events ----------------------------------------------------------------------------------

_EVENT_COLUMNS = (
    "position, stream_id, version, id, type, schema_version, data, "
    "correlation_id, causation_id, user_id, headers, timestamp"
)


def _events_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", action="append", help="only this stream (repeatable)")
    parser.add_argument("--type", action="append", help="only this type name (repeatable)")
    parser.add_argument(
        "--from-position", type=_positive, default=1, metavar="N", help="from position N on"
    )
    parser.add_argument("--since", type=_moment, metavar="TIME", help="at or after TIME")
    parser.add_argument("--until", type=_moment, metavar="TIME", help="before TIME")
    parser.add_argument("--limit", type=_positive, help="at most this many events")
    parser.add_argument("--json", action="store_true", help="one JSON envelope per line")
    parser.add_argument(
        "--app",
        metavar="MODULE:NAME",
        help="decode with this App's (or Registry's, or Codec's) classes, upcasting old "
        "schema versions; types it does not know are printed as stored",
    )
    parser.add_argument("--follow", action="store_true", help="keep printing new events")
    parser.add_argument(
        "--follow-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="stop following after this long (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--interval", type=_seconds, default=0.5, metavar="SECONDS", help="poll interval"
    )


def _filters(args: argparse.Namespace) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if args.stream:
        clauses.append(f"stream_id IN ({', '.join('?' * len(args.stream))})")
        params += args.stream
    if args.type:
        clauses.append(f"type IN ({', '.join('?' * len(args.type))})")
        params += args.type
    if args.since is not None:
        clauses.append("timestamp >= ?")
        params.append(args.since)
    if args.until is not None:
        clauses.append("timestamp < ?")
        params.append(args.until)
    return " AND ".join(["1", *clauses]), params


def _rows(
    conn: sqlite3.Connection, where: str, params: list[Any], after: int, upto: int
) -> Iterator[tuple[Any, ...]]:
    """The matching rows in ``(after, upto]``, in pages: positions are gap-free and given in
    commit order, so paging by position needs no long read transaction."""
    sql = (
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > ? AND position <= ? AND "
        f"{where} ORDER BY position LIMIT {_PAGE}"
    )
    while True:
        page = conn.execute(sql, (after, upto, *params)).fetchall()
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1][0]


def _loads(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row in the shape of :meth:`Codec.envelope_to_dict`, data undecoded."""
    (position, stream_id, version, id_, type_, schema, data, corr, cause, user, headers, ts) = row
    return {
        "id": id_,
        "type": type_,
        "schema_version": schema,
        "data": _loads(data),
        "correlation_id": corr,
        "causation_id": cause,
        "user_id": user,
        "headers": _loads(headers) if headers else {},
        "timestamp": _time(ts).isoformat(),
        "stream_id": stream_id,
        "version": version,
        "position": position,
    }


def _decoded_dict(codec: Codec, row: tuple[Any, ...], ctx: CommandContext) -> dict[str, Any]:
    from ..envelope import Envelope, Metadata
    from ..exceptions import EventliteError

    (position, stream_id, version, id_, type_, schema, data, corr, cause, user, headers, ts) = row
    if type_ not in codec.registry:
        return _row_dict(row)
    try:
        message = codec.decoder(type_, schema)(data, position)
        meta = Metadata(corr, cause, user, _loads(headers) if headers else {})
        envelope = Envelope(
            message,
            id=id_,
            metadata=meta,
            timestamp=_time(ts),
            stream_id=stream_id,
            version=version,
            position=position,
        )
        return codec.envelope_to_dict(envelope)
    except (EventliteError, TypeError, ValueError) as exc:
        ctx.warn(f"#{position} {type_}: {exc}; printed as stored")
        return _row_dict(row)


def _event_line(d: Mapping[str, Any], stored: str | None) -> str:
    ts = datetime.fromisoformat(d["timestamp"]).isoformat(timespec="microseconds")
    parts = [
        f"#{d['position']}",
        ts,
        f"{d['stream_id']} v{d['version']}",
        str(d["type"]),
        f"id={d['id']}",
        f"correlation={d['correlation_id']}",
        f"causation={d['causation_id'] or '-'}",
    ]
    if d.get("user_id"):
        parts.append(f"user={d['user_id']}")
    if d.get("headers"):
        parts.append(f"headers={json.dumps(d['headers'], ensure_ascii=False)}")
    if stored is None:
        stored = json.dumps(d["data"], ensure_ascii=False, separators=(",", ":"))
    parts.append(stored)
    return "  ".join(parts)


def _codec_of(spec: str) -> Codec:
    from ..codec import Codec
    from ..messages import Registry

    target = load_target(spec)
    if isinstance(target, Codec):
        return target
    if isinstance(target, Registry):
        return Codec(target)
    codec = getattr(target, "codec", None)
    if isinstance(codec, Codec):
        return codec
    raise CliError(f"{spec} is not an App, a Registry or a Codec")


@register_command(
    "events", help="the global log, filtered; --follow for new events", arguments=_events_arguments
)
def events(ctx: CommandContext) -> int:
    """Print the stored events that match the filters, in position order."""
    args = ctx.args
    conn = ctx.db
    codec = _codec_of(args.app) if args.app else None
    where, params = _filters(args)
    remaining = args.limit
    last = args.from_position - 1
    printed = 0

    def show(upto: int) -> bool:
        """Print matches in (last, upto]; False once the limit is reached."""
        nonlocal last, printed, remaining
        for row in _rows(conn, where, params, last, upto):
            d = _decoded_dict(codec, row, ctx) if codec is not None else _row_dict(row)
            if args.json:
                ctx.emit(json.dumps(d, ensure_ascii=False))
            else:
                ctx.emit(_event_line(d, None if codec is not None else str(row[6])))
            printed += 1
            last = row[0]
            if remaining is not None:
                remaining -= 1
                if remaining == 0:
                    ctx.out.flush()
                    return False
        last = max(last, upto)
        ctx.out.flush()
        return True

    def head() -> int:
        return int(conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])

    going = show(head())
    if not args.follow:
        if not printed:
            raise CliError("no event matches", EXIT_NOT_FOUND)
        return EXIT_OK
    deadline = None if args.follow_timeout is None else time.monotonic() + args.follow_timeout
    try:
        while going:
            wait = args.interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = min(wait, left)
            _cli._sleep(wait)
            going = show(head())
    except KeyboardInterrupt:
        pass
    return EXIT_OK


# -- trace -----------------------------------------------------------------------------------


@attrs.define
class _Node:
    label: str
    children: list[_Node] = attrs.Factory(list)


def _trace_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "id", metavar="CORRELATION_ID", help="a flow's correlation id, or the id of any event in it"
    )


def _event_label(row: tuple[Any, ...]) -> str:
    position, stream_id, version, id_, type_ = row[:5]
    return f"#{position} {type_}  {stream_id} v{version}  {_show_time(row[11])}  id={id_}"


def _dead_letters(ctx: CommandContext, correlation_id: str) -> list[dict[str, Any]]:
    """The dead letters whose envelope belongs to the flow, oldest first."""
    if not ctx.has_table("dead_letters"):
        return []
    cur = ctx.db.execute(
        "SELECT * FROM dead_letters WHERE instr(CAST(message AS TEXT), ?) > 0 ORDER BY id",
        (correlation_id,),
    )
    names = [d[0] for d in cur.description]
    found = []
    for values in cur:
        row = dict(zip(names, values, strict=True))
        envelope = _loads(row.get("message"))
        if isinstance(envelope, dict) and envelope.get("correlation_id") == correlation_id:
            row["envelope"] = envelope
            found.append(row)
    return found


def _dead_letter_label(row: Mapping[str, Any]) -> str:
    envelope = row["envelope"]
    error = row.get("error_type") or "error"
    if row.get("error_message"):
        error += f": {row['error_message']}"
    parts = [
        f"DEAD LETTER {row.get('id')}",
        str(row.get("type_name") or envelope.get("type")),
        f"source={row.get('source')}",
        f"status={row.get('status')}",
        f"attempts={row.get('attempts')}",
        error,
    ]
    return "  ".join(parts)


def _render(roots: list[_Node]) -> Iterator[str]:
    stack: list[tuple[_Node, str, bool]] = [
        (n, "", i == len(roots) - 1) for i, n in enumerate(roots)
    ]
    stack.reverse()
    while stack:
        node, prefix, last = stack.pop()
        yield f"{prefix}{'`-- ' if last else '|-- '}{node.label}"
        inner = prefix + ("    " if last else "|   ")
        kids = node.children
        stack.extend((kid, inner, i == len(kids) - 1) for i, kid in reversed(list(enumerate(kids))))


@register_command(
    "trace",
    help="the causation tree of one flow, dead letters included",
    arguments=_trace_arguments,
)
def trace(ctx: CommandContext) -> int:
    """Print every event (and dead letter) of a flow as a tree of what caused what."""
    conn = ctx.db
    wanted = ctx.args.id
    select = f"SELECT {_EVENT_COLUMNS} FROM events WHERE correlation_id = ? ORDER BY position"
    correlation = wanted
    rows = conn.execute(select, (wanted,)).fetchall()
    if not rows:
        found = conn.execute("SELECT correlation_id FROM events WHERE id = ?", (wanted,)).fetchone()
        if found is not None:
            correlation = found[0]
            rows = conn.execute(select, (correlation,)).fetchall()
    letters = _dead_letters(ctx, correlation)
    if not rows and not letters:
        raise CliError(
            f"no event or dead letter has the correlation id or event id {wanted!r}", EXIT_NOT_FOUND
        )
    nodes: dict[str, _Node] = {}
    roots: list[_Node] = []
    outside: dict[str, _Node] = {}

    def parent_of(cause: str | None) -> list[_Node]:
        if cause is None:
            return roots
        if cause in nodes:
            return nodes[cause].children
        holder = outside.get(cause)
        if holder is None:
            what = "the message that started the flow" if cause == correlation else "a message"
            holder = outside[cause] = _Node(f"{cause}  ({what}, not in the event log)")
            roots.append(holder)
        return holder.children

    for row in rows:
        node = nodes[row[3]] = _Node(_event_label(row))
        parent_of(row[8]).append(node)
    for letter in letters:
        node = _Node(_dead_letter_label(letter))
        failed = letter.get("message_id") or letter["envelope"].get("id")
        if failed in nodes:
            nodes[failed].children.append(node)
        else:
            parent_of(letter["envelope"].get("causation_id")).append(node)
    n, m = len(rows), len(letters)
    ctx.emit(
        f"flow {correlation}: {n} event{'' if n == 1 else 's'}, "
        f"{m} dead letter{'' if m == 1 else 's'}"
    )
    for line in _render(roots):
        ctx.emit(line)
    return EXIT_OK
