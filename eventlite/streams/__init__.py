"""Stream processing over the event log: event-time windows, joins, exactly-once state.

Declare a pipeline with :class:`Stream`, run it with a :class:`StreamEngine`::

    stream = Stream("views-per-minute")
    (stream.source(PageViewed, time="at", out_of_orderness=timedelta(seconds=2))
        .key_by(lambda view: view.page)
        .window(Tumbling(timedelta(minutes=1)))
        .count()
        .to_table("views_per_minute"))

    engine = StreamEngine(stream, MemoryState())
    outputs, changes = engine.process(envelopes)

The engine is pure: it reads envelopes, returns outputs (events to append, rows to
upsert, dead letters) and writes its state (windows, join buffers, watermarks, late
counts, the position) through the small :class:`StreamState` interface, so a runner can
commit the outputs, the state and the checkpoint in one transaction. See docs/streams.md.
"""

from .aggregates import Aggregator, count, max_of, mean_of, min_of, sum_of
from .engine import Processed, StreamEngine, StreamError, StreamStatus
from .outputs import (
    AppendEvent,
    DeadLetterEvent,
    DeleteRow,
    Output,
    UpsertRow,
    WindowResult,
)
from .pipeline import Emit, Flow, JoinHow, Stream, WindowedFlow
from .runner import (
    DEAD_LETTER_PREFIX,
    LateEvent,
    Progress,
    StreamRunner,
    StreamRunStatus,
    dead_letter_source,
    stream_status,
)
from .state import MemoryState, StateKey, StreamState
from .tables import MemoryTable, Table
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

__all__ = [
    "DEAD_LETTER_PREFIX",
    "Aggregator",
    "AppendEvent",
    "BoundedOutOfOrderness",
    "DeadLetterEvent",
    "DeleteRow",
    "Emit",
    "Flow",
    "Hopping",
    "JoinHow",
    "LateEvent",
    "LatePolicy",
    "MemoryState",
    "MemoryTable",
    "Output",
    "Processed",
    "Progress",
    "Punctuated",
    "Session",
    "SideOutput",
    "StateKey",
    "Stream",
    "StreamEngine",
    "StreamError",
    "StreamRunStatus",
    "StreamRunner",
    "StreamState",
    "StreamStatus",
    "Table",
    "Tumbling",
    "UpsertRow",
    "WatermarkPolicy",
    "Window",
    "WindowResult",
    "WindowedFlow",
    "count",
    "dead_letter_source",
    "max_of",
    "mean_of",
    "min_of",
    "stream_status",
    "sum_of",
]
