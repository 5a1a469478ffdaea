"""Real signals at random moments never wedge the file: a process appending while it gets
hundreds of SIGINTs (KeyboardInterrupt, caught and carried on from) keeps appending, and
another process can write to the file while it is still alive."""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from eventlite import Codec, Registry
from eventlite.messages import event
from eventlite.sqlite import SQLiteEventStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")

registry = Registry()


@event(registry=registry, name="signals.Noted")
class Noted:
    n: int


CHILD = textwrap.dedent(
    """
    import signal, sys, threading
    from eventlite import Codec, Registry, App
    from eventlite.messages import event
    from eventlite.sqlite import SQLiteEventStore

    registry = Registry()

    @event(registry=registry, name="signals.Noted")
    class Noted:
        n: int

    path, threads, use_app = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "app"
    stop = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: stop.set())
    if use_app:
        app = App(path, registry=registry)
        append = lambda stream, n: app.store.append(stream, [Noted(n=n)])

        def write(stream, n):
            with app.unit_of_work() as uow:
                uow.append(stream, [Noted(n=n)])
    else:
        store = SQLiteEventStore(path, codec=Codec(registry))
        write = lambda stream, n: store.append(stream, [Noted(n=n)])

    def worker(i):
        n = 0
        while not stop.is_set():
            write(f"worker-{i}", n)
            n += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads - 1)]
    for t in workers:
        t.start()
    # SIGINT raises KeyboardInterrupt only inside a write, once per arming: the
    # interrupts land wherever the write happens to be, never in this loop's bookkeeping.
    armed = False

    def on_sigint(signum, frame):
        global armed
        if armed:
            armed = False
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    interrupts = 0
    n = 0
    print("ready", flush=True)
    while not stop.is_set():
        try:
            armed = True
            write("main", n)
            armed = False
            n += 1
        except KeyboardInterrupt:
            interrupts += 1
    # quiet: the parent now writes from its own process while this one still lives
    for t in workers:
        t.join()
    print(f"idle {interrupts}", flush=True)
    sys.stdin.readline()
    write("main", -1)  # this process can still write too
    print("done", flush=True)
    """
)


def _line(child: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """The child's next output line; fails if none comes within ``timeout`` seconds (a
    wedged child must fail the test, not hang it)."""
    assert child.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(child.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"the child printed nothing for {timeout} s: it is wedged")
    return child.stdout.readline().strip()


@pytest.mark.parametrize(("threads", "mode"), [(1, "store"), (4, "store"), (4, "app")])
def test_sigint_storm_never_leaves_the_file_locked(tmp_path: Path, threads: int, mode: str) -> None:
    """Hundreds of SIGINTs land at random moments in a process appending from ``threads``
    threads (through the store, or through an App's units of work); afterwards another
    process appends at once, the first one goes on appending, and positions have no gap."""
    path = tmp_path / "signals.db"
    SQLiteEventStore(path, codec=Codec(registry)).close()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(threads), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert "ready" == _line(child)
        rng = random.Random(threads)
        for _ in range(300):
            os.kill(child.pid, signal.SIGINT)
            time.sleep(rng.uniform(0, 0.004))
        os.kill(child.pid, signal.SIGUSR1)
        idle = _line(child).split()
        assert "idle" == idle[0], idle
        assert int(idle[1]) > 0  # the storm did reach the appends
        other = SQLiteEventStore(path, codec=Codec(registry), busy_timeout=2.0)
        try:
            other.append("other-process", [Noted(n=1)])
        finally:
            other.close()
        child.stdin.write("\n")
        child.stdin.flush()
        assert "done" == _line(child)
        assert 0 == child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    with SQLiteEventStore(path, codec=Codec(registry)) as store:
        positions = [e.position for e in store.read_all()]
        assert list(range(1, len(positions) + 1)) == positions
        assert 1 == len(store.read_stream("other-process"))
