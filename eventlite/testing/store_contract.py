"""The event store contract as a pytest suite: every backend runs the same tests.

Subclass :class:`EventStoreContract` in a test module and give it a ``make_store``
fixture that returns a factory: called with a :class:`~eventlite.Codec`, the factory
returns a new, empty store using that codec::

    import pytest
    from eventlite.sqlite import SQLiteEventStore
    from eventlite.testing.store_contract import EventStoreContract

    class TestMyStore(EventStoreContract):
        @pytest.fixture
        def make_store(self, tmp_path):
            paths = iter(range(1_000_000))
            return lambda codec: SQLiteEventStore(tmp_path / f"{next(paths)}.db", codec=codec)

A new backend is a new fixture, never new tests. Needs ``pytest`` and ``hypothesis``.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ..codec import Codec
from ..envelope import Envelope, Metadata, message_context
from ..exceptions import ConcurrencyError, MessageEncodeError, StorageError
from ..messages import Registry, event
from ..store.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    DuplicateEventError,
    EventStore,
    ExpectedVersion,
    StreamAppend,
)

__all__ = ["CONTRACT_REGISTRY", "EventStoreContract", "Noted", "Opened", "StoreFactory"]

StoreFactory = Callable[[Codec], EventStore]
"""What a backend's ``make_store`` fixture returns: a codec in, a new empty store out."""

CONTRACT_REGISTRY = Registry()
"""The registry of the contract's own event types."""


@event(registry=CONTRACT_REGISTRY, name="contract.Opened")
@attrs.frozen
class Opened:
    """A contract event with text, a time and an exact amount."""

    name: str
    at: datetime
    amount: Decimal


@event(registry=CONTRACT_REGISTRY, name="contract.Noted")
@attrs.frozen
class Noted:
    """A contract event with a number."""

    n: int


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)  # type: ignore[arg-type, misc]


def _positions(envelopes: list[Envelope]) -> list[int | None]:
    return [e.position for e in envelopes]


