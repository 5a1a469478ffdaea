"""PostgreSQL benchmarks: eventlite's PostgreSQL store beside ``eventsourcing`` on the same
server (its ``eventsourcing.postgres`` persistence module) and a raw psycopg floor.

``python -m bench postgres [--quick]``. The server is ``BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each run works in schemas of its own and
drops them afterwards. Needs the extras ``postgres`` and ``bench``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from eventlite import Codec
from eventlite.postgres import PostgresStorage

from ._harness import Row, rate
from .store import _deposit, _es_types, registry

URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_RUN = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
_streams = iter(range(10**9))


def _connect(schema: str | None = None) -> Any:
    import psycopg

    options = f"-c search_path={schema}" if schema else ""
    return psycopg.connect(URL, autocommit=True, options=options)


def _drop(*schemas: str) -> None:
    with _connect() as conn:
        for schema in schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# -- eventlite ------------------------------------------------------------------------------


def _el_storage(schema: str) -> PostgresStorage:
    return PostgresStorage(URL, schema=schema, codec=Codec(registry), pool_max_size=12)


def el_single(storage: PostgresStorage, n: int) -> Callable[[], int]:
    """n single-event appends to one new stream, each its own commit."""

    def run() -> int:
        stream = f"acc-{next(_streams)}"
        for i in range(n):
            storage.events.append(stream, [_deposit(i)], expected_version=i)
        return n

    return run


def el_threads(storage: PostgresStorage, n: int, threads: int = 8) -> Callable[[], int]:
    """``threads`` threads, each making n single-event appends to its own new stream."""

    def work(stream: str, start: threading.Barrier) -> None:
        start.wait()
        for i in range(n):
            storage.events.append(stream, [_deposit(i)], expected_version=i)

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


def el_bulk(storage: PostgresStorage, n: int) -> Callable[[], int]:
    """One append of n events to a new stream (making the messages included)."""

    def run() -> int:
        storage.events.append(f"acc-{next(_streams)}", [_deposit(i) for i in range(n)])
        return n

    return run


# -- eventsourcing --------------------------------------------------------------------------


def _es_app(schema: str) -> Any:
    application, _ = _es_types()
    parts = urlsplit(URL)
    with _connect() as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    return application(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": parts.username or "postgres",
            "POSTGRES_PASSWORD": parts.password or "",
            "POSTGRES_SCHEMA": schema,
            "POSTGRES_POOL_SIZE": "10",
            "POSTGRES_MAX_OVERFLOW": "10",
        }
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


# -- raw psycopg ----------------------------------------------------------------------------

_RAW_SCHEMA = """
CREATE TABLE events (position bigserial PRIMARY KEY, stream_id text NOT NULL,
  version bigint NOT NULL, id text NOT NULL UNIQUE, type text NOT NULL,
  schema_version integer NOT NULL, data text NOT NULL, correlation_id text NOT NULL,
  causation_id text, user_id text, headers text, "timestamp" bigint NOT NULL,
  UNIQUE (stream_id, version))
