"""The stream engine: runs a :class:`~eventlite.streams.Stream` over input events.

:meth:`StreamEngine.process` takes a batch of envelopes in input order and returns what
the batch produced: the outputs for the runner to write, and the state changes to commit
with them. Nothing else is kept between batches: the engine's whole state is in its
:class:`~eventlite.streams.StreamState` once it has written the batch's changes, so a
runner that commits the outputs, the changes and the checkpoint in one transaction gets
exactly-once results — a crash loses an uncommitted batch, which the restarted engine
computes again, the same way.

**Deterministic.** The same events in the same order give the same outputs in the same
order, however they are cut into batches and wherever the engine was rebuilt from its
state: watermarks move after each event, windows that close together close in a stored
order, and nothing depends on the clock.

**Positions.** An envelope with a position at or below the last one processed is skipped,
so a runner may hand the same events again after a restart. Envelopes without a position
(from a broker) are processed as they come.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import attrs

from ..codec import Codec
from ..envelope import Envelope
from ..exceptions import EventliteError
from . import _operators as ops
from ._time import FOREVER, NEVER, from_us
from .outputs import Output
from .pipeline import (
    STREAM_OPERATOR,
    Stream,
    _AggregateNode,
    _EventsSink,
    _FnNode,
    _JoinInput,
    _JoinNode,
    _Node,
    _TableJoinNode,
    _TableSink,
)
from .state import MemoryState, StateKey, StreamState
from .tables import Table
from .windows import Session

__all__ = ["Processed", "StreamEngine", "StreamError", "StreamStatus"]


class StreamError(EventliteError):
    """A stream's function failed on an input event (``__cause__`` is its exception), or
    the engine was used after such a failure.

    ``stream`` names the stream, ``position`` the input event (None when it had none).
    The engine that raised it must not be used again: build a new one from the state.
    """

    def __init__(self, stream: str, message: str, position: int | None = None) -> None:
        self.stream = stream
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"stream {stream!r}{where}: {message}")


class Processed(NamedTuple):
    """What one call of :meth:`StreamEngine.process` produced."""

    outputs: list[Output]
    """The outputs, in the order they were made."""
    changes: Mapping[StateKey, Any | None]
    """Every state entry changed since the state's last flush (None: deleted)."""


@attrs.frozen
class StreamStatus:
    """Where a stream is: for the CLI and for tests."""

    name: str
    """The stream's name."""
    position: int
    """The last input position processed (0 before any)."""
    watermarks: Mapping[str, datetime | None]
    """Each source's watermark: None before its first event, the greatest ``datetime``
    (``datetime.max`` in UTC) once the input is finished."""
    open: Mapping[str, int]
    """Each stateful operator's open windows or buffered values."""
    late: Mapping[str, int]
    """Each stateful operator's late events counted so far."""


