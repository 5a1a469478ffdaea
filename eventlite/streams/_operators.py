"""The running operators of a stream: sources, windows, sessions, joins, sinks.

Every operator pushes ``(key, time, value)`` to the next one by a plain call. The stateful
ones keep their state in Python objects while they run, remember which entries changed
(``dirty``), and write those entries to the :class:`~eventlite.streams.StreamState` when the
engine flushes; :meth:`load` rebuilds them from it. Closing order is made deterministic by
a per-operator sequence number given to each window or buffered value when it is created
and stored with it: windows that close together close in (close time, sequence) order,
whether the operator ran without a pause or was rebuilt from its state in between.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..codec import Codec
from ..envelope import Envelope
from . import _values
from ._time import EPOCH, FOREVER, NEVER, ONE_US, duration_us, from_us, show, to_us
from .aggregates import Aggregator
from .outputs import AppendEvent, DeadLetterEvent, DeleteRow, Output, UpsertRow, WindowResult
from .state import StreamState
from .windows import (
    BoundedOutOfOrderness,
    Hopping,
    LatePolicy,
    Session,
    SideOutput,
    Tumbling,
)

Push = Callable[[Any, int, Any], None]
"""``push(key, time_us, value)``: hand one value to the next operator."""

META = "$meta"
"""The state key of an operator's own counters (sequence, late events)."""
_KEY_CACHE = 100_000
_TIME_CACHE = 10_000


def noop(key: Any, t: int, value: Any) -> None:
    """The push of a flow nothing hangs from."""


def fanout(pushes: list[Push]) -> Push:
    """One push that calls each of ``pushes`` in order."""
    if not pushes:
        return noop
    if len(pushes) == 1:
        return pushes[0]
    chain = tuple(pushes)

    def push(key: Any, t: int, value: Any) -> None:
        for p in chain:
            p(key, t, value)

    return push


Handler = Callable[[Envelope, Any], None]
"""``handle(envelope, message)``: what the engine calls for each input event of a type."""


def _ignore(env: Envelope, msg: Any) -> None:
    pass


def all_of(handlers: list[Handler]) -> Handler:
    """One handler calling each of ``handlers`` in order."""
    if not handlers:
        return _ignore
    if len(handlers) == 1:
        return handlers[0]
    chain = tuple(handlers)

    def handle(env: Envelope, msg: Any) -> None:
        for h in chain:
            h(env, msg)

    return handle


class Run:
    """What every operator of one engine shares: the input being processed, the outputs."""

    def __init__(self, stream: str, codec: Codec) -> None:
        self.stream = stream
        self.codec = codec
        self.outputs: list[Output] = []
        self.envelope: Envelope | None = None
        self.idle_position: int | None = None
        self._keys: dict[Any, str] = {}
        self._times: dict[int, datetime] = {}

    def time(self, us: int) -> datetime:
        """The datetime of a window bound, cached: many keys share the same bounds."""
        times = self._times
        when = times.get(us)
        if when is None:
            if len(times) >= _TIME_CACHE:
                times.clear()
            when = times[us] = from_us(us)
        return when

    @property
    def position(self) -> int | None:
        """The position of the input being processed; between inputs, the last one's."""
        env = self.envelope
        if env is None:
            return self.idle_position
        stored = env._stored
        return None if stored is None else stored[2]

    def key_text(self, key: Any) -> str:
        """The JSON text of a key, cached: the same keys come back all the time."""
        keys = self._keys
        text = keys.get(key)
        if text is None:
            if len(keys) >= _KEY_CACHE:
                keys.clear()
            text = keys[key] = _values.key_text(key, self.codec)
        return text


