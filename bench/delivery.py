"""Durable delivery benchmarks: commit-to-delivery latency of an in-process durable
subscriber, and delivery throughput beside the append rate measured in the same run.

Files on disk in a temporary folder (``BENCH_DIR`` to choose where), ``synchronous=
"normal"``. ``python -m bench delivery [--quick]``.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

from eventlite.app import App
from eventlite.messages import Registry, event
from eventlite.unit_of_work import UnitOfWork

from . import delivery_queue
from ._harness import Row, workdir

registry = Registry()


@event(registry=registry, name="bench.OrderPlaced")
class OrderPlaced:
    order: int
    customer: str
    total_cents: int


def _placed(i: int) -> OrderPlaced:
    return OrderPlaced(order=i, customer=f"customer-{i % 97}", total_cents=995 + i)


def _app(path: Path, lease_seconds: float | None = 30.0) -> App:
    # A long poll interval: every delivery measured here comes from the commit's wake-up.
    return App(
        path,
        registry=registry,
        synchronous="normal",
        poll_interval=60.0,
        lease_seconds=lease_seconds,
    )


def _latency(path: Path, n: int) -> tuple[list[float], list[float]]:
    """Seconds from the start of each append to its handler starting, one event at a time;
    and, for orientation, how long each append alone took."""
    delivered: dict[int, float] = {}
    got = threading.Event()

    def handle(e: OrderPlaced) -> None:
        delivered[e.order] = time.perf_counter()
        got.set()

    latencies: list[float] = []
    appends: list[float] = []
    with _app(path) as app:
        app.subscribe(OrderPlaced, handle, durable=True, name="latency")
        for i in range(n + n // 10):
            got.clear()
            started = time.perf_counter()
            app.store.append(f"order-{i % 50}", [_placed(i)])
            appended = time.perf_counter()
            if not got.wait(10):
                raise RuntimeError(f"event {i} was not delivered within 10 s")
            if i >= n // 10:  # the first tenth warms up
                latencies.append(delivered[i] - started)
                appends.append(appended - started)
    return latencies, appends


def _fill(app: App, n: int, repeat: int = 3) -> float:
    """Append n events, one transaction each, ``repeat`` times; returns the best rate in
    events per second (the log then holds ``n * repeat`` events)."""
    best = 0.0
    for r in range(repeat):
        started = time.perf_counter()
        for i in range(n):
            app.store.append(f"order-{r}-{i % 50}", [_placed(i)])
        best = max(best, n / (time.perf_counter() - started))
    return best


def _deliver_backlog(app: App, name: str, n: int, uow: bool) -> float:
    """Subscribe to a log of n events; returns events delivered per second."""
    done = threading.Event()
    count = [0]

    def plain(e: OrderPlaced) -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    def with_uow(e: OrderPlaced, uow: UnitOfWork) -> None:
        uow.execute("INSERT INTO receipts (n, cents) VALUES (?, ?)", (e.order, e.total_cents))
        plain(e)

    started = time.perf_counter()
    app.subscribe(
        OrderPlaced, with_uow if uow else plain, durable=True, name=name, start="beginning"
    )
    if not done.wait(300):
        raise RuntimeError(f"{name}: the backlog was not delivered within 300 s")
    return n / (time.perf_counter() - started)


def _live(path: Path, n: int) -> float:
    """One thread appends n events one by one while a durable subscriber handles them;
    events per second from the first append to the last delivery."""
    done = threading.Event()
    count = [0]

    def handle(e: OrderPlaced) -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    with _app(path) as app:
        app.subscribe(OrderPlaced, handle, durable=True, name="live")
        started = time.perf_counter()
        for i in range(n):
            app.store.append(f"order-{i % 50}", [_placed(i)])
        if not done.wait(300):
            raise RuntimeError("live delivery did not finish within 300 s")
        return n / (time.perf_counter() - started)


def _live_best(dir: Path, n: int, repeat: int = 3) -> float:
    return max(_live(dir / f"live-{r}.db", n) for r in range(repeat))


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run(quick: bool) -> list[Row]:
    """The delivery suite's rows."""
    samples = 300 if quick else 3000
    backlog = 3000 if quick else 30000  # the events a backlog holds; appended in 3 rounds
    rows: list[Row] = []
    with workdir() as dir:
        latencies, appends = _latency(dir / "latency.db", samples)
        append_p50 = statistics.median(appends) * 1e3
        p50 = statistics.median(latencies) * 1e3
        p99 = _percentile(latencies, 99) * 1e3
        rows.append(
            Row(
                "commit-to-delivery latency p50 (append start to handler start)",
                p50,
                "ms",
                baseline="the append alone, p50",
                baseline_value=append_p50,
            )
        )
        rows.append(
            Row(
                "commit-to-delivery latency p99",
                p99,
                "ms",
                baseline="the append alone, p50",
                baseline_value=append_p50,
                target="p99 <= 5 ms",
                met=p99 <= 5.0,
            )
        )
        with _app(dir / "backlog.db") as app:
            assert app.database is not None
            with app.database.transaction() as tx:
                tx.execute("CREATE TABLE receipts (n INTEGER, cents INTEGER)")
            append_rate = _fill(app, backlog // 3)

            def vs_appends(name: str, value: float) -> Row:
                return Row(
                    name,
                    value,
                    "events/s",
                    baseline="append rate",
                    baseline_value=append_rate,
                    target="ratio >= 0.5",
                    met=value >= 0.5 * append_rate,
                    higher_is_better=True,
                )

            rows.append(
                Row(
                    "append rate, one event per transaction (best of 3)",
                    append_rate,
                    "events/s",
                    higher_is_better=True,
                )
            )
            plain = _deliver_backlog(app, "plain", backlog, uow=False)
            rows.append(vs_appends("durable delivery of a backlog, plain handler", plain))
            exactly_once = _deliver_backlog(app, "receipts", backlog, uow=True)
            rows.append(
                vs_appends(
                    "durable delivery of a backlog, unit of work + inbox (a write each)",
                    exactly_once,
                )
            )
        # What leases cost a unit-of-work subscriber: fresh apps on the same backlog, each
        # with that one subscriber, with and without leases, alternated, best of two.
        best = {True: 0.0, False: 0.0}
        for i, leased in enumerate((True, False, True, False)):
            with _app(dir / "backlog.db", lease_seconds=30.0 if leased else None) as fresh:
                rate_ = _deliver_backlog(fresh, f"receipts-{i}", backlog, uow=True)
            best[leased] = max(best[leased], rate_)
        rows.append(
            Row(
                "durable delivery of a backlog, unit of work + inbox, under a lease (best of 2)",
                best[True],
                "events/s",
                baseline="the same without leases (lease_seconds=None)",
                baseline_value=best[False],
                higher_is_better=True,
            )
        )
        live = _live_best(dir, backlog // 3)
        rows.append(
            vs_appends(
                "append and deliver at once, plain handler (first append to last delivery, "
                "best of 3)",
                live,
            )
        )
    rows.extend(delivery_queue.run(quick))
    return rows
