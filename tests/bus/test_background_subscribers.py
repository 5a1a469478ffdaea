"""Background subscribers: per-key order, parallelism, back-pressure, drain, close, failures."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlite.bus import MessageBus
from eventlite.envelope import Envelope, current_envelope
from eventlite.exceptions import BusClosed
from eventlite.messages import Registry, command, event

registry = Registry()


@event(registry=registry)
class Clocked:
    key: Any
    n: int


@event(registry=registry)
class Tick(Clocked):
    pass


@event(registry=registry)
class Tock:
    n: int


@command(registry=registry)
class Start:
    n: int


@command(registry=registry)
class Finish:
    n: int


class Failure(Exception):
    """An exception raised on purpose by a test handler."""


class Errors:
    """A thread-safe error hook that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Envelope, str, BaseException]] = []

    def __call__(self, envelope: Envelope, name: str, exc: BaseException) -> None:
        self.calls.append((envelope, name, exc))


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until ``predicate()`` holds; fail the test if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        pause.wait(0.001)


def test_workers_start_with_the_first_background_subscriber() -> None:
    """A bus without background subscribers runs no threads; the first one starts the pool."""
    with MessageBus(registry, workers=3) as bus:
        bus.subscribe(Tick, lambda e: None)
        assert [] == bus.worker_stats()
        bus.subscribe(Tick, lambda e: None, background=True)
        assert 3 == len(bus.worker_stats())


@settings(max_examples=40, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.booleans()), max_size=80
    ),
    workers=st.integers(1, 4),
    queue_size=st.integers(1, 8),
)
def test_each_background_subscriber_sees_each_keys_events_in_publish_order(
    items: list[tuple[str, bool]], workers: int, queue_size: int
) -> None:
    """Whatever the keys, pool and queue sizes, every background subscriber receives every
    event once, and the events of one key in the order they were published, whether the
    key was given to publish() or came from a stored event's stream id."""
    received: dict[str, list[tuple[str, int]]] = {"tick": [], "base": []}
    expected: dict[str, list[int]] = defaultdict(list)
    versions: dict[str, int] = defaultdict(int)
    with MessageBus(registry, workers=workers, queue_size=queue_size) as bus:
        bus.subscribe(Tick, lambda e: received["tick"].append((e.key, e.n)), background=True)
        bus.subscribe(Clocked, lambda e: received["base"].append((e.key, e.n)), background=True)
        for n, (key, stored) in enumerate(items):
            expected[key].append(n)
            if stored:
                versions[key] += 1
                bus.publish_envelopes(Envelope(Tick(key, n), stream_id=key, version=versions[key]))
            else:
                bus.publish(Tick(key, n), key=key)
        assert True is bus.drain(timeout=10)
    for name, pairs in received.items():
        by_key: dict[str, list[int]] = defaultdict(list)
        for key, n in pairs:
            by_key[key].append(n)
        assert dict(expected) == dict(by_key), name


def test_events_with_different_keys_are_handled_at_the_same_time() -> None:
    """Two keys on two workers run in parallel: both handlers reach a two-party barrier,
    which they could not if one waited for the other."""
    barrier = threading.Barrier(2, timeout=5)
    met: list[int] = []
    errors = Errors()

    def meet(e: Tick) -> None:
        barrier.wait()
        met.append(e.n)

    # keys are sharded by hash(key) % workers: hash(0) == 0 and hash(1) == 1
    with MessageBus(registry, workers=2, on_error=errors) as bus:
        bus.subscribe(Tick, meet, background=True)
        bus.publish(Tick(0, 0), key=0)
        bus.publish(Tick(1, 1), key=1)
        assert True is bus.drain(timeout=10)
    assert [] == errors.calls
    assert [0, 1] == sorted(met)


def test_events_without_a_key_are_spread_over_the_workers() -> None:
    """With no ordering key, consecutive events go to different workers."""
    threads: set[str] = set()
    with MessageBus(registry, workers=2) as bus:
        bus.subscribe(Tock, lambda e: threads.add(threading.current_thread().name), background=True)
        bus.publish(*(Tock(n) for n in range(4)))
        assert True is bus.drain(timeout=10)
    assert {"eventlite-bus-worker-0", "eventlite-bus-worker-1"} == threads


