"""Every time argument takes seconds or a ``timedelta`` alike (issue 9, §5)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from eventlite.clock import FakeClock
from eventlite.retry import RetryPolicy
from eventlite.testing import TestApp


def _retry_initial(amount: float | timedelta) -> float:
    return RetryPolicy(initial=amount, max_delay=100_000, jitter=0).retry_delay(1)


def _retry_max_delay(amount: float | timedelta) -> float:
    return RetryPolicy(initial=1, max_delay=amount, jitter=0).max_delay


def _fake_clock(amount: float | timedelta) -> float:
    clock = FakeClock()
    start = clock.now()
    return clock.advance(amount) - start


def _test_app(amount: float | timedelta) -> float:
    with TestApp(storage="memory") as t:
        start = t.clock.now()
        t.advance(amount)
        return float(t.clock.now() - start)


@pytest.mark.parametrize(
    "measure",
    [_retry_initial, _retry_max_delay, _fake_clock, _test_app],
    ids=["RetryPolicy.initial", "RetryPolicy.max_delay", "FakeClock.advance", "TestApp.advance"],
)
def test_seconds_and_a_timedelta_mean_the_same(
    measure: Callable[[float | timedelta], float],
) -> None:
    """90 seconds given as a number and as a timedelta (a day too) give the same length."""
    assert measure(90) == measure(90.0) == measure(timedelta(seconds=90)) == 90.0
    assert measure(timedelta(days=1)) == measure(86_400) == 86_400.0


def test_a_max_delay_shorter_than_initial_is_refused() -> None:
    """RetryPolicy(initial=60, max_delay=30) names both lengths instead of silently
    waiting 30 s."""
    with pytest.raises(ValueError, match=r"max_delay \(30 s\) is shorter than initial \(60 s\)"):
        RetryPolicy(initial=60, max_delay=timedelta(seconds=30))
