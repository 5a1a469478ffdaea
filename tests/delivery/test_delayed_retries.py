"""Retry policies: the backoff curve, and delayed retries of durable subscribers as stored
rows that hold their stream, survive a restart and end in the dead-letter queue."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlite.app import App
from eventlite.clock import FakeClock
from eventlite.messages import Registry, event
from eventlite.retry import RetryPolicy

registry = Registry()


@event(registry=registry, name="retry.Charged")
class Charged:
    n: int


policies = st.builds(
    # a max_delay below initial is refused, so the cap is drawn at or above it
    lambda initial, cap, **rest: RetryPolicy(initial=initial, max_delay=max(initial, cap), **rest),
    max_attempts=st.integers(1, 5),
    initial=st.floats(0, 10, allow_nan=False),
    multiplier=st.floats(1, 5, allow_nan=False),
    cap=st.floats(0, 120, allow_nan=False),
    jitter=st.floats(0, 1, allow_nan=False),
    delayed_attempts=st.integers(0, 5),
)


@given(policies, st.integers(1, 40), st.floats(0, 1, exclude_max=True))
def test_delays_stay_within_the_jitter_bounds(policy: RetryPolicy, retry: int, r: float) -> None:
    """Delayed retry n waits initial * multiplier**(n-1), capped at max_delay, spread by at
    most the jitter fraction either way, and never more than max_delay."""
    base = min(policy.initial * policy.multiplier ** (retry - 1), policy.max_delay)
    delay = policy.retry_delay(retry, random=lambda: r)
    low = base * (1 - policy.jitter)
    high = min(base * (1 + policy.jitter), policy.max_delay)
    assert low - 1e-9 <= delay <= high + 1e-9
    assert delay == policy.delay(retry + 1, random=lambda: r)


@given(policies)
def test_delays_grow_without_jitter(policy: RetryPolicy) -> None:
    """Without jitter each delayed retry waits at least as long as the one before."""
    steady = RetryPolicy(
        initial=policy.initial, multiplier=policy.multiplier, max_delay=policy.max_delay, jitter=0
    )
    delays = [steady.retry_delay(n) for n in range(1, 12)]
    assert sorted(delays) == delays


def test_policy_validation_and_totals() -> None:
    """delayed_attempts must be an int >= 0; total_attempts adds both kinds; retries are
    numbered from 1."""
    assert 5 == RetryPolicy(max_attempts=2, delayed_attempts=3).total_attempts
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="delayed_attempts"):
            RetryPolicy(delayed_attempts=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="from 1"):
        RetryPolicy().retry_delay(0)


class Flaky:
    """A handler that fails while ``failing`` holds its event numbers."""

    def __init__(self, *failing: int) -> None:
        self.failing = set(failing)
        self.calls: list[int] = []
        self.handled: list[int] = []

    def __call__(self, event: Charged) -> None:
        self.calls.append(event.n)
        if event.n in self.failing:
            raise RuntimeError(f"cannot handle {event.n}")
        self.handled.append(event.n)


POLICY = RetryPolicy(max_attempts=2, delayed_attempts=2, initial=10.0, jitter=0.0)


@pytest.fixture
def app(tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    """An app on a file with a fake clock."""
    with App(tmp_path / "app.db", registry=registry, clock=clock) as the_app:
        yield the_app


def test_delayed_retry_holds_its_stream_and_others_flow(app: App, clock: FakeClock) -> None:
    """After its immediate attempts fail, a message waits for its delayed retry; later
    messages of its stream wait behind it, other streams are delivered; when the retry
    succeeds, the held ones follow in order."""
    flaky = Flaky(1)
    app.subscribe(Charged, flaky, durable=True, name="s", retry=POLICY)
    app.store.append("K", [Charged(1), Charged(2)])
    app.store.append("L", [Charged(3)])
    app.store.append("K", [Charged(4)])
    app.run_until_idle()
    assert ([1, 1, 3], [3]) == (flaky.calls, flaky.handled)
    status = app.subscribers()[0]
    assert (("K",), 1, 2, 4) == (
        status.blocked_keys,
        status.retrying,
        status.parked,
        status.checkpoint,
    )
    clock.advance(9.9)
    app.run_until_idle()
    assert [1, 1, 3] == flaky.calls  # not due yet
    flaky.failing.clear()
    clock.advance(0.1)
    app.run_until_idle()
    assert [3, 1, 2, 4] == flaky.handled
    assert ((), 0, 0) == (
        app.subscribers()[0].blocked_keys,
        app.subscribers()[0].retrying,
        app.subscribers()[0].parked,
    )


def test_delays_follow_the_policy_then_dead_letter(app: App, clock: FakeClock) -> None:
    """Delayed retries come after initial, then initial * multiplier seconds; when they are
    spent the message and those held behind it go to the DLQ, in order."""
    flaky = Flaky(1)
    app.subscribe(Charged, flaky, durable=True, name="s", retry=POLICY)
    app.store.append("K", [Charged(1), Charged(2)])
    app.run_until_idle()
    clock.advance(10)
    app.run_until_idle()
    assert 3 == len(flaky.calls)
    clock.advance(19.5)
    app.run_until_idle()
    assert 3 == len(flaky.calls)
    clock.advance(0.5)
    app.run_until_idle()
    assert [1, 1, 1, 1] == flaky.calls
    dead, parked = app.dlq.list("s")
    assert ("dead", 4, 1, "K") == (dead.status.value, dead.attempts, dead.position, dead.key)
    assert ("parked", 2) == (parked.status.value, parked.position)
    assert (("K",), 0, 0) == (
        app.subscribers()[0].blocked_keys,
        app.subscribers()[0].retrying,
        app.subscribers()[0].parked,
    )


def test_a_follower_that_fails_becomes_the_new_head(app: App, clock: FakeClock) -> None:
    """When a held message fails after its stream is released, it waits for its own delayed
    retry and still holds the messages behind it."""
    flaky = Flaky(1, 2)
    app.subscribe(Charged, flaky, durable=True, name="s", retry=POLICY)
    app.store.append("K", [Charged(1), Charged(2), Charged(3)])
    app.run_until_idle()
    flaky.failing.discard(1)
    clock.advance(10)
    app.run_until_idle()
    assert [1] == flaky.handled
    assert (1, 1) == (app.subscribers()[0].retrying, app.subscribers()[0].parked)
    flaky.failing.clear()
    clock.advance(10)
    app.run_until_idle()
    assert [1, 2, 3] == flaky.handled


def test_delayed_retry_survives_a_restart(tmp_path: Path) -> None:
    """A scheduled retry is a row in the file: after the app is closed and opened again,
    the retry fires when due."""
    path = tmp_path / "app.db"
    clock = FakeClock()
    with App(path, registry=registry, clock=clock) as app:
        app.subscribe(Charged, Flaky(1), durable=True, name="s", retry=POLICY)
        app.store.append("K", [Charged(1), Charged(2)])
        app.run_until_idle()
        assert 1 == app.subscribers()[0].retrying
    healed = Flaky()
    with App(path, registry=registry, clock=clock) as app:
        app.subscribe(Charged, healed, durable=True, name="s", retry=POLICY)
        app.run_until_idle()
        assert [] == healed.calls
        clock.advance(10)
        app.run_until_idle()
        assert [1, 2] == healed.handled


def test_the_scheduler_thread_fires_a_reloaded_retry_by_itself(tmp_path: Path) -> None:
    """With the real clock, a retry stored by an earlier run is fired by the scheduler
    thread when due, with no drain or poll to prompt it."""
    path = tmp_path / "app.db"
    quick = RetryPolicy(max_attempts=1, delayed_attempts=1, initial=0.2, jitter=0.0)
    with App(path, registry=registry) as app:
        app.subscribe(Charged, Flaky(1), durable=True, name="s", retry=quick)
        app.store.append("K", [Charged(1)])
        app.run_until_idle()
        assert 1 == app.subscribers()[0].retrying
    done = threading.Event()
    with App(path, registry=registry, poll_interval=60.0) as app:
        app.subscribe(Charged, lambda e: done.set(), durable=True, name="s", retry=quick)
        assert done.wait(10)


def test_without_delayed_attempts_a_failure_goes_straight_to_the_dlq(app: App) -> None:
    """max_attempts immediate attempts, then the dead-letter queue: no delayed retry."""
    flaky = Flaky(1)
    app.subscribe(Charged, flaky, durable=True, name="s", retry=RetryPolicy(max_attempts=3))
    app.store.append("K", [Charged(1)])
    app.run_until_idle()
    assert [1, 1, 1] == flaky.calls
    (dead,) = app.dlq.list("s")
    assert (3, "RuntimeError", "cannot handle 1") == (
        dead.attempts,
        dead.error_type,
        dead.error_message,
    )
