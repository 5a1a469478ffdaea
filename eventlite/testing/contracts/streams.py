"""The :class:`~eventlite.store.streams.StreamStateStore` contract: every backend passes it.

Run it with a ``make_storage`` fixture (see :mod:`eventlite.testing.contracts`)::

    class TestStreams(StreamStateStoreContract):
        pass
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ...codec import Codec
from ...store.storage import Storage
from ...store.streams import LIVE, REBUILDING, StreamProgress, StreamRecord, StreamStateStore
from . import StorageFactory

__all__ = ["StreamStateStoreContract"]

_NAMES = st.sampled_from(["clicks", "sessions", "Ünïcode"])
_OPERATORS = st.sampled_from(["$stream", "aggregate1", "join1", "Clicked", "é"])
_KEYS = st.sampled_from(["position", "$meta", '"ada"', '{"$tuple":["a",1]}', "", "Lé", "L~"])
_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)
_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_VALUES = _JSON.filter(lambda v: v is not None)
_CHANGES = st.dictionaries(st.tuples(_OPERATORS, _KEYS), st.none() | _VALUES, max_size=6)
_COUNTS = st.dictionaries(_TEXT, st.integers(0, 10**6), max_size=3)
_PROGRESS = st.builds(
    StreamProgress,
    position=st.integers(0, 10**9),
    watermarks=st.dictionaries(_TEXT, st.none() | st.integers(-(2**62), 2**62), max_size=3),
    open=_COUNTS,
    late=_COUNTS,
)
_TIMES = st.floats(min_value=1.0, max_value=2e9, allow_nan=False, allow_infinity=False)


def _json(value: Any) -> Any:
    """``value`` after the round trip every backend's values make."""
    return json.loads(json.dumps(value))


