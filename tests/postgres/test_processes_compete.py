"""Several processes sharing one PostgreSQL store: competing queue consumers, and claims
racing for the same values."""

from __future__ import annotations

import itertools
import multiprocessing
from collections import defaultdict
from typing import Any

import pytest

from eventlite.postgres import PostgresStorage

from . import _workers

pytestmark = pytest.mark.services


def _run(target: Any, args: list[tuple[Any, ...]], start: Any, ctx: Any) -> list[Any]:
    out = ctx.Queue()
    children = [
        ctx.Process(target=_workers.report, args=(out, str(i), target, *a))
        for i, a in enumerate(args)
    ]
    for child in children:
        child.start()
    try:
        start.set()
        results: dict[str, Any] = {}
        while len(results) < len(children):
            name, value = out.get(timeout=120)
            assert not isinstance(value, str), f"worker {name}: {value}"
            results[name] = value
    finally:
        for child in children:
            child.join(30)
    return [results[str(i)] for i in range(len(children))]


def test_competing_consumers_never_share_a_message(storage: PostgresStorage, pg_url: str) -> None:
    """Three consumer processes drain one queue (some messages in FIFO groups, some
    dropped unacked once): no message is handed out again before its visibility timeout
    ran out, every message is acked exactly once, and a group's message is handed out
    only after the one before it was acked."""
    visibility = 0.4
    bodies = [str(i) for i in range(120)]
    plain, grouped = bodies[:80], bodies[80:]
    storage.queues.send("jobs", [(f"m{b}", b) for b in plain], now=0.0)
    groups = {g: grouped[g::4] for g in range(4)}
    for g, members in groups.items():
        storage.queues.send("jobs", [(f"m{b}", b) for b in members], now=0.0, group=f"g{g}")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    logs = _run(
        _workers.consume,
        [(pg_url, storage.schema, visibility, start, 60.0)] * 3,
        start,
        ctx,
    )
    handouts: dict[str, list[Any]] = defaultdict(list)
    for log in logs:
        for row in log:
            handouts[row[0]].append(row)
    assert sorted(bodies) == sorted(handouts)
    assert 0 == storage.queues.count("jobs")
    for body, rows in handouts.items():
        rows.sort(key=lambda r: r[1])  # by receive count: the order the store handed out
        assert list(range(1, len(rows) + 1)) == [r[1] for r in rows], body
        for before, after in itertools.pairwise(rows):
            assert after[2] >= before[2] + visibility, (body, before, after)
        assert 1 == sum(1 for r in rows if r[5]), (body, rows)
    for members in groups.values():
        for before, after in itertools.pairwise(members):
            acked = next(r for r in handouts[before] if r[5])
            first = handouts[after][0]
            assert acked[4] <= first[3], (before, after)


def test_claims_race_across_processes(storage: PostgresStorage, pg_url: str) -> None:
    """Four processes claim the same 30 values, each claim in a transaction with the
    owner's new stream: every value is won by exactly one process, the store names that
    one as holder, and exactly one stream was created per value."""
    values = [f"user{i}@example.com" for i in range(30)]
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    won = _run(
        _workers.claim_values,
        [(pg_url, storage.schema, w, values, start) for w in range(4)],
        start,
        ctx,
    )
    winners: dict[str, list[str]] = defaultdict(list)
    for worker, values_won in enumerate(won):
        for value in values_won:
            winners[value].append(f"w{worker}")
    assert {v: 1 for v in values} == {v: len(w) for v, w in winners.items()}
    assert {v: w[0] for v, w in winners.items()} == {
        v: storage.claims.holder("email", v) for v in values
    }
    streams = sorted({r.stream_id for r in storage.events.read_records(limit=1000)})
    assert sorted(f"user-{w[0]}-{v}" for v, w in winners.items()) == streams
