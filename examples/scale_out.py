"""Three processes share one subscriber, one is killed: ``python -m examples.scale_out``.

A durable subscriber ``fulfil`` is split into three segments by order id
(``segments=3``). Three worker processes run the same app on one store (a temporary SQLite
file, or the PostgreSQL database of ``--db postgresql://...``); each holds the lease of
one segment, by the fair share (``docs/scaling.md``). The example appends the steps of 30
orders and shows how many each worker handled; then it kills the worker of segment 0 with
SIGKILL, appends more, and shows that a surviving worker took segment 0 over and that
every step was handled exactly once (its unit of work's ``Handled`` event exists once),
each order's steps in order.

Each worker is ``python -m examples.scale_out --worker DB``; leases last 1.5 s.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import eventlite
from eventlite import App, UnitOfWork

registry = eventlite.Registry()

SUBSCRIBER = "fulfil"
SEGMENTS = 3
ORDERS = 30
LEASE_SECONDS = 1.5


@eventlite.event(registry=registry, name="scale_out.StepDone")
class StepDone:
    run: str
    order: str
    step: int


@eventlite.event(registry=registry, name="scale_out.Handled")
class Handled:
    run: str
    order: str
    step: int
    worker: str


def build(db: str, run: str, worker: str) -> App:
    """A worker's app: the split subscriber, whose unit of work records who handled what."""
    app = App(db, registry=registry, lease_seconds=LEASE_SECONDS)

    def fulfil(event: StepDone, uow: UnitOfWork) -> None:
        if event.run != run:
            return  # an earlier run's step (on a reused database)
        time.sleep(0.002)  # the I/O a real handler would do
        uow.append(f"handled-{event.order}", [Handled(run, event.order, event.step, worker)])

    app.subscribe(
        StepDone,
        fulfil,
        durable=True,
        name=f"{SUBSCRIBER}-{run}",
        start="end",
        segments=SEGMENTS,
    )
    return app


def work(db: str, run: str, worker: str) -> None:
    """A worker process: run the app until SIGTERM."""
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    app = build(db, run, worker)
    print(app.relay.owner, flush=True)
    signal.sigwait([signal.SIGTERM])
    app.close()


def _wait(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Store:
    """The parent's view of the store."""

    def __init__(self, db: str, run: str) -> None:
        self.app = App(db, registry=registry)
        self.run = run
        self.name = f"{SUBSCRIBER}-{run}"

    def holders(self) -> dict[int, str | None]:
        """Who holds each segment (None: nobody, or an expired lease)."""
        now = time.time()
        return {
            s.segment or 0: s.owner
            if s.lease_expires_at is not None and s.lease_expires_at > now
            else None
            for s in self.app.subscribers()
            if s.name == self.name
        }

    def handled(self) -> list[Handled]:
        """This run's effects, in log order."""
        return [
            e.message for e in self.app.store.read_all(types=[Handled]) if e.message.run == self.run
        ]

    def append(self, steps: range) -> int:
        """The steps of every order, one event each (an order's steps are one stream)."""
        count = 0
        for step in steps:
            for n in range(ORDERS):
                order = f"o-{n}"
                self.app.store.append(f"Order-{order}", [StepDone(self.run, order, step)])
                count += 1
        return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.scale_out", description=__doc__)
    parser.add_argument("--db", help="a PostgreSQL URL (default: a temporary SQLite file)")
    parser.add_argument("--worker", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        work(args.worker, args.run, args.tag)
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "shop.db")
        run_id = uuid.uuid4().hex[:8]
        show(db, run_id)


def show(db: str, run: str) -> None:
    """Start three workers, share the work, kill one, check the outcome."""
    App(db, registry=registry).close()  # the schema, before the workers race to make it
    tags = ["w1", "w2", "w3"]
    command = [sys.executable, "-m", "examples.scale_out", "--worker", db, "--run", run]
    workers = {
        tag: subprocess.Popen(
            [*command, "--tag", tag],
            stdout=subprocess.PIPE,
            text=True,
        )
        for tag in tags
    }
    store = Store(db, run)
    try:
        owners = {}
        for tag, child in workers.items():
            assert child.stdout is not None
            owners[child.stdout.readline().strip()] = tag
        print(f"three workers run subscriber {SUBSCRIBER!r} with segments={SEGMENTS}")

        def one_each() -> bool:
            return sorted(str(h) for h in store.holders().values()) == sorted(owners)

        _wait(one_each, "each worker to hold one segment")
        print("each worker holds one segment (the fair share of 3 segments among 3): True")
        holders = store.holders()
        appended = store.append(range(3))
        print(f"appended {appended} steps of {ORDERS} orders")
        _wait(lambda: len(store.handled()) >= appended, "the first steps")
        per_worker = Counter(h.worker for h in store.handled())
        print(f"steps handled per worker: {', '.join(str(c) for c in sorted(per_worker.values()))}")

        victim_owner = holders[0]
        assert victim_owner is not None
        victim = owners[victim_owner]
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait()
        print("SIGKILL to the worker holding segment 0")
        appended += store.append(range(3, 6))
        print(f"appended {appended - ORDERS * 3} more steps")
        _wait(lambda: len(store.handled()) >= appended, "the steps after the kill")
        now = store.holders()
        survivors = {o for o, t in owners.items() if t != victim}
        print(f"segment 0 taken over by a surviving worker: {now[0] in survivors}")
        handled = store.handled()
        once = Counter((h.order, h.step) for h in handled)
        expected = {(f"o-{n}", step) for n in range(ORDERS) for step in range(6)}
        exactly_once = set(once) == expected and max(once.values()) == 1
        print(f"every step handled exactly once: {exactly_once}")
        in_order = all(
            [h.step for h in handled if h.order == f"o-{n}"] == list(range(6))
            for n in range(ORDERS)
        )
        print(f"each order's steps handled in order: {in_order}")
    finally:
        for child in workers.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in workers.values():
            child.wait(timeout=30)
        store.app.close()


if __name__ == "__main__":
    main()
