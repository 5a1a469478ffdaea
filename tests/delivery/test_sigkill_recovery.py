"""Durable delivery under SIGKILL: a child process commits events while durable subscribers
handle them, and is killed at random moments, again and again, into the same file.

After every restart the child first catches up (``run_until_idle``) and says so; the test
then checks, in the file, that every event committed so far reached every durable
subscriber, that the effects written through the unit of work exist exactly once, and
that each subscriber saw each stream in order.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Commits batches of events to a few streams from two threads, while three durable
# subscribers handle them: two write their effects through the unit of work (exactly
# once), one writes in a transaction of its own (at least once). Prints "idle <head>"
# once it has caught up with what earlier runs left, then works until killed (or, with
# "drain", exits after catching up).
CHILD = """
import sys, threading, random
from eventlite.app import App
from eventlite.envelope import current_envelope
from eventlite.messages import Registry, event
from eventlite.retry import RetryPolicy

registry = Registry()

@event(registry=registry, name="crash.Placed")
class Placed:
    n: int

path, mode, tag = sys.argv[1], sys.argv[2], sys.argv[3]
app = App(path, registry=registry, synchronous="normal", poll_interval=0.01)
with app.database.transaction() as tx:
    tx.execute(
        "CREATE TABLE IF NOT EXISTS effects (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "subscriber TEXT, event_id TEXT, stream TEXT, version INTEGER)"
    )
    tx.execute("CREATE TABLE IF NOT EXISTS seen (subscriber TEXT, event_id TEXT)")

def exactly_once(name):
    def handle(event, uow):
        env = current_envelope()
        uow.execute(
            "INSERT INTO effects (subscriber, event_id, stream, version) VALUES (?, ?, ?, ?)",
            (name, env.id, env.stream_id, env.version),
        )
    return handle

def at_least_once(event):
    env = current_envelope()
    with app.database.transaction() as tx:
        tx.execute("INSERT INTO seen VALUES ('plain', ?)", (env.id,))

for name in ("billing", "shipping"):
    app.subscribe(Placed, exactly_once(name), durable=True, name=name)
app.subscribe(Placed, at_least_once, durable=True, name="plain")

app.run_until_idle(timeout=60)
sys.stdout.write(f"idle {app.store.head_position()}\\n")
sys.stdout.flush()
if mode == "drain":
    app.close()
    sys.exit(0)

def write(t):
    rng = random.Random(t)
    n = 0
    while True:
        stream = f"{tag}-{t}-{rng.randrange(4)}"
        app.store.append(stream, [Placed(n + k) for k in range(1 + rng.randrange(3))])
        n += 3

for t in range(2):
    threading.Thread(target=write, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def _start(path: Path, mode: str, tag: str) -> tuple[subprocess.Popen[str], int]:
    """Start the child and wait for its "idle <head>" line."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), mode, tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.startswith("idle "):
        child.kill()
        _, err = child.communicate(timeout=30)
        raise AssertionError(f"child did not catch up: {line!r}\n{err[-3000:]}")
    return child, int(line.split()[1])


def _check(path: Path, head: int) -> int:
    """Every event up to ``head`` reached every durable subscriber; effects through the
    unit of work exist exactly once and in stream order. Returns the number of events."""
    raw = sqlite3.connect(path)
    try:
        raw.execute("BEGIN")
        events = raw.execute(
            "SELECT id, stream_id, version FROM events WHERE position <= ?", (head,)
        ).fetchall()
        ids = {row[0] for row in events}
        for name in ("billing", "shipping"):
            rows = raw.execute(
                "SELECT event_id, stream, version FROM effects WHERE subscriber = ? ORDER BY seq",
                (name,),
            ).fetchall()
            handled = [r[0] for r in rows if r[0] in ids]
            assert sorted(ids) == sorted(handled), f"{name}: missing or duplicated effects"
            last: dict[str, int] = {}
            for _, stream, version in rows:
                assert last.get(stream, 0) < version, f"{name}: {stream} out of order"
                last[stream] = version
        plain = {r[0] for r in raw.execute("SELECT event_id FROM seen")}
        assert set() == ids - plain, "the at-least-once subscriber missed events"
        checkpoints = dict(raw.execute("SELECT name, position FROM subscriber_checkpoints"))
        assert all(checkpoints[n] >= head for n in ("billing", "shipping", "plain"))
        raw.execute("COMMIT")
        return len(ids)
    finally:
        raw.close()


def _kill_rounds(path: Path, rounds: int, rng: random.Random) -> int:
    """Start, let it work for a random moment, SIGKILL; check after every restart."""
    previous = -1
    for i in range(rounds):
        child, head = _start(path, "work", f"r{i}")
        try:
            count = _check(path, head)
            assert count >= previous
            previous = count
            time.sleep(rng.uniform(0.05, 0.4))  # a random moment to kill it, not a wait
        finally:
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
    child, head = _start(path, "drain", "final")
    assert 0 == child.wait(timeout=60)
    child.communicate(timeout=30)
    return _check(path, head)


def test_sigkill_between_commit_and_delivery(tmp_path: Path) -> None:
    """Three kills at random moments: after each restart every committed event reached
    every durable subscriber, and the unit-of-work effects exist exactly once."""
    seed = random.randrange(2**32)
    events = _kill_rounds(tmp_path / "crash.db", 3, random.Random(seed))
    assert events > 0, f"seed {seed}: no event was committed"


@pytest.mark.slow
def test_sigkill_many_times(tmp_path: Path) -> None:
    """Twenty-five kills into one file, with the same checks after every restart."""
    seed = random.randrange(2**32)
    events = _kill_rounds(tmp_path / "crash.db", 25, random.Random(seed))
    assert events > 0, f"seed {seed}: no event was committed"
