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


def _body(body: str | bytes) -> str:
    return body.decode() if isinstance(body, bytes) else body


def consume(url: str, schema: str, visibility: float, start: Any, seconds: float) -> list[Any]:
    """Compete for the messages of queue ``jobs`` until it is empty (or ``seconds``
    passed): ack each, except the first receive of every 7th message, which is dropped
    as if its consumer died. One row per handout: (body, receive count, the ``now`` it
    was received at, when the receive call returned, when the ack began or None, whether
    the ack held)."""
    from eventlite.store.queues import StaleReceipt

    storage = _open(url, schema)
    queue = storage.queues
    log: list[Any] = []
    start.wait(60)
    end = time.time() + seconds
    while time.time() < end:
        now = time.time()
        got, _ = queue.receive(
            "jobs",
            _body,
            max=4,
            now=now,
            visibility_timeout=visibility,
            max_receives=1000,
            ttl=None,
            dead_letters=False,
        )
        returned = time.time()
        if not got:
            if queue.count("jobs") == 0:
                break
            time.sleep(0.005)
            continue
        for body, receipt, count, _ in got:
            if count == 1 and int(body) % 7 == 0:
                log.append((body, count, now, returned, None, False))
                continue
            acking = time.time()
            try:
                queue.ack("jobs", receipt)
                held = True
            except StaleReceipt:  # its visibility ran out meanwhile: another has it now
                held = False
            log.append((body, count, now, returned, acking, held))
    storage.close()
    return log


def claim_values(url: str, schema: str, worker: int, values: list[str], start: Any) -> list[str]:
    """Claim each value for owner ``w<worker>`` in a transaction that also creates the
    owner's stream for it; the values won."""
    import random

    from eventlite.store.claims import AlreadyClaimed
    from eventlite.store.events import NO_STREAM

    storage = _open(url, schema)
    order = list(values)
    random.Random(worker).shuffle(order)
    won: list[str] = []
    start.wait(60)
    for value in order:
        try:
            with storage.transaction():
                storage.claims.claim("email", value, f"w{worker}")
                storage.events.append(
                    f"user-w{worker}-{value}", [Noted(n=worker)], expected_version=NO_STREAM
                )
                time.sleep(0.001)  # a longer window for a competing claim
            won.append(value)
        except AlreadyClaimed:
            pass
    storage.close()
    return won
