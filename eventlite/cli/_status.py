"""``queues`` and ``subscribers``: where work queues and durable subscribers stand.

Both read through the library over the store opened read-only: :meth:`Queues.stats
<eventlite.queue.Queues.stats>` and :func:`~eventlite.relay.subscriber_status`.

``subscribers`` shows a subscriber split into segments one row per segment; when any
subscriber is split or its lease is held, the table gets ``SEGMENT``, ``OWNER`` and
``LEASE UNTIL`` columns (``--json`` always has the ``segment``, ``owner`` and
``lease_expires_at`` keys; null where there is none).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..dlq import DeadLetterQueue, queue_source
from ..queue import Queues
from ..relay import SubscriberStatus, subscriber_status
from ._base import EXIT_NOT_FOUND, EXIT_OK, CliError, CommandContext, register_command
from ._format import iso, table, when

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
    ctx.require("queues")
    ctx.require("dead_letters")
    stats = Queues(ctx.storage).stats()
    if not stats:
        raise CliError("no work queue holds a message", EXIT_NOT_FOUND)
    dlq = DeadLetterQueue(ctx.storage)
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
    table(
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


def _status_dict(s: SubscriberStatus) -> dict[str, Any]:
    return {
        "name": s.name,
        "segment": s.segment,
        "owner": s.owner,
        "lease_expires_at": iso(s.lease_expires_at),
        "checkpoint": s.checkpoint,
        "head": s.head,
        "lag": s.lag,
        "retrying": s.retrying,
        "parked": s.parked,
        "dead_letters": s.dead_letters,
        "blocked_keys": list(s.blocked_keys),
        "updated_at": iso(s.updated_at),
    }


@register_command(
    "subscribers",
    help="durable subscribers: checkpoint, lag, retries, dead letters, blocked keys",
    arguments=_subscribers_arguments,
)
def subscribers(ctx: CommandContext) -> int:
    """Print each durable subscriber known to the store (each segment, when split), by
    name."""
    for store in ("checkpoints", "retries", "dead_letters"):
        ctx.require(store)
    name = ctx.args.name
    found = subscriber_status(ctx.storage, DeadLetterQueue(ctx.storage), name)
    if not found:
        raise CliError(
            f"no durable subscriber named {name!r}"
            if name
            else "no durable subscriber has a checkpoint in this store",
            EXIT_NOT_FOUND,
        )
    if ctx.args.json:
        for s in found:
            ctx.emit(json.dumps(_status_dict(s), ensure_ascii=False))
        return EXIT_OK
    segmented = any(s.segment is not None or s.owner is not None for s in found)
    headers = ["SUBSCRIBER"]
    if segmented:
        headers += ["SEGMENT", "OWNER", "LEASE UNTIL"]
    headers += [
        "CHECKPOINT",
        "LAG",
        "RETRYING",
        "PARKED",
        "DEAD LETTERS",
        "MOVED",
        "BLOCKED KEYS",
    ]
    rows = []
    for s in found:
        row: list[object] = [s.name]
        if segmented:
            row += [
                "-" if s.segment is None else s.segment,
                s.owner or "-",
                when(s.lease_expires_at),
            ]
        row += [
            f"{s.checkpoint}/{s.head}",
            s.lag,
            s.retrying,
            s.parked,
            s.dead_letters,
            when(s.updated_at),
            ", ".join(s.blocked_keys) or "-",
        ]
        rows.append(row)
    table(ctx, headers, rows)
    return EXIT_OK
