"""The commands that read the event log: ``info``, ``streams`` and ``events``.

They call the store's read methods (:meth:`Storage.info
<eventlite.store.Storage.info>`, :meth:`EventStore.list_streams
<eventlite.store.EventStore.list_streams>`, :meth:`EventStore.find_records
<eventlite.store.EventStore.find_records>`) on the store opened read-only.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..exceptions import EventliteError
from ..store.events import LogRecord, StreamInfo
from ._base import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    CommandContext,
    app_from_factory,
    load_target,
    register_command,
)
from ._format import moment, positive, seconds, show_time, time_of
from ._records import record_dict, record_json, record_line

if TYPE_CHECKING:
    from ..codec import Codec

__all__ = ["event_streams", "events", "info"]

_PAGE = 500
_sleep = time.sleep  # the follow loop's wait; tests replace it


# -- info ------------------------------------------------------------------------------------


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object")


_LABELS = {
    "path": "path",
    "schema": "schema",
    "server_version": "server",
    "journal_mode": "journal mode",
}


@register_command("info", help="the store's schema, size and counts", arguments=_info_arguments)
def info(ctx: CommandContext) -> int:
    """Print where the store is, its schema version, counts, head position and size."""
    facts = ctx.info
    details = dict(facts.details)
    sqlite = facts.backend == "sqlite"
    out: dict[str, Any] = {"backend": facts.backend}
    if sqlite:
        out["path"] = details.pop("path", ctx.target)
    else:
        out["url"] = facts.description
    out.update(
        schema_version=facts.schema_version,
        latest_schema_version=facts.latest_schema_version,
        events=facts.events,
        head_position=facts.head_position,
        streams=facts.streams,
        stores=list(facts.stores),
    )
    out.update(details)
    if ctx.args.json:
        ctx.emit(json.dumps(out, ensure_ascii=False))
        return EXIT_OK
    version = facts.schema_version
    known = (
        ""
        if version == facts.latest_schema_version
        else f" (this eventlite writes {facts.latest_schema_version})"
    )
    rows: list[tuple[str, object]] = [("path", out["path"]) if sqlite else ("url", out["url"])]
    if not sqlite and "schema" in details:
        rows.append(("schema", details.pop("schema")))
    rows.append(("schema version", f"{version}{known}"))
    if "journal_mode" in details:
        rows.append(("journal mode", details.pop("journal_mode")))
    if sqlite:
        rows.append(("synchronous", "set by each app that opens the file, not stored in it"))
    rows += [
        ("events", facts.events),
        ("head position", facts.head_position),
        ("streams", facts.streams),
    ]
    if "file_size" in details:
        size, wal = details.pop("file_size"), details.pop("wal_size", 0)
        rows.append(("file size", f"{size} bytes (+ {wal} bytes of WAL)"))
    tables = details.pop("tables", None)
    for key, value in details.items():
        rows.append((_LABELS.get(key, key.replace("_", " ")), value))
    if tables is not None:
        rows.append(("tables", ", ".join(tables)))
    for key, value in rows:
        ctx.emit(f"{key + ':':<16}{value}")
    return EXIT_OK


# -- streams ---------------------------------------------------------------------------------


def _streams_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", help="only streams whose id starts with this")
    parser.add_argument("--limit", type=positive, help="at most this many streams")
    parser.add_argument("--json", action="store_true", help="one JSON object per stream")


def _all_streams(ctx: CommandContext, prefix: str | None, limit: int | None) -> list[StreamInfo]:
    store = ctx.storage.events
    found: list[StreamInfo] = []
    after: str | None = None
    while limit is None or len(found) < limit:
        want = 1000 if limit is None else min(1000, limit - len(found))
        page = store.list_streams(prefix=prefix or None, after=after, limit=want)
        found.extend(page)
        if len(page) < want:
            break
        after = page[-1].stream_id
    return found


@register_command(
    "event-streams",
    help="streams of events with their version and last event time",
    arguments=_streams_arguments,
)
def event_streams(ctx: CommandContext) -> int:
    """Print each stream's id, version and the time of its last event, by stream id."""
    args = ctx.args
    rows = _all_streams(ctx, args.prefix, args.limit)
    if not rows:
        raise CliError(
            "no stream found" if not args.prefix else f"no stream starts with {args.prefix!r}",
            EXIT_NOT_FOUND,
        )
    if args.json:
        for s in rows:
            when = time_of(s.last_timestamp_us)
            last = None if when is None else when.isoformat()
            ctx.emit(
                json.dumps(
                    {"stream_id": s.stream_id, "version": s.version, "last": last},
                    ensure_ascii=False,
                )
            )
        return EXIT_OK
    width = max(len("STREAM"), *(len(str(s.stream_id)) for s in rows))
    ctx.emit(f"{'STREAM':<{width}}  {'VERSION':>7}  LAST EVENT")
    for s in rows:
        last = "-" if s.last_timestamp_us is None else show_time(s.last_timestamp_us)
        ctx.emit(f"{s.stream_id!s:<{width}}  {s.version!s:>7}  {last}")
    return EXIT_OK


