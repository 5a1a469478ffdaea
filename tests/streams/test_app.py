"""Streams in an App: ``app.stream(...)`` starts them on the app's file, ``run_until_idle``
settles them (and what their outputs cause), ``close`` stops them, and a new app on the
same file continues where the last one stopped."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import eventlite
from eventlite import App, Registry
from eventlite.streams import MemoryTable, Stream, StreamRunner, Tumbling

registry = Registry()
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)


@eventlite.event(registry=registry, name="test.streams.app.Viewed")
class Viewed:
    """A page view."""

    user: str
    page: str
    at: datetime


@eventlite.event(registry=registry, name="test.streams.app.Counted")
class Counted:
    """Views of a page in a minute."""

    page: str
    minute: str
    views: int


def per_minute(name: str = "per-minute") -> Stream:
    """Views per page and minute, as events and as rows."""
    stream = Stream(name)
    minutes = (
        stream.source(Viewed, time="at")
        .key_by(lambda v: v.page)
        .window(Tumbling(timedelta(minutes=1)))
        .count()
    )
    minutes.to_events(lambda w: Counted(w.key, w.start.strftime("%H:%M"), w.value))
    minutes.to_table("views_per_minute")
    return stream


def views(*seconds: int, page: str = "/home") -> list[Viewed]:
    """Views of ``page`` at these seconds after T0."""
    return [Viewed(f"u{i}", page, T0 + timedelta(seconds=s)) for i, s in enumerate(seconds)]


def test_a_stream_runs_and_run_until_idle_settles_what_it_causes(tmp_path: Path) -> None:
    """Events a stream appends reach the app's durable subscribers within the same
    run_until_idle, and its rows are in the read model."""
    seen: list[Counted] = []
    with App(tmp_path / "app.db", registry=registry) as app:
        app.subscribe(Counted, seen.append, durable=True, name="counted")
        assert per_minute().name == app.stream(per_minute()).name
        app.store.append("views", views(5, 20, 70, 130))
        app.run_until_idle()
        assert [Counted("/home", "09:00", 2), Counted("/home", "09:01", 1)] == seen
        rows = app.projector.reader()["views_per_minute"].rows
        assert [2, 1] == [r["value"] for r in rows]


def test_declared_in_a_with_block_it_starts_when_the_block_ends(tmp_path: Path) -> None:
    """``with app.stream(name) as stream:`` yields a new Stream to declare, and starts it
    at the end of the block; a block that raises starts nothing."""
    with App(tmp_path / "app.db", registry=registry) as app:
        with pytest.raises(RuntimeError), app.stream("broken") as broken:
            broken.source(Viewed)
            raise RuntimeError("the declaration failed")
        with app.stream("counts") as counts:
            assert {} == app.streams.streams
            (
                counts.source(Viewed, time="at")
                .window(Tumbling(timedelta(minutes=1)))
                .count()
                .to_table("counts")
            )
        assert ["counts"] == sorted(app.streams.streams)
        app.store.append("views", views(1, 2, 61))
        app.run_until_idle()
        assert [2] == [r["value"] for r in app.projector.reader()["counts"].rows]


def test_the_thread_follows_commits_without_run_until_idle(tmp_path: Path) -> None:
    """Started, a stream's thread processes what is committed as it is committed."""
    with App(tmp_path / "app.db", registry=registry, poll_interval=0.01) as app:
        app.stream(per_minute())
        app.store.append("views", views(5, 70))
        _wait(lambda: app.streams.status()[0].lag == 0)
        assert 1 == app.projector.reader()["views_per_minute"].count


def test_a_new_app_on_the_file_continues_where_the_last_stopped(tmp_path: Path) -> None:
    """Closed, an app stops its streams and releases their leases; a new app on the file
    takes them over at once and continues from their checkpoints: no window twice."""
    path = tmp_path / "app.db"
    with App(path, registry=registry) as app:
        app.stream(per_minute())
        app.store.append("views", views(5, 20, 70))
        app.run_until_idle()
    assert [] == eventlite.sqlite.SQLiteStorage(path).leases.leases()
    with App(path, registry=registry) as app:
        app.stream(per_minute())
        app.store.append("views", views(130))
        app.run_until_idle()
        counted = [e.message for e in app.store.read_all(types=[Counted])]
        assert [Counted("/home", "09:00", 2), Counted("/home", "09:01", 1)] == counted


def test_tables_are_given_to_join_table(tmp_path: Path) -> None:
    """``tables=`` hands the stream the keyed tables its join_table steps read."""
    stream = Stream("named")
    (
        stream.source(Viewed, time="at")
        .join_table(
            "names", key=lambda v: v.user, joiner=lambda v, name: {"key": v.user, "name": name}
        )
        .to_table("named", row=lambda row: row)
    )
    with App(tmp_path / "app.db", registry=registry) as app:
        app.stream(stream, tables={"names": MemoryTable({"u0": "Ada"})})
        app.store.append("views", views(1, 2))
        app.run_until_idle()
        assert [{"key": "u0", "name": "Ada"}] == list(app.projector.reader()["named"].rows)


def test_streams_need_a_file() -> None:
    """An app in memory keeps no stream state: app.stream raises RuntimeError."""
    with App(registry=registry) as app:
        with pytest.raises(RuntimeError, match="stream processing needs durable storage"):
            app.stream(per_minute())
        with pytest.raises(RuntimeError, match="stream processing"):
            app.streams  # noqa: B018


def test_the_app_runner_uses_the_app_codec_and_dead_letter_queue(tmp_path: Path) -> None:
    """app.streams is a StreamRunner over the app's storage, codec and DLQ."""
    with App(tmp_path / "app.db", registry=registry) as app:
        runner = app.streams
        assert (StreamRunner, app.storage, app.codec, app.dlq) == (
            type(runner),
            runner.storage,
            runner.codec,
            runner.dlq,
        )


def _wait(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.01)
