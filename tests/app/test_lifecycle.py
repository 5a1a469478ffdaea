"""An App's life: close() always returns within its timeout and says what it left behind;
run_forever() serves until SIGTERM or SIGINT and closes cleanly; a closed app refuses to
be used again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from eventlite import App, UnitOfWork
from eventlite.messages import Registry, command, event

registry = Registry()


@event(registry=registry)
class Placed:
    n: int


@event(registry=registry)
class Mailed:
    n: int


@command(registry=registry)
class SendMail:
    n: int


def test_close_returns_in_time_past_a_stuck_background_subscriber() -> None:
    """A background bus subscriber that never returns: close(timeout) comes back within
    the timeout and names what it abandoned."""
    release = threading.Event()
    app = App(registry=registry)
    app.subscribe(Placed, lambda e: release.wait(30), background=True)
    app.publish(Placed(1))
    started = time.monotonic()
    abandoned = app.close(timeout=0.5)
    elapsed = time.monotonic() - started
    release.set()
    assert elapsed < 2.0
    assert ["background bus subscribers still running"] == abandoned


def test_close_returns_in_time_past_a_handler_stuck_in_its_transaction(tmp_path: Path) -> None:
    """A durable handler blocked inside its unit of work's transaction: close(timeout)
    returns in time naming the subscriber and the open transaction; the file stays
    consistent: reopened, the event is delivered again and its effect exists once."""
    inside = threading.Event()
    release = threading.Event()
    path = tmp_path / "stuck.db"
    app = App(path, registry=registry)

    @app.subscribes(Placed, durable=True, name="stuck")
    def stuck(e: Placed, uow: UnitOfWork) -> None:
        inside.set()
        release.wait(30)
        uow.append("mail", [Mailed(e.n)])

    app.store.append("orders", [Placed(1)])
    assert inside.wait(10)
    started = time.monotonic()
    abandoned = app.close(timeout=0.5)
    assert time.monotonic() - started < 2.5
    assert 2 == len(abandoned), abandoned
    assert "stuck" in abandoned[0]
    assert "write transaction still open" in abandoned[1]
    release.set()
    deadline = time.monotonic() + 10
    while [t for t in threading.enumerate() if t.name == "eventlite-relay-stuck"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with App(path, registry=registry) as again:

        @again.subscribes(Placed, durable=True, name="stuck")
        def unstuck(e: Placed, uow: UnitOfWork) -> None:
            uow.append("mail", [Mailed(e.n)])

        again.run_until_idle()
        assert [Mailed(1)] == [e.message for e in again.store.read_stream("mail")]


def test_a_closed_app_cannot_be_entered_again() -> None:
    """``with app:`` on a closed app raises instead of silently using a closed store; a
    second close is harmless."""
    app = App(registry=registry)
    assert [] == app.close()
    assert [] == app.close()
    assert app.closed
    with pytest.raises(RuntimeError, match="closed"), app:
        pass


def test_commands_a_durable_handler_dispatches_commit_with_it(tmp_path: Path) -> None:
    """A durable handler with a unit of work dispatches a command, then fails: the
    command's events roll back with it, and the retry stores them once."""
    app = App(tmp_path / "join.db", registry=registry)
    attempts: list[int] = []

    @app.handles(SendMail)
    def send_mail(c: SendMail, uow: UnitOfWork) -> None:
        uow.append(f"mail-{c.n}", [Mailed(c.n)])

    @app.subscribes(Placed, durable=True, name="mailer")
    def mailer(e: Placed, uow: UnitOfWork) -> None:
        app.dispatch(SendMail(e.n))
        attempts.append(e.n)
        if len(attempts) == 1:
            raise ConnectionError("crashed after the command, before the inbox mark")

    with app:
        app.store.append("orders", [Placed(7)])
        app.run_until_idle()
        assert [7, 7] == attempts
        assert [Mailed(7)] == [e.message for e in app.store.read_stream("mail-7")]


SERVICE = textwrap.dedent(
    """
    import sys
    from eventlite import App
    from eventlite.messages import Registry, event

    registry = Registry()

    @event(registry=registry)
    class Placed:
        n: int

    app = App(sys.argv[1], registry=registry)
    seen = []
    app.subscribe(Placed, lambda e: seen.append(e.n), durable=True, name="count",
                  start="beginning")
    app.store.append("orders", [Placed(n) for n in range(50)])
    print("ready", flush=True)
    app.run_forever(timeout=5)
    print("closed", len(seen), app.closed, flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_forever_closes_cleanly_on_a_signal(tmp_path: Path, sig: int) -> None:
    """A service in run_forever() gets SIGTERM (or SIGINT): it closes the app, writing
    its checkpoints, and exits 0; the file is then free for another process."""
    path = tmp_path / "service.db"
    child = subprocess.Popen(
        [sys.executable, "-c", SERVICE, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert "ready" == child.stdout.readline().strip()
        time.sleep(0.3)
        os.kill(child.pid, sig)
        out, _ = child.communicate(timeout=20)
        assert 0 == child.returncode
        assert "closed 50 True" == out.strip()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    with App(path, registry=registry) as again:
        status = {s.name: s for s in again.subscribers()}
        assert 50 == status["count"].checkpoint
        again.store.append("orders", [Placed(99)])
