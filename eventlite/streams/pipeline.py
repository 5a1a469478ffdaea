"""The pipeline builder: ``Stream(name).source(EventType, ...)`` and the steps after it.

A :class:`Stream` is a named pipeline, the unit that has one state and one checkpoint. Its
:meth:`~Stream.source` steps read events of some types from the input and give each one a
time, a key and a watermark; a :class:`Flow` is a point of the pipeline that further steps
hang from (several steps may hang from one flow: each gets every value). Values travel
with their key and event time: ``filter``, ``map`` and ``flat_map`` see and change only the
value, ``key_by`` sets the key. Windowed aggregates and joins are the stateful steps; sinks
(:meth:`Flow.to_events`, :meth:`Flow.to_table`) turn the values that reach them into the
outputs the runner writes.

Stateful steps and sources have a *name*, the address of their state: give each one an
explicit ``name=`` when the stream must keep its state across changes of the pipeline (the
defaults, ``aggregate1``, ``join1``, … in order of declaration, shift when a step is
inserted before them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from ._time import Duration, duration_us
from .aggregates import Aggregator, Field, count, max_of, mean_of, min_of, sum_of
from .windows import (
    BoundedOutOfOrderness,
    Hopping,
    LatePolicy,
    Punctuated,
    Session,
    SideOutput,
    Tumbling,
    WatermarkPolicy,
    Window,
)

__all__ = ["Emit", "Flow", "JoinHow", "Stream", "WindowedFlow"]

Emit = Literal["close", "update"]
"""When a window emits: ``"close"``, once, its final result when it closes; ``"update"``,
its new result after every event it accepts."""

JoinHow = Literal["inner", "left", "outer"]
"""Which values a join emits besides the matched pairs: ``"inner"`` none; ``"left"`` each
left value that found no match, with None, once no match can come any more; ``"outer"``
those of both sides."""

TimeOf = str | Callable[[Any], Any] | None
"""Where an event's time is: a field name, a function of the event, or None for the
envelope's timestamp. A time is an aware ``datetime`` or seconds since the epoch."""

STREAM_OPERATOR = "$stream"
"""The operator name of the engine's own state entries (the position)."""


class _Node:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.children: list[_Node] = []


class _SourceNode(_Node):
    def __init__(
        self,
        stream: Stream,
        name: str,
        types: tuple[type[Any], ...],
        time: TimeOf,
        key: Callable[[Any], Any] | None,
        watermark: WatermarkPolicy,
    ) -> None:
        super().__init__(stream)
        self.name = name
        self.types = types
        self.time = time
        self.key = key
        self.watermark = watermark


class _FnNode(_Node):
    def __init__(self, stream: Stream, kind: str, fn: Callable[[Any], Any]) -> None:
        super().__init__(stream)
        self.kind = kind
        self.fn = fn


class _AggregateNode(_Node):
    def __init__(
        self,
        stream: Stream,
        name: str,
        window: Window,
        lateness_us: int,
        late: LatePolicy,
        aggregator: Aggregator,
        emit: Emit,
    ) -> None:
        super().__init__(stream)
        self.name = name
        self.window = window
        self.lateness_us = lateness_us
        self.late = late
        self.aggregator = aggregator
        self.emit = emit


class _JoinNode(_Node):
    def __init__(
        self,
        stream: Stream,
        name: str,
        before_us: int,
        after_us: int,
        how: JoinHow,
        joiner: Callable[[Any, Any], Any] | None,
        lateness_us: int,
        late: LatePolicy,
    ) -> None:
        super().__init__(stream)
        self.name = name
        self.before_us = before_us
        self.after_us = after_us
        self.how = how
        self.joiner = joiner
        self.lateness_us = lateness_us
        self.late = late


class _JoinInput(_Node):
    """The edge from one side's flow into a join."""

    def __init__(self, stream: Stream, join: _JoinNode, side: Literal["left", "right"]) -> None:
        super().__init__(stream)
        self.join = join
        self.side = side


