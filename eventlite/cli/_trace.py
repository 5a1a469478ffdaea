"""``trace``: the causation tree of a flow, found from any id an operator has at hand.

It reads the log with :meth:`EventStore.find_records
<eventlite.store.EventStore.find_records>` (by correlation id, by stream),
:meth:`~eventlite.store.EventStore.record_by_id` and
:meth:`~eventlite.store.EventStore.record_at`, and the flow's dead letters with
:meth:`DeadLetterStore.find_by_correlation
<eventlite.store.dead_letters.DeadLetterStore.find_by_correlation>`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Collection, Iterator
from typing import Any

import attrs

from ..store.dead_letters import DeadLetter, DeadLetterStatus, correlation_of
from ..store.events import LogRecord
from ._base import EXIT_NOT_FOUND, EXIT_OK, CliError, CommandContext, register_command
from ._format import MAX_INT, plural, show_time

__all__ = ["trace"]

_POSITION = re.compile(r"#?([0-9]{1,19})", re.ASCII)


@attrs.define
class _Node:
    label: str
    children: list[_Node] = attrs.Factory(list)


def _trace_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "id",
        metavar="ID",
        help="a flow's correlation id, the id of any event in it, a stream id (every flow "
        "that touched the stream), or a log position (#42 or 42)",
    )


def _all(
    ctx: CommandContext,
    *,
    streams: Collection[str] | None = None,
    correlation_ids: Collection[str] | None = None,
) -> list[LogRecord]:
    store = ctx.storage.events
    found: list[LogRecord] = []
    after = 0
    while True:
        page = store.find_records(after, 1000, streams=streams, correlation_ids=correlation_ids)
        found.extend(page)
        if len(page) < 1000:
            return found
        after = page[-1].position


def _dead_letters(ctx: CommandContext, flows: Collection[str]) -> list[DeadLetter]:
    if not ctx.storage.keeps("dead_letters"):
        return []
    return ctx.storage.dead_letters.find_by_correlation(flows)


def _envelope(letter: DeadLetter) -> dict[str, Any]:
    import json

    try:
        found = json.loads(letter.message)
    except Exception:  # not JSON, too deep: the letter says nothing of its place
        return {}
    return found if isinstance(found, dict) else {}


def _event_label(r: LogRecord) -> str:
    when = show_time(r.timestamp_us)
    return f"#{r.position} {r.type}  {r.stream_id} v{r.version}  {when}  id={r.id}"


def _dead_letter_label(letter: DeadLetter, envelope: dict[str, Any]) -> str:
    error = letter.error_type or "error"
    if letter.error_message:
        error += f": {letter.error_message}"
    status = letter.status.value if isinstance(letter.status, DeadLetterStatus) else letter.status
    parts = [
        f"DEAD LETTER {letter.id}",
        str(letter.type_name or envelope.get("type")),
        f"source={letter.source}",
        f"status={status}",
        f"attempts={letter.attempts}",
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


def _tree(correlation: str, records: list[LogRecord], letters: list[DeadLetter]) -> list[str]:
    """The lines of one flow: a header, then its tree."""
    nodes: dict[Any, _Node] = {}
    roots: list[_Node] = []
    outside: dict[Any, _Node] = {}

    def parent_of(cause: Any) -> list[_Node]:
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

    for r in records:
        node = nodes[r.id] = _Node(_event_label(r))
        parent_of(r.causation_id).append(node)
    for letter in letters:
        envelope = _envelope(letter)
        node = _Node(_dead_letter_label(letter, envelope))
        failed = letter.message_id or envelope.get("id")
        if isinstance(failed, str) and failed in nodes:
            nodes[failed].children.append(node)
        else:
            cause = envelope.get("causation_id")
            parent_of(cause if isinstance(cause, str) else None).append(node)
    header = (
        f"flow {correlation}: {plural(len(records), 'event')}, "
        f"{plural(len(letters), 'dead letter')}"
    )
    return [header, *_render(roots)]


class _Alone(Exception):
    """The event named has a correlation id that is not text: it is shown alone."""

    def __init__(self, record: LogRecord) -> None:
        super().__init__(record.position)
        self.record = record


def _flow_of(record: LogRecord) -> list[str]:
    if isinstance(record.correlation_id, str):
        return [record.correlation_id]
    raise _Alone(record)


def _flows_of(ctx: CommandContext, wanted: str) -> tuple[str | None, list[str]]:
    """The flows ``wanted`` names, and a title when it named a stream."""
    store = ctx.storage.events
    if store.find_records(0, 1, correlation_ids=[wanted]):
        return None, [wanted]
    record = store.record_by_id(wanted)
    if record is not None:
        return None, _flow_of(record)
    in_stream = _all(ctx, streams=[wanted])
    if in_stream:
        flows = list(dict.fromkeys(r.correlation_id for r in in_stream))
        title = (
            f"stream {wanted}: {plural(len(in_stream), 'event')} in {plural(len(flows), 'flow')}"
        )
        return title, [f for f in flows if isinstance(f, str)]
    match = _POSITION.fullmatch(wanted)
    if match is not None and 0 < int(match.group(1)) <= MAX_INT:
        record = store.record_at(int(match.group(1)))
        if record is not None:
            return None, _flow_of(record)
    if _dead_letters(ctx, [wanted]):
        return None, [wanted]
    return None, []


@register_command(
    "trace",
    help="the causation tree of a flow (by correlation id, event id, stream or position), "
    "dead letters included",
    arguments=_trace_arguments,
)
def trace(ctx: CommandContext) -> int:
    """Print every event (and dead letter) of a flow as a tree of what caused what; for
    a stream, every flow that touched it."""
    wanted = ctx.args.id
    try:
        title, flows = _flows_of(ctx, wanted)
    except _Alone as alone:
        record = alone.record
        ctx.emit(
            f"event #{record.position}: its correlation id {record.correlation_id!r} is not "
            "text, so its flow cannot be searched; the event alone:"
        )
        ctx.emit(f"`-- {_event_label(record)}")
        return EXIT_OK
    if not flows:
        raise CliError(
            "no event or dead letter has the correlation id, event id, stream id or "
            f"position {wanted!r}",
            EXIT_NOT_FOUND,
        )
    records = _all(ctx, correlation_ids=flows)
    letters = _dead_letters(ctx, flows)
    by_flow: dict[str, list[LogRecord]] = {f: [] for f in flows}
    for r in records:
        by_flow.setdefault(r.correlation_id, []).append(r)
    letters_of: dict[str, list[DeadLetter]] = {f: [] for f in flows}
    for letter in letters:
        flow = correlation_of(letter.message)
        if flow in letters_of:
            letters_of[flow].append(letter)
    if title is not None:
        ctx.emit(title)
    for i, flow in enumerate(flows):
        if i or title is not None:
            ctx.emit()
        for line in _tree(flow, by_flow[flow], letters_of[flow]):
            ctx.emit(line)
    return EXIT_OK
