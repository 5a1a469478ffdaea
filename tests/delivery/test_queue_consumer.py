"""Review findings on the work queue and the DLQ: a consumer's prefetched batch and the
visibility timeout, a consumer thread that meets an error outside its handler, purging
parked dead letters by age, and what FIFO groups do with dead letters."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from eventlite import Codec, Registry
from eventlite.clock import FakeClock
from eventlite.dlq import DeadLetterQueue
from eventlite.exceptions import StorageError
from eventlite.messages import event
from eventlite.queue import WorkQueue
from eventlite.sqlite import Database

registry = Registry()
codec = Codec(registry)


@event(registry=registry, name="queue_review.Job")
class Job:
    n: int


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand."""
    return FakeClock()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A new eventlite file, closed after the test."""
    db = Database(tmp_path / "review.db", synchronous="normal")
    yield db
    db.close()


@pytest.fixture
def dlq(database: Database, clock: FakeClock) -> DeadLetterQueue:
    """The file's dead-letter queue, on the fake clock."""
    return DeadLetterQueue(database, codec, clock=clock)


@pytest.fixture
def queue(database: Database, dlq: DeadLetterQueue, clock: FakeClock) -> WorkQueue:
    """A queue called ``jobs`` with a DLQ, 10 s visibility, 3 receives at most."""
    return WorkQueue(
        database, codec, "jobs", visibility_timeout=10, max_receives=3, dlq=dlq, clock=clock
    )


# -- 1. a prefetched batch that outlasts the visibility timeout ---------------------------


def test_a_batch_longer_than_the_visibility_timeout_handles_each_message_once(
    queue: WorkQueue, clock: FakeClock
) -> None:
    """With prefetch 3, handlers of 6 s each (fake time) and a 10 s visibility timeout,
    each message is acked as soon as its handler returns and the messages still waiting
    in the batch are kept hidden: a competing receive during every handler finds nothing,
    every message is handled exactly once and none is dead-lettered."""
    queue.send_many([Job(n) for n in range(3)])
    handled: list[int] = []
    left_when_called: list[int] = []
    competitor_got: list[list[int]] = []
    finished = threading.Event()

    def handler(job: Job) -> None:
        left_when_called.append(len(queue))
        clock.advance(6)
        competitor_got.append([item.message.n for item in queue.receive(max=10)])
        handled.append(job.n)
        if len(handled) == 3:
            finished.set()

    consumer = queue.consume(handler, threads=1, prefetch=3, poll_interval=0.01)
    try:
        assert finished.wait(30)
    finally:
        consumer.stop(30)
    assert [0, 1, 2] == handled
    assert [3, 2, 1] == left_when_called  # the messages before were acked already
    assert [[], [], []] == competitor_got
    assert (0, 0, 3) == (len(queue), queue.dlq.count() if queue.dlq else -1, consumer.handled)


def test_a_prefetched_message_received_again_is_left_to_its_new_receiver(
    queue: WorkQueue, clock: FakeClock
) -> None:
    """When a handler runs past the whole visibility timeout, another consumer receives
    the batch's messages meanwhile; the first consumer finishes the message it was handling
    but does not handle the next one of its batch: the other receiver owns it now."""
    queue.send_many([Job(n) for n in range(2)])
    handled: list[int] = []
    taken_over: list[int] = []
    finished = threading.Event()

    def handler(job: Job) -> None:
        handled.append(job.n)
        clock.advance(11)  # longer than the timeout: jobs 0 and 1 become visible again
        taken_over.extend(item.message.n for item in queue.receive(max=10))
        finished.set()

    consumer = queue.consume(handler, threads=1, prefetch=2, poll_interval=0.01)
    try:
        assert finished.wait(30)
    finally:
        consumer.stop(30)
    assert [0] == handled
    assert [0, 1] == taken_over
    assert (2, 1) == (len(queue), consumer.handled)  # both are the other receiver's now


# -- 2. a consumer thread survives errors outside its handler -------------------------------


