"""The exact instants the rules turn on, one tick either side: when an event is late, when
a window or session closes, when a join stops waiting for a match."""

from __future__ import annotations

from typing import Any

from eventlite.streams import Session, Stream, StreamEngine, Tumbling

from .conftest import Other, Reading, at, codec, envelopes, run_all, ticks, us


def counts(window: Any, events: list[Reading], ooo: int = 0, lateness: int = 0) -> list[Any]:
    """``(key, start, end, count)`` rows, in emission order, and the late count."""
    stream = Stream("edges")
    (
        stream.source(Reading, time=at, out_of_orderness=us(ooo))
        .key_by(lambda r: r.key)
        .window(window, allowed_lateness=us(lateness))
        .count()
        .to_table("w")
    )
    engine = StreamEngine(stream, codec=codec)
    outputs = engine.process(envelopes(events)).outputs + engine.finish().outputs
    rows = [
        (o.row["key"], ticks(o.row["start"]), ticks(o.row["end"]), o.row["value"])  # type: ignore[union-attr]
        for o in outputs
    ]
    return [rows, engine.status().late["aggregate1"]]


def test_an_event_exactly_lateness_behind_the_watermark_is_accepted() -> None:
    """With out-of-orderness 2 and lateness 3, after an event at 20 (watermark 18) an
    event at 15 still counts and one at 14 is late."""
    events = [Reading(1, "a", 20, 0), Reading(2, "a", 15, 0), Reading(3, "a", 14, 0)]
    rows, late = counts(Tumbling(us(100)), events, ooo=2, lateness=3)
    assert ([("a", 0, 100, 2)], 1) == (rows, late)


def test_a_window_stays_open_until_the_watermark_reaches_its_end_plus_the_lateness() -> None:
    """A window [0, 10) with lateness 2 is still open while the watermark is 11: an event
    at 9 arriving then joins it; one at 9 arriving at watermark 12 is late."""
    events = [Reading(1, "a", 11, 0), Reading(2, "a", 9, 0), Reading(3, "a", 12, 0)]
    events.append(Reading(4, "a", 9, 0))
    rows, late = counts(Tumbling(us(10)), events, lateness=2)
    assert ([("a", 0, 10, 1), ("a", 10, 20, 2)], 1) == (rows, late)


def test_two_events_at_a_windows_last_tick_share_it() -> None:
    """Without any delay, two events at a window's last tick are both in it: the first
    one's watermark does not close the window under the second."""
    events = [Reading(1, "a", 9, 0), Reading(2, "a", 9, 0)]
    rows, late = counts(Tumbling(us(10)), events)
    assert ([("a", 0, 10, 2)], 0) == (rows, late)


def test_a_session_stays_open_until_the_watermark_reaches_its_end() -> None:
    """A session of one event at 0 with gap 5 ends at 5: at watermark 4 (set by another
    key) an event at 4 still extends it; the gap is strict (an event at 9 starts anew)."""
    events = [Reading(1, "a", 0, 0), Reading(2, "b", 4, 0), Reading(3, "a", 4, 0)]
    events.append(Reading(4, "a", 9, 0))
    rows, late = counts(Session(us(5)), events)
    assert ([("a", 0, 9, 2), ("b", 4, 9, 1), ("a", 9, 14, 1)], 0) == (
        sorted(rows, key=lambda r: r[1]),
        late,
    )


def test_a_session_that_grew_closes_at_its_new_end() -> None:
    """A session [0, 3] with gap 5 ends at 8, not at 5 where its first event put its end:
    at watermark 7 an event at 7 still joins it."""
    events = [Reading(1, "a", 0, 0), Reading(2, "a", 3, 0), Reading(3, "b", 5, 0)]
    events += [Reading(4, "b", 7, 0), Reading(5, "a", 7, 0)]
    rows, _ = counts(Session(us(5)), events)
    assert [("a", 0, 12, 3), ("b", 5, 12, 2)] == sorted(rows)


def test_a_session_closes_at_its_end_in_emission_order() -> None:
    """Sessions close as soon as the watermark reaches their end, earliest end first."""
    events = [Reading(1, "a", 0, 0), Reading(2, "b", 1, 0), Reading(3, "c", 6, 0)]
    rows, _ = counts(Session(us(5)), events)
    assert [("a", 0, 5, 1), ("b", 1, 6, 1), ("c", 6, 11, 1)] == rows


def joined(events: list[Any], within: int, how: str = "inner") -> list[Any]:
    stream = Stream("join-edges")
    left = stream.source(Reading, time=at).key_by(lambda r: r.key)
    right = stream.source(Other, time=at).key_by(lambda r: r.key)
    (
        left.join(right, within=us(within), how=how)  # type: ignore[arg-type]
        .map(lambda p: (p[0] and p[0].id, p[1] and p[1].id))
        .to_table("pairs", row=lambda ids: {"key": ids})
    )
    return [o.row["key"] for o in run_all(stream, events)]  # type: ignore[union-attr]


def test_a_join_waits_for_matches_up_to_the_end_of_its_window() -> None:
    """A left value at 0, joining within 5, still matches a right value at 5 that arrives
    after the right watermark reached 5."""
    events = [Reading(1, "a", 0, 0), Other(2, "a", 5, 0), Other(3, "a", 5, 0)]
    assert [(1, 2), (1, 3)] == joined(events, 5)


def test_a_left_join_emits_the_unmatched_once_no_match_can_come() -> None:
    """In a left join, a left value is emitted with None once the right watermark has
    passed its window (here at the end of the input), and a matched one never is."""
    events = [Reading(1, "a", 0, 0), Reading(2, "a", 20, 0), Other(3, "a", 5, 0)]
    events.append(Other(4, "a", 6, 0))
    assert [(1, 3), (2, None)] == joined(events, 5, "left")
    assert [(1, 3), (None, 4), (2, None)] == joined(events, 5, "outer")