def time_reader(time: Any) -> Callable[[Envelope, Any], int]:
    """``read(envelope, message)``: the event time in microseconds, per the ``time=``
    declaration of a source."""
    if time is None:

        def from_envelope(env: Envelope, msg: Any) -> int:
            return env._ns // 1000

        return from_envelope
    if isinstance(time, str):
        field = time

        def from_field(env: Envelope, msg: Any) -> int:
            value = getattr(msg, field)
            try:
                return (value - EPOCH) // ONE_US  # type: ignore[no-any-return]
            except TypeError:
                return to_us(value)

        return from_field
    fn = time

    def from_function(env: Envelope, msg: Any) -> int:
        value = fn(msg)
        try:
            return (value - EPOCH) // ONE_US  # type: ignore[no-any-return]
        except TypeError:
            return to_us(value)

    return from_function


# -- sources ---------------------------------------------------------------------------------


class SourceOp:
    """A source: gives each event of its types a time and a key, and keeps the watermark.

    ``due`` is the least watermark at which one of its operators has something to close:
    the watermark moves on nearly every event, and comparing it with ``due`` is cheaper
    than asking each operator.
    """

    def __init__(
        self,
        name: str,
        types: tuple[type[Any], ...],
        time: Any,
        key: Callable[[Any], Any] | None,
        policy: Any,
    ) -> None:
        self.name = name
        self.types = types
        self.key = key
        self.read_time = time_reader(time)
        self.time_field: str | None = time if isinstance(time, str) else None
        self.punctuated = not isinstance(policy, BoundedOutOfOrderness)
        self.delay = duration_us(policy.delay, "out_of_orderness") if not self.punctuated else 0
        self.marker: type[Any] | None = None if not self.punctuated else policy.marker
        self.read_marker_time = time_reader(None if not self.punctuated else policy.time)
        self.enveloped = time is None or (self.punctuated and policy.time is None)
        """Whether it reads an event's time from its envelope (or a marker's)."""
        self.max_time = NEVER
        self.wm = NEVER
        self.due = FOREVER
        self.dirty = False
        self.push: Push = noop
        self.ops: list[StatefulOp] = []

    def handler(self) -> Callable[[Envelope, Any], None]:
        """The function the engine calls with each input event of this source's types."""
        read_time = self.read_time
        key_of = self.key
        source = self
        delay = self.delay
        push = self.push

        if self.punctuated:

            def handle_punctuated(env: Envelope, msg: Any) -> None:
                t = read_time(env, msg)
                push(None if key_of is None else key_of(msg), t, msg)
                if t > source.max_time:
                    source.max_time = t
                    source.dirty = True

            return handle_punctuated

        if key_of is None:

            def handle_unkeyed(env: Envelope, msg: Any) -> None:
                t = read_time(env, msg)
                push(None, t, msg)
                if t > source.max_time:
                    source.max_time = t
                    source.dirty = True
                    wm = t - delay
                    if wm > source.wm:
                        source.wm = wm
                        if wm >= source.due:
                            source.fire(wm)

            return handle_unkeyed

        field = self.time_field
        if field is not None:

            def handle_field(env: Envelope, msg: Any) -> None:
                value = getattr(msg, field)
                try:
                    t = (value - EPOCH) // ONE_US
                except TypeError:
                    t = to_us(value)
                push(key_of(msg), t, msg)
                if t > source.max_time:
                    source.max_time = t
                    source.dirty = True
                    wm = t - delay
                    if wm > source.wm:
                        source.wm = wm
                        if wm >= source.due:
                            source.fire(wm)

            return handle_field

        def handle(env: Envelope, msg: Any) -> None:
            t = read_time(env, msg)
            push(key_of(msg), t, msg)
            if t > source.max_time:
                source.max_time = t
                source.dirty = True
                wm = t - delay
                if wm > source.wm:
                    source.wm = wm
                    if wm >= source.due:
                        source.fire(wm)

        return handle

    def marker_handler(self) -> Callable[[Envelope, Any], None]:
        """The function the engine calls with each marker event of a punctuated source."""
        read_time = self.read_marker_time
        source = self

        def handle_marker(env: Envelope, msg: Any) -> None:
            wm = read_time(env, msg)
            if wm > source.wm:
                source.wm = wm
                source.dirty = True
                if wm >= source.due:
                    source.fire(wm)

        return handle_marker

    def fire(self, wm: int) -> None:
        """The watermark reached ``due``: let the operators that are due close things."""
        due = FOREVER
        for op in self.ops:
            if wm >= op.due:
                op.advance()
            if op.due < due:
                due = op.due
        self.due = due

    def finish(self) -> None:
        """The input is over: move the watermark past every time."""
        if self.wm < FOREVER:
            self.wm = FOREVER
            self.dirty = True
            for op in self.ops:
                op.advance()
            self.due = FOREVER

    def flush(self, state: StreamState) -> None:
        """Write the watermark if it changed."""
        if self.dirty:
            state.put(self.name, "watermark", {"max": self.max_time, "wm": self.wm})
            self.dirty = False

    def load(self, state: StreamState) -> None:
        """Read the watermark back."""
        value = state.get(self.name, "watermark")
        if value is not None:
            self.max_time = value["max"]
            self.wm = value["wm"]


