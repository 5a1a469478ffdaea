"""``bridges``: where the application's broker bridges stand, read from the store alone.

An outbound bridge (``app.publish_to``) is a durable subscriber named ``bridge-out:<name>``:
its checkpoint, lag and dead letters (and lease holder, where it has one) come from
:func:`~eventlite.relay.subscriber_status`. An inbound bridge (``app.consume_from``) keeps
its inbox marks and dead letters under ``bridge-in:<name>``. What only the running process
knows (its broker address, counters, last error) is in ``app.bridges()``.
"""

from __future__ import annotations

import json
from typing import Any

from ..bridges.inbound import PREFIX as IN
from ..bridges.outbound import PREFIX as OUT
from ..dlq import DeadLetterQueue
from ..relay import subscriber_status
from ._base import EXIT_NOT_FOUND, EXIT_OK, CliError, CommandContext, register_command
from ._format import iso, table, when

__all__ = ["bridges"]


def _arguments(parser: Any) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


@register_command(
    "bridges",
    help="broker bridges: direction, checkpoint and lag out, messages handled in, dead letters",
    arguments=_arguments,
)
def bridges(ctx: CommandContext) -> int:
    """Print each bridge the store knows, outbound then inbound, by name."""
    for store in ("checkpoints", "retries", "dead_letters", "inbox"):
        ctx.require(store)
    dlq = DeadLetterQueue(ctx.storage)
    rows: list[dict[str, Any]] = []
    for s in subscriber_status(ctx.storage, dlq):
        if s.name.startswith(OUT):
            rows.append(
                {
                    "name": s.name.removeprefix(OUT),
                    "direction": "out",
                    "checkpoint": s.checkpoint,
                    "head": s.head,
                    "lag": s.lag,
                    "handled": None,
                    "dead_letters": s.dead_letters,
                    "owner": getattr(s, "owner", None),
                    "updated_at": s.updated_at,
                }
            )
    sources = dlq.sources()
    marks = ctx.storage.inbox.consumers()
    for name in sorted({n for n in [*sources, *marks] if n.startswith(IN)}):
        rows.append(
            {
                "name": name.removeprefix(IN),
                "direction": "in",
                "checkpoint": None,
                "head": None,
                "lag": None,
                "handled": marks.get(name, 0),
                "dead_letters": sources.get(name, 0),
                "owner": None,
                "updated_at": None,
            }
        )
    if not rows:
        raise CliError("no broker bridge has left a trace in this store", EXIT_NOT_FOUND)
    if ctx.args.json:
        for row in rows:
            ctx.emit(json.dumps({**row, "updated_at": iso(row["updated_at"])}, ensure_ascii=False))
        return EXIT_OK
    table(
        ctx,
        ["BRIDGE", "DIRECTION", "CHECKPOINT", "LAG", "HANDLED", "DEAD LETTERS", "OWNER", "MOVED"],
        [
            [
                r["name"],
                r["direction"],
                "-" if r["checkpoint"] is None else f"{r['checkpoint']}/{r['head']}",
                "-" if r["lag"] is None else r["lag"],
                "-" if r["handled"] is None else r["handled"],
                r["dead_letters"],
                r["owner"] or "-",
                when(r["updated_at"]),
            ]
            for r in rows
        ],
    )
    return EXIT_OK
