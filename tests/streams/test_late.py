"""Late events: which events are late, and each late policy.

Here events arrive in any order, so some are more than the out-of-orderness plus the
allowed lateness behind the greatest time seen: the batch model replays the watermark rule
to find them, and the stream must give exactly the batch results over the others, and
apply its policy to exactly these.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlite.streams import (
    AppendEvent,
    DeadLetterEvent,
    LatePolicy,
    MemoryState,
    SideOutput,
    Stream,
    StreamEngine,
    Tumbling,
    UpsertRow,
)

from . import model
from .conftest import Late, Other, Reading, arrivals, at, codec, cuts, envelopes, run_all, us
from .test_joins import build as build_join
from .test_joins import pairs
from .test_windows import KINDS, expected

DISORDER = 60


def build(kind: str, ooo: int, lateness: int, late: LatePolicy) -> Stream:
    """Sums per key in windows of ``kind``, into table ``w``, with late policy ``late``."""
    stream = Stream("late")
    (
        stream.source(Reading, time=at, out_of_orderness=us(ooo))
        .key_by(lambda r: r.key)
        .window(KINDS[kind], allowed_lateness=us(lateness), late=late)
        .sum(lambda r: r.value)
        .to_table("w")
    )
    return stream


def split(outputs: list[Any]) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """The window rows, and everything else."""
    rows = [o for o in outputs if isinstance(o, UpsertRow)]
    others = [o for o in outputs if not isinstance(o, UpsertRow)]
    from .conftest import windows

    return windows(rows), others


def check_late(
    kind: str, events: list[Reading], ooo: int, lateness: int, points: list[int]
) -> None:
    stream = build(kind, ooo, lateness, SideOutput(lambda r: Late(r.id), stream_id="late"))
    engine = StreamEngine(stream, MemoryState(), codec=codec)
    outputs: list[Any] = []
    from .conftest import batches

    for batch in batches(envelopes(events), points):
        outputs += engine.process(batch).outputs
    outputs += engine.finish().outputs
    ok, late = model.accepted(events, ooo, lateness)
    rows, others = split(outputs)
    assert expected(kind, "sum", ok) == rows
    position = {e.id: i for i, e in enumerate(events, start=1)}
    assert [AppendEvent(Late(e.id), "late", position[e.id]) for e in late] == others
    assert len(late) == engine.status().late["aggregate1"]


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=80, deadline=None)
@given(
    events=arrivals(jitter=DISORDER),
    ooo=st.integers(0, 12),
    lateness=st.integers(0, 12),
    data=st.data(),
)
def test_late_events_are_exactly_those_behind_the_watermark(
    kind: str, events: list[Reading], ooo: int, lateness: int, data: st.DataObject
) -> None:
    """An event more than the out-of-orderness plus the allowed lateness behind the
    greatest time seen before it is late: it goes to the side output (once, with its own
    position) and is counted; every other event is in its windows, which equal the batch
    results over the accepted events."""
    check_late(kind, events, ooo, lateness, data.draw(cuts(len(events))))


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=600, deadline=None)
@given(
    events=arrivals(jitter=DISORDER, max_size=150),
    ooo=st.integers(0, 12),
    lateness=st.integers(0, 12),
    data=st.data(),
)
def test_late_events_are_exactly_those_behind_the_watermark_long(
    kind: str, events: list[Reading], ooo: int, lateness: int, data: st.DataObject
) -> None:
    """The same as above, over more and longer event sets."""
    check_late(kind, events, ooo, lateness, data.draw(cuts(len(events))))


@pytest.mark.parametrize("how", ["inner", "left", "outer"])
@settings(max_examples=80, deadline=None)
@given(
    events=arrivals(jitter=DISORDER, kinds=(Reading, Other)),
    before=st.integers(0, 20),
    after=st.integers(0, 20),
    ooo=st.integers(0, 10),
    lateness=st.integers(0, 10),
)
def test_a_join_pairs_exactly_the_accepted_events(
    how: str, events: list[Any], before: int, after: int, ooo: int, lateness: int
) -> None:
    """Each side of a join judges lateness by its own watermark; the pairs are those of
    the batch model over each side's accepted events."""
    outputs = run_all(build_join(how, before, after, ooo, lateness), events)
    left, _ = model.accepted([e for e in events if isinstance(e, Reading)], ooo, lateness)
    right, _ = model.accepted([e for e in events if isinstance(e, Other)], ooo, lateness)  # type: ignore[misc]
    assert model.join(left, right, before, after, how) == pairs(outputs)


def _single(late: LatePolicy) -> tuple[list[Any], StreamEngine]:
    stream = Stream("one-late")
    (stream.source(Reading, time="t").window(Tumbling(10), late=late).count().to_table("w"))
    engine = StreamEngine(stream, codec=codec)
    outputs = engine.process(envelopes([Reading(1, "k", 30, 0), Reading(2, "k", 5, 0)])).outputs
    return outputs, engine


def test_drop_discards_without_counting() -> None:
    """late="drop": the late event leaves no trace, not even a count."""
    outputs, engine = _single("drop")
    assert ([], 0) == (outputs, engine.status().late["aggregate1"])


def test_count_discards_and_counts() -> None:
    """late="count" (the default): the late event is counted in the operator's state."""
    outputs, engine = _single("count")
    assert ([], 1) == (outputs, engine.status().late["aggregate1"])
    assert {"seq": 1, "late": 1} == engine.state.get("aggregate1", "$meta")


def test_dead_letter_returns_the_input_envelope() -> None:
    """late="dead_letter": the late event's input envelope comes back as a DeadLetterEvent
    naming the stream, the operator and why."""
    outputs, engine = _single("dead_letter")
    [dead] = outputs
    assert isinstance(dead, DeadLetterEvent)
    assert (Reading(2, "k", 5, 0), 2, "one-late", "aggregate1") == (
        dead.envelope.message,
        dead.position,
        dead.stream,
        dead.operator,
    )
    assert "late: event time 1970-01-01T00:00:05+00:00" in dead.reason
    assert 1 == engine.status().late["aggregate1"]


def test_side_output_appends_an_event() -> None:
    """A SideOutput appends the event it makes from the late value, to its stream id."""
    outputs, _ = _single(SideOutput(lambda r: Late(r.id), stream_id=lambda r: f"late-{r.key}"))
    assert [AppendEvent(Late(2), "late-k", 2)] == outputs


def test_a_bad_late_policy_is_refused() -> None:
    """A late policy that is none of the four raises ValueError when declared."""
    with pytest.raises(ValueError, match="late must be"):
        Stream("bad").source(Reading).window(Tumbling(1), late="ignore")  # type: ignore[arg-type]