"""
_RAW_INSERT = (
    "INSERT INTO events (stream_id, version, id, type, schema_version, data, correlation_id, "
    'causation_id, user_id, headers, "timestamp") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, '
    "%s, %s)"
)
_RAW_COPY = (
    "COPY events (stream_id, version, id, type, schema_version, data, correlation_id, "
    'causation_id, user_id, headers, "timestamp") FROM STDIN'
)


def _raw_row(stream: str, version: int, i: int) -> tuple[Any, ...]:
    event_id = str(uuid.uuid4())
    data = json.dumps({"account": "acc-1", "amount": i, "note": "monthly salary"})
    return (stream, version, event_id, "bench.Deposited", 1, data, event_id, None, None, None, 0)


def raw_single(schema: str, n: int, connections: int = 1) -> Callable[[], int]:
    """n INSERT + COMMIT per row from each of ``connections`` connections (the floor)."""
    import psycopg

    conns = [psycopg.connect(URL, options=f"-c search_path={schema}") for _ in range(connections)]

    def work(conn: Any, start: threading.Barrier) -> None:
        stream = f"acc-{next(_streams)}"
        start.wait()
        for i in range(1, n + 1):
            conn.execute(_RAW_INSERT, _raw_row(stream, i, i))
            conn.commit()

    def run() -> int:
        start = threading.Barrier(connections)
        workers = [threading.Thread(target=work, args=(c, start)) for c in conns]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return n * connections

    return run


def raw_copy(schema: str, n: int) -> Callable[[], int]:
    """n rows with COPY in one transaction (the floor; making the rows included)."""
    conn = _connect(schema)

    def run() -> int:
        stream = f"acc-{next(_streams)}"
        with conn.transaction(), conn.cursor().copy(_RAW_COPY) as copy:
            for i in range(1, n + 1):
                copy.write_row(_raw_row(stream, i, i))
        return n

    return run


# -- commit to wake -------------------------------------------------------------------------


def _watch(url: str, schema: str, ready: Any, count: int, out: Any) -> None:
    """In another process: the wake times of ``count`` announced commits."""
    storage = PostgresStorage(url, schema=schema, codec=Codec(registry))
    woken: list[float] = []
    enough = threading.Event()

    def wake() -> None:
        woken.append(time.time())
        if len(woken) >= count:
            enough.set()

    storage.watch_log(wake)
    storage._listener.connected.wait(10)
    ready.set()
    enough.wait(60)
    out.put(woken)
    storage.close()


def _latency_rows(storage: PostgresStorage, count: int) -> list[Row]:
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_watch, args=(URL, storage.schema, ready, count, out))
    child.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the watching process did not start")
        started = []
        for i in range(count):
            started.append(time.time())
            storage.events.append("latency", [_deposit(i)])
            time.sleep(0.005)
        woken = out.get(timeout=60)
    finally:
        child.join(30)
    # each append is announced once: the i-th wake is the i-th append's
    ms = sorted((w - s) * 1000 for s, w in zip(started, woken, strict=False))
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * len(ms)))]
    return [
        Row("append call → watcher woken in another process (LISTEN/NOTIFY), p50", p50, "ms"),
        Row(
            "append call → watcher woken in another process (LISTEN/NOTIFY), p99",
            p99,
            "ms",
            target="p99 ≤ 20 ms",
            met=p99 <= 20,
        ),
    ]


# -- the suite ------------------------------------------------------------------------------


def _interleaved(fns: list[Callable[[], int]], rounds: int) -> list[float]:
    """Best items/s of each function, running them in turn, round after round: the
    server is shared, so its load at any moment weighs on all of them alike."""
    best = [0.0] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            best[i] = max(best[i], rate(fn, 1))
    return best


def run(quick: bool) -> list[Row]:
    """The PostgreSQL suite: appends from 1 and 8 threads, a bulk append, replay,
    commit-to-wake latency."""
    n_single = 150 if quick else 600
    n_thread = 50 if quick else 200
    n_bulk = 10_000
    rounds = 3 if quick else 5
    el_schema, es_schema, raw_schema = (f"bench_{k}_{_RUN}" for k in ("el", "es", "raw"))
    storage = _el_storage(el_schema)
    app = _es_app(es_schema)
    with _connect() as conn:
        conn.execute(f"CREATE SCHEMA {raw_schema}")
    with _connect(raw_schema) as conn:
        conn.execute(_RAW_SCHEMA)
    rows: list[Row] = []
    try:
        el, es, floor = _interleaved(
            [
                el_single(storage, n_single),
                es_single(app, n_single),
                raw_single(raw_schema, n_single),
            ],
            rounds,
        )
        name = "append 1 event per transaction, 1 thread"
        rows += [
            Row(
                name,
                el,
                "events/s",
                "eventsourcing (1 thread)",
                es,
                "ratio ≥ 2.5",
                el >= 2.5 * es,
                True,
            ),
            Row(
                name,
                el,
                "events/s",
                "raw INSERT+COMMIT, 1 connection (floor)",
                floor,
                higher_is_better=True,
            ),
        ]
        el8, es8, floor8 = _interleaved(
            [
                el_threads(storage, n_thread),
                es_threads(app, n_thread),
                raw_single(raw_schema, n_thread, 8),
            ],
            rounds,
        )
        name = "append 1 event per transaction, 8 threads"
        rows += [
            Row(
                name,
                el8,
                "events/s",
                "eventsourcing (8 threads)",
                es8,
                "ratio ≥ 6",
                el8 >= 6 * es8,
                True,
            ),
            Row(
                name,
                el8,
                "events/s",
                "raw INSERT+COMMIT, 8 connections (floor)",
                floor8,
                higher_is_better=True,
            ),
        ]
        elb, esb, copy = _interleaved(
            [el_bulk(storage, n_bulk), es_bulk(app, n_bulk), raw_copy(raw_schema, n_bulk)], rounds
        )
        name = f"one append of {n_bulk:,} events"
        rows += [
            Row(
                name,
                elb,
                "events/s",
                "eventsourcing (one save)",
                esb,
                "ratio ≥ 3",
                elb >= 3 * esb,
                True,
            ),
            Row(name, elb, "events/s", "raw COPY (floor)", copy, higher_is_better=True),
        ]
        rows += _replay_rows(storage, app, raw_schema, n_bulk)
        rows += _latency_rows(storage, 50 if quick else 200)
    finally:
        storage.close()
        app.close()
        _drop(el_schema, es_schema, raw_schema)
    return rows


def _replay_rows(storage: PostgresStorage, app: Any, raw_schema: str, n: int) -> list[Row]:
    storage.events.append("replay", [_deposit(i) for i in range(n)])

    def el() -> int:
        return len(storage.events.read_stream("replay"))

    _, account_cls = _es_types()
    account = account_cls()
    for i in range(n - 1):
        account.deposit("acc-1", i, "monthly salary")
    app.save(account)
    account_id = account.id

    def es() -> int:
        return app.repository.get(account_id).version  # type: ignore[no-any-return]

    raw = _connect(storage.schema)

    def floor() -> int:
        rows = raw.execute(
            "SELECT data FROM events WHERE stream_id = %s ORDER BY version", ("replay",)
        ).fetchall()
        for (data,) in rows:
            json.loads(data)
        return len(rows)

    el_us, es_us, raw_us = (1e6 / r for r in _interleaved([el, es, floor], 5))
    raw.close()
    name = f"replay a {n:,}-event stream (read_stream + decode), per event"
    return [
        Row(
            name,
            el_us,
            "µs",
            "eventsourcing repository.get",
            es_us,
            "ratio ≤ 1/4 and ≤ 5.2 µs",
            el_us * 4 <= es_us and el_us <= 5.2,
        ),
        Row(name, el_us, "µs", "raw SELECT + json.loads (floor)", raw_us),
    ]
