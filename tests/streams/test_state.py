"""The state interface (MemoryState) and the values kept in it."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlite import Codec, Registry, event
from eventlite.streams import MemoryState, Session, Stream, StreamEngine
from eventlite.streams import _values as values

from .conftest import Reading, at, codec, envelopes, us


def test_writes_are_pending_until_flushed() -> None:
    """put and delete show in reads and in changes() at once, and reach the snapshot only
    at flush(), which empties changes()."""
    state = MemoryState()
    state.put("op", "a", [1, 2])
    state.put("op", "b", {"x": 1})
    assert ([1, 2], {("op", "a"): [1, 2], ("op", "b"): {"x": 1}}) == (
        state.get("op", "a"),
        state.changes(),
    )
    assert {} == state.snapshot()
    state.flush()
    state.delete("op", "a")
    assert (None, {("op", "a"): None}) == (state.get("op", "a"), state.changes())
    assert {("op", "a"): "[1,2]", ("op", "b"): '{"x":1}'} == state.snapshot()
    state.flush()
    assert ({}, {("op", "b"): '{"x":1}'}) == (state.changes(), state.snapshot())


def test_scan_lists_one_operators_entries_in_key_order() -> None:
    """scan(operator) gives that operator's live entries, pending ones included, sorted by
    key; deleted ones are gone."""
    state = MemoryState({("op", "b"): "2", ("op", "c"): "3", ("other", "a"): "0"})
    state.put("op", "a", 1)
    state.delete("op", "c")
    assert [("a", 1), ("b", 2)] == list(state.scan("op"))
    assert 3 == len(state)


def test_a_restored_state_holds_only_what_was_flushed() -> None:
    """MemoryState(snapshot) starts from the committed entries: pending writes are lost,
    as in a crash."""
    state = MemoryState()
    state.put("op", "kept", 1)
    state.flush()
    state.put("op", "lost", 2)
    restored = MemoryState(state.snapshot())
    assert [("kept", 1)] == list(restored.scan("op"))


def test_none_is_not_a_value() -> None:
    """put(None) raises ValueError: None means deleted."""
    with pytest.raises(ValueError, match="None means deleted"):
        MemoryState().put("op", "k", None)


registry = Registry()
local = Codec(registry)


@event(registry=registry, name="test.state.Point", version=2)
class Point:
    x: int
    y: int


@registry.upcaster("test.state.Point", from_version=1)
def _v1(data: dict[str, Any]) -> dict[str, Any]:
    return {"x": data["x"], "y": 0}


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.replace(fold=0)),
    st.builds(Point, st.integers(), st.integers()),
)
kept = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(), inner, max_size=3),
        st.dictionaries(st.integers(), inner, max_size=3),
    ),
    max_leaves=10,
)


@given(kept)
def test_kept_values_come_back_equal_through_json(value: Any) -> None:
    """Every value state can keep (JSON data, tuples, dicts of any keys, datetimes,
    registered messages, nested) comes back equal, with the same types, from JSON text."""
    text = json.dumps(values.encode(value, local))
    back = values.decode(json.loads(text), local)
    assert value == back
    assert repr(value) == repr(back)


def test_a_message_kept_at_an_old_version_is_upcast() -> None:
    """A message kept in state is read through the registry's upcasters, so state written
    before a schema change is read after it."""
    old = {"$message": "test.state.Point", "version": 1, "data": {"x": 3}}
    assert Point(3, 0) == values.decode(old, local)


def test_a_value_state_cannot_keep_is_refused() -> None:
    """An object that is neither JSON data nor a registered message raises TypeError
    naming its type: state never pickles."""
    with pytest.raises(TypeError, match="type object"):
        values.encode(object(), local)


def test_messages_kept_in_windows_survive_a_restart() -> None:
    """An aggregate whose accumulator holds messages and tuples continues after a
    restart from its JSON state as if it had not stopped."""

    def build() -> Stream:
        stream = Stream("kept")
        (
            stream.source(Reading, time=at)
            .window(Session(us(10)))
            .aggregate(
                (),
                lambda acc, r: (*acc, r),
                merge=lambda a, b: a + b,
                result=lambda acc: tuple(r.id for r in acc),
            )
            .to_table("w", row=lambda w: {"key": 1, "ids": w.value})
        )
        return stream

    events = [Reading(1, "a", 1, 0), Reading(2, "a", 3, 0), Reading(3, "a", 100, 0)]
    inputs = envelopes(events)
    state = MemoryState()
    first = StreamEngine(build(), state, codec=codec)
    first.process(inputs[:2])
    state.flush()
    again = StreamEngine(build(), MemoryState(state.snapshot()), codec=codec)
    [row] = again.process(inputs[2:]).outputs
    assert {"key": 1, "ids": (1, 2)} == row.row  # type: ignore[union-attr]


def test_when_is_a_datetime() -> None:
    """Datetimes keep their zone through state."""
    when = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert when == values.decode(json.loads(json.dumps(values.encode(when, local))), local)