class EventStoreContract:
    """The tests every :class:`~eventlite.store.EventStore` must pass.

    Subclasses provide the ``make_store`` fixture (see the module docstring). Class
    attributes tune the heavier tests: ``writer_threads`` and ``appends_per_writer`` for
    the ordering test, ``state_machine_examples`` for the hypothesis state machine.
    """

    writer_threads = 8
    """Threads appending at once in :meth:`test_positions_gap_free_under_threads`."""
    appends_per_writer = 25
    """Appends each writer thread makes."""
    state_machine_examples = 40
    """How many random programs the state machine test runs."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        """Override in the subclass: return a factory of new, empty stores."""
        raise NotImplementedError("subclass EventStoreContract and give it a make_store fixture")

    @pytest.fixture
    def codec(self) -> Codec:
        """A codec over the contract's registry."""
        return Codec(CONTRACT_REGISTRY)

    @pytest.fixture
    def store(self, make_store: StoreFactory, codec: Codec) -> Iterator[EventStore]:
        """A new, empty store, closed after the test."""
        store = make_store(codec)
        try:
            yield store
        finally:
            store.close()

    # -- empty store ------------------------------------------------------------------

    def test_empty_store(self, store: EventStore) -> None:
        """A new store has head 0, no streams and an empty log."""
        assert 0 == store.head_position()
        assert 0 == store.stream_version("nothing")
        assert [] == store.read_stream("nothing")
        assert [] == list(store.read_all())

    # -- round trip -------------------------------------------------------------------

    def test_round_trip_preserves_envelopes(self, store: EventStore) -> None:
        """Reads return the id, type, message, metadata and timestamp appended."""
        opened = Opened(name="ünï", at=_utc(2024, 5, 6, 7, 8, 9, 123456), amount=Decimal("1.10"))
        env = Envelope(
            opened,
            id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            metadata=Metadata(
                correlation_id="corr-1",
                causation_id="cause-1",
                user_id="user-1",
                headers={"tenant": "t1", "trace": "x"},
            ),
            timestamp=_utc(2024, 1, 2, 3, 4, 5, 678901),
        )
        plain = Noted(n=7)
        recorded = store.append("s-1", [env, plain])
        read = store.read_stream("s-1")
        assert recorded == read
        assert read == list(store.read_all())
        first, second = read
        assert (env.id, "contract.Opened", opened) == (first.id, first.type, first.message)
        assert env.metadata == first.metadata
        assert _utc(2024, 1, 2, 3, 4, 5, 678901) == first.timestamp
        assert ("s-1", 1, 1) == (first.stream_id, first.version, first.position)
        assert (plain, "contract.Noted", 2) == (second.message, second.type, second.position)
        assert second.id == second.metadata.correlation_id

    def test_timestamps_keep_microseconds_and_become_utc(self, store: EventStore) -> None:
        """A timestamp in another zone is stored as the same instant in UTC."""
        zone = timezone(timedelta(hours=-5))
        env = Envelope(Noted(n=1), timestamp=datetime(2024, 3, 1, 10, 0, 0, 1, tzinfo=zone))
        store.append("s", [env])
        (read,) = store.read_stream("s")
        assert _utc(2024, 3, 1, 15, 0, 0, 1) == read.timestamp
        assert timezone.utc == read.timestamp.tzinfo

    def test_messages_take_correlation_from_the_current_envelope(self, store: EventStore) -> None:
        """A message appended while another is handled is correlated to it."""
        parent = Envelope(Noted(n=0), metadata=Metadata(correlation_id="flow-9"))
        with message_context(parent):
            (recorded,) = store.append("s", [Noted(n=1)])
        (read,) = store.read_stream("s")
        assert ("flow-9", parent.id) == (read.correlation_id, read.causation_id)
        assert recorded.metadata == read.metadata

    def test_append_numbers_versions_and_positions(self, store: EventStore) -> None:
        """Versions count per stream from 1; positions count globally from 1."""
        a1 = store.append("a", [Noted(n=1), Noted(n=2)])
        b1 = store.append("b", [Noted(n=3)])
        a2 = store.append("a", [Noted(n=4)])
        assert [("a", 1, 1), ("a", 2, 2)] == [(e.stream_id, e.version, e.position) for e in a1]
        assert [("b", 1, 3)] == [(e.stream_id, e.version, e.position) for e in b1]
        assert [("a", 3, 4)] == [(e.stream_id, e.version, e.position) for e in a2]
        assert (3, 1, 4) == (store.stream_version("a"), store.stream_version("b"), 4)
        assert 4 == store.head_position()

    def test_empty_append_checks_version_and_writes_nothing(self, store: EventStore) -> None:
        """Appending no events checks the expected version and changes nothing."""
        assert [] == store.append("a", [], expected_version=NO_STREAM)
        assert (0, 0) == (store.stream_version("a"), store.head_position())
        with pytest.raises(ConcurrencyError):
            store.append("a", [], expected_version=STREAM_EXISTS)

    # -- expected versions ------------------------------------------------------------

    @pytest.mark.parametrize(
        ("existing", "expected"),
        [
            (0, ANY),
            (0, NO_STREAM),
            (0, 0),
            (2, ANY),
            (2, STREAM_EXISTS),
            (2, 2),
        ],
    )
    def test_expected_version_met(
        self, store: EventStore, existing: int, expected: ExpectedVersion
    ) -> None:
        """An append whose expected version matches the stream is written after it."""
        if existing:
            store.append("s", [Noted(n=i) for i in range(existing)])
        recorded = store.append("s", [Noted(n=9)], expected_version=expected)
        assert [existing + 1] == [e.version for e in recorded]
        assert existing + 1 == store.stream_version("s")

    @pytest.mark.parametrize(
        ("existing", "expected"),
        [
            (0, STREAM_EXISTS),
            (0, 1),
            (2, NO_STREAM),
            (2, 0),
            (2, 1),
            (2, 3),
        ],
    )
    def test_expected_version_conflict(
        self, store: EventStore, existing: int, expected: ExpectedVersion
    ) -> None:
        """A mismatch raises ConcurrencyError naming stream, expected and actual; nothing
        is written."""
        store.append("other", [Noted(n=0)])
        if existing:
            store.append("s", [Noted(n=i) for i in range(existing)])
        head = store.head_position()
        with pytest.raises(ConcurrencyError) as info:
            store.append("s", [Noted(n=9), Noted(n=10)], expected_version=expected)
        assert ("s", expected, existing) == (
            info.value.stream_id,
            info.value.expected,
            info.value.actual,
        )
        assert (existing, head) == (store.stream_version("s"), store.head_position())
        assert "'s'" in str(info.value)

    @pytest.mark.parametrize(
        ("bad", "error"), [(-1, ValueError), ("1", TypeError), (True, TypeError), (1.0, TypeError)]
    )
    def test_invalid_expected_version(self, store: EventStore, bad: Any, error: type) -> None:
        """An expected version that is not a non-negative int or a StreamState is refused."""
        with pytest.raises(error):
            store.append("s", [Noted(n=1)], expected_version=bad)
        assert 0 == store.head_position()

    @pytest.mark.parametrize(("bad", "error"), [("", ValueError), (3, TypeError)])
    def test_invalid_stream_id(self, store: EventStore, bad: Any, error: type) -> None:
        """A stream id must be a non-empty string."""
        with pytest.raises(error):
            store.append(bad, [Noted(n=1)])
        assert 0 == store.head_position()

    # -- several streams at once ------------------------------------------------------

    def test_append_many_writes_all_streams(self, store: EventStore) -> None:
        """append_many writes every part, with consecutive positions in part order."""
        store.append("b", [Noted(n=0)])
        result = store.append_many(
            [
                StreamAppend("a", [Noted(n=1), Noted(n=2)], NO_STREAM),
                ("b", [Noted(n=3)], 1),
                ("c", [Noted(n=4)]),
            ]
        )
        assert [[2, 3], [4], [5]] == [_positions(r) for r in result]
        assert [[1, 2], [2], [1]] == [[e.version for e in r] for r in result]

    def test_append_many_with_one_conflict_writes_nothing(self, store: EventStore) -> None:
        """One conflicting part fails the whole batch, and no position is used."""
        store.append("b", [Noted(n=0)])
        with pytest.raises(ConcurrencyError) as info:
            store.append_many(
                [
                    ("a", [Noted(n=1)], NO_STREAM),
                    ("b", [Noted(n=2)], NO_STREAM),
                    ("c", [Noted(n=3)], ANY),
                ]
            )
        assert "b" == info.value.stream_id
        assert (0, 1, 0) == tuple(store.stream_version(s) for s in "abc")
        assert 1 == store.head_position()
        (after,) = store.append("d", [Noted(n=4)])
        assert 2 == after.position

    def test_append_many_same_stream_twice(self, store: EventStore) -> None:
        """Parts apply in order: a later part sees the versions an earlier part wrote."""
        result = store.append_many([("a", [Noted(n=1)], NO_STREAM), ("a", [Noted(n=2)], 1)])
        assert [[1], [2]] == [[e.version for e in r] for r in result]
        with pytest.raises(ConcurrencyError):
            store.append_many([("a", [Noted(n=3)], 2), ("a", [Noted(n=4)], 2)])
        assert 2 == store.stream_version("a")

    def test_duplicate_event_id_is_refused(self, store: EventStore) -> None:
        """An event id already stored, or twice in one call, fails the append: nothing
        written."""
        env = Envelope(Noted(n=1))
        store.append("a", [env])
        with pytest.raises(DuplicateEventError) as info:
            store.append("b", [Noted(n=2), env])
        assert (env.id, "b") == (info.value.event_id, info.value.stream_id)
        twin = Envelope(Noted(n=3))
        with pytest.raises(DuplicateEventError) as twice:
            store.append("c", [twin, twin])
        assert (twin.id, "c") == (twice.value.event_id, twice.value.stream_id)
        assert (1, 0, 0) == tuple(store.stream_version(s) for s in "abc")
        assert 1 == store.head_position()

    # -- reading a stream -------------------------------------------------------------

    @pytest.mark.parametrize(
        ("kwargs", "versions"),
        [
            ({}, [1, 2, 3, 4, 5]),
            ({"from_version": 3}, [3, 4, 5]),
            ({"to_version": 2}, [1, 2]),
            ({"from_version": 2, "to_version": 4}, [2, 3, 4]),
            ({"from_version": 4, "to_version": 2}, []),
            ({"from_version": 6}, []),
            ({"to_version": 99}, [1, 2, 3, 4, 5]),
            ({"limit": 2}, [1, 2]),
            ({"limit": 0}, []),
            ({"backwards": True}, [5, 4, 3, 2, 1]),
            ({"backwards": True, "limit": 1}, [5]),
            ({"backwards": True, "from_version": 2, "to_version": 4}, [4, 3, 2]),
            ({"backwards": True, "to_version": 3, "limit": 2}, [3, 2]),
            ({"from_version": 2, "limit": 2}, [2, 3]),
        ],
    )
    def test_read_stream_ranges(
        self, store: EventStore, kwargs: dict[str, Any], versions: list[int]
    ) -> None:
        """read_stream returns the inclusive version range, forwards or backwards, limited."""
        store.append("s", [Noted(n=v) for v in range(1, 6)])
        store.append("t", [Noted(n=100)])
        read = store.read_stream("s", **kwargs)
        assert versions == [e.version for e in read]
        assert versions == [e.message.n for e in read]

    @pytest.mark.parametrize(
        "kwargs", [{"from_version": 0}, {"limit": -1}, {"from_version": -3, "backwards": True}]
    )
    def test_read_stream_invalid_arguments(self, store: EventStore, kwargs: dict[str, Any]) -> None:
        """from_version below 1 or a negative limit raise ValueError."""
        with pytest.raises(ValueError):
            store.read_stream("s", **kwargs)

    # -- reading the log --------------------------------------------------------------

    def _fill_log(self, store: EventStore) -> None:
        at = _utc(2024, 1, 1)
        store.append("a", [Noted(n=1), Opened(name="x", at=at, amount=Decimal(1))])
        store.append("b", [Noted(n=2)])
        store.append("a", [Opened(name="y", at=at, amount=Decimal(2)), Noted(n=3)])

    @pytest.mark.parametrize(
        ("kwargs", "positions"),
        [
            ({}, [1, 2, 3, 4, 5]),
            ({"from_position": 3}, [3, 4, 5]),
            ({"from_position": 6}, []),
            ({"limit": 2}, [1, 2]),
            ({"limit": 0}, []),
            ({"from_position": 2, "limit": 3}, [2, 3, 4]),
            ({"types": ["contract.Opened"]}, [2, 4]),
            ({"types": [Noted]}, [1, 3, 5]),
            ({"types": [Noted, "contract.Opened"]}, [1, 2, 3, 4, 5]),
            ({"types": ["contract.Noted"], "from_position": 2, "limit": 1}, [3]),
            ({"types": []}, []),
            ({"types": ["nope"]}, []),
        ],
    )
    def test_read_all(
        self, store: EventStore, kwargs: dict[str, Any], positions: list[int]
    ) -> None:
        """read_all yields the log in position order, from a position, limited, filtered."""
        self._fill_log(store)
        read = list(store.read_all(**kwargs))
        assert positions == _positions(read)

    def test_read_all_matches_streams(self, store: EventStore) -> None:
        """The log holds exactly the events of the streams, with the same envelopes."""
        self._fill_log(store)
        log = list(store.read_all())
        assert store.read_stream("a") == [e for e in log if e.stream_id == "a"]
        assert store.read_stream("b") == [e for e in log if e.stream_id == "b"]

    def test_read_all_pages_through_a_long_log(self, store: EventStore) -> None:
        """More events than one page come out once each, in order."""
        for start in range(0, 2500, 500):
            store.append(f"s{start}", [Noted(n=n) for n in range(start, start + 500)])
        read = list(store.read_all())
        assert list(range(1, 2501)) == _positions(read)
        assert list(range(2500)) == [e.message.n for e in read]
        assert list(range(1001, 2201)) == _positions(list(store.read_all(1001, limit=1200)))

    def test_read_all_sees_events_appended_while_iterating(self, store: EventStore) -> None:
        """An iterator over the log goes on to events committed after it started."""
        store.append("a", [Noted(n=n) for n in range(3)])
        iterator = store.read_all()
        first = next(iterator)
        store.append("a", [Noted(n=n) for n in range(3, 2003)])
        rest = list(iterator)
        assert list(range(1, 2004)) == _positions([first, *rest])

    def test_read_records_is_the_log_undecoded(self, store: EventStore) -> None:
        """read_records gives the log after a position, in order, limited and filtered by
        type name; decode turns each record into the envelope read_all gives."""
        self._fill_log(store)
        log = list(store.read_all())
        records = store.read_records()
        assert _positions(log) == [r.position for r in records]
        assert log == [store.decode(r) for r in records]
        assert [(e.stream_id, e.version, e.id, e.type) for e in log] == [
            (r.stream_id, r.version, r.id, r.type) for r in records
        ]
        assert [3, 4] == [r.position for r in store.read_records(after=2, limit=2)]
        noted = store.read_records(types=frozenset({"contract.Noted"}))
        assert [e.position for e in log if e.type == "contract.Noted"] == [
            r.position for r in noted
        ]
        assert [] == store.read_records(types=frozenset())
        assert [] == store.read_records(after=len(log))

    def test_record_at_and_raw(self, store: EventStore) -> None:
        """record_at finds one record by position (None past the head); raw() is JSON
        naming the record."""
        self._fill_log(store)
        record = store.record_at(2)
        assert record is not None
        assert 2 == record.position
        assert store.record_at(999) is None
        raw = json.loads(record.raw())
        assert (2, record.id, record.type) == (raw["position"], raw["id"], raw["type"])

    # -- searching the log (tools and operators) ---------------------------------------

    def _fill_search(self, store: EventStore) -> list[Envelope]:
        """Nine events: three flows over four streams, a minute apart from 2024-01-01."""
        flows = ["flow-1", "flow-2", "flow-3"]
        streams = ["Order-1", "Order-2", "order-1", "Pay-\u00e9"]
        stored: list[Envelope] = []
        for n in range(9):
            env = Envelope(
                Noted(n=n)
                if n % 3
                else Opened(name=str(n), at=_utc(2024, 1, 1), amount=Decimal(n)),
                metadata=Metadata(flows[n % 3]),
                timestamp=_utc(2024, 1, 1, 0, n),
            )
            stored += store.append(streams[n % 4], [env])
        return stored

    def test_find_records_filters(self, store: EventStore) -> None:
        """find_records keeps the events that match every filter given, in position order:
        types, streams, flows (correlation ids), at or after ``since``, before
        ``until``."""
        log = self._fill_search(store)
        noon = _utc(2024, 1, 1, 0, 3)
        cases: list[tuple[dict[str, Any], Callable[[Envelope], bool]]] = [
            ({}, lambda e: True),
            ({"types": ["contract.Opened"]}, lambda e: e.type == "contract.Opened"),
            ({"streams": ["Order-1", "order-1"]}, lambda e: e.stream_id in ("Order-1", "order-1")),
            ({"correlation_ids": {"flow-2"}}, lambda e: e.correlation_id == "flow-2"),
            ({"since": noon}, lambda e: e.timestamp >= noon),
            ({"until": noon}, lambda e: e.timestamp < noon),
            (
                {
                    "types": ["contract.Noted"],
                    "correlation_ids": ["flow-2", "flow-3"],
                    "since": noon,
                },
                lambda e: (
                    e.type == "contract.Noted"
                    and e.correlation_id in ("flow-2", "flow-3")
                    and e.timestamp >= noon
                ),
            ),
            ({"streams": ["nope"]}, lambda e: False),
        ]
        for kwargs, keep in cases:
            expected = [e.position for e in log if keep(e)]
            assert expected == [r.position for r in store.find_records(**kwargs)], kwargs

    @pytest.mark.parametrize("odd", ["nul\x00inside", "ünïcødé ✓", 'quote"and\\slash'])
    def test_find_records_with_a_long_filter_finds_any_text(
        self, store: EventStore, odd: str
    ) -> None:
        """A filter of hundreds of streams or flows (a backend may pass them another way
        than a few) still matches every stored text exactly, a NUL character included
        (on a backend that stores one: the others refuse it by name)."""
        env = Envelope(Noted(n=1), metadata=Metadata(odd))
        try:
            (stored,) = store.append(odd, [env])
        except ValueError as exc:
            assert "\x00" in odd and "NUL" in str(exc)
            with pytest.raises(MessageEncodeError, match=r"correlation id .* NUL"):
                store.append("fine", [env])
            return
        store.append("other", [Noted(n=2)])
        many = [f"s-{i}" for i in range(300)]
        assert (
            [stored.position]
            == [r.position for r in store.find_records(streams=[*many, odd])]
            == [r.position for r in store.find_records(correlation_ids=[*many, odd])]
        )
        assert [] == store.find_records(streams=many) == store.find_records(correlation_ids=many)

    def test_find_records_pages_after_a_position(self, store: EventStore) -> None:
        """``after`` and ``limit`` page through the matches; records decode to what
        read_all gives."""
        log = self._fill_search(store)
        flow = [e for e in log if e.correlation_id == "flow-1"]
        first = store.find_records(0, 2, correlation_ids=["flow-1"])
        rest = store.find_records(first[-1].position, 10, correlation_ids=["flow-1"])
        assert flow == [store.decode(r) for r in [*first, *rest]]

    def test_find_records_with_an_empty_filter_finds_nothing(self, store: EventStore) -> None:
        """An empty collection of types, streams or flows matches no event."""
        self._fill_search(store)
        empty: list[dict[str, Any]] = [{"types": []}, {"streams": ()}, {"correlation_ids": set()}]
        for kwargs in empty:
            assert [] == store.find_records(**kwargs)

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"after": -1}, ValueError),
            ({"limit": 0}, ValueError),
            ({"since": datetime(2024, 1, 1)}, ValueError),
            ({"until": datetime(2024, 1, 1)}, ValueError),
            ({"streams": "Order-1"}, TypeError),
        ],
    )
    def test_find_records_invalid_arguments(
        self, store: EventStore, kwargs: dict[str, Any], error: type[Exception]
    ) -> None:
        """A negative ``after``, a limit below 1, a naive datetime or one str where a
        collection belongs are refused."""
        with pytest.raises(error):
            store.find_records(**kwargs)

    @given(
        types=st.none() | st.sets(st.sampled_from(["contract.Noted", "contract.Opened", "x"])),
        streams=st.none() | st.sets(st.sampled_from(["Order-1", "Order-2", "order-1", "zz"])),
        flows=st.none() | st.sets(st.sampled_from(["flow-1", "flow-2", "flow-3", "nope"])),
        since=st.none()
        | st.integers(-1, 10).map(lambda m: _utc(2024, 1, 1) + timedelta(minutes=m)),
        until=st.none()
        | st.integers(-1, 10).map(lambda m: _utc(2024, 1, 1) + timedelta(minutes=m)),
        after=st.integers(0, 10),
        limit=st.integers(1, 10),
    )
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def test_find_records_agrees_with_filtering_the_log(
        self,
        store: EventStore,
        types: set[str] | None,
        streams: set[str] | None,
        flows: set[str] | None,
        since: datetime | None,
        until: datetime | None,
        after: int,
        limit: int,
    ) -> None:
        """Whatever the filters, find_records gives what filtering read_all in Python
        gives (the store is filled once; the search changes nothing)."""
        if store.head_position() == 0:
            self._fill_search(store)
        expected = [
            e.position
            for e in store.read_all()
            if (e.position or 0) > after
            and (types is None or e.type in types)
            and (streams is None or e.stream_id in streams)
            and (flows is None or e.correlation_id in flows)
            and (since is None or e.timestamp >= since)
            and (until is None or e.timestamp < until)
        ][:limit]
        found = store.find_records(
            after,
            limit,
            types=types,
            streams=streams,
            correlation_ids=flows,
            since=since,
            until=until,
        )
        assert expected == [r.position for r in found]

    def test_record_by_id(self, store: EventStore) -> None:
        """record_by_id finds an event by its id, undecoded; None for an unknown id."""
        log = self._fill_search(store)
        record = store.record_by_id(log[4].id)
        assert record is not None
        assert log[4] == store.decode(record)
        assert store.record_by_id("no-such-event") is None

    def test_list_streams(self, store: EventStore) -> None:
        """list_streams gives each stream with its version and the time of its last event,
        by id in code point order (upper case before lower case), filtered by prefix and
        paged with ``after``."""
        log = self._fill_search(store)
        last: dict[str, Envelope] = {}
        for e in log:
            assert e.stream_id is not None
            last[e.stream_id] = e
        us = timedelta(microseconds=1)
        everything = [
            (sid, e.version, (e.timestamp - _utc(1970, 1, 1)) // us)
            for sid, e in sorted(last.items())
        ]
        assert ["Order-1", "Order-2", "Pay-\u00e9", "order-1"] == [s[0] for s in everything]
        assert everything == [tuple(s) for s in store.list_streams()]
        assert everything[:2] == [tuple(s) for s in store.list_streams(prefix="Order-")]
        assert everything[1:3] == [tuple(s) for s in store.list_streams(after="Order-1", limit=2)]
        assert [] == store.list_streams(prefix="Order-", after="Order-2")
        assert [everything[2]] == [tuple(s) for s in store.list_streams(prefix="Pay-\u00e9")]
        assert 4 == store.count_streams()

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [({"limit": 0}, ValueError), ({"prefix": 3}, TypeError), ({"after": b"a"}, TypeError)],
    )
    def test_list_streams_invalid_arguments(
        self, store: EventStore, kwargs: dict[str, Any], error: type[Exception]
    ) -> None:
        """A limit below 1, or a prefix or ``after`` that is not a str, are refused."""
        with pytest.raises(error):
            store.list_streams(**kwargs)

    def test_an_empty_store_has_no_streams(self, store: EventStore) -> None:
        """A new store lists no stream and counts none."""
        assert ([], 0) == (store.list_streams(), store.count_streams())

    @pytest.mark.parametrize("kwargs", [{"after": -1}, {"limit": 0}])
    def test_read_records_invalid_arguments(
        self, store: EventStore, kwargs: dict[str, Any]
    ) -> None:
        """A negative ``after`` or a limit below 1 raise ValueError."""
        with pytest.raises(ValueError):
            store.read_records(**kwargs)

    @pytest.mark.parametrize("kwargs", [{"from_position": 0}, {"limit": -2}])
    def test_read_all_invalid_arguments(self, store: EventStore, kwargs: dict[str, Any]) -> None:
        """from_position below 1 or a negative limit raise ValueError."""
        with pytest.raises(ValueError):
            store.read_all(**kwargs)

    def test_closed_store_refuses_calls(self, make_store: StoreFactory, codec: Codec) -> None:
        """After close, every call raises StorageError, and close is idempotent."""
        store = make_store(codec)
        store.append("a", [Noted(n=1)])
        store.close()
        store.close()
        calls: list[Callable[[], object]] = [
            lambda: store.append("a", [Noted(n=2)]),
            lambda: store.read_stream("a"),
            lambda: list(store.read_all()),
            lambda: store.stream_version("a"),
            store.head_position,
        ]
        for call in calls:
            with pytest.raises(StorageError):
                call()

    # -- threads ----------------------------------------------------------------------

    def test_positions_gap_free_under_threads(self, store: EventStore) -> None:
        """Writer threads and reader threads at once: positions 1..N once each, readers
        never see a later position before an earlier one, one append's events are
        consecutive, and each stream's versions are 1..n."""
        writers, per_writer = self.writer_threads, self.appends_per_writer
        start = threading.Barrier(writers + 2)
        done = threading.Event()
        errors: list[BaseException] = []
        appended: list[list[Envelope]] = []
        seen: list[list[int]] = [[], []]

        def write(w: int) -> None:
            try:
                start.wait()
                for i in range(per_writer):
                    size = 1 + (w + i) % 3
                    stream = f"w{w}-{i % 2}"
                    events = [Noted(n=w * 1000 + i * 10 + k) for k in range(size)]
                    appended.append(store.append(stream, events))
            except BaseException as exc:
                errors.append(exc)

        def read(r: int) -> None:
            try:
                start.wait()
                last = 0
                while True:
                    finished = done.is_set()
                    for env in store.read_all(from_position=last + 1):
                        seen[r].append(env.position or 0)
                        last = env.position or 0
                    if finished:
                        return
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        readers = [threading.Thread(target=read, args=(r,)) for r in range(2)]
        for t in threads + readers:
            t.start()
        for t in threads:
            t.join()
        done.set()
        for t in readers:
            t.join()
        assert [] == errors
        total = sum(len(batch) for batch in appended)
        assert total == store.head_position()
        assert list(range(1, total + 1)) == _positions(list(store.read_all()))
        for reader_seen in seen:
            assert list(range(1, total + 1)) == reader_seen
        for batch in appended:
            first = batch[0].position or 0
            assert list(range(first, first + len(batch))) == _positions(batch)
        streams = {e.stream_id for batch in appended for e in batch}
        for stream in streams:
            versions = [e.version for e in store.read_stream(str(stream))]
            assert list(range(1, len(versions) + 1)) == versions

    def test_concurrent_appends_to_one_stream_conflict_cleanly(self, store: EventStore) -> None:
        """Threads racing on one stream with expected versions: each version is written
        once, and the losers get ConcurrencyError."""
        start = threading.Barrier(8)
        wins: list[int] = []
        conflicts: list[int] = []

        def race(t: int) -> None:
            start.wait()
            for _ in range(10):
                version = store.stream_version("hot")
                try:
                    store.append("hot", [Noted(n=t)], expected_version=version)
                    wins.append(version + 1)
                except ConcurrencyError as exc:
                    conflicts.append(exc.actual)

        threads = [threading.Thread(target=race, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert list(range(1, len(wins) + 1)) == sorted(wins)
        assert 80 == len(wins) + len(conflicts)
        assert len(wins) == store.stream_version("hot")

    # -- a random walk against a model ------------------------------------------------

    def test_state_machine(self, make_store: StoreFactory, codec: Codec) -> None:
        """Random appends (right and wrong expected versions, single and multi-stream) and
        reads of every kind agree with a plain dict model."""
        machine = _machine(make_store, codec)
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=15,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )


_STREAMS = st.sampled_from(["a", "b", "c"])
_PAYLOAD = st.lists(st.tuples(st.booleans(), st.integers(0, 99)), max_size=3)
_EXPECT = st.sampled_from(["right", "wrong", "any", "no_stream", "exists", "stale"])


def _expectation(version: int, how: str) -> tuple[ExpectedVersion, bool]:
    """An expected version for a stream at ``version``, and whether it should succeed."""
    if how == "right":
        return version, True
    if how == "wrong":
        return version + 1, False
    if how == "stale":
        return (version - 1, False) if version else (version, True)
    if how == "any":
        return ANY, True
    if how == "no_stream":
        return NO_STREAM, version == 0
    return STREAM_EXISTS, version > 0


def _machine(make_store: StoreFactory, codec: Codec) -> type[RuleBasedStateMachine]:
    at = _utc(2020, 1, 1)
    counter = itertools.count()

    def message(opened: bool, n: int) -> Any:
        if opened:
            return Opened(name=f"o{n}", at=at, amount=Decimal(n))
        return Noted(n=n)

    class StoreMachine(RuleBasedStateMachine):
        """The store against a dict of stream -> list of messages and a list of the log."""

        def __init__(self) -> None:
            super().__init__()
            self.store = make_store(codec)
            self.streams: dict[str, list[Any]] = {}
            self.log: list[tuple[str, Any]] = []
            next(counter)

        def teardown(self) -> None:
            self.store.close()

        def _expected(self, stream: str, how: str) -> tuple[ExpectedVersion, bool]:
            return _expectation(len(self.streams.get(stream, [])), how)

        def _record(self, stream: str, messages: list[Any]) -> list[tuple[int, int]]:
            out = []
            for m in messages:
                self.streams.setdefault(stream, []).append(m)
                self.log.append((stream, m))
                out.append((len(self.streams[stream]), len(self.log)))
            return out

        @rule(stream=_STREAMS, payload=_PAYLOAD, how=_EXPECT)
        def append(self, stream: str, payload: list[tuple[bool, int]], how: str) -> None:
            messages = [message(o, n) for o, n in payload]
            expected, ok = self._expected(stream, how)
            if ok:
                recorded = self.store.append(stream, messages, expected_version=expected)
                assert self._record(stream, messages) == [(e.version, e.position) for e in recorded]
            else:
                before = len(self.streams.get(stream, []))
                with pytest.raises(ConcurrencyError) as info:
                    self.store.append(stream, messages, expected_version=expected)
                assert before == info.value.actual

        @rule(
            first=_STREAMS,
            second=_STREAMS,
            payloads=st.tuples(_PAYLOAD, _PAYLOAD),
            hows=st.tuples(_EXPECT, _EXPECT),
        )
        def append_many(
            self,
            first: str,
            second: str,
            payloads: tuple[list[tuple[bool, int]], list[tuple[bool, int]]],
            hows: tuple[str, str],
        ) -> None:
            one = [message(o, n) for o, n in payloads[0]]
            two = [message(o, n) for o, n in payloads[1]]
            expected_one, ok_one = self._expected(first, hows[0])
            if first == second:
                # the second part sees the stream as the first part leaves it
                version = len(self.streams.get(first, [])) + len(one)
                expected_two, ok_two = _expectation(version, hows[1])
            else:
                expected_two, ok_two = self._expected(second, hows[1])
            parts = [(first, one, expected_one), (second, two, expected_two)]
            if ok_one and ok_two:
                result = self.store.append_many(parts)
                model = self._record(first, one) + self._record(second, two)
                assert model == [(e.version, e.position) for r in result for e in r]
            else:
                with pytest.raises(ConcurrencyError):
                    self.store.append_many(parts)

        @rule(
            stream=_STREAMS,
            from_version=st.integers(1, 8),
            to_version=st.none() | st.integers(0, 8),
            backwards=st.booleans(),
            limit=st.none() | st.integers(0, 4),
        )
        def read_stream(
            self,
            stream: str,
            from_version: int,
            to_version: int | None,
            backwards: bool,
            limit: int | None,
        ) -> None:
            events = self.streams.get(stream, [])
            stop = len(events) if to_version is None else to_version
            model = list(enumerate(events, 1))[from_version - 1 : max(stop, from_version - 1)]
            if backwards:
                model.reverse()
            if limit is not None:
                model = model[:limit]
            read = self.store.read_stream(
                stream, from_version, to_version, backwards=backwards, limit=limit
            )
            assert model == [(e.version, e.message) for e in read]

        @rule(
            from_position=st.integers(1, 30),
            limit=st.none() | st.integers(0, 10),
            types=st.none() | st.sets(st.sampled_from([Opened, Noted])),
        )
        def read_all(self, from_position: int, limit: int | None, types: set[type] | None) -> None:
            model = [
                (p, s, m)
                for p, (s, m) in enumerate(self.log, 1)
                if p >= from_position and (types is None or type(m) in types)
            ]
            if limit is not None:
                model = model[:limit]
            read = self.store.read_all(from_position, limit=limit, types=types)
            assert model == [(e.position, e.stream_id, e.message) for e in read]

        @invariant()
        def versions_match(self) -> None:
            assert len(self.log) == self.store.head_position()
            for stream in "abc":
                assert len(self.streams.get(stream, [])) == self.store.stream_version(stream)

    return StoreMachine