class StreamEngine:
    """Runs ``stream`` over input envelopes, keeping its state in ``state``.

    ``state`` defaults to a new :class:`~eventlite.streams.MemoryState`; the engine
    starts from what it holds (for a restart, the state as committed). ``codec`` reads and
    writes registered messages kept in state (default: over the default registry: give the
    app's). ``tables`` are the keyed tables ``join_table`` steps name.

    Raises ``ValueError`` for a stream without sources or sinks, or naming a table it was
    not given.
    """

    def __init__(
        self,
        stream: Stream,
        state: StreamState | None = None,
        *,
        codec: Codec | None = None,
        tables: Mapping[str, Table] | None = None,
    ) -> None:
        if not stream._sources:
            raise ValueError(f"stream {stream.name!r} has no source")
        if not stream._sinks:
            raise ValueError(
                f"stream {stream.name!r} has no sink: end it with to_events or to_table"
            )
        self.stream = stream
        self.state: StreamState = state if state is not None else MemoryState()
        """Where the engine keeps its state."""
        self._codec = codec if codec is not None else Codec()
        self._tables = dict(tables or {})
        self._run = ops.Run(stream.name, self._codec)
        self._sources: list[ops.SourceOp] = []
        self._ops: list[ops.StatefulOp] = []
        self._by_node: dict[int, ops.StatefulOp] = {}
        self._routes: dict[type[Any], ops.Handler] = {}
        self._position = 0
        self._position_dirty = False
        self._broken: str | None = None
        self._compile()
        stream._frozen = True
        self._load()

    # -- building ---------------------------------------------------------------------------
    # Two passes: the first makes the stateful operators and tells each which sources feed
    # it (their watermarks); the second builds the push functions, which read them.

    def _compile(self) -> None:
        for node in self.stream._sources:
            self._sources.append(
                ops.SourceOp(node.name, node.types, node.time, node.key, node.watermark)
            )
        for node, source in zip(self.stream._sources, self._sources, strict=True):
            self._plan(node, source)
        for op in self._ops:
            op.sources = [s for s in self._sources if op in s.ops]
            if isinstance(op, ops.JoinOp):
                op.prepare()
        for node, source in zip(self.stream._sources, self._sources, strict=True):
            children = node.children
            if source.key is None and len(children) == 1 and _is_key_by(children[0]):
                # the usual source().key_by(): the source computes the key itself
                source.key = children[0].fn  # type: ignore[attr-defined]
                children = children[0].children
            source.push = ops.fanout([self._build(child) for child in children])

    def _plan(self, node: _Node, source: ops.SourceOp) -> None:
        """Make the stateful operators below ``node`` and note that ``source`` feeds them."""
        for child in node.children:
            op: ops.StatefulOp | None = None
            if isinstance(child, _JoinInput):
                join = self._op(child.join)
                assert isinstance(join, ops.JoinOp)
                sides = join.left_sources if child.side == "left" else join.right_sources
                if source not in sides:
                    sides.append(source)
                op, child = join, child.join
            elif isinstance(child, _AggregateNode):
                op = self._op(child)
            if op is not None and op not in source.ops:
                source.ops.append(op)
            self._plan(child, source)

    def _op(self, node: _AggregateNode | _JoinNode) -> ops.StatefulOp:
        """The operator of a stateful step, made on first use."""
        op = self._by_node.get(id(node))
        if op is not None:
            return op
        run = self._run
        if isinstance(node, _JoinNode):
            op = ops.JoinOp(
                run,
                node.name,
                node.before_us,
                node.after_us,
                node.how,
                node.joiner,
                node.lateness_us,
                node.late,
            )
        else:
            kind = ops.SessionOp if isinstance(node.window, Session) else ops.WindowOp
            op = kind(
                run,
                node.name,
                node.window,  # type: ignore[arg-type]
                node.lateness_us,
                node.late,
                node.aggregator,
                node.emit == "update",
            )
        self._by_node[id(node)] = op
        self._ops.append(op)
        return op

    def _build_children(self, node: _Node) -> ops.Push:
        return ops.fanout([self._build(child) for child in node.children])

    def _build(self, node: _Node) -> ops.Push:
        run = self._run
        if isinstance(node, _FnNode):
            return _stateless(node.kind, node.fn, self._build_children(node))
        if isinstance(node, _AggregateNode):
            window = self._op(node)
            assert isinstance(window, (ops.WindowOp, ops.SessionOp))
            if window.downstream is ops.noop:
                window.downstream = self._build_children(node)
            return window.make_push()
        if isinstance(node, _JoinInput):
            join = self._op(node.join)
            assert isinstance(join, ops.JoinOp)
            if join.downstream is ops.noop:
                join.downstream = self._build_children(node.join)
            return join.push_left if node.side == "left" else join.push_right
        if isinstance(node, _TableJoinNode):
            table = self._tables.get(node.table)
            if table is None:
                raise ValueError(
                    f"stream {self.stream.name!r} joins the table {node.table!r}, which "
                    f"the engine was not given (tables={sorted(self._tables)})"
                )
            nxt = self._build_children(node)
            return ops.table_join(table.get, node.key, node.joiner, node.how == "inner", nxt)
        if isinstance(node, _EventsSink):
            return ops.events_sink(run, node.fn, node.stream_id)
        if isinstance(node, _TableSink):
            return ops.table_sink(run, node.table, node.row, node.pk)
        raise TypeError(f"unknown pipeline step {node!r}")  # pragma: no cover

    def _load(self) -> None:
        state = self.state
        position = state.get(STREAM_OPERATOR, "position")
        if position is not None:
            self._position = position
            self._run.idle_position = position
        for source in self._sources:
            source.load(state)
        for op in self._ops:
            op.load(state)
        for op in self._ops:
            op.advance()  # takes the watermarks it was at; nothing closes
        for source in self._sources:
            source.due = min((op.due for op in source.ops), default=FOREVER)

    def _route(self, cls: type[Any]) -> ops.Handler:
        handlers: list[ops.Handler] = []
        for source in self._sources:
            if issubclass(cls, source.types):
                handlers.append(source.handler())
            if source.marker is not None and issubclass(cls, source.marker):
                handlers.append(source.marker_handler())
        found = self._routes[cls] = ops.all_of(handlers)
        return found

    # -- running ----------------------------------------------------------------------------

    @property
    def reads_envelopes(self) -> bool:
        """Whether the stream needs whole envelopes: a source (or a punctuation marker)
        timed by the envelope's timestamp, or a late policy that dead-letters the input.
        When it does not, :meth:`process_messages` takes ``(position, message)`` pairs,
        which a log reader hands out more cheaply."""
        return any(s.enveloped for s in self._sources) or any(
            op.late == "dead_letter" for op in self._ops
        )

    @property
    def position(self) -> int:
        """The last input position processed (0 before any): the stream's checkpoint."""
        return self._position

    def process(self, envelopes: Iterable[Envelope]) -> Processed:
        """Run a batch of input envelopes, in order, and write the changed state entries.

        Returns the outputs and the state's changes since its last flush. Raises
        :class:`StreamError` when a function of the pipeline fails (the engine is then
        unusable: rebuild it from the state).
        """
        self._check()
        run = self._run
        outputs = run.outputs = []
        routes = self._routes
        last = self._position
        env: Envelope | None = None
        try:
            for env in envelopes:
                stored = env._stored
                pos = None if stored is None else stored[2]
                if pos is not None and pos <= last:
                    continue
                msg = env._message
                handle = routes.get(type(msg))
                if handle is None:
                    handle = self._route(type(msg))
                run.envelope = env
                handle(env, msg)
                if pos is not None:
                    last = pos
        except Exception as exc:
            position = None if env is None else env.position
            self._broken = f"it failed at position {position}"
            raise StreamError(self.stream.name, f"{type(exc).__name__}: {exc}", position) from exc
        finally:
            run.envelope = None
            run.idle_position = last or None
        if last != self._position:
            self._position = last
            self._position_dirty = True
        self._flush()
        return Processed(outputs, self.state.changes())

    def process_messages(self, items: Iterable[tuple[int, Any]]) -> Processed:
        """:meth:`process` for a stream that does not :attr:`read envelopes
        <reads_envelopes>`: ``items`` are ``(position, message)`` pairs in position order
        (what ``EventStore.read_messages`` returns). The same outputs as :meth:`process`
        over the envelopes of those events. Raises ``TypeError`` for a stream that reads
        envelopes, and :class:`StreamError` as :meth:`process` does."""
        if self.reads_envelopes:
            raise TypeError(
                f"stream {self.stream.name!r} reads envelopes (a time from the envelope, or "
                "late events dead-lettered): give process() the envelopes"
            )
        self._check()
        run = self._run
        outputs = run.outputs = []
        routes = self._routes
        last = self._position
        pos: int | None = None
        try:
            for pos, msg in items:
                if pos <= last:
                    continue
                handle = routes.get(type(msg))
                if handle is None:
                    handle = self._route(type(msg))
                run.idle_position = pos
                handle(None, msg)  # type: ignore[arg-type]
                last = pos
        except Exception as exc:
            self._broken = f"it failed at position {pos}"
            raise StreamError(self.stream.name, f"{type(exc).__name__}: {exc}", pos) from exc
        finally:
            run.idle_position = last or None
        if last != self._position:
            self._position = last
            self._position_dirty = True
        self._flush()
        return Processed(outputs, self.state.changes())

    def finish(self) -> Processed:
        """The input is over: move every watermark past all time, closing every window and
        emitting the unmatched values of left and outer joins. Events processed after this
        are late."""
        self._check()
        run = self._run
        outputs = run.outputs = []
        for source in self._sources:
            source.finish()
        self._flush()
        return Processed(outputs, self.state.changes())

    def skip(self, envelope: Envelope | int) -> Processed:
        """Move past ``envelope`` (or up to a position) without processing it: a runner
        does this for an event that failed and went to the dead-letter queue, and to
        move the checkpoint past events of other types it did not read. A position at or
        below the current one changes nothing."""
        self._check()
        pos = envelope if isinstance(envelope, int) else envelope.position
        if pos is not None and pos > self._position:
            self._position = pos
            self._position_dirty = True
            self._run.idle_position = pos
        self._flush()
        return Processed([], self.state.changes())

    def _check(self) -> None:
        if self._broken is not None:
            raise StreamError(
                self.stream.name,
                f"this engine stopped after an error ({self._broken}); build a new "
                f"StreamEngine from the committed state",
            )

    def _flush(self) -> None:
        state = self.state
        try:
            for source in self._sources:
                source.flush(state)
            for op in self._ops:
                op.flush(state)
            if self._position_dirty:
                state.put(STREAM_OPERATOR, "position", self._position)
                self._position_dirty = False
        except Exception as exc:
            self._broken = "its state could not be written"
            raise StreamError(
                self.stream.name, f"cannot write its state: {type(exc).__name__}: {exc}"
            ) from exc

    def status(self) -> StreamStatus:
        """The position, the watermarks, the open windows and the late counts."""
        return StreamStatus(
            name=self.stream.name,
            position=self._position,
            watermarks={s.name: _wm_time(s.wm) for s in self._sources},
            open={op.name: op.held() for op in self._ops},
            late={op.name: op.late_count for op in self._ops},
        )

    def _progress(self) -> tuple[dict[str, int | None], dict[str, int], dict[str, int]]:
        """The watermarks (µs, None before any event), open windows and late counts: the
        summary a runner stores with each batch."""
        return (
            {s.name: (None if s.wm <= NEVER else s.wm) for s in self._sources},
            {op.name: op.held() for op in self._ops},
            {op.name: op.late_count for op in self._ops},
        )


def _wm_time(wm: int) -> datetime | None:
    if wm <= NEVER:
        return None
    if wm >= FOREVER:
        return datetime.max.replace(tzinfo=from_us(0).tzinfo)
    return from_us(wm)


def _is_key_by(node: _Node) -> bool:
    return isinstance(node, _FnNode) and node.kind == "key_by"


def _stateless(kind: str, fn: Any, nxt: ops.Push) -> ops.Push:
    if kind == "filter":

        def filter_push(key: Any, t: int, value: Any) -> None:
            if fn(value):
                nxt(key, t, value)

        return filter_push
    if kind == "map":

        def map_push(key: Any, t: int, value: Any) -> None:
            nxt(key, t, fn(value))

        return map_push
    if kind == "flat_map":

        def flat_map_push(key: Any, t: int, value: Any) -> None:
            for item in fn(value):
                nxt(key, t, item)

        return flat_map_push

    def key_by_push(key: Any, t: int, value: Any) -> None:
        nxt(fn(value), t, value)

    return key_by_push
