"""Durable subscribers and the relay: delivery, order, wake-ups, checkpoints, status, metrics,
bad stored rows."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventlite.app import App
from eventlite.clock import FakeClock
from eventlite.dlq import DeadLetterStatus
from eventlite.envelope import Envelope, current_envelope
from eventlite.messages import Registry, event
from eventlite.metrics import CountingMetrics
from eventlite.relay import DurableSubscriber, Start, subscriber_status
from eventlite.retry import RetryPolicy
from eventlite.sqlite import Database
from eventlite.unit_of_work import UnitOfWork

registry = Registry()


@event(registry=registry, name="relay.Placed")
class Placed:
    n: int


@event(registry=registry, name="relay.Rush")
class Rush(Placed):
    pass


@event(registry=registry, name="relay.Cancelled")
class Cancelled:
    n: int


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    """An app on a SQLite file with a fake clock and counting metrics."""
    with App(
        tmp_path / "app.db",
        registry=registry,
        synchronous="normal",
        clock=FakeClock(),
        metrics=CountingMetrics(),
    ) as the_app:
        yield the_app


def _db(app: App) -> Database:
    """The app's SQLite file."""
    assert app.database is not None
    return app.database


def _envelopes(
    app: App, name: str, event_type: type[Any] = Placed, start: Start | None = None
) -> list[Envelope]:
    """Subscribe a durable recorder; returns the list it fills."""
    seen: list[Envelope] = []

    def record(_: Any) -> None:
        env = current_envelope()
        assert env is not None
        seen.append(env)

    app.subscribe(event_type, record, durable=True, name=name, start=start)
    return seen


def test_every_committed_event_is_delivered_in_order(app: App) -> None:
    """A durable subscriber gets every stored event of its type, with its envelope current,
    in commit order; other types are not delivered to it."""
    seen = _envelopes(app, "audit")
    app.store.append("o-1", [Placed(1), Placed(2)])
    app.store.append("o-2", [Cancelled(3), Placed(4)])
    app.run_until_idle()
    assert [1, 2, 4] == [e.message.n for e in seen]
    assert [1, 2, 4] == [e.position for e in seen]
    assert [("o-1", 1), ("o-1", 2), ("o-2", 2)] == [(e.stream_id, e.version) for e in seen]


def test_subclasses_are_delivered_to_a_base_class_subscriber(app: App) -> None:
    """A subscriber of a base class also receives stored events of its subclasses."""
    base = _envelopes(app, "base")
    rush = _envelopes(app, "rush", Rush)
    app.store.append("o-1", [Placed(1), Rush(2), Cancelled(3)])
    app.run_until_idle()
    assert [Placed(1), Rush(2)] == [e.message for e in base]
    assert [Rush(2)] == [e.message for e in rush]


def test_events_committed_before_subscribing_are_delivered(app: App) -> None:
    """A new subscriber with start="beginning" is delivered what was committed before it;
    start="end" skips it."""
    app.store.append("o-1", [Placed(1)])
    beginning = _envelopes(app, "from-start", start="beginning")
    end: list[int] = []
    app.subscribe(Placed, lambda e: end.append(e.n), durable=True, name="late", start="end")
    app.store.append("o-1", [Placed(2)])
    app.run_until_idle()
    assert [1, 2] == [e.message.n for e in beginning]
    assert [2] == end


def test_checkpoint_survives_a_restart(tmp_path: Path) -> None:
    """After a restart a subscriber resumes at its checkpoint: nothing is delivered twice
    when the previous run settled it, and what was committed meanwhile is delivered."""
    path = tmp_path / "app.db"
    first: list[int] = []
    with App(path, registry=registry) as app:
        app.subscribe(Placed, lambda e: first.append(e.n), durable=True, name="s")
        app.store.append("o-1", [Placed(1), Placed(2)])
        app.run_until_idle()
    with App(path, registry=registry) as app:
        app.store.append("o-1", [Placed(3)])
    second: list[int] = []
    with App(path, registry=registry) as app:
        app.subscribe(Placed, lambda e: second.append(e.n), durable=True, name="s")
        app.run_until_idle()
    assert ([1, 2], [3]) == (first, second)


