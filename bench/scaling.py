"""Segments across processes: ``python -m bench scaling``.

A durable subscriber whose handler waits 1 ms (the I/O of a real handler), on one SQLite
file: split into three segments and run by three worker processes (one segment each, by
the fair share) against one process running it unsplit. Then the failover: the worker of
segment 0 is killed with SIGKILL (a process of this machine: taken over at once), and
another is stopped with SIGSTOP (as a machine that is gone: taken over when its lease
expires); each time, how long until another worker holds the segment.

Each worker is ``python -m bench.scaling --worker DB SEGMENTS``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import eventlite
from eventlite import App
from eventlite.relay import segment_name
from eventlite.relay._tenure import lease_name

from ._harness import Row, workdir

registry = eventlite.Registry()

NAME = "io-bound"
LEASE = 2.0
STREAMS = 300


@eventlite.event(registry=registry, name="bench_scaling.Job")
class Job:
    n: int


def work(db: str, segments: int) -> None:
    """A worker process: the subscriber (1 ms per event), until SIGTERM."""
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    app = App(db, registry=registry, lease_seconds=LEASE, synchronous="normal")

    def handle(job: Job) -> None:
        time.sleep(0.001)

    app.subscribe(Job, handle, durable=True, name=NAME, start="end", segments=segments)
    print(app.relay.owner, flush=True)
    signal.sigwait([signal.SIGTERM])
    app.close()


def _wait(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _workers(db: str, segments: int, count: int) -> list[tuple[subprocess.Popen[str], str]]:
    out = []
    for _ in range(count):
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.scaling", "--worker", db, str(segments)],
            stdout=subprocess.PIPE,
            text=True,
        )
        out.append(child)
    started = []
    for child in out:
        assert child.stdout is not None
        started.append((child, child.stdout.readline().strip()))
    return started


def _stop(workers: list[tuple[subprocess.Popen[str], str]]) -> None:
    for child, _ in workers:
        if child.poll() is None:
            child.send_signal(signal.SIGCONT)
            child.terminate()
    for child, _ in workers:
        child.wait(timeout=30)


def _holders(app: App, segments: int) -> list[str | None]:
    now = time.time()
    out: list[str | None] = []
    for i in range(segments):
        name = NAME if segments == 1 else segment_name(NAME, i, segments)
        lease = app.storage.leases.holder(lease_name(name))
        out.append(None if lease is None or lease.expires_at <= now else lease.owner)
    return out


def _throughput(app: App, events: int) -> float:
    """Append ``events`` jobs in one transaction; events per second until every segment's
    checkpoint is at the head."""
    t0 = time.perf_counter()
    with app.storage.transaction():
        for n in range(events):
            app.store.append(f"job-{n % STREAMS}", [Job(n)])
    head = app.store.head_position()
    checkpoints = app.storage.checkpoints
    _wait(
        lambda: all(c.position >= head for c in checkpoints.list() if c.name.startswith(NAME)),
        "the workers to catch up",
    )
    return events / (time.perf_counter() - t0)


def _run(dir: Path, segments: int, processes: int, events: int) -> tuple[float, list[float]]:
    """Events per second of ``processes`` workers; with three, the failover times after
    SIGKILL and after SIGSTOP of a segment's holder."""
    db = str(dir / f"scaling-{segments}-{processes}.db")
    App(db, registry=registry).close()
    workers = _workers(db, segments, processes)
    failovers: list[float] = []
    try:
        with App(db, registry=registry) as app:
            owners = {owner for _, owner in workers}
            _wait(lambda: set(_holders(app, segments)) == owners, "the segments to be shared", 60)
            rate = _throughput(app, events)
            if processes < 3:
                return rate, failovers
            by_owner = {owner: child for child, owner in workers}
            for sig in (signal.SIGKILL, signal.SIGSTOP):
                victim = _holders(app, segments)[0]
                assert victim is not None
                t0 = time.perf_counter()
                os.kill(by_owner[victim].pid, sig)
                if sig == signal.SIGKILL:
                    by_owner[victim].wait()  # reaped, as a supervisor does: its pid is gone
                _wait(
                    lambda v=victim: _holders(app, segments)[0] not in (None, v),  # type: ignore[misc]
                    "the takeover",
                    60,
                )
                failovers.append(time.perf_counter() - t0)
                _wait(lambda: None not in _holders(app, segments), "every segment held", 60)
    finally:
        _stop(workers)
    return rate, failovers


def run(quick: bool) -> list[Row]:
    """The suite's rows: throughput of three processes against one, and failover times."""
    events = 600 if quick else 6_000
    with workdir() as dir:
        one, _ = _run(dir, 1, 1, events)
        three, (killed, stopped) = _run(dir, 3, 3, events)
    return [
        Row(
            "1 ms handler, segments=3 in 3 processes",
            three,
            "events/s",
            "one process, not split",
            one,
            "ratio >= 2.5",
            three >= 2.5 * one,
            higher_is_better=True,
        ),
        Row(
            "failover after SIGKILL of a segment's holder (same machine)",
            killed,
            "s",
            "2 x lease_seconds",
            2 * LEASE,
            "<= 2 x lease",
            killed <= 2 * LEASE,
        ),
        Row(
            "failover after SIGSTOP of a segment's holder (lease expiry)",
            stopped,
            "s",
            "2 x lease_seconds",
            2 * LEASE,
            "<= 2 x lease",
            stopped <= 2 * LEASE,
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    """``--worker DB SEGMENTS`` runs a worker; otherwise the suite is printed."""
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--worker", nargs=2, metavar=("DB", "SEGMENTS"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        work(args.worker[0], int(args.worker[1]))
        return
    from ._harness import print_rows

    print_rows("scaling", run(quick=args.quick))


if __name__ == "__main__":
    main()