class StreamStateStoreContract:
    """The tests every :class:`StreamStateStore` must pass (``make_storage`` gives backends)."""

    state_machine_examples = 30
    """How many random programs the state machine test runs."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Storage:
        """A new, empty storage."""
        return make_storage(Codec())

    @pytest.fixture
    def store(self, storage: Storage) -> StreamStateStore:
        """Its stream state store."""
        return storage.streams

    def test_register_starts_empty_and_keeps_a_known_stream(self, store: StreamStateStore) -> None:
        """A new name starts live at position 0 with an empty summary; registering it
        again changes nothing."""
        first = store.register("clicks", 10.0)
        assert StreamRecord("clicks", 0, LIVE, {}, {}, {}, None, 10.0, None) == first
        progress = StreamProgress(7, {"Clicked": 123}, {"aggregate1": 2}, {"aggregate1": 1})
        assert store.save("clicks", {("$stream", "position"): 7}, progress, expected=0, now=11.0)
        again = store.register("clicks", 12.0)
        expected = StreamRecord(
            "clicks",
            7,
            LIVE,
            {"Clicked": 123},
            {"aggregate1": 2},
            {"aggregate1": 1},
            None,
            11.0,
            None,
        )
        assert expected == again
        assert (expected, 7) == (store.get("clicks"), store.entry("clicks", "$stream", "position"))

    def test_unknown_names_are_not_errors(self, store: StreamStateStore) -> None:
        """Reading an unknown name gives None or nothing; writing to one changes nothing."""
        assert (None, None, []) == (
            store.get("nobody"),
            store.entry("nobody", "op", "k"),
            store.entries("nobody", "op"),
        )
        assert False is store.save("nobody", {("op", "k"): 1}, StreamProgress(1), expected=0, now=1)
        store.fail("nobody", "boom")
        store.reset("nobody", 1.0)
        assert ([], []) == (store.list(), store.entries("nobody", "op"))

    def test_save_is_a_compare_and_set(self, store: StreamStateStore) -> None:
        """A save from a position the row is not at returns False and writes no entry; one
        from where it is writes the entries, moves the row and clears the error."""
        store.register("clicks", 1.0)
        store.fail("clicks", "RuntimeError: boom")
        changes = {("aggregate1", '"ada"'): [1, 2], ("$stream", "position"): 5}
        assert False is store.save("clicks", changes, StreamProgress(5), expected=3, now=2.0)
        assert ("RuntimeError: boom", 0, []) == (
            _record(store, "clicks").error,
            _record(store, "clicks").position,
            store.entries("clicks", "aggregate1"),
        )
        assert True is store.save("clicks", changes, StreamProgress(5), expected=0, now=3.0)
        assert StreamRecord("clicks", 5, LIVE, {}, {}, {}, None, 3.0, None) == store.get("clicks")
        assert [('"ada"', [1, 2])] == store.entries("clicks", "aggregate1")

    def test_none_deletes_and_the_last_write_wins(self, store: StreamStateStore) -> None:
        """A None value deletes its entry (a missing one too, without error); a later
        save overwrites an entry."""
        store.register("s", 1.0)
        store.save(
            "s", {("op", "a"): 1, ("op", "b"): {"x": [1]}}, StreamProgress(1), expected=0, now=2
        )
        store.save(
            "s",
            {("op", "a"): None, ("op", "b"): 2, ("op", "c"): None},
            StreamProgress(2),
            expected=1,
            now=3,
        )
        assert [("b", 2)] == store.entries("s", "op")
        assert (None, 2) == (store.entry("s", "op", "a"), store.entry("s", "op", "b"))

    def test_entries_are_in_key_order_per_operator_and_stream(
        self, store: StreamStateStore
    ) -> None:
        """``entries`` lists one operator of one stream, by key (code point order)."""
        for name in ("a", "b"):
            store.register(name, 1.0)
            changes: dict[tuple[str, str], Any] = {
                ("op", k): f"{name}{k}" for k in ("é", "b", "a", "Z", "~")
            }
            changes[("other", "a")] = 0
            store.save(name, changes, StreamProgress(1), expected=0, now=2.0)
        assert [(k, f"a{k}") for k in ("Z", "a", "b", "~", "é")] == store.entries("a", "op")

    def test_live_marks_a_rebuilding_stream_live(self, store: StreamStateStore) -> None:
        """reset empties the entries and puts the row back to 0, rebuilding; saves keep it
        rebuilding until one says live."""
        store.register("s", 1.0)
        store.save(
            "s",
            {("op", "k"): 1},
            StreamProgress(9, {"src": 5}, {"op": 1}, {"op": 2}),
            expected=0,
            now=2,
        )
        store.fail("s", "boom")
        store.reset("s", 4.0)
        assert StreamRecord("s", 0, REBUILDING, {}, {}, {}, None, 4.0, 4.0) == store.get("s")
        assert [] == store.entries("s", "op")
        store.save("s", {}, StreamProgress(3), expected=0, now=5.0)
        assert REBUILDING == _record(store, "s").state
        store.save("s", {}, StreamProgress(6), expected=3, now=6.0, live=True)
        assert StreamRecord("s", 6, LIVE, {}, {}, {}, None, 6.0, 4.0) == store.get("s")

    def test_reset_touches_one_stream_only(self, store: StreamStateStore) -> None:
        """Resetting a stream leaves the other streams' rows and entries alone."""
        for name in ("a", "b"):
            store.register(name, 1.0)
            store.save(name, {("op", "k"): name}, StreamProgress(1), expected=0, now=2.0)
        store.reset("a", 3.0)
        assert ([], [("k", "b")], 1) == (
            store.entries("a", "op"),
            store.entries("b", "op"),
            _record(store, "b").position,
        )

    def test_writes_join_the_open_transaction(self, storage: Storage) -> None:
        """Saves made inside a transaction that rolls back are rolled back with it; inside
        it, reads see them."""
        store = storage.streams
        store.register("s", 1.0)
        with pytest.raises(RuntimeError), storage.transaction():
            assert store.save("s", {("op", "k"): 1}, StreamProgress(4), expected=0, now=2.0)
            assert (4, 1) == (_record(store, "s").position, store.entry("s", "op", "k"))
            store.register("other", 2.0)
            raise RuntimeError("the batch failed")
        assert (0, None, None) == (
            _record(store, "s").position,
            store.entry("s", "op", "k"),
            store.get("other"),
        )

    def test_write_rows_creates_upserts_and_deletes(self, storage: Storage) -> None:
        """Rows go to a table made on first write; an upsert inserts a new key and sets
        the named columns of a known one; deletes (of present and missing keys) run
        first; a new column is added; values are stored as the read model stores them."""
        store = storage.streams
        start = datetime(2026, 1, 1, 9, tzinfo=timezone.utc)
        store.write_rows(
            "per_minute",
            ("key", "start"),
            [
                {"key": "a", "start": start, "value": 1, "tags": ["x"]},
                {"key": "b", "start": start, "value": 2, "tags": []},
            ],
        )
        store.write_rows(
            "per_minute",
            ("key", "start"),
            [{"key": "a", "start": start, "value": 5}, {"key": "c", "start": start, "extra": 1.5}],
            deletes=[("b", start), ("zzz", start)],
        )
        rows = sorted(storage.projections.read_model()["per_minute"].rows, key=lambda r: r["key"])
        iso = start.isoformat()
        assert [
            {"key": "a", "start": iso, "value": 5, "tags": '["x"]', "extra": None},
            {"key": "c", "start": iso, "value": None, "tags": None, "extra": 1.5},
        ] == rows

    def test_write_rows_joins_the_transaction_and_tables_clear(self, storage: Storage) -> None:
        """Rows written in a transaction that rolls back are gone with it; clear_tables
        empties tables (and ignores missing ones)."""
        store = storage.streams
        store.write_rows("t", ("id",), [{"id": 1, "v": "one"}])
        with pytest.raises(RuntimeError), storage.transaction():
            store.write_rows("t", ("id",), [{"id": 2, "v": "two"}], deletes=[(1,)])
            raise RuntimeError("the batch failed")
        db = storage.projections.read_model()
        assert [{"id": 1, "v": "one"}] == list(db["t"].rows)
        store.clear_tables(["t", "missing"])
        assert [] == list(db["t"].rows)

    def test_any_program_matches_the_model(self, make_storage: StorageFactory) -> None:
        """Random registers, saves (from the right and the wrong position), failures and
        resets leave the store as a dict of records and a dict of entries say."""
        run_state_machine_as_test(
            _machine(make_storage),
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )


