"""Competing consumer threads over a work queue (``QueueConsumer``): each message handled
once, failures retried then dead-lettered, the message's context, stopping; a prefetched
batch against the visibility timeout; a thread that meets an error outside its handler."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import pytest

from eventlite import Codec, Envelope, Registry, current_envelope
from eventlite.clock import FakeClock, SystemClock
from eventlite.dlq import DeadLetterQueue
from eventlite.exceptions import StorageError
from eventlite.messages import event
from eventlite.queue import QueueConsumer, WorkQueue, default_backoff
from eventlite.sqlite import SQLiteStorage

registry = Registry()
codec = Codec(registry)


@event(registry=registry, name="consumer.Job")
class Job:
    n: int


@pytest.fixture
def dlq(storage: SQLiteStorage, clock: FakeClock) -> DeadLetterQueue:
    """The file's dead-letter queue, on the fake clock."""
    return DeadLetterQueue(storage, codec, clock=clock)


@pytest.fixture
def queue(storage: SQLiteStorage, dlq: DeadLetterQueue, clock: FakeClock) -> WorkQueue:
    """A queue called ``jobs`` with a DLQ, 10 s visibility, 3 receives at most."""
    return WorkQueue(
        storage, "jobs", codec, visibility_timeout=10, max_receives=3, dlq=dlq, clock=clock
    )


def insert_raw(storage: SQLiteStorage, queue: str, body: str, message_id: str = "raw-1") -> None:
    """Put a row in a queue behind the API's back, as a foreign or broken writer would."""
    with storage.database.transaction() as tx:
        tx.execute(
            "INSERT INTO queue_messages (queue, id, body, not_before, visible_at, sent_at) "
            "VALUES (?, ?, ?, 0, 0, 0)",
            (queue, message_id, body),
        )


def test_default_backoff() -> None:
    """The consumer's default backoff starts at 0.1 s, doubles, and stops at 30 s."""
    assert [0.1, 0.2, 0.4, 30.0] == [default_backoff(a) for a in (2, 3, 4, 30)]


# -- competing consumers (the real clock, no sleeps: threads signal what they did) -----------


class Recorder:
    """A handler that records what it handled and signals when ``expected`` calls ran."""

    def __init__(self, expected: int, fail: Any = lambda n, calls: False) -> None:
        self.expected = expected
        self.fail = fail
        self.calls: Counter[int] = Counter()
        self.threads: set[str] = set()
        self.lock = threading.Lock()
        self.done = threading.Event()

    def __call__(self, job: Job) -> None:
        with self.lock:
            self.calls[job.n] += 1
            self.threads.add(threading.current_thread().name)
            calls = self.calls[job.n]
            if sum(self.calls.values()) >= self.expected:
                self.done.set()
        if self.fail(job.n, calls):
            raise RuntimeError(f"job {job.n} failed (call {calls})")


@pytest.fixture
def live(storage: SQLiteStorage) -> tuple[WorkQueue, DeadLetterQueue]:
    """A queue and DLQ on the real clock, for consumer threads."""
    dlq = DeadLetterQueue(storage, codec)
    return WorkQueue(storage, "live", codec, max_receives=3, dlq=dlq, clock=SystemClock()), dlq


def test_competing_consumers_handle_each_message_once(
    live: tuple[WorkQueue, DeadLetterQueue],
) -> None:
    """Four threads with prefetch share 300 messages: each is handled exactly once, and
    the queue is empty after they stop."""
    queue, _ = live
    handler = Recorder(300)
    with queue.consume(handler, threads=4, prefetch=10, poll_interval=0.01) as consumer:
        queue.send_many([Job(n) for n in range(300)])
        assert handler.done.wait(30)
    assert {n: 1 for n in range(300)} == dict(handler.calls)
    assert (300, 0, 0, False) == (consumer.handled, consumer.failed, len(queue), consumer.running)


