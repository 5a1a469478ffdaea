"""Positions stay gap-free and in commit order with many writers in many processes,
while readers in other processes follow the log."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

import pytest

from eventlite.codec import Codec
from eventlite.postgres import PostgresStorage

from . import _workers

pytestmark = pytest.mark.services


def _run(storage: PostgresStorage, url: str, processes: int, threads: int, appends: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    schema = storage.schema
    children = [
        ctx.Process(
            target=_workers.report, args=(out, f"r{r}", _workers.tail, url, schema, start, stop)
        )
        for r in range(2)
    ] + [
        ctx.Process(
            target=_workers.report,
            args=(out, f"w{w}", _workers.write, url, schema, w, threads, appends, start),
        )
        for w in range(processes)
    ]
    for child in children:
        child.start()
    try:
        start.set()
        results: dict[Any, Any] = {}
        while len(results) < processes:
            name, value = out.get(timeout=300)
            assert not isinstance(value, str), f"{name}: {value}"
            results[name] = value
            if name.startswith("r"):
                raise AssertionError(f"reader {name} ended early: {value}")
        total = sum(results.values())
        stop.set()
        seen = []
        for _ in range(2):
            name, value = out.get(timeout=120)
            assert not isinstance(value, str), f"{name}: {value}"
            seen.append(tuple(value))
    finally:
        stop.set()
        for child in children:
            child.join(30)
    assert [(total, []), (total, [])] == seen
    assert total == storage.events.head_position()
    records = storage.events.read_records(limit=total + 10)
    assert list(range(1, total + 1)) == [r.position for r in records]
    versions: dict[str, list[int]] = {}
    for record in records:
        versions.setdefault(record.stream_id, []).append(record.version)
    for stream_versions in versions.values():
        assert list(range(1, len(stream_versions) + 1)) == stream_versions


def test_gap_free_across_processes(storage: PostgresStorage, pg_url: str) -> None:
    """8 processes x 4 threads append while 2 reader processes tail the log: no reader
    ever sees a position before the one below it, no gap, every stream 1..n."""
    _run(storage, pg_url, processes=8, threads=4, appends=6)


@pytest.mark.slow
def test_gap_free_across_processes_long(storage: PostgresStorage, pg_url: str) -> None:
    """The same, longer: 8 processes x 4 threads x 300 appends."""
    _run(storage, pg_url, processes=8, threads=4, appends=300)


def test_listen_wakes_another_process(
    open_storage: Callable[..., PostgresStorage], pg_url: str
) -> None:
    """A watcher in another process is woken by each commit that appends events, within
    milliseconds (the bench measures it; the test allows for a loaded machine)."""
    import time

    storage = open_storage(codec=Codec(_workers.REGISTRY))
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    out = ctx.Queue()
    child = ctx.Process(target=_workers.watch, args=(pg_url, storage.schema, ready, 10, out))
    child.start()
    try:
        assert ready.wait(30)
        started = []
        for i in range(10):
            started.append(time.time())
            storage.events.append("a", [_workers.Noted(n=i)])
            time.sleep(0.03)
        woken = out.get(timeout=30)
    finally:
        child.join(30)
    assert 10 == len(woken)
    # one notification per append, in order: the i-th wake answers the i-th append
    latencies = [w - s for s, w in zip(started, woken, strict=True)]
    assert 0 <= min(latencies)
    assert max(latencies) < 2.0, latencies  # generous: CI machines are shared


def test_listener_reconnects_and_wakes(storage: PostgresStorage, pg_url: str) -> None:
    """The LISTEN connection killed: the thread reconnects, wakes its watchers once for
    what it may have missed, and goes on hearing commits; a stopped watcher hears none."""
    import threading

    import psycopg

    woken = threading.Semaphore(0)
    stop = storage.watch_log(woken.release)
    assert storage.log_notifications
    assert storage._listener.connected.wait(10)
    with psycopg.connect(pg_url, autocommit=True) as killer:
        killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
            (f'LISTEN "{storage.database.channel}"',),
        )
    assert woken.acquire(timeout=10)  # the wake after reconnecting
    with storage.transaction() as tx:
        tx.execute("SELECT pg_notify(%s, '1')", (storage.database.channel,))
    assert woken.acquire(timeout=10)
    stop()
    with storage.transaction() as tx:
        tx.execute("SELECT pg_notify(%s, '2')", (storage.database.channel,))
    assert not woken.acquire(timeout=0.3)
