"""``dlq``: look at the dead-letter queue, and release, discard or purge its entries.

``list`` and ``show`` read through :class:`~eventlite.dlq.DeadLetterQueue` over the store
opened read-only. ``retry``, ``retry-all``, ``discard`` and ``purge`` first look read-only
(so an unknown id changes nothing), then make the change through a ``DeadLetterQueue`` over
the store opened for writing by the library. A retry only marks entries ``retrying``: the
process that owns their source (the app running that durable subscriber, the consumer of
that work queue) delivers them the next time it looks.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..dlq import QUEUE_SOURCE_PREFIX, DeadLetter, DeadLetterNotFound, DeadLetterQueue
from ..relay import parse_segment
from ..saga import DLQ_SOURCE_PREFIX as SAGA_SOURCE_PREFIX
from ..store.storage import Storage
from ._base import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    CommandContext,
    add_subcommands,
    register_command,
)
from ._format import cut, duration, iso, plural, positive, table, when

__all__ = ["dlq"]

_STATUSES = ("dead", "parked", "retrying")


def _dlq(storage: Storage) -> DeadLetterQueue:
    """The DLQ of the store (read-only, or opened for writing)."""
    return DeadLetterQueue(storage)


def _entry_id(text: str) -> int:
    try:
        return positive(text)
    except argparse.ArgumentTypeError:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise argparse.ArgumentTypeError(
            f"a dead letter id is a whole number from 1 to 2**63 - 1, got {shown!r}"
        ) from None


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="only this source (a subscriber, queue:NAME, saga:NAME)")
    parser.add_argument("--status", choices=_STATUSES, help="only entries in this status")
    parser.add_argument("--limit", type=positive, metavar="N", help="at most N entries")
    parser.add_argument("--json", action="store_true", help="one JSON object per entry")


def _one_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", type=_entry_id, help="the dead letter's id")


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    _one_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object")


def _source_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="a subscriber (every segment of a split one), queue:NAME or saga:NAME",
    )


def _purge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="only this source")
    parser.add_argument(
        "--older-than",
        type=duration,
        metavar="AGE",
        help=(
            "only dead or retrying entries whose last failure is at least this old (90s, "
            "15m, 12h, 7d, 2w); parked entries are never purged by their own age: they are "
            "released for redelivery when the dead letter they wait behind is purged"
        ),
    )
    parser.add_argument(
        "--all", action="store_true", help="every entry (needed when no filter is given)"
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_subcommands(
        parser,
        {
            "list": ("dead letters, oldest first", _list_arguments),
            "show": ("one dead letter in full: message, error, traceback", _show_arguments),
            "retry": ("mark one dead letter for redelivery by its consumer", _one_argument),
            "retry-all": ("mark every dead letter of a source for redelivery", _source_argument),
            "discard": ("drop one dead letter for good", _one_argument),
            "purge": ("drop dead letters by source and age", _purge_arguments),
        },
    )


def _to_dict(entry: DeadLetter, full: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": entry.id,
        "source": entry.source,
        "key": entry.key,
        "group": entry.group,
        "status": entry.status.value,
        "type": entry.type_name,
        "message_id": entry.message_id,
        "position": entry.position,
        "error_type": entry.error_type,
        "error_message": entry.error_message,
        "attempts": entry.attempts,
        "first_failed_at": iso(entry.first_failed_at),
        "last_failed_at": iso(entry.last_failed_at),
        "created_at": iso(entry.created_at),
    }
    if full:
        d["message"] = _message_value(entry)
        d["traceback"] = entry.traceback
    return d


def _message_value(entry: DeadLetter) -> Any:
    """The stored message as JSON when it is JSON, else as text."""
    raw = entry.message
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _error(entry: DeadLetter) -> str:
    if entry.error_type is None:
        return "-"
    return f"{entry.error_type}: {entry.error_message}" if entry.error_message else entry.error_type


def _indented(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return repr(value)


def _owner(source: str) -> str:
    """Who redelivers the retried entries of ``source``."""
    if source.startswith(QUEUE_SOURCE_PREFIX):
        return f"work queue {source[len(QUEUE_SOURCE_PREFIX) :]!r} puts it back at its next receive"
    if source.startswith(SAGA_SOURCE_PREFIX):
        return "nothing redelivers a saga's failed compensation: undo it by hand, then discard"
    segment = parse_segment(source)
    if segment is not None:
        name, index, segments = segment
        return (
            f"the app holding segment {index} of {segments} of subscriber {name!r} "
            "redelivers it at its next poll"
        )
    return f"the app running subscriber {source!r} redelivers it at its next poll"


def _dlq_list(ctx: CommandContext) -> int:
    args = ctx.args
    entries = _dlq(ctx.storage).list(args.source, status=args.status, limit=args.limit)
    if not entries:
        what = [f"source {args.source!r}" if args.source else "", args.status or ""]
        detail = " and ".join(w for w in what if w)
        raise CliError("no dead letter" + (f" matches {detail}" if detail else ""), EXIT_NOT_FOUND)
    if args.json:
        for entry in entries:
            ctx.emit(json.dumps(_to_dict(entry, full=False), ensure_ascii=False))
        return EXIT_OK
    table(
        ctx,
        ["ID", "STATUS", "SOURCE", "KEY", "TYPE", "ATTEMPTS", "LAST FAILED", "ERROR"],
        [
            [
                e.id,
                e.status.value,
                e.source,
                e.key or "-",
                e.type_name or "?",
                e.attempts,
                when(e.last_failed_at),
                cut(_error(e)),
            ]
            for e in entries
        ],
    )
    return EXIT_OK


def _get(ctx: CommandContext, id: int) -> DeadLetter:
    try:
        return _dlq(ctx.storage).get(id)
    except DeadLetterNotFound as exc:
        raise CliError(str(exc), EXIT_NOT_FOUND) from None


def _dlq_show(ctx: CommandContext) -> int:
    entry = _get(ctx, ctx.args.id)
    if ctx.args.json:
        ctx.emit(json.dumps(_to_dict(entry, full=True), ensure_ascii=False))
        return EXIT_OK
    rows = [
        ("status", entry.status.value),
        ("source", entry.source),
        ("key", entry.key or "-"),
        ("group", entry.group or "-"),
        ("type", entry.type_name or "?"),
        ("message id", entry.message_id or "-"),
        ("position", "-" if entry.position is None else str(entry.position)),
        ("attempts", str(entry.attempts)),
        ("first failed", when(entry.first_failed_at)),
        ("last failed", when(entry.last_failed_at)),
        ("added", when(entry.created_at)),
        ("error", _error(entry)),
    ]
    ctx.emit(f"dead letter {entry.id}")
    for key, value in rows:
        ctx.emit(f"{key + ':':<14}{value}")
    message = _message_value(entry)
    text = message if isinstance(message, str) else _indented(message)
    ctx.emit("message:")
    for line in text.splitlines():
        ctx.emit("  " + line)
    if entry.traceback:
        ctx.emit("traceback:")
        for line in entry.traceback.rstrip().splitlines():
            ctx.emit("  " + line)
    return EXIT_OK


def _dlq_retry(ctx: CommandContext) -> int:
    entry = _get(ctx, ctx.args.id)  # read-only first: an unknown id changes nothing
    what = f"dead letter {entry.id} ({entry.type_name or '?'} from {entry.source})"
    with ctx.writable() as storage:
        dlq = _dlq(storage)
        try:
            released = dlq.retry(entry.id)
            now = dlq.get(entry.id)
        except DeadLetterNotFound as exc:
            raise CliError(str(exc), EXIT_NOT_FOUND) from None
    if now.status.value == "parked":
        ctx.emit(
            f"{what}: waits behind an earlier dead letter of key {entry.key}; retry that "
            "one to release both"
        )
        return EXIT_OK
    if not released:
        ctx.emit(f"{what}: already marked for retry")
    else:
        ctx.emit(f"{what}: marked for retry")
        others = [str(e.id) for e in released if e.id != entry.id]
        if others:
            ctx.emit(f"released behind it, in order: {', '.join(others)}")
    ctx.emit(f"not delivered yet: {_owner(entry.source)}")
    return EXIT_OK


def _segments_of(storage: Storage, source: str) -> list[str]:
    """The stored names of the segments of subscriber ``source`` (none when not split)."""
    if not storage.keeps("checkpoints"):
        return []
    found = []
    for checkpoint in storage.checkpoints.list():
        parsed = parse_segment(checkpoint.name)
        if parsed is not None and parsed[0] == source:
            found.append(checkpoint.name)
    return found


def _dlq_retry_all(ctx: CommandContext) -> int:
    source = ctx.args.source
    dlq = _dlq(ctx.storage)
    # a subscriber split into segments: the dead letters of every segment
    sources = [s for s in [source, *_segments_of(ctx.storage, source)] if dlq.count(s)]
    if not sources:
        raise CliError(f"no dead letter from source {source!r}", EXIT_NOT_FOUND)
    with ctx.writable() as storage:
        writable = _dlq(storage)
        changed = sum(writable.retry_all(s) for s in sources)
    ctx.emit(f"{plural(changed, 'dead letter')} from {', '.join(sources)} marked for retry")
    for each in sources:
        ctx.emit(f"not delivered yet: {_owner(each)}")
    return EXIT_OK


def _dlq_discard(ctx: CommandContext) -> int:
    entry = _get(ctx, ctx.args.id)
    with ctx.writable() as storage:
        try:
            _dlq(storage).discard(entry.id)
        except DeadLetterNotFound as exc:
            raise CliError(str(exc), EXIT_NOT_FOUND) from None
    ctx.emit(f"dead letter {entry.id} ({entry.type_name or '?'} from {entry.source}): discarded")
    return EXIT_OK


def _dlq_purge(ctx: CommandContext) -> int:
    args = ctx.args
    if args.source is None and args.older_than is None and not args.all:
        raise CliError("dlq purge needs --source, --older-than or --all")
    if args.all and (args.source is not None or args.older_than is not None):
        raise CliError("dlq purge: --all cannot be combined with --source or --older-than")
    ctx.storage  # noqa: B018 - refuses a missing or foreign store, read-only, first
    with ctx.writable() as storage:
        removed = _dlq(storage).purge(args.source, older_than=args.older_than)
    if not removed:
        raise CliError("no dead letter matches; nothing purged", EXIT_NOT_FOUND)
    ctx.emit(f"purged {plural(removed, 'dead letter')}")
    return EXIT_OK


_RUN = {
    "list": _dlq_list,
    "show": _dlq_show,
    "retry": _dlq_retry,
    "retry-all": _dlq_retry_all,
    "discard": _dlq_discard,
    "purge": _dlq_purge,
}


@register_command(
    "dlq", help="dead letters: list, show, retry, retry-all, discard, purge", arguments=_arguments
)
def dlq(ctx: CommandContext) -> int:
    """Run one ``dlq`` subcommand."""
    ctx.require("dead_letters")
    return _RUN[ctx.args.subcommand](ctx)
