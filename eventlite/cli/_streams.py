"""``streams``: where each stream processor (``app.stream``) stands.

Reads through the library over the store opened read-only:
:func:`~eventlite.streams.stream_status`, what :meth:`StreamRunner.status
<eventlite.streams.StreamRunner.status>` returns. (The streams of events, by id, are
listed by ``event-streams``.)
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from ..streams import StreamRunStatus, stream_status
from ._base import EXIT_NOT_FOUND, EXIT_OK, CliError, CommandContext, register_command
from ._format import cut as _cut
from ._format import iso as _iso
from ._format import table as _table
from ._format import when as _when

__all__ = ["streams"]


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="only this stream, in detail")
    parser.add_argument("--json", action="store_true", help="one JSON object per stream")


def _mark(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value.year == datetime.max.year:
        return "end of input"
    return value.isoformat(timespec="seconds")


def _json(s: StreamRunStatus) -> dict[str, Any]:
    return {
        "name": s.name,
        "state": s.state,
        "position": s.position,
        "head": s.head,
        "lag": s.lag,
        "watermark": _iso(s.watermark),
        "watermarks": {k: _iso(v) for k, v in s.watermarks.items()},
        "open": dict(s.open),
        "late": dict(s.late),
        "error": s.error,
        "updated_at": _iso(s.updated_at),
        "rebuilt_at": _iso(s.rebuilt_at),
    }


@register_command(
    "streams",
    help="stream processors: position, lag, watermark, open windows, late events, error",
    arguments=_arguments,
)
def streams(ctx: CommandContext) -> int:
    """Print each stream processor of the file, by name; with NAME, that one in detail
    (each source's watermark, each operator's open windows and late events)."""
    ctx.require("streams")
    name = ctx.args.name
    found = stream_status(ctx.storage, name)
    if not found:
        raise CliError(
            f"no stream processor named {name!r}"
            if name
            else "no stream processor has state in this file",
            EXIT_NOT_FOUND,
        )
    if ctx.args.json:
        for s in found:
            ctx.emit(json.dumps(_json(s), ensure_ascii=False))
        return EXIT_OK
    if name is not None:
        _detail(ctx, found[0])
        return EXIT_OK
    _table(
        ctx,
        ["STREAM", "STATE", "POSITION", "LAG", "WATERMARK", "OPEN", "LATE", "MOVED", "ERROR"],
        [
            [
                s.name,
                s.state,
                f"{s.position}/{s.head}",
                s.lag,
                _mark(s.watermark),
                sum(s.open.values()),
                sum(s.late.values()),
                _when(s.updated_at),
                _cut(s.error or "-", 50),
            ]
            for s in found
        ],
    )
    return EXIT_OK


def _detail(ctx: CommandContext, s: StreamRunStatus) -> None:
    rows = [
        ("stream", s.name),
        ("state", s.state),
        ("position", f"{s.position} of {s.head} (lag {s.lag})"),
        ("moved", _when(s.updated_at)),
        ("rebuilt", _when(s.rebuilt_at)),
        ("error", s.error or "-"),
    ]
    for key, value in rows:
        ctx.emit(f"{key + ':':<10}{value}")
    ctx.emit("")
    _table(ctx, ["SOURCE", "WATERMARK"], [[n, _mark(w)] for n, w in sorted(s.watermarks.items())])
    ctx.emit("")
    operators = sorted({*s.open, *s.late})
    _table(
        ctx,
        ["OPERATOR", "OPEN", "LATE"],
        [[op, s.open.get(op, 0), s.late.get(op, 0)] for op in operators],
    )