# -- stateful operators ------------------------------------------------------------------------


class StatefulOp:
    """What windows and joins share: a name, input watermarks, late events, flushing.

    ``due`` is the least input watermark at which the operator has something to close
    (FOREVER when nothing): it lowers the ``due`` of its sources whenever it goes down.
    """

    kind = "operator"

    def __init__(self, run: Run, name: str, lateness: int, late: LatePolicy) -> None:
        self.run = run
        self.name = name
        self.lateness = lateness
        self.late = late
        self.sources: list[SourceOp] = []
        self.wm = NEVER
        self.due = FOREVER
        self.seq = 0
        self.late_count = 0
        self.meta_dirty = False
        self.downstream: Push = noop

    def wm_reader(self, sources: list[SourceOp]) -> Callable[[], int]:
        """A function giving the current watermark of some inputs: the least of theirs."""
        if len(sources) == 1:
            source = sources[0]
            return lambda: source.wm
        if not sources:  # pragma: no cover - every operator has a source
            return lambda: NEVER
        return lambda: min(s.wm for s in sources)

    def lower_due(self, due: int) -> None:
        """Something will have to close when the watermark reaches ``due``."""
        if due < self.due:
            self.due = due
            for source in self.sources:
                if due < source.due:
                    source.due = due

    def advance(self) -> None:
        """An input's watermark moved: close what it allows."""

    def on_late(self, key: Any, t: int, value: Any, wm: int) -> None:
        """Apply the late policy to a value ``t`` more than the lateness behind ``wm``."""
        policy = self.late
        if policy == "drop":
            return
        self.late_count += 1
        self.meta_dirty = True
        if policy == "count":
            return
        run = self.run
        if isinstance(policy, SideOutput):
            message = policy.to(value)
            if message is not None:
                sid = policy.stream_id
                if sid is not None and not isinstance(sid, str):
                    sid = sid(value)
                run.outputs.append(AppendEvent(message, sid, run.position))
            return
        envelope = run.envelope
        if envelope is None:  # pragma: no cover - every value comes from an input
            return
        reason = (
            f"late: event time {show(t)} is more than the allowed lateness "
            f"({self.lateness} µs) behind the watermark {show(wm)}"
        )
        run.outputs.append(DeadLetterEvent(envelope, run.stream, self.name, reason))

    def flush_meta(self, state: StreamState) -> None:
        """Write the counters if they changed."""
        if self.meta_dirty:
            state.put(self.name, META, {"seq": self.seq, "late": self.late_count})
            self.meta_dirty = False

    def load_meta(self, value: Any) -> None:
        """Read the counters back."""
        self.seq = value["seq"]
        self.late_count = value["late"]

    def flush(self, state: StreamState) -> None:
        """Write the changed entries."""
        raise NotImplementedError

    def load(self, state: StreamState) -> None:
        """Rebuild from the state."""
        raise NotImplementedError

    def held(self) -> int:
        """How many windows or buffered values it holds."""
        raise NotImplementedError


def _result_of(aggregator: Aggregator) -> Callable[[Any], Any]:
    result = aggregator.result
    return result if result is not None else (lambda acc: acc)


