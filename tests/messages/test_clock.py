"""The clock takes lengths of time as seconds or as timedeltas, everywhere."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlite.clock import FAKE_EPOCH, FakeClock, seconds, to_datetime


def test_fake_clock_advances_by_seconds_or_a_timedelta() -> None:
    """FakeClock.advance takes a timedelta as well as seconds (it raised TypeError for a
    timedelta while every other time argument took one)."""
    clock = FakeClock()
    assert FAKE_EPOCH + 86_400 == clock.advance(timedelta(days=1))
    assert FAKE_EPOCH + 86_400.5 == clock.advance(0.5)
    assert FAKE_EPOCH + 86_400.5 == clock.now()


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (-1, ValueError),
        (timedelta(seconds=-1), ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("60", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_fake_clock_refuses_to_go_back_or_to_jump_nowhere(bad: Any, error: type[Exception]) -> None:
    """A negative, NaN or infinite step is a ValueError, a step that is not a length of
    time a TypeError; the clock does not move."""
    clock = FakeClock()
    with pytest.raises(error, match="advance"):
        clock.advance(bad)
    assert FAKE_EPOCH == clock.now()


def test_fake_clock_starts_at_epoch_seconds_or_an_aware_datetime() -> None:
    """FakeClock(start) takes epoch seconds or an aware datetime, and refuses a naive one
    or anything else."""
    moment = datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert moment == to_datetime(FakeClock(moment).now())
    assert 5.0 == FakeClock(5).now()
    with pytest.raises(ValueError, match="aware"):
        FakeClock(datetime(2020, 1, 1))
    with pytest.raises(TypeError):
        FakeClock("2020-01-01")  # type: ignore[arg-type]


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10_000)))
def test_seconds_reads_a_timedelta_as_its_total_seconds(duration: timedelta) -> None:
    """seconds() gives a timedelta's total seconds, and a number of seconds as a float."""
    assert duration.total_seconds() == seconds(duration)
    assert duration.total_seconds() == seconds(duration.total_seconds())