def test_a_failing_handler_is_retried_then_dead_lettered(
    live: tuple[WorkQueue, DeadLetterQueue],
) -> None:
    """A handler that keeps failing on one message gets it ``max_receives`` times, then it
    is dead-lettered with the handler's error; the other messages are handled."""
    queue, dlq = live
    handler = Recorder(3 + 5, fail=lambda n, calls: n == 0)
    with queue.consume(
        handler, threads=2, prefetch=3, backoff=lambda attempt: 0.0, poll_interval=0.01
    ):
        queue.send_many([Job(n) for n in range(6)])
        assert handler.done.wait(30)
    assert {0: 3, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1} == dict(handler.calls)
    [dead] = dlq.list()
    assert ("RuntimeError", "job 0 failed (call 3)", 3) == (
        dead.error_type,
        dead.error_message,
        dead.attempts,
    )
    assert 0 == len(queue)


def test_a_transient_failure_is_retried(live: tuple[WorkQueue, DeadLetterQueue]) -> None:
    """A handler that fails once on a message succeeds on the redelivery; nothing is
    dead-lettered."""
    queue, dlq = live
    handler = Recorder(2, fail=lambda n, calls: calls == 1)
    with queue.consume(handler, threads=1, backoff=lambda attempt: 0.0, poll_interval=0.01) as c:
        queue.send(Job(1))
        assert handler.done.wait(30)
    assert ({1: 2}, 0, 0, 1, 1) == (
        dict(handler.calls),
        dlq.count(),
        len(queue),
        c.handled,
        c.failed,
    )


def test_undecodable_message_does_not_stop_consumers(
    live: tuple[WorkQueue, DeadLetterQueue], storage: SQLiteStorage
) -> None:
    """A row that cannot be decoded goes to the DLQ with the reason; the consumers keep
    running and handle every other message."""
    queue, dlq = live
    queue.send(Job(1))
    insert_raw(storage, "live", '{"type": "consumer.Job", "data": {"n": "not a number"}}')
    insert_raw(storage, "live", "\x00garbage", "raw-2")
    queue.send(Job(2))
    handler = Recorder(3)
    with queue.consume(handler, threads=2, prefetch=2, poll_interval=0.01):
        queue.send(Job(3))
        assert handler.done.wait(30)
    assert {1: 1, 2: 1, 3: 1} == dict(handler.calls)
    assert ["eventlite.exceptions.MessageDecodeError"] * 2 == [d.error_type for d in dlq.list()]


def test_handler_runs_in_the_message_context(live: tuple[WorkQueue, DeadLetterQueue]) -> None:
    """While the handler runs, the message's envelope is current, so what it sends is
    correlated to it."""
    queue, _ = live
    seen: list[Envelope | None] = []
    done = threading.Event()

    def handler(job: Job) -> None:
        seen.append(current_envelope())
        done.set()

    sent = Envelope(Job(1))
    with queue.consume(handler, threads=1, poll_interval=0.01):
        queue.send(sent)
        assert done.wait(30)
    assert [sent] == seen


def test_stop_gives_back_the_rest_of_the_batch(live: tuple[WorkQueue, DeadLetterQueue]) -> None:
    """Stopping a consumer lets the running handler finish and gives back the rest of its
    batch, visible at once and with that receive not counted."""
    queue, _ = live
    started = threading.Event()
    release = threading.Event()

    def slow(job: Job) -> None:
        started.set()
        release.wait(30)

    queue.send_many([Job(n) for n in range(5)])
    consumer = QueueConsumer(queue, slow, threads=1, prefetch=5, poll_interval=0.01)
    consumer.start()
    assert started.wait(30)
    consumer.stop(timeout=0)  # asks the thread to stop; it is still in the handler
    release.set()
    consumer.stop()
    assert (1, False) == (consumer.handled, consumer.running)
    assert [(1, 1), (2, 1), (3, 1), (4, 1)] == [
        (i.message.n, i.receive_count) for i in queue.receive(max=10)
    ]
    with pytest.raises(RuntimeError, match="started already"):
        consumer.start()


def test_consumer_settings_are_checked(queue: WorkQueue) -> None:
    """Threads and prefetch below 1 are refused."""
    with pytest.raises(ValueError, match="threads"):
        QueueConsumer(queue, print, threads=0)
    with pytest.raises(ValueError, match="prefetch"):
        QueueConsumer(queue, print, prefetch=0)


# -- a prefetched batch that outlasts the visibility timeout ---------------------------


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


# -- a consumer thread survives errors outside its handler -------------------------------


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
