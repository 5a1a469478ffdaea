"""Segments: a durable subscriber split by a hash of the stream id into N parts, each with
its own checkpoint and lease. Routing is stable and total; several processes (here: apps
with their own owners on one file) share the segments fairly, each stream keeps its
order, no unit-of-work effect happens twice, a stopped process's segments are taken over,
and a changed number of segments is refused."""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlite import App, Registry, event
from eventlite.clock import FakeClock
from eventlite.relay._segments import parse_segment, segment_name, segment_of
from eventlite.relay._tenure import Share, lease_name
from eventlite.unit_of_work import UnitOfWork

from ..cli._run import run
from ..strategies import storable_stream_ids, stream_ids

registry = Registry()


@event(registry=registry, name="segments.Ticked")
class Ticked:
    stream: str
    n: int


@event(registry=registry, name="segments.Noted")
class Noted:
    stream: str
    n: int
    by: str


STREAMS = [f"s-{i}" for i in range(12)]


def _wait(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Worker:
    """One "process": an app on the shared file running the segmented subscriber ``noter``
    (a unit-of-work handler that appends one Noted per Ticked)."""

    def __init__(self, path: Path, tag: str, segments: int = 4, ttl: float = 0.6) -> None:
        self.tag = tag
        self.handled: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.app = App(path, registry=registry, lease_seconds=ttl)

        def note(e: Ticked, uow: UnitOfWork) -> None:
            with self.lock:
                self.handled.append((e.stream, e.n))
            uow.append(f"notes-{e.stream}", [Noted(e.stream, e.n, tag)])

        self.app.subscribe(
            Ticked, note, durable=True, name="noter", start="beginning", segments=segments
        )

    @property
    def owner(self) -> str:
        """This app's name in the leases."""
        return self.app.relay.owner

    def close(self) -> None:
        """Stop it (its leases are released)."""
        self.app.close()


def _held(path: Path, segments: int = 4) -> dict[int, str | None]:
    """Who holds each segment's lease (None: nobody, or expired and not taken)."""
    with App(path, registry=registry) as app:
        leases = app.storage.leases
        out: dict[int, str | None] = {}
        for i in range(segments):
            lease = leases.holder(lease_name(segment_name("noter", i, segments)))
            out[i] = None if lease is None or lease.expired(time.time()) else lease.owner
        return out


def _notes(path: Path) -> list[tuple[str, int]]:
    """The committed effects, in log order."""
    with App(path, registry=registry) as app:
        return [
            (e.message.stream, e.message.n)
            for e in app.store.read_all()
            if isinstance(e.message, Noted)
        ]


def _append(app: App, first: int, last: int) -> list[tuple[str, int]]:
    appended = []
    for n in range(first, last):
        stream = STREAMS[n % len(STREAMS)]
        app.store.append(stream, [Ticked(stream, n)])
        appended.append((stream, n))
    return appended


def _in_stream_order(notes: list[tuple[str, int]]) -> bool:
    last: dict[str, int] = {}
    for stream, n in notes:
        if n <= last.get(stream, -1):
            return False
        last[stream] = n
    return True


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A shared file, made before the workers start."""
    shared = tmp_path / "shared.db"
    App(shared, registry=registry).close()
    return shared


@pytest.fixture
def workers(path: Path) -> Iterator[list[Worker]]:
    """Apps on the shared file, closed after the test."""
    made: list[Worker] = []
    yield made
    for worker in made:
        worker.close()


# -- routing ----------------------------------------------------------------------------


@given(stream_ids, st.integers(min_value=1, max_value=64))
def test_routing_is_total_and_stable(stream_id: str, segments: int) -> None:
    """Every stream id has exactly one segment in range, the same on every call, and it
    is crc32 of its UTF-8 bytes modulo N (the same on every machine)."""
    segment = segment_of(stream_id, segments)
    assert 0 <= segment < segments
    assert segment == segment_of(stream_id, segments)
    expected = zlib.crc32(stream_id.encode("utf-8", "surrogatepass")) % segments
    assert expected == segment


@given(st.one_of(st.none(), st.integers(), st.binary()), st.integers(min_value=1, max_value=64))
def test_events_without_a_stream_id_go_to_segment_zero(stream_id: object, segments: int) -> None:
    """An event without a stream id (or a row whose id is not text) is segment 0's."""
    assert 0 == segment_of(stream_id, segments)


@given(
    st.text(min_size=1).filter(lambda s: "#" not in s),
    st.integers(min_value=2, max_value=1000).flatmap(
        lambda n: st.tuples(st.integers(min_value=0, max_value=n - 1), st.just(n))
    ),
)
def test_segment_names_round_trip(name: str, where: tuple[int, int]) -> None:
    """A segment's stored name gives back the subscriber, the index and N."""
    index, segments = where
    assert (name, index, segments) == parse_segment(segment_name(name, index, segments))


def test_a_name_that_is_not_a_segment_parses_to_none() -> None:
    """Plain names, names with an index out of range or N below 2, and names with more
    after N or digits that are not ASCII, are no segment."""
    names = ("noter", "noter#1", "noter#4/4", "noter#0/1", "noter#1/3\n", "noter#\u0661/3")
    assert [None] * len(names) == [parse_segment(n) for n in names]


@settings(max_examples=10, deadline=None)
@given(
    st.lists(storable_stream_ids, min_size=1, max_size=30),
    st.integers(min_value=2, max_value=5),
)
def test_every_event_reaches_exactly_its_stream_s_segment(
    tmp_path_factory: pytest.TempPathFactory, streams: list[str], segments: int
) -> None:
    """Whatever the stream ids and N, each event is handled once, by the segment
    segment_of gives its stream, and each stream's events in order."""
    path = tmp_path_factory.mktemp("prop") / "p.db"
    seen: list[tuple[str, int, int]] = []
    with App(path, registry=registry, lease_seconds=None) as app:
        threads = {
            f"eventlite-relay-{segment_name('noter', i, segments)}": i for i in range(segments)
        }

        def note(e: Ticked) -> None:
            seen.append((e.stream, e.n, threads[threading.current_thread().name]))

        sub = app.subscribe(
            Ticked, note, durable=True, name="noter", start="beginning", segments=segments
        )
        assert segments == sub.segments
        for n, stream in enumerate(streams):
            app.store.append(stream, [Ticked(stream, n)])
        app.run_until_idle()
    assert sorted((stream, n) for n, stream in enumerate(streams)) == sorted(
        (stream, n) for stream, n, _ in seen
    )
    assert all(segment_of(stream, segments) == i for stream, _, i in seen)
    assert _in_stream_order([(stream, n) for stream, n, _ in seen])


# -- the fair share ---------------------------------------------------------------------


def test_the_share_is_the_segments_over_the_live_owners(path: Path) -> None:
    """A process may hold ceil(N / live owners) segments; an owner whose membership has
    expired no longer counts (and its membership is released), one that closed neither."""
    with App(path, registry=registry) as app:
        leases = app.storage.leases
        leases.clock = clock = FakeClock()
        mine = Share(leases, "noter", 4, "host-x:1:a", ttl=10.0)
        theirs = Share(leases, "noter", 4, "host-x:2:b", ttl=10.0)
        third = Share(leases, "noter", 4, "host-x:3:c", ttl=10.0)
        assert 4 == mine.quota()
        theirs.quota()
        third.quota()

        def quota() -> int:
            mine.refresh_at = 0.0  # answer from the store, not from memory
            return mine.quota()

        assert 2 == quota()  # ceil(4 / 3)
        clock.advance(6)
        third.refresh_at = 0.0
        third.quota()  # renews its membership; the second's expires at 10
        clock.advance(5)
        assert 2 == quota()  # ceil(4 / 2)
        assert None is leases.holder(theirs.member)  # forgotten, so scans stay short
        third.close()
        assert 4 == quota()
        assert mine.reserve(3) and mine.reserve(0) and mine.reserve(1) and mine.reserve(2)
        theirs.refresh_at = 0.0
        theirs.quota()  # another process joins: the highest-numbered two are extras
        assert 2 == quota()
        assert [False, False, True, True] == [mine.extra(i) for i in range(4)]


# -- one process ------------------------------------------------------------------------


def test_one_app_delivers_every_event_once_in_stream_order(
    path: Path, workers: list[Worker]
) -> None:
    """One app runs all four segments: every event is handled once, each stream in order,
    and each segment has its own checkpoint and status."""
    worker = Worker(path, "only")
    workers.append(worker)
    appended = _append(worker.app, 0, 120)
    worker.app.run_until_idle()
    notes = _notes(path)
    assert sorted(appended) == sorted(notes)
    assert _in_stream_order(notes)
    statuses = worker.app.subscribers()
    assert [("noter", i, 4, worker.owner, 0) for i in range(4)] == [
        (s.name, s.segment, s.segments, s.owner, s.lag) for s in statuses
    ]
    assert all(s.lease_expires_at is not None for s in statuses)
    assert [f"noter#{i}/4" for i in range(4)] == [s.key for s in statuses]
    assert ("noter",) == worker.app.relay.names
    assert [("noter", Ticked)] == worker.app.durable_subscriptions()


def test_the_subscribers_command_shows_a_row_per_segment(path: Path, workers: list[Worker]) -> None:
    """``subscribers`` lists each segment with its owner, lease expiry and lag."""
    worker = Worker(path, "only", segments=3)
    workers.append(worker)
    _append(worker.app, 0, 30)
    worker.app.run_until_idle()
    result = run("--db", path, "subscribers")
    assert ["SUBSCRIBER", "SEGMENT", "OWNER", "LEASE", "UNTIL", "CHECKPOINT", "LAG"] == (
        result.lines[0].split()[:7]
    )
    rows = [line.split() for line in result.lines[1:]]
    assert [["noter", str(i), worker.owner] for i in range(3)] == [r[:3] for r in rows]
    assert ["0", "0", "0"] == [r[5] for r in rows]
    lines = run("--db", path, "subscribers", "noter", "--json").lines
    assert [(i, worker.owner, 0) for i in range(3)] == [
        (row["segment"], row["owner"], row["lag"]) for row in map(json.loads, lines)
    ]


# -- several processes ------------------------------------------------------------------


def test_two_apps_share_the_segments_and_every_event_is_handled_once(
    path: Path, workers: list[Worker]
) -> None:
    """Two apps (two owners) on one file with segments=4 end up with two segments each;
    every event's effect is committed once, and each stream stays in order."""
    first = Worker(path, "first")
    workers.append(first)
    _wait(lambda: set(_held(path).values()) == {first.owner}, "the first app to hold all")
    second = Worker(path, "second")
    workers.append(second)

    def split() -> bool:
        held = list(_held(path).values())
        return held.count(first.owner) == 2 and held.count(second.owner) == 2

    _wait(split, "two segments each")
    appended = _append(first.app, 0, 200)
    _wait(lambda: len(_notes(path)) >= len(appended), "every event's effect")
    notes = _notes(path)
    assert sorted(appended) == sorted(notes)
    assert _in_stream_order(notes)
    assert first.handled and second.handled
    by_first = {s for s, _ in first.handled}
    by_second = {s for s, _ in second.handled}
    assert set() == by_first & by_second  # a stream is in one segment, held by one app


def test_a_stopped_app_s_segments_are_taken_over(path: Path, workers: list[Worker]) -> None:
    """When one of two apps closes, the other takes every segment over and delivers what
    follows; no effect is committed twice and each stream stays in order."""
    first = Worker(path, "first")
    second = Worker(path, "second")
    workers += [first, second]

    def split() -> bool:
        return set(_held(path).values()) == {first.owner, second.owner}

    _wait(split, "both apps to hold segments")
    appended = _append(first.app, 0, 60)
    _wait(lambda: len(_notes(path)) >= len(appended), "the first events' effects")
    second.close()
    _wait(lambda: set(_held(path).values()) == {first.owner}, "the takeover")
    appended += _append(first.app, 60, 120)
    _wait(lambda: len(_notes(path)) >= len(appended), "the later events' effects")
    notes = _notes(path)
    assert sorted(appended) == sorted(notes)
    assert _in_stream_order(notes)


# -- changing N -------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after"), [(4, 2), (1, 3), (3, 1)])
def test_a_changed_number_of_segments_is_refused(path: Path, before: int, after: int) -> None:
    """A subscriber whose checkpoints were made with N segments cannot be added with
    another N: a ValueError names it and both numbers, and nothing is delivered."""
    with App(path, registry=registry) as app:
        app.subscribe(
            Ticked, lambda e: None, durable=True, name="noter", start="end", segments=before
        )
    with App(path, registry=registry) as app:
        with pytest.raises(ValueError) as caught:
            app.subscribe(
                Ticked, lambda e: None, durable=True, name="noter", start="end", segments=after
            )
        assert [] == list(app.relay.threads())
    message = str(caught.value)
    assert "'noter'" in message
    assert f"stored with segments={before}" in message
    assert f"added with segments={after}" in message


def check_a_simultaneous_start_with_another_n_is_refused(
    make: Callable[[], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two apps on one storage add the same subscriber at the same moment, one with
    segments=2 and one with segments=3: exactly one is added, the other is refused (both
    would deliver every event twice). The window between reading the stored checkpoints
    and writing new ones is widened to make the race certain."""
    from eventlite.relay._segments import stored_segments as real

    def slow(name: str, stored: Any) -> set[int]:
        found = real(name, stored)
        time.sleep(0.3)
        return found

    monkeypatch.setattr("eventlite.relay._relay.stored_segments", slow)
    apps = [make(), make()]
    start = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def add(app: App, segments: int) -> None:
        start.wait()
        try:
            app.subscribe(
                Ticked, lambda e: None, durable=True, name="noter", start="end", segments=segments
            )
            outcomes[segments] = "added"
        except ValueError as exc:
            outcomes[segments] = str(exc)

    threads = [
        threading.Thread(target=add, args=(app, n)) for app, n in zip(apps, (2, 3), strict=True)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        for app in apps:
            app.close()
    assert 2 == len(outcomes), outcomes
    added = [n for n, what in outcomes.items() if what == "added"]
    assert 1 == len(added), outcomes
    [refusal] = [what for what in outcomes.values() if what != "added"]
    assert f"stored with segments={added[0]}" in refusal


def test_a_simultaneous_start_with_another_n_is_refused(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """:func:`check_a_simultaneous_start_with_another_n_is_refused` on one SQLite file."""
    check_a_simultaneous_start_with_another_n_is_refused(
        lambda: App(path, registry=registry), monkeypatch
    )


def test_segments_must_be_a_positive_int(path: Path) -> None:
    """segments=0, a bool, or segments on a bus subscriber are refused."""
    with App(path, registry=registry) as app:
        bad: Any
        for bad in (0, True, 2.0):
            with pytest.raises(ValueError, match="segments"):
                app.subscribe(
                    Ticked, lambda e: None, durable=True, name="noter", start="end", segments=bad
                )
        with pytest.raises(ValueError, match="segments= is for durable"):
            app.subscribe(Ticked, lambda e: None, segments=2)  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="'#'"):
            app.subscribe(Ticked, lambda e: None, durable=True, name="a#b", segments=2)


# -- dead letters -----------------------------------------------------------------------


def test_a_segment_s_dead_letter_is_retried_from_the_cli(path: Path) -> None:
    """A failure in one segment dead-letters under that segment's name and holds only its
    stream; ``dlq retry`` releases it and the segment delivers it again."""
    broken = {"s-3"}
    handled: list[tuple[str, int]] = []
    app = App(path, registry=registry)
    try:

        def note(e: Ticked) -> None:
            if e.stream in broken:
                raise RuntimeError(f"broken {e.stream}")
            handled.append((e.stream, e.n))

        app.subscribe(Ticked, note, durable=True, name="noter", start="beginning", segments=4)
        appended = _append(app, 0, 24)
        app.run_until_idle()
        (letter,) = [d for d in app.dlq.list(None, limit=None) if d.status.value == "dead"]
        assert segment_name("noter", segment_of("s-3", 4), 4) == letter.source
        assert "s-3" == letter.key
        assert sorted(a for a in appended if a[0] != "s-3") == sorted(handled)
        broken.clear()
        result = run("--db", path, "dlq", "retry", str(letter.id))
        assert 0 == result.code, result.err
        assert "segment" in result.out
        app.run_until_idle()
        _wait(lambda: len(handled) == len(appended), "the retried stream")
        assert [n for s, n in handled if s == "s-3"] == [3, 15]
        assert 0 == app.dlq.count(None)
    finally:
        app.close()


def test_retry_all_of_a_split_subscriber_releases_every_segment(path: Path) -> None:
    """``dlq retry-all NAME`` of a split subscriber marks the dead letters of all its
    segments for retry, and says which segment redelivers each."""
    broken = True
    handled: list[tuple[str, int]] = []
    app = App(path, registry=registry)
    try:

        def note(e: Ticked) -> None:
            if broken:
                raise RuntimeError("broken")
            handled.append((e.stream, e.n))

        app.subscribe(Ticked, note, durable=True, name="noter", start="beginning", segments=4)
        appended = _append(app, 0, 24)
        app.run_until_idle()
        sources = {d.source for d in app.dlq.list(None, limit=None)}
        assert {segment_name("noter", i, 4) for i in range(4)} == sources
        broken = False
        result = run("--db", path, "dlq", "retry-all", "noter")
        assert 0 == result.code, result.err
        assert 4 == result.out.count("segment")
        app.run_until_idle()
        _wait(lambda: len(handled) == len(appended), "every retried stream")
        assert sorted(appended) == sorted(handled)
        assert 0 == app.dlq.count(None)
    finally:
        app.close()
