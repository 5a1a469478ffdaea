"""The bus under threads: registration changing while other threads send messages."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from eventlite.bus import MessageBus, Subscription
from eventlite.envelope import Envelope
from eventlite.exceptions import HandlerAlreadyRegistered
from eventlite.messages import Registry, command, event

registry = Registry()


@event(registry=registry)
class Pinged:
    thread: int
    n: int


@command(registry=registry)
class Ping:
    n: int


class Counter:
    """Counts calls, safely across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def __call__(self, message: Any) -> None:
        with self._lock:
            self.value += 1


def run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    """Run each target in its own thread, started together; return what they raised."""
    start = threading.Barrier(len(targets))
    raised: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            try:
                target()
            except BaseException as exc:
                raised.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return raised


def test_subscribing_and_unsubscribing_during_a_publish_storm_loses_nothing() -> None:
    """While publisher threads publish and other threads keep subscribing and
    unsubscribing, subscribers that stay registered get every event, and nothing raises."""
    publishers, per_publisher = 4, 1500
    stable_sync, stable_background = Counter(), Counter()
    errors: list[tuple[Envelope, str, BaseException]] = []
    stop = threading.Event()

    with MessageBus(registry, workers=3, queue_size=64) as bus:
        bus.add_error_hook(lambda env, name, exc: errors.append((env, name, exc)))
        bus.subscribe(Pinged, stable_sync)
        bus.subscribe(Pinged, stable_background, background=True)

        def publisher(thread: int) -> Callable[[], None]:
            def run() -> None:
                for n in range(per_publisher):
                    bus.publish(Pinged(thread, n), key=thread)

            return run

        def churn(seed: int) -> Callable[[], None]:
            def run() -> None:
                rng = random.Random(seed)
                mine: list[Subscription] = []
                while not stop.is_set():
                    if mine and rng.random() < 0.5:
                        mine.pop(rng.randrange(len(mine))).unsubscribe()
                    else:
                        mine.append(bus.subscribe(Pinged, Counter(), background=rng.random() < 0.5))
                for sub in mine:
                    sub.unsubscribe()

            return run

        def publishers_then_stop() -> None:
            raised = run_threads([publisher(t) for t in range(publishers)])
            stop.set()
            if raised:
                raise raised[0]

        raised = run_threads([publishers_then_stop, churn(1), churn(2)])
        assert True is bus.drain(timeout=30)

    assert [] == raised
    assert [] == errors
    total = publishers * per_publisher
    assert (total, total) == (stable_sync.value, stable_background.value)


def test_only_one_of_many_concurrent_registrations_wins() -> None:
    """Threads racing to register a handler for one command: exactly one succeeds, every
    other gets HandlerAlreadyRegistered, and the winner handles the command."""
    bus = MessageBus(registry)
    winners: list[int] = []

    def register(i: int) -> Callable[[], None]:
        def handle(command: Ping) -> int:
            return i

        def run() -> None:
            bus.register(Ping, handle)
            winners.append(i)

        return run

    raised = run_threads([register(i) for i in range(8)])
    assert 1 == len(winners)
    assert [HandlerAlreadyRegistered] * 7 == [type(exc) for exc in raised]
    assert winners[0] == bus.dispatch(Ping(0))


def test_dispatch_from_many_threads_while_handlers_are_registered() -> None:
    """Dispatching from several threads while other command types are being registered
    returns every result and raises nothing (dispatch takes no lock)."""
    bus = MessageBus(registry)
    bus.register(Ping, lambda c: c.n * 2)
    results: list[list[int]] = [[] for _ in range(4)]
    extra_types = [type(f"Extra{i}", (), {}) for i in range(200)]

    def dispatcher(i: int) -> Callable[[], None]:
        def run() -> None:
            results[i].extend(bus.dispatch(Ping(n)) for n in range(2000))

        return run

    def registrar() -> None:
        for cls in extra_types:
            bus.register(cls, lambda c: None)

    raised = run_threads([*(dispatcher(i) for i in range(4)), registrar])
    assert [] == raised
    assert [[n * 2 for n in range(2000)]] * 4 == results
    assert [None] * 200 == [bus.dispatch(cls()) for cls in extra_types]
