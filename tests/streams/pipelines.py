"""Pipelines shared by the engine's and the runner's tests."""

from __future__ import annotations

from eventlite.streams import Hopping, MemoryTable, Session, SideOutput, Stream, Tumbling

from .conftest import Late, Other, Reading, Total, at, us

TABLES = {"names": MemoryTable({"a": "Ada", "b": "Bob"})}


def everything(dead_letters: bool = True) -> Stream:
    """One stream with every kind of stateful step, emitting events and rows; its session
    window dead-letters late events (``dead_letters=False``: counts them, and the engine
    needs no envelopes)."""
    stream = Stream("everything")
    readings = stream.source(Reading, time=at, out_of_orderness=us(3)).key_by(lambda r: r.key)
    others = stream.source(Other, time=at, out_of_orderness=us(2)).key_by(lambda r: r.key)
    late = SideOutput(lambda r: Late(r.id), stream_id="late")
    (
        readings.window(Tumbling(us(10)), allowed_lateness=us(2), late=late)
        .count()
        .to_events(lambda w: Total(w.key, w.start.microsecond, w.value))
    )
    (
        readings.filter(lambda r: r.value >= 0)
        .window(Hopping(us(12), us(4)), allowed_lateness=us(1))
        .sum(lambda r: r.value, name="hopping-sum")
        .to_table("hopping")
    )
    (
        readings.window(Session(us(5)), late="dead_letter" if dead_letters else "count")
        .mean(lambda r: r.value, emit="update")
        .to_table("sessions")
    )
    (
        readings.join(others, before=us(4), after=us(6), how="outer", allowed_lateness=us(1))
        .map(lambda p: (p[0] and p[0].id, p[1] and p[1].id))
        .to_table("pairs", row=lambda ids: {"key": list(ids)})
    )
    (
        others.join_table("names", how="left")
        .flat_map(lambda pair: [pair[1]] * 2)
        .window(Tumbling(us(20)))
        .aggregate([], lambda acc, name: [*acc, name], merge=lambda a, b: a + b)
        .to_table("names")
    )
    return stream
