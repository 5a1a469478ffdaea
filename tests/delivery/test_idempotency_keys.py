"""Idempotency keys: one run per key across threads and processes, stored results, waiting
duplicates, expiry and take-over."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

from eventlite.clock import FakeClock
from eventlite.idempotency import Idempotency, IdempotencyTimeout
from eventlite.sqlite import SQLiteStorage


@pytest.fixture
def keys(storage: SQLiteStorage, clock: FakeClock) -> Idempotency:
    """Idempotency keys on the file and the fake clock."""
    return Idempotency(storage, clock=clock, wait=10.0)


def test_sixteen_threads_race_on_one_key(keys: Idempotency) -> None:
    """fn runs once; every caller, the first included, gets its result."""
    runs: list[int] = []
    started = threading.Event()
    barrier = threading.Barrier(16)
    results: list[Any] = []
    lock = threading.Lock()

    def charge() -> dict[str, Any]:
        runs.append(1)
        started.set()
        return {"charge": "ch_1", "amount": 995}

    def call() -> None:
        barrier.wait()
        result = keys.run("order-1", charge)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [1] == runs
    assert [{"charge": "ch_1", "amount": 995}] * 16 == results


def test_repeats_get_the_stored_result_until_it_expires(
    keys: Idempotency, clock: FakeClock, storage: SQLiteStorage
) -> None:
    """Within ttl the stored JSON result comes back without a run; after it the key runs
    again, and purge_expired() deletes expired results."""
    runs: list[int] = []

    def fn() -> list[int]:
        runs.append(len(runs))
        return [len(runs)]

    assert [1] == keys.run("k", fn, ttl=60)
    clock.advance(59)
    assert [1] == keys.run("k", fn, ttl=60)
    clock.advance(1)
    assert [2] == keys.run("k", fn, ttl=60)
    assert 2 == len(runs)
    keys.run("other", lambda: "x", ttl=5)
    clock.advance(100)
    assert 2 == keys.purge_expired()
    assert (None, None) == (storage.idempotency.find("k"), storage.idempotency.find("other"))


def test_a_failure_is_not_stored(keys: Idempotency) -> None:
    """When fn raises, the exception propagates and the next call runs fn again."""

    def boom() -> None:
        raise ConnectionError("gateway down")

    with pytest.raises(ConnectionError):
        keys.run("k", boom)
    assert "ok" == keys.run("k", lambda: "ok")


def test_a_duplicate_waits_then_times_out_clearly(storage: SQLiteStorage, clock: FakeClock) -> None:
    """A call finding the key held by a running call waits, then raises
    IdempotencyTimeout naming the key."""
    keys = Idempotency(storage, clock=clock, poll=0.005)
    inside = threading.Event()
    release = threading.Event()

    def slow() -> str:
        inside.set()
        assert release.wait(10)
        return "done"

    first = threading.Thread(target=keys.run, args=("k", slow))
    first.start()
    assert inside.wait(10)
    try:
        with pytest.raises(IdempotencyTimeout, match="'k' is still being run") as info:
            keys.run("k", lambda: "second", wait=0.05)
        assert ("k", True) == (info.value.key, info.value.waited >= 0.05)
    finally:
        release.set()
        first.join()
    assert "done" == keys.run("k", lambda: "second")


def test_an_abandoned_claim_is_taken_over_after_its_lease(
    storage: SQLiteStorage, clock: FakeClock
) -> None:
    """A claim whose holder died (a running claim, never finished) blocks the key until its
    lease runs out by the clock; then the next call runs fn."""
    keys = Idempotency(storage, clock=clock, lease=30.0)
    storage.idempotency.claim("k", "dead-process", now=clock.now(), lease_until=clock.now() + 30)
    with pytest.raises(IdempotencyTimeout):
        keys.run("k", lambda: "mine", wait=0.02)
    clock.advance(30)
    assert "mine" == keys.run("k", lambda: "mine")


def test_bad_calls(keys: Idempotency, storage: SQLiteStorage) -> None:
    """A result that is not JSON raises TypeError and frees the key; a call inside a
    transaction, an empty key and a ttl of 0 are refused; forget() frees a key."""
    with pytest.raises(TypeError, match="JSON"):
        keys.run("k", lambda: object())
    assert 1 == keys.run("k", lambda: 1)
    with pytest.raises(RuntimeError, match="transaction"), storage.transaction():
        keys.run("k", lambda: 2)
    with pytest.raises(ValueError, match="non-empty"):
        keys.run("", lambda: 2)
    with pytest.raises(ValueError, match="ttl"):
        keys.run("k", lambda: 2, ttl=0)
    assert keys.forget("k")
    assert not keys.forget("k")
    assert 3 == keys.run("k", lambda: 3)
    with pytest.raises(ValueError, match="lease"):
        Idempotency(storage, lease=0)
    with pytest.raises(TypeError, match="needs a Storage"):
        Idempotency("keys.db")  # type: ignore[arg-type]


def test_another_process_gets_the_stored_result(storage: SQLiteStorage) -> None:
    """A process sharing the file gets the result stored by this one, without running fn."""
    assert {"id": 7} == Idempotency(storage).run("k", lambda: {"id": 7})
    script = (
        "import sys\n"
        "from eventlite.sqlite import SQLiteStorage\n"
        "from eventlite.idempotency import Idempotency\n"
        "with SQLiteStorage(sys.argv[1]) as storage:\n"
        "    print(Idempotency(storage).run('k', lambda: {'id': 'other'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, storage.description],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "{'id': 7}" == out.stdout.strip()
