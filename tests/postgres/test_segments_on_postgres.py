"""Segments on PostgreSQL: two apps on one schema share a subscriber of four segments
(two each, by the fair share), every effect is committed once with each stream in order,
and ``python -m eventlite --db postgresql://... subscribers`` shows each segment's owner,
lease expiry and lag."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from eventlite import App
from eventlite.unit_of_work import UnitOfWork

from ..cli._run import run
from ..delivery.test_segments import (
    STREAMS,
    Noted,
    Ticked,
    check_a_simultaneous_start_with_another_n_is_refused,
    registry,
)

pytestmark = pytest.mark.services


@pytest.fixture
def url(pg_url: str, schema: str) -> str:
    """The test's own schema in the URL."""
    joiner = "&" if "?" in pg_url else "?"
    return f"{pg_url}{joiner}schema={schema}&application_name={schema}"


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _app(url: str, tag: str) -> App:
    app = App(url, registry=registry, lease_seconds=0.6)

    def note(e: Ticked, uow: UnitOfWork) -> None:
        uow.append(f"notes-{e.stream}", [Noted(e.stream, e.n, tag)])

    app.subscribe(Ticked, note, durable=True, name="noter", start="beginning", segments=4)
    return app


def test_two_apps_share_four_segments_on_postgres(url: str) -> None:
    """Two apps end with two segments each; every event's effect is committed once, each
    stream in order; the CLI shows a row per segment with its owner and lag."""
    App(url, registry=registry).close()
    first = _app(url, "first")
    second = _app(url, "second")
    try:
        owners = {first.relay.owner, second.relay.owner}

        def owner_rows() -> list[dict[str, object]]:
            lines = run("--db", url, "subscribers", "--json").lines
            return [json.loads(line) for line in lines]

        def split() -> bool:
            held = [row["owner"] for row in owner_rows()]
            return all(held.count(o) == 2 for o in owners)

        _wait(split, "two segments each")
        for n in range(100):
            stream = STREAMS[n % len(STREAMS)]
            first.store.append(stream, [Ticked(stream, n)])

        def notes() -> list[tuple[str, int]]:
            return [
                (e.message.stream, e.message.n)
                for e in first.store.read_all()
                if isinstance(e.message, Noted)
            ]

        _wait(lambda: len(notes()) >= 100, "every effect")
        _wait(lambda: all(row["lag"] == 0 for row in owner_rows()), "lag 0 everywhere")
        found = notes()
        assert sorted((STREAMS[n % len(STREAMS)], n) for n in range(100)) == sorted(found)
        for stream in STREAMS:
            ns = [n for s, n in found if s == stream]
            assert sorted(ns) == ns
        rows = owner_rows()
        assert [0, 1, 2, 3] == [row["segment"] for row in rows]
        assert all(row["lease_expires_at"] is not None for row in rows)
        table = run("--db", url, "subscribers").lines
        assert ["SUBSCRIBER", "SEGMENT", "OWNER"] == table[0].split()[:3]
        assert 5 == len(table)
    finally:
        first.close()
        second.close()


def test_a_simultaneous_start_with_another_n_is_refused_on_postgres(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two apps on one schema adding one subscriber with different segments at once: one
    is added, the other refused."""
    App(url, registry=registry).close()
    check_a_simultaneous_start_with_another_n_is_refused(
        lambda: App(url, registry=registry), monkeypatch
    )