def test_a_failed_ack_is_logged_and_the_consumer_thread_goes_on(
    queue: WorkQueue, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An ack that raises (the file locked past the busy timeout) is logged with its
    traceback; the thread keeps running and handles the next message, and the message whose
    ack failed comes back after its visibility timeout and is handled and acked then."""
    caplog.set_level(logging.ERROR, logger="eventlite.queue")
    real_ack = queue.ack
    ack_failed = threading.Event()

    def flaky_ack(receipt: str) -> None:
        if not ack_failed.is_set():
            ack_failed.set()
            raise StorageError("committing failed: database is locked")
        real_ack(receipt)

    queue.ack = flaky_ack  # type: ignore[method-assign]
    seen: list[int] = []
    events = {count: threading.Event() for count in (1, 2, 3)}

    def handler(job: Job) -> None:
        seen.append(job.n)
        events[len(seen)].set()

    consumer = queue.consume(handler, threads=1, poll_interval=0.01)
    try:
        queue.send(Job(1))
        assert events[1].wait(30)
        assert ack_failed.wait(30)
        queue.send(Job(2))
        assert events[2].wait(30)
        alive_after_failure = [worker.is_alive() for worker in consumer._workers]
        clock.advance(10)  # job 1's visibility timeout runs out: it is handed out again
        assert events[3].wait(30)
    finally:
        consumer.stop(30)
    assert [1, 2, 1] == seen
    assert [True] == alive_after_failure
    assert 0 == len(queue)
    failures = [r for r in caplog.records if "settling a batch failed" in r.getMessage()]
    assert (1, StorageError) == (len(failures), failures[0].exc_info and failures[0].exc_info[0])


# -- 3. purge by age keeps parked entries with their dead letter ----------------------------


def test_purge_by_age_keeps_entries_parked_behind_a_recent_dead_letter(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    """Parked entries are not purged by their own age: behind a dead letter that failed
    again today, an eight-day-old line stays whole and in order."""
    head = dlq.add("billing", '{"id":"e1"}', key="order-1", error=RuntimeError("bug"), attempts=3)
    dlq.park("billing", '{"id":"e2"}', key="order-1")
    dlq.park("billing", '{"id":"e3"}', key="order-1")
    clock.advance(8 * 86400)
    dlq.retry(head.id)
    dlq.fail_again(head.id, RuntimeError("still broken"))
    assert 0 == dlq.purge("billing", older_than=timedelta(days=7))
    expected = [("e1", "dead"), ("e2", "parked"), ("e3", "parked")]
    assert expected == [(e.message_id, e.status.value) for e in dlq.list("billing")]


def test_purge_by_age_of_the_dead_letter_releases_the_parked_entries_behind_it(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    """When the dead head of a line is old enough it is purged, and the entries parked
    behind it are released for redelivery, in order, rather than purged with it."""
    dlq.add("billing", '{"id":"e1"}', key="order-1", error=RuntimeError("bug"), attempts=3)
    dlq.park("billing", '{"id":"e2"}', key="order-1")
    dlq.park("billing", '{"id":"e3"}', key="order-1")
    clock.advance(8 * 86400)
    assert 1 == dlq.purge("billing", older_than=timedelta(days=7))
    expected = [("e2", "retrying"), ("e3", "retrying")]
    assert expected == [(e.message_id, e.status.value) for e in dlq.list("billing")]


def test_purge_without_age_still_drops_parked_entries(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    """Without ``older_than`` a purge of a source drops every entry, parked ones too."""
    dlq.add("billing", '{"id":"e1"}', key="order-1", error=RuntimeError("bug"), attempts=3)
    dlq.park("billing", '{"id":"e2"}', key="order-1")
    assert (2, 0) == (dlq.purge("billing"), dlq.count())


# -- 4. FIFO groups and dead letters: the documented behaviour ----------------------------


def test_a_dead_lettered_group_message_is_overtaken_and_retried_at_the_back(
    queue: WorkQueue, dlq: DeadLetterQueue
) -> None:
    """As docs/work-queue.md states: a group's dead letter has ``key=None`` (the group only
    in ``group``), so the group's next messages are handed out at once, and a retry puts
    the dead one back behind them: the group is handled 2, 3, 1."""
    queue.send_many([Job(1), Job(2), Job(3)], group="account-7")
    order: list[int] = []
    for _ in range(3):  # max_receives=3: the third nack dead-letters Job(1)
        [item] = queue.receive()
        queue.nack(item.receipt, error=RuntimeError("boom"))
    [dead] = dlq.list("queue:jobs")
    assert (None, "account-7") == (dead.key, dead.group)
    [item] = queue.receive()
    order.append(item.message.n)
    queue.ack(item.receipt)
    dlq.retry(dead.id)
    for _ in range(3):
        for item in queue.receive():
            order.append(item.message.n)
            queue.ack(item.receipt)
    assert [2, 3, 1] == order
