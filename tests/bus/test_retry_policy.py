"""RetryPolicy: lengths of time as seconds or timedeltas, and no inconsistent policy."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eventlite.retry import RetryPolicy


def test_a_max_delay_shorter_than_initial_is_refused() -> None:
    """RetryPolicy(initial=60, max_delay=30) used to be accepted and to wait 30 s; it is a
    ValueError naming both."""
    with pytest.raises(ValueError, match=r"max_delay \(30 s\) is shorter than initial \(60 s\)"):
        RetryPolicy(initial=60, max_delay=30)


def test_the_default_cap_never_cuts_the_first_wait() -> None:
    """Without max_delay the cap is 30 s, or initial when that is longer: RetryPolicy(
    initial=60) waits 60 s first (it used to wait 30 s)."""
    assert 60.0 == RetryPolicy(initial=60, jitter=0).retry_delay(1)
    assert 60.0 == RetryPolicy(initial=60, jitter=0).retry_delay(2)
    assert 30.0 == RetryPolicy(jitter=0).max_delay


def test_lengths_of_time_may_be_timedeltas() -> None:
    """initial and max_delay take a timedelta as well as seconds."""
    policy = RetryPolicy(
        initial=timedelta(minutes=1), max_delay=timedelta(minutes=10), jitter=0, multiplier=3
    )
    assert (60.0, 600.0) == (policy.initial, policy.max_delay)
    assert [60.0, 180.0, 540.0, 600.0] == [policy.retry_delay(n) for n in range(1, 5)]


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), timedelta(seconds=-1), "1"])
def test_a_length_of_time_must_be_finite_and_not_negative(bad: object) -> None:
    """A negative, infinite or NaN length, or one that is not a number, names its field."""
    with pytest.raises(ValueError, match="initial must be a finite number of seconds"):
        RetryPolicy(initial=bad)  # type: ignore[arg-type]