def test_order_per_stream_under_four_writer_threads(app: App) -> None:
    """Four threads appending to shared streams: every durable subscriber sees every event
    once, and each stream in version order."""
    seen = {name: _envelopes(app, name) for name in ("a", "b", "c")}
    barrier = threading.Barrier(4)

    def write(t: int) -> None:
        barrier.wait()
        for i in range(60):
            app.store.append(f"s-{(t + i) % 5}", [Placed(t * 1000 + i)])

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    app.run_until_idle()
    for name, envelopes in seen.items():
        assert 240 == len({e.id for e in envelopes}) == len(envelopes), name
        by_stream: defaultdict[str | None, list[int | None]] = defaultdict(list)
        for env in envelopes:
            by_stream[env.stream_id].append(env.version)
        for stream, versions in by_stream.items():
            assert list(range(1, len(versions) + 1)) == versions, (name, stream)
        assert sorted(e.position or 0 for e in envelopes) == [e.position for e in envelopes]


def test_a_local_commit_wakes_the_relay_at_once(tmp_path: Path) -> None:
    """With a poll interval of a minute, a commit of this process is still delivered at
    once: the commit wakes the relay."""
    delivered = threading.Event()
    with App(tmp_path / "app.db", registry=registry, poll_interval=60.0) as app:
        app.subscribe(Placed, lambda e: delivered.set(), durable=True, name="s")
        app.store.append("o-1", [Placed(1)])
        assert delivered.wait(10)


def test_a_backlog_is_delivered_when_the_subscriber_starts(tmp_path: Path) -> None:
    """A subscriber added to a file that already holds events starts on them at once, with
    no commit or poll to prompt it."""
    delivered = threading.Event()
    with App(tmp_path / "app.db", registry=registry, poll_interval=60.0) as app:
        app.store.append("o-1", [Placed(1)])
        app.subscribe(Placed, lambda e: delivered.set(), durable=True, name="s", start="beginning")
        assert delivered.wait(10)


def test_plain_subscribers_write_their_checkpoint_soon_after_work(tmp_path: Path) -> None:
    """A subscriber without a unit of work keeps its progress in memory for at most the
    checkpoint interval, then writes it by itself."""
    with App(tmp_path / "app.db", registry=registry, poll_interval=60.0) as app:
        got = threading.Event()
        app.subscribe(Placed, lambda e: got.set(), durable=True, name="s")
        app.relay.checkpoint_interval = 0.01
        app.store.append("o-1", [Placed(1)])
        assert got.wait(10)
        moved = threading.Event()
        for _ in range(1000):
            if 1 == app.subscribers()[0].checkpoint:
                moved.set()
                break
            moved.wait(0.01)
        assert moved.is_set()


def test_a_unit_of_work_commit_wakes_the_relay(tmp_path: Path) -> None:
    """Events committed by a unit of work reach durable subscribers without polling."""
    delivered = threading.Event()
    with App(tmp_path / "app.db", registry=registry, poll_interval=60.0) as app:
        app.subscribe(Placed, lambda e: delivered.set(), durable=True, name="s")
        with app.unit_of_work() as uow:
            uow.append("o-1", [Placed(1)])
        assert delivered.wait(10)


