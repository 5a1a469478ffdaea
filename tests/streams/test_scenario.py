"""StreamScenario: given events with times, then the rows, events, late counts and dead
letters a stream leaves, run through the durable runner on a test app."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import eventlite
from eventlite import Registry
from eventlite.clock import FAKE_EPOCH
from eventlite.streams import Session, Stream, Tumbling
from eventlite.testing import ANYTHING, ScenarioFailed, StreamOutcome, StreamScenario

registry = Registry()
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)


@eventlite.event(registry=registry, name="test.streams.scenario.Viewed")
class Viewed:
    """A page view at a time."""

    user: str
    page: str
    at: datetime


@eventlite.event(registry=registry, name="test.streams.scenario.Clicked")
class Clicked:
    """A click, timed by its envelope."""

    user: str


@eventlite.event(registry=registry, name="test.streams.scenario.Session")
class SessionEnded:
    """A user's session."""

    user: str
    views: int
    minutes: float


def at(minute: int, second: int = 0) -> datetime:
    """09:mm:ss on the day of the tests."""
    return T0 + timedelta(minutes=minute, seconds=second)


def views_per_minute() -> Stream:
    """Views per page and minute, into a table; late views dead-lettered."""
    stream = Stream("views-per-minute")
    (
        stream.source(Viewed, time="at", out_of_orderness=timedelta(seconds=5))
        .key_by(lambda v: v.page)
        .window(Tumbling(timedelta(minutes=1)), late="dead_letter")
        .count(name="per-minute")
        .to_table("views_per_minute")
    )
    return stream


def sessions() -> Stream:
    """Each user's sessions (10 minutes of quiet end one), as events."""
    stream = Stream("sessions")
    (
        stream.source(Viewed, time="at", out_of_orderness=timedelta(minutes=5))
        .key_by(lambda v: v.user)
        .window(Session(timedelta(minutes=10)))
        .count()
        .to_events(lambda w: SessionEnded(w.key, w.value, (w.end - w.start) / timedelta(minutes=1)))
    )
    return stream


def test_rows_late_counts_and_dead_letters() -> None:
    """Rows closed by the watermark are in the table (datetimes compared as stored), the
    late view is counted and dead-lettered."""
    late = Viewed("dan", "/home", at(0, 10))
    StreamScenario(views_per_minute, registry=registry).given(
        Viewed("ada", "/home", at(0, 5)),
        Viewed("bob", "/home", at(0, 50)),
        Viewed("cyd", "/home", at(2, 30)),
        late,
    ).then(
        rows={"views_per_minute": [{"key": "/home", "start": at(0), "end": at(1), "value": 2}]},
        late={"per-minute": 1},
        dead_letters=[late],
        events=[],
    )


def test_finished_closes_every_window() -> None:
    """Sessions close as the watermark passes them (bob's first: it ends first), and
    ``finished()`` ends the input: the open sessions close and emit."""
    outcome = (
        StreamScenario(sessions(), registry=registry)
        .given(
            Viewed("ada", "/a", at(0)),
            Viewed("ada", "/b", at(4)),
            Viewed("bob", "/a", at(1)),
            Viewed("ada", "/c", at(30)),
        )
        .finished()
        .then(
            events=[
                SessionEnded("bob", 1, 10.0),
                SessionEnded("ada", 2, 14.0),
                SessionEnded("ada", 1, ANYTHING),
            ]
        )
    )
    assert isinstance(outcome, StreamOutcome)
    assert "live" == outcome.status.state


def test_envelope_time_follows_the_fake_clock() -> None:
    """A source without ``time=`` reads the envelope's timestamp: the fake clock's time
    when the event was stored; a timedelta among the given events moves it."""
    stream = Stream("clicks")
    (
        stream.source(Clicked)
        .window(Tumbling(timedelta(minutes=1)))
        .count()
        .to_table("clicks_per_minute")
    )
    start = datetime.fromtimestamp(FAKE_EPOCH, tz=timezone.utc)
    minute = start - timedelta(seconds=start.second, microseconds=start.microsecond)
    outcome = (
        StreamScenario(stream, registry=registry)
        .given(Clicked("ada"), Clicked("bob"), timedelta(minutes=2), Clicked("cyd"))
        .run()
    )
    assert [(minute.isoformat(), 2)] == [
        (r["start"], r["value"]) for r in outcome.rows["clicks_per_minute"]
    ]


def test_a_different_outcome_fails_with_each_difference() -> None:
    """Expected rows, events and late counts that differ are all named."""
    with pytest.raises(ScenarioFailed) as failed:
        StreamScenario(views_per_minute, registry=registry).given(
            Viewed("ada", "/home", at(0, 5)), Viewed("cyd", "/home", at(2, 30))
        ).then(
            rows={"views_per_minute": [{"key": "/home", "start": at(0), "end": at(1), "value": 3}]},
            late={"per-minute": 2},
            events=[SessionEnded("ada", 1, 1.0)],
        )
    text = str(failed.value)
    assert "stream 'views-per-minute' given 2 events" in text
    assert '- {"end": "2026-01-01T09:01:00+00:00", "key": "/home"' in text
    assert '"value": 1}' in text
    assert "late counts: expected {'per-minute': 2}, counted {'per-minute': 0}" in text
    assert "events appended (1 expected, 0 appended)" in text


def test_a_composition_root_that_adds_the_stream_is_used_as_is() -> None:
    """With ``build=``, the app is the application's own; a stream it already adds is not
    added again."""

    def build(db: str | None = None, **options: object) -> eventlite.App:
        app = eventlite.App(db, registry=registry, **options)  # type: ignore[arg-type]
        app.stream(views_per_minute())
        return app

    StreamScenario(views_per_minute, registry=registry, build=build).given(
        Viewed("ada", "/home", at(0, 5)), Viewed("cyd", "/home", at(2, 30))
    ).then(rows={"views_per_minute": [{"key": "/home", "start": at(0), "end": at(1), "value": 1}]})
