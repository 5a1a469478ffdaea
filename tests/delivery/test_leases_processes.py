"""Three processes run the same durable subscriber on one store (a SQLite file, or a
PostgreSQL schema). The lease holder is paused (SIGSTOP) past its lease and resumed, then
killed (SIGKILL): another process takes over each time, no event is lost, and no
unit-of-work effect is committed twice. Split into three segments, the subscriber is
shared by the three processes, and a killed one's segment is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventlite import App
from eventlite.relay import segment_name
from eventlite.relay._tenure import lease_name

from ..postgres._pg import drop_schema, new_schema, require_postgres
from .test_leases import Noted, Ticked, registry

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="POSIX")]

ROOT = Path(__file__).resolve().parents[2]
CHILD = f"""
import sys, time, signal
sys.path.insert(0, {str(ROOT)!r})
from eventlite import App
from tests.delivery.test_leases import Ticked, Noted, registry

signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
app = App(sys.argv[1], registry=registry, lease_seconds=1.0, synchronous="normal")

def note(e, uow):
    time.sleep(0.002)
    uow.append(f"notes-{{e.n}}", [Noted(e.n, sys.argv[2])])

app.subscribe(
    Ticked, note, durable=True, name="noter", start="beginning", segments=int(sys.argv[3])
)
app.start()
print("ready", flush=True)
signal.sigwait([signal.SIGTERM])
app.close()
"""

TOTAL = 300


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The shared store: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db")
        return
    pg_url = require_postgres()
    schema = new_schema()
    try:
        yield f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}&application_name={schema}"
    finally:
        drop_schema(schema)


def _holder_pid(db: str, subscriber: str = "noter") -> int | None:
    with App(db, registry=registry) as app:
        lease = app.storage.leases.holder(lease_name(subscriber))
    return None if lease is None else int(lease.owner.split(":")[1])


def _noted(db: str) -> list[int]:
    with App(db, registry=registry) as app:
        return [e.message.n for e in app.store.read_all() if isinstance(e.message, Noted)]


def _wait(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _start(db: str, segments: int) -> list[subprocess.Popen[str]]:
    App(db, registry=registry).close()
    children = []
    for i in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, db, f"p{i}", str(segments)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        children.append(child)
    for child in children:
        assert child.stdout is not None
        assert "ready" == child.stdout.readline().strip()
    return children


def _stop(children: list[subprocess.Popen[str]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGCONT)
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def test_pause_and_kill_of_the_lease_holder(db: str) -> None:
    """SIGSTOP of the holder past its lease, SIGCONT, then SIGKILL of the next holder:
    every event is noted exactly once, by whichever process held the lease."""
    children = _start(db, 1)
    try:
        with App(db, registry=registry) as app:

            def append(first: int, last: int) -> None:
                for n in range(first, last + 1):
                    app.store.append("ticks", [Ticked(n)])

            append(1, 100)
            _wait(lambda: len(_noted(db)) >= 50, "the first notes")
            paused = _holder_pid(db)
            assert paused is not None
            # Paused past its lease, on SQLite most likely inside its handler's write
            # transaction (which holds the write lock: nobody can take the lease
            # meanwhile), then resumed: whoever holds the lease afterwards, nothing is
            # committed twice.
            os.kill(paused, signal.SIGSTOP)
            time.sleep(2.5)  # the pause itself: longer than the lease, by design
            os.kill(paused, signal.SIGCONT)
            append(101, 200)
            _wait(lambda: len(_noted(db)) >= 150, "notes after the pause")
            killed = _holder_pid(db)
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            append(201, TOTAL)
            _wait(lambda: len(set(_noted(db))) >= TOTAL, "every event noted")
        noted = _noted(db)
        assert list(range(1, TOTAL + 1)) == sorted(noted), "an effect was committed twice"
        with App(db, registry=registry) as app:
            by = {e.message.by for e in app.store.read_all() if isinstance(e.message, Noted)}
        assert len(by) >= 2, "the lease never changed hands"
    finally:
        _stop(children)


def test_three_processes_share_three_segments_and_one_is_killed(db: str) -> None:
    """segments=3 over three processes: each holds one segment and notes its streams;
    one is killed with SIGKILL, its segment is taken over, and every event is noted
    exactly once."""
    children = _start(db, 3)
    names = [lease_name(segment_name("noter", i, 3)) for i in range(3)]

    def holders() -> list[int | None]:
        with App(db, registry=registry) as app:
            leases = [app.storage.leases.holder(n) for n in names]
        return [None if x is None else int(x.owner.split(":")[1]) for x in leases]

    try:
        pids = {c.pid for c in children}
        _wait(lambda: set(holders()) == pids, "one segment each")
        with App(db, registry=registry) as app:

            def append(first: int, last: int) -> None:
                for n in range(first, last + 1):
                    app.store.append(f"ticks-{n % 10}", [Ticked(n)])

            append(1, 150)
            _wait(lambda: len(_noted(db)) >= 150, "the first notes")
            with App(db, registry=registry) as reader:
                by = {e.message.by for e in reader.store.read_all() if isinstance(e.message, Noted)}
            assert {"p0", "p1", "p2"} == by
            killed = holders()[0]
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            append(151, TOTAL)
            _wait(lambda: len(set(_noted(db))) >= TOTAL, "every event noted")
            _wait(lambda: None not in holders() and killed not in holders(), "the takeover")
        noted = _noted(db)
        assert list(range(1, TOTAL + 1)) == sorted(noted), "an effect was committed twice"
    finally:
        _stop(children)