class _TableJoinNode(_Node):
    def __init__(
        self,
        stream: Stream,
        table: str,
        key: Callable[[Any], Any] | None,
        joiner: Callable[[Any, Any], Any] | None,
        how: Literal["inner", "left"],
    ) -> None:
        super().__init__(stream)
        self.table = table
        self.key = key
        self.joiner = joiner
        self.how = how


class _EventsSink(_Node):
    def __init__(
        self,
        stream: Stream,
        fn: Callable[[Any], Any] | None,
        stream_id: str | Callable[[Any], str] | None,
    ) -> None:
        super().__init__(stream)
        self.fn = fn
        self.stream_id = stream_id


class _TableSink(_Node):
    def __init__(
        self,
        stream: Stream,
        table: str,
        row: Callable[[Any], Any] | None,
        pk: tuple[str, ...],
    ) -> None:
        super().__init__(stream)
        self.table = table
        self.row = row
        self.pk = pk


def _check_late(late: LatePolicy) -> LatePolicy:
    if isinstance(late, SideOutput) or late in ("drop", "count", "dead_letter"):
        return late
    raise ValueError(f"late must be 'drop', 'count', 'dead_letter' or a SideOutput, got {late!r}")


def _check_callable(fn: object, what: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what} must be callable, got {fn!r}")


