"""Stream-stream joins against the batch model, and stream-table joins."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlite.streams import MemoryState, MemoryTable, Stream, StreamEngine, Tumbling, UpsertRow

from . import model
from .conftest import Other, Reading, arrivals, at, codec, cuts, envelopes, run_all, us

JITTER = 10


def build(how: str, before: int, after: int, ooo: int, lateness: int) -> Stream:
    """Readings (left) joined to Others (right) by key; each pair becomes a row of ids."""
    stream = Stream("joins")
    left = stream.source(Reading, time=at, out_of_orderness=us(ooo)).key_by(lambda r: r.key)
    right = stream.source(Other, time=at, out_of_orderness=us(ooo)).key_by(lambda r: r.key)
    (
        left.join(
            right,
            before=us(before),
            after=us(after),
            how=how,  # type: ignore[arg-type]
            allowed_lateness=us(lateness),
        )
        .map(lambda pair: (pair[0] and pair[0].id, pair[1] and pair[1].id))
        .to_table("pairs", row=lambda ids: {"key": ids, "left": ids[0], "right": ids[1]})
    )
    return stream


def pairs(outputs: list[Any]) -> list[tuple[Any, ...]]:
    rows = [(o.row["left"], o.row["right"]) for o in outputs]
    return sorted(rows, key=lambda p: (p[0] or -1, p[1] or -1))


def check_join(
    how: str, events: list[Any], before: int, after: int, split: int, points: list[int]
) -> None:
    outputs = run_all(build(how, before, after, split, JITTER - split), events, points)
    left = [e for e in events if isinstance(e, Reading)]
    right = [e for e in events if isinstance(e, Other)]
    assert model.join(left, right, before, after, how) == pairs(outputs)  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["inner", "left", "outer"])
@settings(max_examples=60, deadline=None)
@given(
    events=arrivals(jitter=JITTER, kinds=(Reading, Other)),
    before=st.integers(0, 40),
    after=st.integers(0, 40),
    split=st.integers(0, JITTER),
    data=st.data(),
)
def test_joined_pairs_equal_the_batch_model(
    how: str, events: list[Any], before: int, after: int, split: int, data: st.DataObject
) -> None:
    """Each pair of a left and a right event of one key with ``tl - before <= tr <= tl +
    after`` is emitted exactly once, and nothing else; a left (outer) join also emits
    each unmatched left (and right) event once, paired with None. Events arrive out of
    order within the watermark delay plus the lateness, in batches cut anywhere."""
    check_join(how, events, before, after, split, data.draw(cuts(len(events))))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["inner", "left", "outer"])
@settings(max_examples=500, deadline=None)
@given(
    events=arrivals(jitter=JITTER, kinds=(Reading, Other), max_size=150),
    before=st.integers(0, 60),
    after=st.integers(0, 60),
    split=st.integers(0, JITTER),
    data=st.data(),
)
def test_joined_pairs_equal_the_batch_model_long(
    how: str, events: list[Any], before: int, after: int, split: int, data: st.DataObject
) -> None:
    """The same as above, over more and longer event sets."""
    check_join(how, events, before, after, split, data.draw(cuts(len(events))))


def test_join_buffers_are_bounded_by_the_window() -> None:
    """A join keeps a value only while a match can still come: with steady input on both
    sides, the buffers hold what the window spans, not the whole history."""
    stream = build("inner", 5, 5, 0, 0)
    engine = StreamEngine(stream, MemoryState(), codec=codec)
    events = []
    for i in range(1, 2001):
        cls = Reading if i % 2 else Other
        events.append(cls(i, "k", i, 0))
    engine.process(envelopes(events))
    assert engine.status().open["join1"] <= 12


def test_a_join_after_a_window_of_its_results() -> None:
    """Joined values flow on like any others: here counted per minute."""
    stream = Stream("joined-counts")
    left = stream.source(Reading, time="t").key_by(lambda r: r.key)
    right = stream.source(Other, time="t").key_by(lambda r: r.key)
    left.join(right, within=5).window(Tumbling(60)).count().to_table("w")
    events = [
        Reading(1, "a", 10, 0),
        Other(2, "a", 12, 0),
        Other(3, "a", 14, 0),
        Reading(4, "a", 70, 0),
    ]
    outputs = run_all(stream, events)
    assert [("a", 2)] == [(o.row["key"], o.row["value"]) for o in outputs]  # type: ignore[union-attr]


def test_stream_table_join_looks_up_the_table_as_of_processing() -> None:
    """join_table looks each value up by its key (or key=) in the table the engine was
    given; an inner join drops values without a row, a left join passes them with None."""
    names = MemoryTable({"a": "Ada"})

    def make(how: str) -> Stream:
        stream = Stream("lookups")
        (
            stream.source(Reading, time="t")
            .key_by(lambda r: r.key)
            .join_table("names", how=how, joiner=lambda r, name: (r.id, name))  # type: ignore[arg-type]
            .to_table("out", row=lambda v: {"key": v[0], "name": v[1]})
        )
        return stream

    events = envelopes([Reading(1, "a", 1, 0), Reading(2, "b", 2, 0)])
    inner = StreamEngine(make("inner"), codec=codec, tables={"names": names})
    assert [{"key": 1, "name": "Ada"}] == [o.row for o in inner.process(events).outputs]  # type: ignore[union-attr]
    left = StreamEngine(make("left"), codec=codec, tables={"names": names})
    assert [{"key": 1, "name": "Ada"}, {"key": 2, "name": None}] == [
        o.row  # type: ignore[union-attr]
        for o in left.process(events).outputs
    ]
    names.put("b", "Bob")
    again = StreamEngine(make("inner"), codec=codec, tables={"names": names})
    assert [UpsertRow("out", {"key": 2, "name": "Bob"}, ("key",), 2)] == again.process(
        events[1:]
    ).outputs


def test_an_engine_needs_the_tables_its_stream_joins() -> None:
    """Building an engine without a table the stream joins raises ValueError naming it."""
    stream = Stream("missing")
    stream.source(Reading).join_table("names").to_table("out")
    with pytest.raises(ValueError, match="'names'"):
        StreamEngine(stream, codec=codec)
