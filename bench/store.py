"""Event store benchmarks: eventlite's SQLite store beside raw ``sqlite3`` (the floor) and
the ``eventsourcing`` library on SQLite, all in files on disk so that fsync is real.

``python -m bench store [--quick]``.
"""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventlite import Codec, Registry
from eventlite.messages import event
from eventlite.sqlite import SQLiteEventStore

from ._harness import Row, rate, workdir

registry = Registry()


@event(registry=registry, name="bench.Deposited")
class Deposited:
    account: str
    amount: int
    note: str


def _deposit(i: int) -> Deposited:
    return Deposited(account="acc-1", amount=i, note="monthly salary")


_counter = iter(range(10**9))


def _fresh(dir: Path, name: str) -> Path:
    return dir / f"{name}-{next(_counter)}.db"


# -- eventlite ------------------------------------------------------------------------------


def _el_store(path: Path, synchronous: str = "full") -> SQLiteEventStore:
    return SQLiteEventStore(path, codec=Codec(registry), synchronous=synchronous)  # type: ignore[arg-type]


# Each writer below opens its file once and returns the function to time, which writes to
# new streams (or aggregates) on every call: opening files stays out of the measurement.

_streams = itertools.count()


def el_single(store: SQLiteEventStore, n: int) -> Callable[[], int]:
    """n single-event appends to one new stream, one transaction each."""

    def run() -> int:
        stream = f"acc-{next(_streams)}"
        for i in range(n):
            store.append(stream, [_deposit(i)], expected_version=i)
        return n

    return run


