"""The promise on a plain durable subscriber's unsaved progress: at most
``checkpoint_interval`` seconds (0.1 s) or ``batch_size`` events (500) of handled events
are not yet in its stored checkpoint, also while commits never stop coming."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlite.app import App
from eventlite.envelope import current_envelope
from eventlite.messages import Registry, event

registry = Registry()


@event(registry=registry, name="unsaved.Placed")
class Placed:
    n: int


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    """An app on a file, synchronous=NORMAL."""
    with App(tmp_path / "app.db", registry=registry, synchronous="normal") as the_app:
        yield the_app


def _load(app: App, seconds: float, sample: float) -> list[tuple[float, int]]:
    """Append without pause for ``seconds`` from another thread, and sample the stored
    checkpoint every ``sample`` seconds: (when, checkpoint)."""
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            app.store.append(f"s-{i % 10}", [Placed(i)])

    writer = threading.Thread(target=write)
    writer.start()
    samples = []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(sample)
            samples.append((time.monotonic(), app.subscribers()[0].checkpoint))
    finally:
        stop.set()
        writer.join()
    return samples


def test_at_most_the_checkpoint_interval_is_unsaved_under_load(app: App) -> None:
    """A subscriber whose handler takes a few milliseconds, under appends that never stop:
    every event it handled more than the interval ago (plus slack for a loaded machine)
    is in its stored checkpoint at every sample."""
    handled: list[tuple[float, int]] = []

    def slow(_: Placed) -> None:
        time.sleep(0.004)
        env = current_envelope()
        assert env is not None and env.position is not None
        handled.append((time.monotonic(), env.position))

    app.subscribe(Placed, slow, durable=True, name="busy")
    samples = _load(app, 2.0, 0.02)
    late = []
    for when, checkpoint in samples:
        settled = [p for t, p in handled if t <= when - (0.1 + 0.3)]
        if settled and max(settled) > checkpoint:
            late.append((round(when - samples[0][0], 2), max(settled), checkpoint))
    assert [] == late
    assert samples[-1][1] > 0


def test_at_most_batch_size_events_are_unsaved_under_load(app: App) -> None:
    """With a long checkpoint interval, the stored checkpoint of a fast subscriber under
    appends that never stop is never more than batch_size events behind what it handled
    (plus the events of one read)."""
    handled = [0]

    def fast(_: Placed) -> None:
        env = current_envelope()
        assert env is not None and env.position is not None
        handled[0] = env.position

    app.subscribe(Placed, fast, durable=True, name="fast")
    app.relay.checkpoint_interval = 60.0
    app.relay.batch_size = 50
    stop = threading.Event()
    lags: list[int] = []

    def watch() -> None:
        while not stop.is_set():
            seen = handled[0]
            lags.append(seen - app.subscribers()[0].checkpoint)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        _load(app, 1.0, 0.1)
    finally:
        stop.set()
        watcher.join()
    assert max(lags) <= 50, max(lags)
