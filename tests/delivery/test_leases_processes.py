"""Three processes run the same durable subscriber on one SQLite file. The lease holder is
paused (SIGSTOP) past its lease and resumed, then killed (SIGKILL): another process takes
over each time, no event is lost, and no unit-of-work effect is committed twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventlite import App
from eventlite.relay._tenure import lease_name

from .test_leases import Noted, Ticked, registry

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="POSIX")]

ROOT = Path(__file__).resolve().parents[2]
CHILD = f"""
import sys, time, signal
sys.path.insert(0, {str(ROOT)!r})
from eventlite import App
from tests.delivery.test_leases import Ticked, Noted, registry

app = App(sys.argv[1], registry=registry, lease_seconds=1.0, synchronous="normal")

def note(e, uow):
    time.sleep(0.002)
    uow.append(f"notes-{{e.n}}", [Noted(e.n, sys.argv[2])])

app.subscribe(Ticked, note, durable=True, name="noter", start="beginning")
app.start()
print("ready", flush=True)
signal.sigwait([signal.SIGTERM])
app.close()
"""

TOTAL = 300


def _holder_pid(path: Path) -> int | None:
    with App(path, registry=registry) as app:
        lease = app.storage.leases.holder(lease_name("noter"))
    return None if lease is None else int(lease.owner.split(":")[1])


def _noted(path: Path) -> list[int]:
    with App(path, registry=registry) as app:
        return [e.message.n for e in app.store.read_all() if isinstance(e.message, Noted)]


def _wait(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_pause_and_kill_of_the_lease_holder(tmp_path: Path) -> None:
    """SIGSTOP of the holder past its lease, SIGCONT, then SIGKILL of the next holder:
    every event is noted exactly once, by whichever process held the lease."""
    path = tmp_path / "shared.db"
    App(path, registry=registry).close()
    children = []
    for i in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), f"p{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        children.append(child)
    try:
        for child in children:
            assert child.stdout is not None
            assert "ready" == child.stdout.readline().strip()
        with App(path, registry=registry) as app:

            def append(first: int, last: int) -> None:
                for n in range(first, last + 1):
                    app.store.append("ticks", [Ticked(n)])

            append(1, 100)
            _wait(lambda: len(_noted(path)) >= 50, "the first notes")
            paused = _holder_pid(path)
            assert paused is not None
            # Paused past its lease, most likely inside its handler's write transaction
            # (which holds SQLite's write lock: nobody can take the lease meanwhile), then
            # resumed: whoever holds the lease afterwards, nothing is committed twice.
            os.kill(paused, signal.SIGSTOP)
            time.sleep(2.5)
            os.kill(paused, signal.SIGCONT)
            append(101, 200)
            _wait(lambda: len(_noted(path)) >= 150, "notes after the pause")
            killed = _holder_pid(path)
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            append(201, TOTAL)
            _wait(lambda: len(set(_noted(path))) >= TOTAL, "every event noted")
        noted = _noted(path)
        assert list(range(1, TOTAL + 1)) == sorted(noted), "an effect was committed twice"
        with App(path, registry=registry) as app:
            by = {e.message.by for e in app.store.read_all() if isinstance(e.message, Noted)}
        assert len(by) >= 2, "the lease never changed hands"
    finally:
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