def test_commits_of_another_process_are_found_by_polling(tmp_path: Path) -> None:
    """Events appended by another process sharing the file are delivered (the relay polls)."""
    path = tmp_path / "app.db"
    got: list[int] = []
    done = threading.Event()

    def record(e: Placed) -> None:
        got.append(e.n)
        if len(got) == 3:
            done.set()

    script = (
        "import sys\n"
        "from eventlite.app import App\n"
        "from tests.delivery.test_durable_subscribers import Placed, registry\n"
        "with App(sys.argv[1], registry=registry) as app:\n"
        "    app.store.append('o-9', [Placed(7), Placed(8), Placed(9)])\n"
    )
    with App(path, registry=registry, poll_interval=0.02) as app:
        app.subscribe(Placed, record, durable=True, name="s")
        subprocess.run(
            [sys.executable, "-c", script, str(path)],
            check=True,
            cwd=Path(__file__).resolve().parents[2],
            timeout=60,
        )
        assert done.wait(10)
    assert [7, 8, 9] == got


def test_checkpoint_moves_only_after_handling(app: App) -> None:
    """While the handler runs, the checkpoint in the file has not passed the event; it
    moves once the handler returned."""
    inside = threading.Event()
    release = threading.Event()

    def slow(_: Placed) -> None:
        inside.set()
        assert release.wait(10)

    app.subscribe(Placed, slow, durable=True, name="slow")
    app.store.append("o-1", [Placed(1)])
    assert inside.wait(10)
    assert 0 == app.subscribers()[0].checkpoint
    release.set()
    app.run_until_idle()
    assert (1, 0) == (app.subscribers()[0].checkpoint, app.subscribers()[0].lag)


def test_durable_handlers_get_dependencies_and_a_unit_of_work(app: App) -> None:
    """Durable handlers are injected like others; events their unit of work records are
    correlated to the event handled and delivered to durable subscribers in turn."""
    app.provide(prefix="copy")
    copies = _envelopes(app, "copies", Cancelled)

    def copy(event: Placed, uow: UnitOfWork, prefix: str) -> None:
        uow.append(f"{prefix}-{event.n}", [Cancelled(event.n)])

    app.subscribe(Placed, copy, durable=True, name="copier")
    app.store.append("o-1", [Placed(5)])
    app.run_until_idle()
    (original,) = app.store.read_stream("o-1")
    (env,) = copies
    assert ("copy-5", Cancelled(5)) == (env.stream_id, env.message)
    assert (original.correlation_id, original.id) == (env.correlation_id, env.causation_id)


def test_configuration_errors(tmp_path: Path) -> None:
    """Durable subscribers need a file, a name, a name of their own, and no background."""
    with App(registry=registry) as memory:
        with pytest.raises(ValueError, match="durable storage"):
            memory.subscribe(Placed, print, durable=True, name="s")
        with pytest.raises(RuntimeError, match="durable storage"):
            memory.dlq  # noqa: B018
        assert [] == memory.subscribers()
    with App(tmp_path / "app.db", registry=registry) as app:
        with pytest.raises(ValueError, match="stable name"):
            app.subscribe(Placed, print, durable=True, name="")
        with pytest.raises(ValueError, match="stable name"):
            app.subscribes(Placed, durable=True)(print)
        with pytest.raises(ValueError, match="background"):
            app.subscribe(Placed, print, durable=True, name="s", background=True)  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="durable"):
            app.subscribe(Placed, print, start="end")  # type: ignore[call-overload]
        app.subscribe(Placed, print, durable=True, name="s")
        with pytest.raises(ValueError, match="already exists"):
            app.subscribe(Placed, print, durable=True, name="s")


def test_decorator_returns_the_function(app: App) -> None:
    """``@app.subscribes(..., durable=True)`` registers and returns the function unchanged."""
    got: list[int] = []

    @app.subscribes(Placed, durable=True, name="deco")
    def handle(event: Placed) -> None:
        got.append(event.n)

    app.store.append("o-1", [Placed(1)])
    app.run_until_idle()
    assert ([1], "handle") == (got, handle.__name__)


