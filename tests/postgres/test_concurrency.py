"""Stores whose SQLite implementation leans on one writer at a time stay correct on
PostgreSQL with many transactions at once (threads here, each on its own connection)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from eventlite.postgres import PostgresStorage
from eventlite.store.dead_letters import DeadLetterNotFound, DeadLetterStatus, Failure

pytestmark = pytest.mark.services

Open = Callable[..., PostgresStorage]
T0 = 1_700_000_000.0


def _race(threads: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``threads`` threads started together; their results."""
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert [] == errors
    return results


def _failure() -> Failure:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        return Failure.of(exc)


def test_dead_letter_lines_keep_their_shape_under_concurrent_writers(open_storage: Open) -> None:
    """Six threads adding, parking, retrying, failing again and discarding entries of the
    same two lines at once: afterwards every line is retrying up to its first dead entry
    and parked after it, and ids grow in the order entries joined their line."""
    storage = open_storage(pool_max_size=8)
    store = storage.dead_letters

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            key = rng.choice("KL")
            known = [e.id for e in store.list("s")]
            op = rng.random()
            try:
                # each write in a transaction that commits a moment later, as a consumer
                # dead-letters and moves its checkpoint in one commit
                with storage.transaction():
                    _write(op, key, known, rng)
                    time.sleep(0.002)
            except DeadLetterNotFound:
                pass  # discarded by another thread meanwhile

    def _write(op: float, key: str, known: list[int], rng: random.Random) -> None:
        if op < 0.25 or not known:
            store.add("s", "m", key=key, failure=_failure(), attempts=1, first_failed_at=T0, now=T0)
        elif op < 0.5:
            store.park("s", "m", key=key, now=T0)
        elif op < 0.7:
            store.retry(rng.choice(known))
        elif op < 0.85:
            store.fail_again(rng.choice(known), _failure(), now=T0)
        else:
            store.discard(rng.choice(known))

    _race(6, work)
    entries = store.list("s")
    assert entries
    for key in "KL":
        line = [e.status for e in entries if e.key == key]
        first_dead = line.index(DeadLetterStatus.DEAD) if DeadLetterStatus.DEAD in line else None
        for i, status in enumerate(line):
            if first_dead is None or i < first_dead:
                assert DeadLetterStatus.RETRYING == status, (key, line)
            elif i > first_dead:
                assert status in (DeadLetterStatus.PARKED, DeadLetterStatus.DEAD), (key, line)


def test_a_park_waits_for_the_dead_letter_being_added_to_its_line(open_storage: Open) -> None:
    """One thread adds a dead entry to a new line in a transaction that commits a moment
    later, while another parks an entry on the same line: the parked entry is parked
    behind the dead one (the park waited for the add's commit), never retrying after it."""
    storage = open_storage(pool_max_size=4)
    store = storage.dead_letters
    keys = [f"K{i}" for i in range(20)]
    step = threading.Barrier(2)

    def work(i: int) -> None:
        for key in keys:
            step.wait()
            if i == 0:
                with storage.transaction():
                    store.add(
                        "s",
                        "m",
                        key=key,
                        failure=_failure(),
                        attempts=1,
                        first_failed_at=T0,
                        now=T0,
                    )
                    time.sleep(0.005)
            else:
                time.sleep(0.002)  # after the add's insert, before its commit
                store.park("s", "m", key=key, now=T0)

    _race(2, work)
    for key in keys:
        line = [e.status for e in store.list("s") if e.key == key]
        assert line in (
            [DeadLetterStatus.DEAD, DeadLetterStatus.PARKED],
            [DeadLetterStatus.RETRYING, DeadLetterStatus.DEAD],
        ), (key, line)


def test_one_idempotency_claim_wins(open_storage: Open) -> None:
    """Eight threads claiming one free key at once: one gets it, the seven others get
    the winner's running record."""
    store = open_storage(pool_max_size=10).idempotency
    results = _race(8, lambda i: store.claim("k", f"o{i}", now=T0, lease_until=T0 + 30))
    winners = [i for i, (claimed, _) in enumerate(results) if claimed]
    assert 1 == len(winners)
    holder = f"o{winners[0]}"
    assert {holder} == {found.owner for claimed, found in results if not claimed}


def test_one_dedup_send_wins(open_storage: Open) -> None:
    """Eight threads sending with one dedup id at once: one message is queued, and every
    sender is told its id."""
    store = open_storage(pool_max_size=10).queues
    ids = _race(
        8,
        lambda i: store.send_deduplicated("q", (f"m{i}", "body"), dedup_id="d", window=60, now=T0),
    )
    assert (1, 1) == (len(set(ids)), store.count("q"))


def test_a_send_to_a_group_never_strands_behind_an_ack(open_storage: Open) -> None:
    """A message sent to a FIFO group in a transaction that commits a moment later, while
    another thread acks the group's head: the new message becomes the group's visible
    head either way (the ack waited for the send's commit, or the send saw the group
    empty), never left waiting behind a message that is gone."""
    storage = open_storage(pool_max_size=4)
    store = storage.queues
    store.send("q", [("m0", "m0")], now=T0, group="g")
    step = threading.Barrier(2)

    def receive() -> list[Any]:
        got, _ = store.receive(
            "q",
            lambda body: body,
            max=1,
            now=T0,
            visibility_timeout=60,
            max_receives=5,
            ttl=None,
            dead_letters=False,
        )
        return got

    [(_, receipt, _, _)] = receive()
    for n in range(1, 16):

        def work(i: int, n: int = n, receipt: str = receipt) -> None:
            step.wait()
            if i == 0:
                with storage.transaction():
                    store.send("q", [(f"m{n}", f"m{n}")], now=T0, group="g")
                    time.sleep(0.005)
            else:
                time.sleep(0.002)  # after the send looked at the group, before its commit
                store.ack("q", receipt)

        _race(2, work)
        got = receive()
        assert [f"m{n}"] == [body for body, *_ in got], n
        receipt = got[0][1]