def el_threads(store: SQLiteEventStore, n: int, threads: int = 8) -> Callable[[], int]:
    """``threads`` threads, each making n single-event appends to its own new stream."""

    def work(stream: str, start: threading.Barrier) -> None:
        start.wait()
        for i in range(n):
            store.append(stream, [_deposit(i)], expected_version=i)

    def run() -> int:
        start = threading.Barrier(threads)
        workers = [
            threading.Thread(target=work, args=(f"acc-{next(_streams)}", start))
            for _ in range(threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return n * threads

    return run


def el_bulk(store: SQLiteEventStore, n: int) -> Callable[[], int]:
    """One append of n events to a new stream (making the messages included)."""

    def run() -> int:
        store.append(f"acc-{next(_streams)}", [_deposit(i) for i in range(n)])
        return n

    return run


# -- eventsourcing --------------------------------------------------------------------------


@functools.cache
def _es_types() -> tuple[type, type]:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate
    from eventsourcing.domain import event as es_event

    class Account(Aggregate):  # type: ignore[misc]
        @es_event("Opened")  # type: ignore[untyped-decorator]
        def __init__(self) -> None:
            self.balance = 0

        @es_event("Deposited")  # type: ignore[untyped-decorator]
        def deposit(self, account: str, amount: int, note: str) -> None:
            self.balance += amount

    return Application, Account


def _es_app(path: Path) -> Any:
    application, _ = _es_types()
    return application(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )


def es_single(app: Any, n: int) -> Callable[[], int]:
    """n saves of a new aggregate with one new event each."""
    _, account_cls = _es_types()

    def run() -> int:
        account = account_cls()
        app.save(account)
        for i in range(n - 1):
            account.deposit("acc-1", i, "monthly salary")
            app.save(account)
        return n

    return run


def es_threads(app: Any, n: int, threads: int = 8) -> Callable[[], int]:
    """``threads`` threads, each saving its own new aggregate n times."""
    _, account_cls = _es_types()

    def work(start: threading.Barrier) -> None:
        account = account_cls()
        start.wait()
        app.save(account)
        for i in range(n - 1):
            account.deposit("acc-1", i, "monthly salary")
            app.save(account)

    def run() -> int:
        start = threading.Barrier(threads)
        workers = [threading.Thread(target=work, args=(start,)) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return n * threads

    return run


def es_bulk(app: Any, n: int) -> Callable[[], int]:
    """One save of a new aggregate with n events (making the events included)."""
    _, account_cls = _es_types()

    def run() -> int:
        account = account_cls()
        for i in range(n - 1):
            account.deposit("acc-1", i, "monthly salary")
        app.save(account)
        return n

    return run


# -- raw sqlite3 ----------------------------------------------------------------------------

_RAW_SCHEMA = """
CREATE TABLE events (position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL,
  version INTEGER NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL,
  schema_version INTEGER NOT NULL, data TEXT NOT NULL, correlation_id TEXT NOT NULL,
  causation_id TEXT, user_id TEXT, headers TEXT, timestamp INTEGER NOT NULL);
CREATE UNIQUE INDEX events_stream_version ON events (stream_id, version);
CREATE UNIQUE INDEX events_id ON events (id);
"""
_RAW_INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _raw_conn(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(_RAW_SCHEMA)
    return conn


def _raw_row(stream: str, version: int, i: int) -> tuple[Any, ...]:
    event_id = str(uuid.uuid4())
    data = json.dumps({"account": "acc-1", "amount": i, "note": "monthly salary"})
    return (
        None,
        stream,
        version,
        event_id,
        "bench.Deposited",
        1,
        data,
        event_id,
        None,
        None,
        None,
        time.time_ns() // 1000,
    )


def raw_single(conn: sqlite3.Connection, n: int) -> Callable[[], int]:
    """n single-row inserts, one transaction each (the floor)."""

    def run() -> int:
        stream = f"acc-{next(_streams)}"
        for i in range(1, n + 1):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_RAW_INSERT, _raw_row(stream, i, i))
            conn.execute("COMMIT")
        return n

    return run


def raw_bulk(conn: sqlite3.Connection, n: int) -> Callable[[], int]:
    """n rows in one transaction (the floor; making the rows included)."""

    def run() -> int:
        stream = f"acc-{next(_streams)}"
        rows = [_raw_row(stream, i, i) for i in range(1, n + 1)]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_RAW_INSERT, rows)
        conn.execute("COMMIT")
        return n

    return run


# -- replay ---------------------------------------------------------------------------------


def _replay_rows(dir: Path, n: int) -> list[Row]:
    el_path = _fresh(dir, "replay-el")
    with _el_store(el_path) as store:
        store.append("acc-1", [_deposit(i) for i in range(n)])
    store = _el_store(el_path)

    def el() -> int:
        return len(store.read_stream("acc-1"))

    _, account_cls = _es_types()
    app = _es_app(_fresh(dir, "replay-es"))
    account = account_cls()
    for i in range(n - 1):
        account.deposit("acc-1", i, "monthly salary")
    app.save(account)
    account_id = account.id

    def es() -> int:
        return app.repository.get(account_id).version  # type: ignore[no-any-return]

    raw = sqlite3.connect(el_path)

    def floor() -> int:
        rows = raw.execute(
            "SELECT data FROM events WHERE stream_id = ? ORDER BY version", ("acc-1",)
        ).fetchall()
        for (data,) in rows:
            json.loads(data)
        return len(rows)

    el_rate, es_rate, raw_rate = rate(el, 5), rate(es, 3), rate(floor, 5)
    store.close()
    app.close()
    raw.close()
    el_us, es_us = 1e6 / el_rate, 1e6 / es_rate
    return [
        Row(
            f"replay a {n:,}-event stream (read_stream + decode), per event",
            el_us,
            "µs",
            "eventsourcing repository.get",
            es_us,
            "eventlite ≤ 1/3 of eventsourcing and ≤ 5 µs",
            el_us * 3 <= es_us and el_us <= 5,
        ),
        Row(
            f"replay a {n:,}-event stream, per event",
            el_us,
            "µs",
            "raw SELECT + json.loads (floor)",
            1e6 / raw_rate,
        ),
    ]


# -- the long log ---------------------------------------------------------------------------


def _fill(store: SQLiteEventStore, upto: int) -> None:
    """Append events over many 100-event streams until the log holds ``upto``."""
    head = store.head_position()
    while head < upto:
        parts = []
        for _ in range(10):
            stream = f"fill-{head // 100}"
            size = min(100, upto - head)
            parts.append((stream, [_deposit(i) for i in range(size)]))
            head += size
            if head >= upto:
                break
        store.append_many(parts)


def _growth_rows(dir: Path, sizes: list[int], appends: int) -> tuple[list[Row], Path]:
    path = _fresh(dir, "growth")
    rows = []
    first: tuple[float, float] | None = None
    with _el_store(path) as store:
        for size in sizes:
            _fill(store, size)

            def append_one(count: list[int] = [0]) -> int:  # noqa: B006 (a counter)
                for _ in range(appends):
                    store.append(f"probe-{count[0]}", [_deposit(1)])
                    count[0] += 1
                return appends

            def read_one(size: int = size) -> int:
                for k in range(20):
                    store.read_stream(f"fill-{(size // 100) * k // 20}")
                return 20

            append_rate = rate(append_one, 3)
            read_us = 1e6 / rate(read_one, 5)
            if first is None:
                first = (append_rate, read_us)
            rows.append(
                Row(
                    f"growth: single-event append (FULL) with {size:,} stored",
                    append_rate,
                    "events/s",
                    f"same at {sizes[0]:,}",
                    first[0],
                    higher_is_better=True,
                )
            )
            rows.append(
                Row(
                    f"growth: read one 100-event stream with {size:,} stored",
                    read_us,
                    "µs",
                    f"same at {sizes[0]:,}",
                    first[1],
                )
            )
    return rows, path


def _read_all_rows(path: Path) -> list[Row]:
    with _el_store(path) as store:
        total = store.head_position()

        def read() -> int:
            n = 0
            for _ in store.read_all():
                n += 1
            return n

        el_rate = rate(read, 2)

        def peak(limit: int) -> float:
            tracemalloc.start()
            try:
                for _ in store.read_all(limit=limit):
                    pass
                return tracemalloc.get_traced_memory()[1] / 1e6
            finally:
                tracemalloc.stop()

        small, full = peak(total // 10), peak(total)
    raw = sqlite3.connect(path)

    def floor() -> int:
        n = 0
        cursor = raw.execute("SELECT data FROM events ORDER BY position")
        while rows := cursor.fetchmany(1000):
            for (data,) in rows:
                json.loads(data)
            n += len(rows)
        return n

    raw_rate = rate(floor, 2)
    raw.close()
    return [
        Row(
            f"read_all over {total:,} events, decoded",
            el_rate,
            "events/s",
            "raw SELECT + json.loads (floor)",
            raw_rate,
            "≥ 300,000 events/s",
            el_rate >= 300_000,
            higher_is_better=True,
        ),
        Row(
            f"read_all peak memory over {total:,} events",
            full,
            "MB",
            f"over the first {total // 10:,}",
            small,
            "does not grow with the log (ratio ≈ 1)",
            full <= small * 1.5 + 0.5,
        ),
    ]


def run(quick: bool) -> list[Row]:
    """The store suite: appends, group commit, bulk append, replay, read_all, growth."""
    n_single = 150 if quick else 1000
    n_thread = 60 if quick else 400
    n_bulk = 10_000
    sizes = [10_000, 50_000] if quick else [10_000, 100_000, 1_000_000]
    rows: list[Row] = []
    with workdir() as dir:
        store = _el_store(_fresh(dir, "el"))
        app = _es_app(_fresh(dir, "es"))
        conn = _raw_conn(_fresh(dir, "raw"))
        el = rate(el_single(store, n_single), 5)
        es = rate(es_single(app, n_single), 5)
        floor = rate(raw_single(conn, n_single), 5)
        rows.append(
            Row(
                "append 1 event per transaction, FULL, 1 thread",
                el,
                "events/s",
                "eventsourcing (1 thread)",
                es,
                "ratio ≥ 1.0",
                el >= es,
                higher_is_better=True,
            )
        )
        rows.append(
            Row(
                "append 1 event per transaction, FULL, 1 thread",
                el,
                "events/s",
                "raw sqlite3 (floor)",
                floor,
                higher_is_better=True,
            )
        )
        el8 = rate(el_threads(store, n_thread), 5)
        es8 = rate(es_threads(app, n_thread), 3)
        rows.append(
            Row(
                "append 1 event per transaction, FULL, 8 threads (group commit)",
                el8,
                "events/s",
                "eventsourcing (1 thread)",
                es,
                "ratio ≥ 4",
                el8 >= 4 * es,
                higher_is_better=True,
            )
        )
        rows.append(
            Row(
                "append 1 event per transaction, FULL, 8 threads",
                el8,
                "events/s",
                "eventsourcing (8 threads)",
                es8,
                higher_is_better=True,
            )
        )
        elb = rate(el_bulk(store, n_bulk))
        esb = rate(es_bulk(app, n_bulk))
        rawb = rate(raw_bulk(conn, n_bulk))
        store.close()
        app.close()
        conn.close()
        rows.append(
            Row(
                f"one append of {n_bulk:,} events",
                elb,
                "events/s",
                "eventsourcing",
                esb,
                "ratio ≥ 1.5",
                elb >= 1.5 * esb,
                higher_is_better=True,
            )
        )
        rows.append(
            Row(
                f"one append of {n_bulk:,} events",
                elb,
                "events/s",
                "raw sqlite3 executemany (floor)",
                rawb,
                higher_is_better=True,
            )
        )
        rows.extend(_replay_rows(dir, 10_000))
        growth, path = _growth_rows(dir, sizes, 50 if quick else 200)
        rows.extend(_read_all_rows(path))
        rows.extend(growth)
    return rows