class WindowOp(StatefulOp):
    """Tumbling and hopping windows: per key, the open windows by start, each with its
    accumulator and sequence number, until the watermark closes them."""

    kind = "window"

    def __init__(
        self,
        run: Run,
        name: str,
        window: Tumbling | Hopping,
        lateness: int,
        late: LatePolicy,
        aggregator: Aggregator,
        update: bool,
    ) -> None:
        super().__init__(run, name, lateness, late)
        self.size = duration_us(window.size, "size")
        self.step = self.size if isinstance(window, Tumbling) else duration_us(window.step, "step")
        self.offset = duration_us(window.offset, "offset")
        self.aggregator = aggregator
        self.result = _result_of(aggregator)
        self.update = update
        # key -> {start: [accumulator, sequence]}
        self.windows: dict[Any, dict[int, list[Any]]] = {}
        # (close time, sequence, key, start)
        self.heap: list[tuple[int, int, Any, int]] = []
        self.dirty: set[Any] = set()

    def make_push(self) -> Push:
        """The push of this operator, with its hot path on local names."""
        op = self
        windows = self.windows
        heap = self.heap
        dirty_add = self.dirty.add
        heappush = heapq.heappush
        size, step, offset, lateness = self.size, self.step, self.offset, self.lateness
        add = self.aggregator.add
        initial = self.aggregator.initial
        update = self.update
        sources = self.sources
        single = sources[0] if len(sources) == 1 else None
        watermark = self.wm_reader(sources)

        def open_window(key: Any, start: int, value: Any) -> list[Any]:
            op.seq = seq = op.seq + 1
            op.meta_dirty = True
            close = start + size + lateness
            heappush(heap, (close, seq, key, start))
            if close < op.due:
                op.lower_due(close)
            return [add(initial, value), seq]

        if step == size:

            def push_tumbling(key: Any, t: int, value: Any) -> None:
                wm = single.wm if single is not None else watermark()
                if t < wm - lateness:
                    op.on_late(key, t, value, wm)
                    return
                start = t - (t - offset) % size
                by_start = windows.get(key)
                found = None if by_start is None else by_start.get(start)
                if found is not None:
                    found[0] = add(found[0], value)
                    w = found
                elif by_start is None:
                    w = open_window(key, start, value)
                    windows[key] = {start: w}
                else:
                    w = by_start[start] = open_window(key, start, value)
                dirty_add(key)
                if update:
                    op.emit(key, start, w[0], False)

            return push_tumbling

        def push_hopping(key: Any, t: int, value: Any) -> None:
            wm = single.wm if single is not None else watermark()
            if t < wm - lateness:
                op.on_late(key, t, value, wm)
                return
            by_start = windows.get(key)
            if by_start is None:
                by_start = windows[key] = {}
            last = t - (t - offset) % step
            start = last - ((size - 1) // step) * step
            while start <= last:
                if start + size > t:
                    w = by_start.get(start)
                    if w is None:
                        w = by_start[start] = open_window(key, start, value)
                    else:
                        w[0] = add(w[0], value)
                    if update:
                        op.emit(key, start, w[0], False)
                start += step
            dirty_add(key)

        return push_hopping

    def emit(self, key: Any, start: int, acc: Any, final: bool) -> None:
        """Hand a window's result downstream."""
        end = start + self.size
        time = self.run.time
        result = WindowResult(key, time(start), time(end), self.result(acc), final)
        self.downstream(key, end - 1, result)

    def advance(self) -> None:
        """Close every window the watermark has passed by the lateness."""
        wm = self.wm_reader(self.sources)()
        if wm > self.wm:
            self.wm = wm
            heap = self.heap
            windows = self.windows
            dirty = self.dirty
            update = self.update
            while heap and heap[0][0] <= wm:
                _, _, key, start = heapq.heappop(heap)
                by_start = windows[key]
                w = by_start.pop(start)
                if not by_start:
                    del windows[key]
                dirty.add(key)
                if not update:
                    self.emit(key, start, w[0], True)
        self.due = self.heap[0][0] if self.heap else FOREVER

    def flush(self, state: StreamState) -> None:
        """Write the windows of every changed key (a key without any is deleted)."""
        name = self.name
        windows = self.windows
        key_text = self.run.key_text
        codec = self.run.codec
        encode = _values.encode
        put = state.put
        for key in self.dirty:
            by_start = windows.get(key)
            if by_start is None:
                state.delete(name, key_text(key))
            else:
                put(
                    name,
                    key_text(key),
                    [
                        [start, w[0] if type(w[0]) is int else encode(w[0], codec), w[1]]
                        for start, w in by_start.items()
                    ],
                )
        self.dirty.clear()
        self.flush_meta(state)

    def load(self, state: StreamState) -> None:
        """Rebuild the open windows from the state."""
        codec = self.run.codec
        reach = self.size + self.lateness
        for skey, value in state.scan(self.name):
            if skey == META:
                self.load_meta(value)
                continue
            key = _values.key_from_text(skey, codec)
            by_start = self.windows[key] = {}
            for start, acc, seq in value:
                by_start[start] = [_values.decode(acc, codec), seq]
                self.heap.append((start + reach, seq, key, start))
        heapq.heapify(self.heap)
        self.due = self.heap[0][0] if self.heap else FOREVER

    def held(self) -> int:
        """How many windows are open."""
        return sum(map(len, self.windows.values()))


class SessionOp(StatefulOp):
    """Session windows: per key, sorted disjoint sessions ``[start, last]`` that end ``gap``
    after their last event; an event within ``gap`` of a session joins it, one within
    ``gap`` of two merges them."""

    kind = "session"

    def __init__(
        self,
        run: Run,
        name: str,
        window: Session,
        lateness: int,
        late: LatePolicy,
        aggregator: Aggregator,
        update: bool,
    ) -> None:
        super().__init__(run, name, lateness, late)
        self.gap = duration_us(window.gap, "gap")
        self.aggregator = aggregator
        self.merge: Callable[[Any, Any], Any] = aggregator.merge  # type: ignore[assignment]
        self.result = _result_of(aggregator)
        self.update = update
        # key -> sessions sorted by start: [start, last, accumulator, sequence]
        self.sessions: dict[Any, list[list[Any]]] = {}
        # (close time, sequence, key); a session that grew is pushed again when popped
        self.heap: list[tuple[int, int, Any]] = []
        self.dirty: set[Any] = set()

    def make_push(self) -> Push:
        """The push of this operator."""
        op = self
        sessions = self.sessions
        heap = self.heap
        dirty_add = self.dirty.add
        gap, lateness = self.gap, self.lateness
        add = self.aggregator.add
        initial = self.aggregator.initial
        merge = self.merge
        update = self.update
        watermark = self.wm_reader(self.sources)
        single = self.sources[0] if len(self.sources) == 1 else None

        def open_session(key: Any, t: int, value: Any) -> list[Any]:
            op.seq = seq = op.seq + 1
            op.meta_dirty = True
            close = t + gap + lateness
            heapq.heappush(heap, (close, seq, key))
            if close < op.due:
                op.lower_due(close)
            return [t, t, add(initial, value), seq]

        def push(key: Any, t: int, value: Any) -> None:
            wm = single.wm if single is not None else watermark()
            if t < wm - lateness:
                op.on_late(key, t, value, wm)
                return
            dirty_add(key)
            found = sessions.get(key)
            if found is None:
                s = open_session(key, t, value)
                sessions[key] = [s]
            else:
                s = None  # the first session the event is within gap of
                merged = False
                for other in found:
                    if other[0] - gap < t < other[1] + gap:
                        if s is None:
                            s = other
                            if update and t < s[0]:
                                op.emit(key, s, retracted=True)
                        else:  # the event bridges s and other: other joins s
                            if update:
                                op.emit(key, other, retracted=True)
                            s[1] = other[1]
                            s[2] = merge(s[2], other[2])
                            other[3] = None
                            merged = True
                if s is None:
                    s = open_session(key, t, value)
                    insort(found, s, key=_start)
                else:
                    if merged:
                        found[:] = [x for x in found if x[3] is not None]
                    if t < s[0]:
                        s[0] = t
                    elif t > s[1]:
                        s[1] = t
                    s[2] = add(s[2], value)
            if update:
                op.emit(key, s, final=False)  # type: ignore[arg-type]

        return push

    def emit(self, key: Any, s: list[Any], final: bool = False, retracted: bool = False) -> None:
        """Hand a session's result downstream."""
        end = s[1] + self.gap
        time = self.run.time
        result = WindowResult(key, time(s[0]), time(end), self.result(s[2]), final, retracted)
        self.downstream(key, end - 1, result)

    def advance(self) -> None:
        """Close every session the watermark has passed by the lateness."""
        wm = self.wm_reader(self.sources)()
        if wm <= self.wm:
            self.due = self.heap[0][0] if self.heap else FOREVER
            return
        self.wm = wm
        heap = self.heap
        sessions = self.sessions
        reach = self.gap + self.lateness
        while heap and heap[0][0] <= wm:
            close, seq, key = heapq.heappop(heap)
            found = sessions.get(key)
            if found is None:
                continue
            for s in found:
                if s[3] == seq:
                    break
            else:
                continue  # merged into another session
            now = s[1] + reach
            if now > close:
                heapq.heappush(heap, (now, seq, key))
                continue
            found.remove(s)
            if not found:
                del sessions[key]
            self.dirty.add(key)
            if not self.update:
                self.emit(key, s, final=True)
        self.due = heap[0][0] if heap else FOREVER

    def flush(self, state: StreamState) -> None:
        """Write the sessions of every changed key."""
        name = self.name
        key_text = self.run.key_text
        codec = self.run.codec
        encode = _values.encode
        for key in self.dirty:
            found = self.sessions.get(key)
            if found is None:
                state.delete(name, key_text(key))
            else:
                state.put(
                    name, key_text(key), [[s[0], s[1], encode(s[2], codec), s[3]] for s in found]
                )
        self.dirty.clear()
        self.flush_meta(state)

    def load(self, state: StreamState) -> None:
        """Rebuild the open sessions from the state."""
        codec = self.run.codec
        reach = self.gap + self.lateness
        for skey, value in state.scan(self.name):
            if skey == META:
                self.load_meta(value)
                continue
            key = _values.key_from_text(skey, codec)
            found = [[s[0], s[1], _values.decode(s[2], codec), s[3]] for s in value]
            self.sessions[key] = found
            self.heap.extend((s[1] + reach, s[3], key) for s in found)
        heapq.heapify(self.heap)
        self.due = self.heap[0][0] if self.heap else FOREVER

    def held(self) -> int:
        """How many sessions are open."""
        return sum(len(found) for found in self.sessions.values())


def _start(session: list[Any]) -> Any:
    return session[0]


def _pair(left: Any, right: Any) -> Any:
    return (left, right)


class JoinOp(StatefulOp):
    """An interval join of two keyed flows (see :meth:`Flow.join`).

    Each side buffers its values per key, in arrival order, as ``[time, sequence, value,
    matched]``; a value is dropped once the other side's watermark shows that no match can
    come any more (and, for left and outer joins, emitted unmatched if it never found one).
    """

    kind = "join"

    def __init__(
        self,
        run: Run,
        name: str,
        before: int,
        after: int,
        how: str,
        joiner: Callable[[Any, Any], Any] | None,
        lateness: int,
        late: LatePolicy,
    ) -> None:
        super().__init__(run, name, lateness, late)
        self.before = before
        self.after = after
        self.joiner = joiner if joiner is not None else _pair
        self.emit_left = how in ("left", "outer")
        self.emit_right = how == "outer"
        self.left_sources: list[SourceOp] = []
        self.right_sources: list[SourceOp] = []
        # the watermarks expiries were last checked at
        self.left_wm = NEVER
        self.right_wm = NEVER
        self.left_watermark: Callable[[], int] = lambda: NEVER
        self.right_watermark: Callable[[], int] = lambda: NEVER
        self.left: dict[Any, list[list[Any]]] = {}
        self.right: dict[Any, list[list[Any]]] = {}
        # (expiry, sequence, key): a left value expires when the right watermark reaches it
        self.left_heap: list[tuple[int, int, Any]] = []
        self.right_heap: list[tuple[int, int, Any]] = []
        self.dirty: set[tuple[str, Any]] = set()

    def prepare(self) -> None:
        """Read the sides' watermarks from the sources wired to them."""
        self.left_watermark = self.wm_reader(self.left_sources)
        self.right_watermark = self.wm_reader(self.right_sources)

    def push_left(self, key: Any, t: int, value: Any) -> None:
        """A value of the left flow."""
        self._arrive(key, t, value, True)

    def push_right(self, key: Any, t: int, value: Any) -> None:
        """A value of the right flow."""
        self._arrive(key, t, value, False)

    def _arrive(self, key: Any, t: int, value: Any, is_left: bool) -> None:
        if is_left:
            wm, other_wm = self.left_watermark(), self.right_watermark()
            own, own_heap, other = self.left, self.left_heap, self.right
            back, reach = self.before, self.after
            side, other_side = "L", "R"
            unmatched, other_unmatched = self.emit_left, self.emit_right
        else:
            wm, other_wm = self.right_watermark(), self.left_watermark()
            own, own_heap, other = self.right, self.right_heap, self.left
            back, reach = self.after, self.before
            side, other_side = "R", "L"
            unmatched, other_unmatched = self.emit_right, self.emit_left
        lateness = self.lateness
        if t < wm - lateness:
            self.on_late(key, t, value, wm)
            return
        # the other side's values at times in [lo, hi] match this one
        lo, hi = t - back, t + reach
        joiner = self.joiner
        matched = False
        for entry in other.get(key, ()):
            t2 = entry[0]
            if lo <= t2 <= hi:
                matched = True
                if other_unmatched and not entry[3]:
                    entry[3] = True
                    self.dirty.add((other_side, key))
                pair = joiner(value, entry[2]) if is_left else joiner(entry[2], value)
                self.downstream(key, t if t > t2 else t2, pair)
        # a match can come while the other side may still send values at times <= hi
        expiry = hi + lateness + 1
        if expiry <= other_wm:
            if unmatched and not matched:
                self.downstream(key, t, joiner(value, None) if is_left else joiner(None, value))
            return
        self.seq = seq = self.seq + 1
        self.meta_dirty = True
        own.setdefault(key, []).append([t, seq, value, matched])
        heapq.heappush(own_heap, (expiry, seq, key))
        self.dirty.add((side, key))
        if expiry < self.due:
            self.lower_due(expiry)

    def advance(self) -> None:
        """Drop the buffered values no match can come for any more."""
        left_wm = self.left_watermark()
        right_wm = self.right_watermark()
        self.wm = min(left_wm, right_wm)
        if left_wm > self.left_wm:
            self.left_wm = left_wm
            self._expire(self.right_heap, self.right, "R", left_wm, self.emit_right)
        if right_wm > self.right_wm:
            self.right_wm = right_wm
            self._expire(self.left_heap, self.left, "L", right_wm, self.emit_left)
        tops = [h[0][0] for h in (self.left_heap, self.right_heap) if h]
        self.due = min(tops) if tops else FOREVER

    def _expire(
        self,
        heap: list[tuple[int, int, Any]],
        buffers: dict[Any, list[list[Any]]],
        side: str,
        wm: int,
        emit_unmatched: bool,
    ) -> None:
        while heap and heap[0][0] <= wm:
            _, seq, key = heapq.heappop(heap)
            found = buffers[key]
            for i, entry in enumerate(found):  # noqa: B007 - i is used after the loop
                if entry[1] == seq:
                    break
            del found[i]
            if not found:
                del buffers[key]
            self.dirty.add((side, key))
            if emit_unmatched and not entry[3]:
                pair = (entry[2], None) if side == "L" else (None, entry[2])
                value = self.joiner(*pair)
                self.downstream(key, entry[0], value)

    def flush(self, state: StreamState) -> None:
        """Write the buffers of every changed key and side."""
        name = self.name
        key_text = self.run.key_text
        codec = self.run.codec
        encode = _values.encode
        for side, key in self.dirty:
            found = (self.left if side == "L" else self.right).get(key)
            skey = side + key_text(key)
            if found is None:
                state.delete(name, skey)
            else:
                state.put(name, skey, [[e[0], e[1], encode(e[2], codec), e[3]] for e in found])
        self.dirty.clear()
        self.flush_meta(state)

    def load(self, state: StreamState) -> None:
        """Rebuild the buffers from the state."""
        codec = self.run.codec
        for skey, value in state.scan(self.name):
            if skey == META:
                self.load_meta(value)
                continue
            side, key = skey[0], _values.key_from_text(skey[1:], codec)
            found = [[e[0], e[1], _values.decode(e[2], codec), e[3]] for e in value]
            if side == "L":
                self.left[key] = found
                self.left_heap.extend(
                    (e[0] + self.after + self.lateness + 1, e[1], key) for e in found
                )
            else:
                self.right[key] = found
                self.right_heap.extend(
                    (e[0] + self.before + self.lateness + 1, e[1], key) for e in found
                )
        heapq.heapify(self.left_heap)
        heapq.heapify(self.right_heap)
        tops = [h[0][0] for h in (self.left_heap, self.right_heap) if h]
        self.due = min(tops) if tops else FOREVER

    def held(self) -> int:
        """How many values are buffered."""
        return sum(map(len, self.left.values())) + sum(map(len, self.right.values()))


# -- stateless steps and sinks ---------------------------------------------------------------


def table_join(
    lookup: Callable[[Any], Any],
    key_of: Callable[[Any], Any] | None,
    joiner: Callable[[Any, Any], Any] | None,
    inner: bool,
    nxt: Push,
) -> Push:
    """The push of a stream-table join."""
    join = joiner if joiner is not None else _pair

    def push(key: Any, t: int, value: Any) -> None:
        row = lookup(key if key_of is None else key_of(value))
        if row is None and inner:
            return
        nxt(key, t, join(value, row))

    return push


def events_sink(
    run: Run, fn: Callable[[Any], Any] | None, stream_id: str | Callable[[Any], str] | None
) -> Push:
    """The push of :meth:`Flow.to_events`."""
    find = run.codec.registry.find

    def push(key: Any, t: int, value: Any) -> None:
        message = value if fn is None else fn(value)
        if message is None:
            return
        if find(type(message)) is None:
            raise TypeError(
                f"stream {run.stream!r}: to_events got a {type(message).__name__}, which is "
                f"not an event of the engine's registry (give to_events a function that "
                f"makes one, and the engine the app's codec)"
            )
        sid = stream_id if stream_id is None or isinstance(stream_id, str) else stream_id(value)
        run.outputs.append(AppendEvent(message, sid, run.position))

    return push


def table_sink(
    run: Run, table: str, row_of: Callable[[Any], Any] | None, pk: tuple[str, ...]
) -> Push:
    """The push of :meth:`Flow.to_table`."""

    def push(key: Any, t: int, value: Any) -> None:
        if row_of is not None:
            row = row_of(value)
        elif isinstance(value, WindowResult):
            row = {"key": key, "start": value.start, "end": value.end, "value": value.value}
        else:
            row = {"key": key, "value": value}
        if type(row) is not dict:
            raise TypeError(
                f"stream {run.stream!r}: to_table({table!r}) needs dict rows, got {row!r}"
            )
        for column in pk:
            if column not in row:
                raise ValueError(
                    f"stream {run.stream!r}: a row for {table!r} lacks its primary-key "
                    f"column {column!r}: {row!r}"
                )
        if type(value) is WindowResult and value.retracted:
            run.outputs.append(DeleteRow(table, {c: row[c] for c in pk}, run.position))
        else:
            run.outputs.append(UpsertRow(table, row, pk, run.position))

    return push