def test_status_and_metrics(app: App) -> None:
    """subscribers() reports checkpoint, head, lag, blocked keys and dead letters; the
    metrics hooks count handlings, failures and dead letters."""

    def picky(event: Placed) -> None:
        if event.n == 2:
            raise ValueError("no twos")

    sub = app.subscribe(
        Placed, picky, durable=True, name="picky", retry=RetryPolicy(max_attempts=2)
    )
    assert isinstance(sub, DurableSubscriber)
    app.store.append("o-1", [Placed(1)])
    app.store.append("o-2", [Placed(2), Placed(3)])
    app.run_until_idle()
    status = sub.status()
    assert ("picky", 3, 3, 0) == (status.name, status.checkpoint, status.head, status.lag)
    assert (("o-2",), 2) == (status.blocked_keys, status.dead_letters)
    assert [status] == subscriber_status(app.storage, app.dlq)
    assert "picky: checkpoint 3/3 (lag 0)" in str(status)
    metrics = app.metrics
    assert isinstance(metrics, CountingMetrics)
    counts = metrics.counts("picky")
    assert (1, 2, 1, 1, 0) == (
        counts.handled,
        counts.failures,
        counts.dead_letters,
        counts.parked,
        counts.lag,
    )


def test_undecodable_rows_are_dead_lettered_and_delivery_goes_on(app: App) -> None:
    """A stored row with corrupt JSON, and one of a type this app does not know, go to the
    DLQ with the reason and the raw row; the events after them are delivered."""
    seen = _envelopes(app, "s")
    with _db(app).transaction() as tx:  # the rows are spoilt before anyone can read them
        app.store.append("good-1", [Placed(1)])
        app.store.append("bad", [Placed(2)])
        app.store.append("ghost", [Placed(3)])
        app.store.append("good-2", [Placed(4)])
        tx.execute("UPDATE events SET data = '{not json' WHERE stream_id = 'bad'")
        tx.execute("UPDATE events SET type = 'relay.Ghost' WHERE stream_id = 'ghost'")
    app.run_until_idle()
    assert [1, 4] == [e.message.n for e in seen]
    bad, ghost = app.dlq.list("s")
    assert (DeadLetterStatus.DEAD, 2, "bad") == (bad.status, bad.position, bad.key)
    assert "MessageDecodeError" in (bad.error_type or "")
    assert "invalid JSON" in (bad.error_message or "")
    assert '"data": "{not json"' in str(bad.message)
    assert ("relay.Ghost", 3) == (ghost.type_name, ghost.position)
    assert "UnknownMessageType" in (ghost.error_type or "")


def test_a_dead_lettered_undecodable_row_is_delivered_once_fixed(app: App) -> None:
    """After the operator repairs the cause, retrying the dead letter delivers the event
    read again from the log."""
    seen = _envelopes(app, "s")
    with _db(app).transaction() as tx:
        app.store.append("bad", [Placed(2)])
        tx.execute("UPDATE events SET data = '{\"n\": \"x\"}' WHERE stream_id = 'bad'")
    app.run_until_idle()
    (letter,) = app.dlq.list("s")
    assert "MessageDecodeError" == (letter.error_type or "").rsplit(".", 1)[-1]
    with _db(app).transaction() as tx:
        tx.execute("UPDATE events SET data = '{\"n\": 2}' WHERE stream_id = 'bad'")
    app.dlq.retry(letter.id)
    app.run_until_idle()
    assert ([2], 0) == ([e.message.n for e in seen], app.dlq.count("s"))


def test_close_stops_the_threads(tmp_path: Path) -> None:
    """Closing the app stops every relay thread and writes the checkpoints."""
    app = App(tmp_path / "app.db", registry=registry)
    app.subscribe(Placed, print, durable=True, name="s")
    app.store.append("o-1", [Cancelled(1)])
    app.run_until_idle()
    app.close()
    assert [] == [t for t in threading.enumerate() if t.name.startswith("eventlite-relay")]
    with App(tmp_path / "app.db", registry=registry) as again:
        assert 1 == again.subscribers()[0].checkpoint