def test_a_full_queue_blocks_publish_until_the_worker_makes_room() -> None:
    """With the worker busy and its queue full, publish() waits (back-pressure) instead of
    queueing more, and carries on once the worker takes the queued work; the queue never
    holds more than queue_size deliveries."""
    gate = threading.Event()
    started = threading.Event()
    handled: list[int] = []
    queued_seen: list[int] = []
    returned: list[int] = []

    with MessageBus(registry, workers=1, queue_size=3) as bus:

        def slow(e: Tick) -> None:
            started.set()
            gate.wait(5)
            queued_seen.append(bus.worker_stats()[0].queued)
            handled.append(e.n)

        bus.subscribe(Tick, slow, background=True)
        bus.publish(Tick("k", 0), key="k")
        assert True is started.wait(5)  # the worker holds event 0 and waits at the gate

        def publisher() -> None:
            for n in range(1, 40):
                bus.publish(Tick("k", n), key="k")
                returned.append(n)

        thread = threading.Thread(target=publisher)
        thread.start()
        try:
            wait_until(lambda: bus.worker_stats()[0].blocked_publishers == 1)
            blocked_at = (list(returned), bus.worker_stats()[0].queued)
        finally:
            gate.set()
        thread.join(10)
        assert True is bus.drain(timeout=10)

    assert ([1, 2, 3], 3) == blocked_at
    assert list(range(1, 40)) == returned
    assert list(range(40)) == handled
    assert 3 >= max(queued_seen)


def test_handlers_on_workers_never_wait_for_a_full_queue() -> None:
    """A background handler that publishes more than its own worker's queue holds is let
    through rather than waiting for itself (which would deadlock)."""
    done: list[int] = []
    with MessageBus(registry, workers=1, queue_size=1) as bus:

        def fan_out(e: Tick) -> None:
            for n in range(5):
                bus.publish(Tock(n), key="k")

        bus.subscribe(Tick, fan_out, background=True)
        bus.subscribe(Tock, lambda e: done.append(e.n), background=True)
        bus.publish(Tick("k", 0), key="k")
        assert True is bus.drain(timeout=10)
    assert [0, 1, 2, 3, 4] == done


def test_drain_returns_only_when_all_work_is_done() -> None:
    """drain() returns False while work is still held up, and True once everything queued,
    including what the handlers published meanwhile on other workers, has been handled."""
    gate = threading.Event()
    ticks: list[int] = []
    tocks: list[int] = []
    with MessageBus(registry, workers=2) as bus:

        def tick(e: Tick) -> None:
            gate.wait(5)
            ticks.append(e.n)
            bus.publish(Tock(e.n), key=1)  # key 1: the other worker

        bus.subscribe(Tick, tick, background=True)
        bus.subscribe(Tock, lambda e: tocks.append(e.n), background=True)
        bus.publish(*(Tick(0, n) for n in range(5)), key=0)
        try:
            assert False is bus.drain(timeout=0.05)
        finally:
            gate.set()
        assert True is bus.drain()
        assert ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4]) == (ticks, tocks)


def test_close_finishes_in_flight_and_queued_work_then_refuses_messages() -> None:
    """close() refuses new events at once, waits for the running and the queued deliveries,
    stops the worker threads, and from then on publish() raises BusClosed."""
    gate = threading.Event()
    started = threading.Event()
    handled: list[int] = []
    threads: list[threading.Thread] = []
    bus = MessageBus(registry, workers=1)

    def slow(e: Tick) -> None:
        threads.append(threading.current_thread())
        started.set()
        gate.wait(5)
        handled.append(e.n)

    bus.subscribe(Tick, slow, background=True)
    bus.publish(Tick("k", 0), key="k")
    assert True is started.wait(5)
    bus.publish(Tick("k", 1), Tick("k", 2), key="k")

    outcome: dict[str, Any] = {}
    closer = threading.Thread(
        target=lambda: outcome.update(closed=bus.close(), handled=list(handled))
    )
    closer.start()
    try:
        wait_until(lambda: bus.closed)
        with pytest.raises(BusClosed):
            bus.publish(Tick("k", 3), key="k")
        assert [] == handled
    finally:
        gate.set()
    closer.join(10)

    assert {"closed": True, "handled": [0, 1, 2]} == outcome
    assert False is threads[0].is_alive()
    with pytest.raises(BusClosed, match=r"cannot publish Tick: this MessageBus was closed"):
        bus.publish(Tick("k", 4), key="k")


def test_while_closing_background_handlers_may_still_send_messages() -> None:
    """Work accepted before close() finishes even when it publishes and dispatches more."""
    gate = threading.Event()
    finished: list[int] = []
    tocks: list[int] = []
    bus = MessageBus(registry, workers=2)
    bus.register(Finish, lambda c: finished.append(c.n))

    def tick(e: Tick) -> None:
        gate.wait(5)
        bus.dispatch(Finish(e.n))
        bus.publish(Tock(e.n), key=1)

    bus.subscribe(Tick, tick, background=True)
    bus.subscribe(Tock, lambda e: tocks.append(e.n), background=True)
    bus.publish(Tick(0, 7), key=0)
    closer = threading.Thread(target=bus.close)
    closer.start()
    try:
        wait_until(lambda: bus.closed)
    finally:
        gate.set()
    closer.join(10)
    assert ([7], [7]) == (finished, tocks)