# -- events ----------------------------------------------------------------------------------


def _events_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", action="append", help="only this stream (repeatable)")
    parser.add_argument("--type", action="append", help="only this type name (repeatable)")
    parser.add_argument(
        "--from-position", type=positive, default=1, metavar="N", help="from position N on"
    )
    parser.add_argument("--since", type=moment, metavar="TIME", help="at or after TIME")
    parser.add_argument("--until", type=moment, metavar="TIME", help="before TIME")
    parser.add_argument("--limit", type=positive, help="at most this many events")
    parser.add_argument("--json", action="store_true", help="one JSON envelope per line")
    parser.add_argument(
        "--app",
        metavar="MODULE:NAME",
        help="decode with this App's (or Registry's, or Codec's, or app factory's) classes, "
        "upcasting old schema versions; types it does not know are printed as stored",
    )
    parser.add_argument("--follow", action="store_true", help="keep printing new events")
    parser.add_argument(
        "--follow-timeout",
        type=seconds,
        metavar="SECONDS",
        help="stop following after this long (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--interval", type=seconds, default=0.5, metavar="SECONDS", help="poll interval"
    )


def codec_of(spec: str) -> Codec:
    """The codec of the app, registry, codec or app factory ``MODULE:NAME`` names; an app
    a factory makes (on a temporary file, by :func:`~eventlite.app.call_app_factory`) is
    closed."""
    from ..app import App
    from ..codec import Codec
    from ..messages import Registry

    target = load_target(spec)
    if callable(target) and not isinstance(target, (App, Registry, Codec, type)):
        with app_from_factory(spec, target, None) as made:
            return codec_of_object(spec, made)
    return codec_of_object(spec, target)


def codec_of_object(spec: str, target: Any) -> Codec:
    """The codec of an App, a Registry or a Codec."""
    from ..codec import Codec
    from ..messages import Registry

    if isinstance(target, Codec):
        return target
    if isinstance(target, Registry):
        return Codec(target)
    codec = getattr(target, "codec", None)
    if isinstance(codec, Codec):
        return codec
    raise CliError(f"{spec} is not an App, a Registry or a Codec")


def _decoded(ctx: CommandContext, codec: Codec, record: LogRecord) -> dict[str, Any] | None:
    """The record decoded by the app's codec (upcast), or None to print it as stored."""
    if not isinstance(record.type, str) or record.type not in codec.registry:
        return None
    try:
        return codec.envelope_to_dict(ctx.storage.events.decode(record))
    except (EventliteError, ValueError, TypeError, RecursionError) as exc:
        ctx.warn(f"#{record.position} {record.type}: {exc}; printed as stored")
        return None


def _matching(ctx: CommandContext, after: int, want: int) -> Iterator[LogRecord]:
    """The matching records after ``after``, in pages of at most ``want``."""
    args = ctx.args
    store = ctx.storage.events
    while True:
        page = store.find_records(
            after,
            min(_PAGE, want),
            types=args.type,
            streams=args.stream,
            since=args.since,
            until=args.until,
        )
        yield from page
        if len(page) < min(_PAGE, want):
            return
        after = page[-1].position


@register_command(
    "events", help="the global log, filtered; --follow for new events", arguments=_events_arguments
)
def events(ctx: CommandContext) -> int:
    """Print the stored events that match the filters, in position order."""
    args = ctx.args
    codec = codec_of(args.app) if args.app else None
    if codec is not None:
        ctx.use_codec(codec)
    store = ctx.storage.events
    remaining: int | None = args.limit
    last = args.from_position - 1
    printed = 0

    def show() -> bool:
        """Print the matches committed since the last pass; False once the limit is
        reached."""
        nonlocal last, printed, remaining
        head = store.head_position()  # everything up to it is committed: read it once
        for record in _matching(ctx, last, _PAGE if remaining is None else remaining):
            decoded = _decoded(ctx, codec, record) if codec is not None else None
            problems: dict[str, str] = {}
            if decoded is not None:
                d = decoded
            else:
                d, problems = record_dict(record)
            if args.json:
                ctx.emit(record_json(d, problems, record))
            else:
                raw = record.data if decoded is None and isinstance(record.data, str) else None
                ctx.emit(record_line(d, problems, raw))
            printed += 1
            last = record.position
            if remaining is not None:
                remaining -= 1
                if remaining == 0:
                    ctx.out.flush()
                    return False
        last = max(last, head)
        ctx.out.flush()
        return True

    going = show()
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
            _sleep(wait)
            going = show()
    except KeyboardInterrupt:
        pass
    return EXIT_OK
