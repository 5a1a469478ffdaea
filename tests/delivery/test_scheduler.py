"""The scheduler thread: callbacks at clock times, fired by the thread or by tick()."""

from __future__ import annotations

import threading

import pytest

from eventlite.clock import FakeClock, SystemClock
from eventlite.scheduler import Scheduler


def test_tick_fires_what_is_due_in_time_order() -> None:
    """tick() runs the callbacks whose time has come, earliest first, and leaves the rest."""
    clock = FakeClock()
    scheduler = Scheduler(clock, thread=False)
    fired: list[str] = []
    try:
        scheduler.call_at(clock.now() + 20, lambda: fired.append("b"))
        scheduler.call_at(clock.now() + 10, lambda: fired.append("a"))
        scheduler.call_at(clock.now() + 30, lambda: fired.append("c"))
        assert (0, 3, clock.now() + 10) == (
            scheduler.tick(),
            scheduler.pending,
            scheduler.next_due(),
        )
        clock.advance(25)
        assert (2, ["a", "b"]) == (scheduler.tick(), fired)
    finally:
        scheduler.close()
    assert (0, None) == (scheduler.pending, scheduler.next_due())


def test_the_thread_fires_at_the_time() -> None:
    """With the real clock the thread calls back once the time has come, by itself."""
    scheduler = Scheduler(SystemClock())
    done = threading.Event()
    try:
        scheduler.call_at(SystemClock().now() + 0.05, done.set)
        assert done.wait(10)
    finally:
        scheduler.close()


def test_the_thread_notices_a_fake_clock_moving() -> None:
    """A FakeClock moved by a test is noticed within max_sleep, without tick()."""
    clock = FakeClock()
    scheduler = Scheduler(clock, max_sleep=0.01)
    done = threading.Event()
    try:
        scheduler.call_at(clock.now() + 3600, done.set)
        assert not done.is_set()
        clock.advance(3600)
        assert done.wait(10)
    finally:
        scheduler.close()


def test_a_failing_callback_does_not_stop_the_others() -> None:
    """A callback that raises is logged; the ones after it still run."""
    clock = FakeClock()
    scheduler = Scheduler(clock, thread=False)
    fired: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    try:
        scheduler.call_at(clock.now(), boom)
        scheduler.call_at(clock.now(), lambda: fired.append(1))
        assert 2 == scheduler.tick()
        assert [1] == fired
    finally:
        scheduler.close()


def test_closed_and_bad_arguments() -> None:
    """After close() call_at raises; max_sleep must be positive."""
    scheduler = Scheduler(FakeClock())
    scheduler.close()
    scheduler.close()
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.call_at(0, print)
    with pytest.raises(ValueError, match="max_sleep"):
        Scheduler(max_sleep=0)