def test_a_failing_background_subscriber_is_reported_and_its_worker_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A background subscriber's exception reaches the error hook with the envelope, the
    subscriber's name and the exception, is logged, and the same worker thread goes on
    to the next event."""
    errors = Errors()
    boom = Failure("first one fails")
    calls: list[tuple[int, str]] = []
    envelopes: list[Envelope | None] = []

    def picky(e: Tick) -> None:
        calls.append((e.n, threading.current_thread().name))
        envelopes.append(current_envelope())
        if e.n == 0:
            raise boom

    with (
        caplog.at_level(logging.ERROR, logger="eventlite.bus"),
        MessageBus(registry, workers=1, on_error=errors) as bus,
    ):
        bus.subscribe(Tick, picky, background=True, name="picky")
        bus.publish(Tick("k", 0), Tick("k", 1), key="k")
        assert True is bus.drain(timeout=10)

    assert [(envelopes[0], "picky", boom)] == errors.calls
    assert [(0, "eventlite-bus-worker-0"), (1, "eventlite-bus-worker-0")] == calls
    assert ["picky"] == [r.getMessage().split()[1] for r in caplog.records]


def test_drain_or_close_from_a_background_handler_is_refused() -> None:
    """A background handler that calls drain() or close() gets a RuntimeError (reported to
    the error hook) instead of waiting for itself forever."""
    errors = Errors()
    with MessageBus(registry, workers=1, on_error=errors) as bus:
        bus.subscribe(Tick, lambda e: bus.drain(), background=True, name="drainer")
        bus.subscribe(Tick, lambda e: bus.close(), background=True, name="closer")
        bus.publish(Tick("k", 0), key="k")
        assert True is bus.drain(timeout=10)
    assert [("drainer", RuntimeError), ("closer", RuntimeError)] == [
        (name, type(exc)) for _, name, exc in errors.calls
    ]


def test_unsubscribing_skips_background_deliveries_still_queued() -> None:
    """After unsubscribe(), deliveries already queued for that subscriber are skipped."""
    gate = threading.Event()
    started = threading.Event()
    slow_seen: list[int] = []
    other_seen: list[int] = []

    def slow(e: Tick) -> None:
        started.set()
        gate.wait(5)
        slow_seen.append(e.n)

    with MessageBus(registry, workers=1) as bus:
        bus.subscribe(Tick, slow, background=True)
        other = bus.subscribe(Tick, lambda e: other_seen.append(e.n), background=True)
        bus.publish(Tick("k", 0), key="k")
        assert True is started.wait(5)
        bus.publish(Tick("k", 1), key="k")
        try:
            other.unsubscribe()
        finally:
            gate.set()
        assert True is bus.drain(timeout=10)
    assert ([0, 1], []) == (slow_seen, other_seen)


def test_correlation_flows_through_background_workers() -> None:
    """Command -> event handled on a worker -> command dispatched there: the envelope made
    in the publisher's thread is current on the worker, so all three share the first
    correlation id and each causation id is its parent's id."""
    envelopes: dict[str, Envelope] = {}
    with MessageBus(registry, workers=2) as bus:

        @bus.handles(Start)
        def start(c: Start) -> None:
            envelopes["start"] = current_envelope()  # type: ignore[assignment]
            bus.publish(Tock(c.n), key="flow")

        @bus.subscribes(Tock, background=True)
        def on_tock(e: Tock) -> None:
            envelopes["tock"] = current_envelope()  # type: ignore[assignment]
            bus.dispatch(Finish(e.n))

        @bus.handles(Finish)
        def finish(c: Finish) -> None:
            envelopes["finish"] = current_envelope()  # type: ignore[assignment]

        bus.dispatch(Start(1))
        assert True is bus.drain(timeout=10)

    start_env, tock_env, finish_env = envelopes["start"], envelopes["tock"], envelopes["finish"]
    assert [start_env.id] * 3 == [
        start_env.correlation_id,
        tock_env.correlation_id,
        finish_env.correlation_id,
    ]
    assert (start_env.id, tock_env.id) == (tock_env.causation_id, finish_env.causation_id)
    assert "flow" == tock_env.key
