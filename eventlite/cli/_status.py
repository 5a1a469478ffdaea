"""``queues`` and ``subscribers``: where work queues and durable subscribers stand.

Both read through the library on the read-only connection: :meth:`Queues.stats
<eventlite.queue.Queues.stats>` and :func:`~eventlite.relay.subscriber_status`.
"""

from __future__ import annotations

import argparse
import json

from ..dlq import DeadLetterQueue, queue_source
from ..queue import Queues
from ..relay import subscriber_status
from ..sqlite import SQLiteStorage
from . import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    CommandContext,
    _iso,
    _table,
    _when,
    register_command,
)

__all__ = ["queues", "subscribers"]


def _json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


@register_command(
    "queues",
    help="work queues: waiting, in flight, delayed, oldest age, dead letters",
    arguments=_json_argument,
)
def queues(ctx: CommandContext) -> int:
    """Print each work queue that holds messages, by name."""
    ctx.require_table("queue_messages", "work-queue table")
    stats = Queues(SQLiteStorage(ctx.database)).stats()
    if not stats:
        raise CliError("no work queue holds a message", EXIT_NOT_FOUND)
    dlq = DeadLetterQueue(SQLiteStorage(ctx.database))
    dead = {s.name: dlq.count(queue_source(s.name)) for s in stats}
    if ctx.args.json:
        for s in stats:
            ctx.emit(
                json.dumps(
                    {
                        "name": s.name,
                        "depth": s.depth,
                        "in_flight": s.in_flight,
                        "delayed": s.delayed,
                        "oldest_age": s.oldest_age,
                        "dead_letters": dead[s.name],
                    }
                )
            )
        return EXIT_OK
    _table(
        ctx,
        ["QUEUE", "WAITING", "IN FLIGHT", "DELAYED", "OLDEST", "DEAD LETTERS"],
        [
            [s.name, s.depth, s.in_flight, s.delayed, _age(s.oldest_age), dead[s.name]]
            for s in stats
        ],
    )
    return EXIT_OK


def _subscribers_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="only this subscriber")
    _json_argument(parser)


@register_command(
    "subscribers",
    help="durable subscribers: checkpoint, lag, retries, dead letters, blocked keys",
    arguments=_subscribers_arguments,
)
def subscribers(ctx: CommandContext) -> int:
    """Print each durable subscriber known to the file, by name."""
    ctx.require_table("subscriber_checkpoints", "subscriber checkpoints")
    name = ctx.args.name
    found = subscriber_status(
        SQLiteStorage(ctx.database), DeadLetterQueue(SQLiteStorage(ctx.database)), name
    )
    if not found:
        raise CliError(
            f"no durable subscriber named {name!r}"
            if name
            else "no durable subscriber has a checkpoint in this file",
            EXIT_NOT_FOUND,
        )
    if ctx.args.json:
        for s in found:
            ctx.emit(
                json.dumps(
                    {
                        "name": s.name,
                        "checkpoint": s.checkpoint,
                        "head": s.head,
                        "lag": s.lag,
                        "retrying": s.retrying,
                        "parked": s.parked,
                        "dead_letters": s.dead_letters,
                        "blocked_keys": list(s.blocked_keys),
                        "updated_at": _iso(s.updated_at),
                    },
                    ensure_ascii=False,
                )
            )
        return EXIT_OK
    _table(
        ctx,
        [
            "SUBSCRIBER",
            "CHECKPOINT",
            "LAG",
            "RETRYING",
            "PARKED",
            "DEAD LETTERS",
            "MOVED",
            "BLOCKED KEYS",
        ],
        [
            [
                s.name,
                f"{s.checkpoint}/{s.head}",
                s.lag,
                s.retrying,
                s.parked,
                s.dead_letters,
                _when(s.updated_at),
                ", ".join(s.blocked_keys) or "-",
            ]
            for s in found
        ],
    )
    return EXIT_OK