class Stream:
    """A named stream-processing pipeline (see the module doc).

    ::

        stream = Stream("page-stats")
        (stream.source(PageViewed, time="at", out_of_orderness=timedelta(seconds=2))
            .key_by(lambda view: view.page)
            .window(Tumbling(timedelta(minutes=1)))
            .count()
            .to_table("views_per_minute"))

    A stream is run by a :class:`~eventlite.streams.StreamEngine`; once an engine is built
    from it, the stream can no longer change.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a stream needs a non-empty name, got {name!r}")
        self.name = name
        """The stream's name: it keys the stream's state and checkpoint."""
        self._sources: list[_SourceNode] = []
        self._names: set[str] = {STREAM_OPERATOR}
        self._counts: dict[str, int] = {}
        self._frozen = False
        self._sinks = 0

    def __repr__(self) -> str:
        return f"Stream({self.name!r})"

    def source(
        self,
        *types: type[Any],
        time: TimeOf = None,
        key: Callable[[Any], Any] | None = None,
        out_of_orderness: Duration = 0,
        watermark: WatermarkPolicy | None = None,
        name: str | None = None,
    ) -> Flow:
        """Read the input events of ``types`` (and their subclasses).

        ``time`` says where an event's time is (a field name, a function of the event, or
        None for the envelope's timestamp); ``key`` gives the initial key (default None:
        use :meth:`Flow.key_by`). The watermark is the greatest time seen minus
        ``out_of_orderness``, unless ``watermark`` declares another policy. ``name``
        addresses the source's state (default: the type names joined by ``+``).
        """
        self._check_open()
        if not types:
            raise TypeError("source() needs at least one event type")
        for t in types:
            if not isinstance(t, type):
                raise TypeError(f"source() takes event classes, got {t!r}")
        if time is not None and not isinstance(time, str):
            _check_callable(time, "time")
        if key is not None:
            _check_callable(key, "key")
        if watermark is None:
            watermark = BoundedOutOfOrderness(out_of_orderness)
        elif out_of_orderness:
            raise ValueError("give either out_of_orderness or watermark, not both")
        elif not isinstance(watermark, (BoundedOutOfOrderness, Punctuated)):
            raise TypeError(f"watermark must be a watermark policy, got {watermark!r}")
        if name is None:
            name = "+".join(t.__name__ for t in types)
        self._claim(name)
        node = _SourceNode(self, name, types, time, key, watermark)
        self._sources.append(node)
        return Flow(node, keyed=key is not None)

    def tables(self) -> list[str]:
        """The read-model tables its :meth:`Flow.to_table` sinks write, sorted."""
        found: set[str] = set()
        todo: list[_Node] = list(self._sources)
        seen: set[int] = set()
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, _TableSink):
                found.add(node.table)
            todo.extend(node.children)
            if isinstance(node, _JoinInput):
                todo.append(node.join)
        return sorted(found)

    def operator_names(self) -> list[str]:
        """The names of the sources and stateful steps: the operators of its state."""
        return sorted(self._names - {STREAM_OPERATOR})

    def _check_open(self) -> None:
        if self._frozen:
            raise RuntimeError(
                f"stream {self.name!r} already runs in an engine; build a new Stream to change it"
            )

    def _claim(self, name: str) -> None:
        if not isinstance(name, str) or not name or name.startswith("$"):
            raise ValueError(
                f"an operator name must be a non-empty str not starting with $, got {name!r}"
            )
        if name in self._names:
            raise ValueError(
                f"stream {self.name!r} already has an operator named {name!r}; "
                f"give this one another name="
            )
        self._names.add(name)

    def _auto_name(self, kind: str) -> str:
        n = self._counts.get(kind, 0)
        while True:
            n += 1
            name = f"{kind}{n}"
            if name not in self._names:
                self._counts[kind] = n
                return name


class Flow:
    """A point of a :class:`Stream`'s pipeline: the values reaching it, each with a key and
    an event time. Each method hangs a new step from this point and returns the flow after
    it."""

    def __init__(self, node: _Node, results: bool = False, *, keyed: bool = False) -> None:
        self._node = node
        self._results = results
        self._keyed = keyed

    def __repr__(self) -> str:
        return f"<Flow of {self._node.stream!r}>"

    @property
    def stream(self) -> Stream:
        """The stream this flow belongs to."""
        return self._node.stream

    def _then(self, node: _Node, results: bool | None = None, keyed: bool = False) -> Flow:
        self._node.stream._check_open()
        self._node.children.append(node)
        return Flow(node, self._results if results is None else results, keyed=self._keyed or keyed)

    def filter(self, predicate: Callable[[Any], object]) -> Flow:
        """Keep the values for which ``predicate(value)`` is true."""
        _check_callable(predicate, "filter's predicate")
        return self._then(_FnNode(self.stream, "filter", predicate))

    def map(self, fn: Callable[[Any], Any]) -> Flow:
        """Replace each value with ``fn(value)`` (key and time unchanged)."""
        _check_callable(fn, "map's function")
        return self._then(_FnNode(self.stream, "map", fn))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]]) -> Flow:
        """Replace each value with the values of ``fn(value)``, in order (zero or more, each
        with the key and time of the value they came from)."""
        _check_callable(fn, "flat_map's function")
        return self._then(_FnNode(self.stream, "flat_map", fn))

    def key_by(self, fn: Callable[[Any], Any]) -> Flow:
        """Set each value's key to ``fn(value)``. Keys address state, so they must be
        hashable and JSON-ready (str, int, tuples of them, ...)."""
        _check_callable(fn, "key_by's function")
        return self._then(_FnNode(self.stream, "key_by", fn), keyed=True)

    def window(
        self,
        window: Window,
        *,
        allowed_lateness: Duration = 0,
        late: LatePolicy = "count",
    ) -> WindowedFlow:
        """Group values per key into event-time windows (:class:`Tumbling`,
        :class:`Hopping` or :class:`Session`); aggregate them with the returned
        :class:`WindowedFlow`.

        A window closes once the watermark has passed its end by ``allowed_lateness``; a
        value more than ``allowed_lateness`` behind the watermark is late, and ``late``
        says what becomes of it (see :data:`~eventlite.streams.LatePolicy`).
        """
        self._stateful("window")
        if not isinstance(window, (Tumbling, Hopping, Session)):
            raise TypeError(f"window must be Tumbling, Hopping or Session, got {window!r}")
        lateness = duration_us(allowed_lateness, "allowed_lateness")
        return WindowedFlow(self, window, lateness, _check_late(late))

    def join(
        self,
        other: Flow,
        *,
        within: Duration | None = None,
        before: Duration | None = None,
        after: Duration | None = None,
        how: JoinHow = "inner",
        joiner: Callable[[Any, Any], Any] | None = None,
        allowed_lateness: Duration = 0,
        late: LatePolicy = "count",
        name: str | None = None,
    ) -> Flow:
        """Join this flow's values (left) with ``other``'s (right) of the same key whose
        times are close: a right value at ``tr`` matches a left one at ``tl`` when
        ``tl - before <= tr <= tl + after`` (``within=d`` sets both to ``d``).

        Each match emits ``joiner(left, right)`` (default: the pair ``(left, right)``)
        with the later of the two times. ``how="left"``/``"outer"`` also emit a value that
        found no match, paired with None, once no match can come. Buffers keep a value
        only while a match can still come, which the watermarks and ``allowed_lateness``
        bound.
        """
        self._stateful("join")
        if not isinstance(other, Flow):
            raise TypeError(f"join() takes another Flow, got {other!r}")
        other._stateful("join")
        if other.stream is not self.stream:
            raise ValueError(
                f"cannot join flows of two streams ({self.stream.name!r} and "
                f"{other.stream.name!r}): declare both sources on one Stream"
            )
        if within is not None:
            if before is not None or after is not None:
                raise ValueError("give either within or before/after, not both")
            before = after = within
        if before is None or after is None:
            raise ValueError("join needs within=, or both before= and after=")
        if how not in ("inner", "left", "outer"):
            raise ValueError(f"how must be 'inner', 'left' or 'outer', got {how!r}")
        if joiner is not None:
            _check_callable(joiner, "joiner")
        stream = self.stream
        stream._check_open()
        before_us = duration_us(before, "before")
        after_us = duration_us(after, "after")
        lateness = duration_us(allowed_lateness, "allowed_lateness")
        late = _check_late(late)
        name = name if name is not None else stream._auto_name("join")
        stream._claim(name)
        node = _JoinNode(stream, name, before_us, after_us, how, joiner, lateness, late)
        self._node.children.append(_JoinInput(stream, node, "left"))
        other._node.children.append(_JoinInput(stream, node, "right"))
        return Flow(node, keyed=self._keyed or other._keyed)

    def join_table(
        self,
        table: str,
        *,
        key: Callable[[Any], Any] | None = None,
        joiner: Callable[[Any, Any], Any] | None = None,
        how: Literal["inner", "left"] = "inner",
    ) -> Flow:
        """Look each value up in the keyed table named ``table`` (given to the engine) by
        ``key(value)`` (default: the value's key), and emit ``joiner(value, row)``
        (default: the pair). ``how="inner"`` drops values the table has no row for;
        ``"left"`` passes them on with None."""
        if not isinstance(table, str) or not table:
            raise ValueError(f"join_table needs a table name, got {table!r}")
        if how not in ("inner", "left"):
            raise ValueError(f"how must be 'inner' or 'left', got {how!r}")
        if key is not None:
            _check_callable(key, "key")
        if joiner is not None:
            _check_callable(joiner, "joiner")
        return self._then(_TableJoinNode(self.stream, table, key, joiner, how))

    def to_events(
        self,
        fn: Callable[[Any], Any] | None = None,
        *,
        stream_id: str | Callable[[Any], str] | None = None,
    ) -> None:
        """Append ``fn(value)`` to the log for each value (the value itself when ``fn`` is
        None; nothing when it returns None), in the event stream ``stream_id`` (a name, a
        function of the value, or None to let the runner choose)."""
        if fn is not None:
            _check_callable(fn, "to_events' function")
        if stream_id is not None and not isinstance(stream_id, str):
            _check_callable(stream_id, "stream_id")
        self._then(_EventsSink(self.stream, fn, stream_id))
        self.stream._sinks += 1

    def to_table(
        self,
        table: str,
        *,
        row: Callable[[Any], Any] | None = None,
        pk: str | tuple[str, ...] | None = None,
    ) -> None:
        """Upsert ``row(value)`` (a dict) into the read-model table ``table``, whose primary
        key is ``pk``.

        Without ``row``, a :class:`~eventlite.streams.WindowResult` becomes ``{"key",
        "start", "end", "value"}`` and any other value ``{"key", "value"}``. ``pk``
        defaults to ``("key", "start")`` for window results without ``row`` (``("start",)``
        when the flow has no key), else ``("key",)``. A retracted window result deletes
        its row. A row whose primary key holds None, or a value a table cannot store, is
        an error of the pipeline at that event.
        """
        if not isinstance(table, str) or not table:
            raise ValueError(f"to_table needs a table name, got {table!r}")
        if row is not None:
            _check_callable(row, "row")
        if pk is None:
            if row is None and self._results:
                pk = ("key", "start") if self._keyed else ("start",)
            else:
                pk = ("key",)
        pk = (pk,) if isinstance(pk, str) else tuple(pk)
        if not pk or not all(isinstance(c, str) for c in pk):
            raise ValueError(f"to_table needs primary-key column names, got {pk!r}")
        self._then(_TableSink(self.stream, table, row, pk))
        self.stream._sinks += 1

    def _stateful(self, what: str) -> None:
        if self._results:
            raise TypeError(
                f"cannot {what} the results of a windowed aggregate: window results leave "
                "the stream through to_events or to_table (and may be read back as events)"
            )


class WindowedFlow:
    """A flow grouped into windows: aggregate it with :meth:`aggregate` or a helper
    (:meth:`count`, :meth:`sum`, :meth:`min`, :meth:`max`, :meth:`mean`). Each returns
    a :class:`Flow` of :class:`~eventlite.streams.WindowResult` values."""

    def __init__(self, flow: Flow, window: Window, lateness_us: int, late: LatePolicy) -> None:
        self._flow = flow
        self._window = window
        self._lateness_us = lateness_us
        self._late = late

    def aggregate(
        self,
        initial: Any,
        add: Callable[[Any, Any], Any],
        *,
        merge: Callable[[Any, Any], Any] | None = None,
        result: Callable[[Any], Any] | None = None,
        emit: Emit = "close",
        name: str | None = None,
    ) -> Flow:
        """Fold ``add(acc, value)`` over each window's values from ``initial`` (see
        :class:`~eventlite.streams.Aggregator`); session windows also need ``merge``.
        ``emit`` says when results leave (see :data:`Emit`); ``name`` addresses the
        state (default ``aggregateN``)."""
        _check_callable(add, "add")
        for fn, what in ((merge, "merge"), (result, "result")):
            if fn is not None:
                _check_callable(fn, what)
        return self.apply(Aggregator(initial, add, merge, result), emit=emit, name=name)

    def apply(
        self, aggregator: Aggregator, *, emit: Emit = "close", name: str | None = None
    ) -> Flow:
        """Aggregate with a ready-made :class:`~eventlite.streams.Aggregator` (such as
        ``count()`` or ``sum_of(field)``)."""
        if not isinstance(aggregator, Aggregator):
            raise TypeError(f"apply() takes an Aggregator, got {aggregator!r}")
        if isinstance(self._window, Session) and aggregator.merge is None:
            raise ValueError("session windows need an aggregate with merge= (sessions merge)")
        if emit not in ("close", "update"):
            raise ValueError(f"emit must be 'close' or 'update', got {emit!r}")
        stream = self._flow.stream
        stream._check_open()
        name = name if name is not None else stream._auto_name("aggregate")
        stream._claim(name)
        node = _AggregateNode(
            stream, name, self._window, self._lateness_us, self._late, aggregator, emit
        )
        return self._flow._then(node, results=True)

    def count(self, *, emit: Emit = "close", name: str | None = None) -> Flow:
        """The number of values per window."""
        return self.apply(count(), emit=emit, name=name)

    def sum(self, field: Field = None, *, emit: Emit = "close", name: str | None = None) -> Flow:
        """The sum of ``field(value)`` per window (of the values when None)."""
        return self.apply(sum_of(field), emit=emit, name=name)

    def min(self, field: Field = None, *, emit: Emit = "close", name: str | None = None) -> Flow:
        """The smallest ``field(value)`` per window."""
        return self.apply(min_of(field), emit=emit, name=name)

    def max(self, field: Field = None, *, emit: Emit = "close", name: str | None = None) -> Flow:
        """The greatest ``field(value)`` per window."""
        return self.apply(max_of(field), emit=emit, name=name)

    def mean(self, field: Field = None, *, emit: Emit = "close", name: str | None = None) -> Flow:
        """The mean of ``field(value)`` per window, a float."""
        return self.apply(mean_of(field), emit=emit, name=name)
