"""Functions the multi-process tests run in child processes (spawned: importable here)."""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs

from eventlite.codec import Codec
from eventlite.messages import Registry, event
from eventlite.postgres import PostgresStorage

REGISTRY = Registry()
"""The workers' own registry (the contract's would import pytest in every child)."""


@event(registry=REGISTRY, name="test.Noted")
@attrs.frozen
class Noted:
    """A numbered event."""

    n: int


def _open(url: str, schema: str) -> PostgresStorage:
    return PostgresStorage(url, schema=schema, codec=Codec(REGISTRY), pool_max_size=8)


def write(url: str, schema: str, worker: int, threads: int, appends: int, start: Any) -> int:
    """``threads`` threads each appending ``appends`` times (1-3 events) after ``start``
    is set; the number of events written."""
    storage = _open(url, schema)
    written = [0] * threads
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            for i in range(appends):
                size = 1 + (worker + t + i) % 3
                stream = f"w{worker}-{t}-{i % 2}"
                storage.events.append(stream, [Noted(n=i) for _ in range(size)])
                written[t] += size
        except BaseException as exc:  # reported to the parent
            errors.append(exc)

    start.wait(60)
    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    storage.close()
    if errors:
        raise errors[0]
    return sum(written)


def tail(url: str, schema: str, start: Any, stop: Any) -> tuple[int, list[str]]:
    """Follow the log until ``stop`` is set and the head is reached; the last position
    seen, and every violation (a position that is not the next one)."""
    storage = _open(url, schema)
    last = 0
    problems: list[str] = []
    start.wait(60)
    while True:
        finished = stop.is_set()
        records = storage.events.read_records(after=last, limit=500)
        for record in records:
            if record.position != last + 1:
                problems.append(f"saw {record.position} after {last}")
            last = record.position
        if finished and not records:
            break
        if not records:
            time.sleep(0.0005)
    storage.close()
    return last, problems


def watch(url: str, schema: str, ready: Any, count: int, out: Any) -> None:
    """Wake on every announced commit; put the wake times (time.time()) on ``out`` until
    ``count`` were seen or 20 s passed."""
    storage = _open(url, schema)
    woken: list[float] = []
    enough = threading.Event()

    def wake() -> None:
        woken.append(time.time())
        if len(woken) >= count:
            enough.set()

    storage.watch_log(wake)
    storage._listener.connected.wait(10)
    ready.set()
    enough.wait(20)
    out.put(woken)
    storage.close()


def report(out: Any, name: str, fn: Any, *args: Any) -> None:
    """Run ``fn(*args)`` and put ``(name, result or the error's text)`` on ``out``."""
    try:
        out.put((name, fn(*args)))
    except BaseException as exc:
        out.put((name, f"error: {type(exc).__name__}: {exc}"))