def _record(store: StreamStateStore, name: str) -> StreamRecord:
    found = store.get(name)
    assert found is not None, f"no row for {name!r}"
    return found


def _machine(make_storage: StorageFactory) -> type[RuleBasedStateMachine]:
    class StreamStateMachine(RuleBasedStateMachine):
        """The store against a dict of records and a dict of entries."""

        def __init__(self) -> None:
            super().__init__()
            self.store = make_storage(Codec()).streams
            self.records: dict[str, StreamRecord] = {}
            self.entries: dict[tuple[str, str, str], Any] = {}

        @rule(name=_NAMES, now=_TIMES)
        def register(self, name: str, now: float) -> None:
            if name not in self.records:
                self.records[name] = StreamRecord(name, 0, LIVE, {}, {}, {}, None, now, None)
            assert self.records[name] == self.store.register(name, now)

        @rule(
            name=_NAMES,
            changes=_CHANGES,
            progress=_PROGRESS,
            wrong=st.booleans(),
            now=_TIMES,
            live=st.booleans(),
        )
        def save(
            self,
            name: str,
            changes: dict[tuple[str, str], Any],
            progress: StreamProgress,
            wrong: bool,
            now: float,
            live: bool,
        ) -> None:
            known = self.records.get(name)
            at = 0 if known is None else known.position
            expected = at + 1 if wrong else at
            saved = self.store.save(name, changes, progress, expected=expected, now=now, live=live)
            ok = known is not None and not wrong
            assert ok == saved
            if not ok or known is None:
                return
            self.records[name] = attrs.evolve(
                known,
                position=progress.position,
                watermarks=_json(dict(progress.watermarks)),
                open=_json(dict(progress.open)),
                late=_json(dict(progress.late)),
                error=None,
                updated_at=now,
                state=LIVE if live else known.state,
            )
            for (operator, key), value in changes.items():
                if value is None:
                    self.entries.pop((name, operator, key), None)
                else:
                    self.entries[(name, operator, key)] = _json(value)

        @rule(name=_NAMES, error=_TEXT)
        def fail(self, name: str, error: str) -> None:
            self.store.fail(name, error)
            if name in self.records:
                self.records[name] = attrs.evolve(self.records[name], error=error)

        @rule(name=_NAMES, now=_TIMES)
        def reset(self, name: str, now: float) -> None:
            self.store.reset(name, now)
            known = self.records.get(name)
            if known is None:
                return
            self.records[name] = StreamRecord(name, 0, REBUILDING, {}, {}, {}, None, now, now)
            for address in [a for a in self.entries if a[0] == name]:
                del self.entries[address]

        @rule(name=_NAMES, operator=_OPERATORS, key=_KEYS)
        def read_one(self, name: str, operator: str, key: str) -> None:
            assert self.entries.get((name, operator, key)) == self.store.entry(name, operator, key)

        @invariant()
        def matches(self) -> None:
            assert [self.records[n] for n in sorted(self.records)] == self.store.list()
            for name in self.records:
                for operator in ("$stream", "aggregate1", "join1", "Clicked", "é"):
                    expected = sorted(
                        (k, v)
                        for (n, o, k), v in self.entries.items()
                        if (n, o) == (name, operator)
                    )
                    assert expected == self.store.entries(name, operator)

    return StreamStateMachine
