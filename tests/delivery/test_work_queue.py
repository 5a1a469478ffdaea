"""The work queue: each rule on its own with a fake clock, dead letters and their retry
(FIFO groups included), the file underneath, and the queues of one storage by name."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from eventlite import App, Codec, Envelope, MessageEncodeError, Registry
from eventlite.clock import FakeClock
from eventlite.dlq import DeadLetterQueue
from eventlite.messages import event
from eventlite.queue import Queues, QueueStats, Received, StaleReceipt, WorkQueue
from eventlite.sqlite import SQLiteStorage

registry = Registry()
codec = Codec(registry)


@event(registry=registry, name="queue.Job")
class Job:
    n: int


@event(registry=registry, name="queue.Note")
class Note:
    text: str
    at: datetime | None = None  # a naive datetime cannot be encoded


@pytest.fixture
def dlq(storage: SQLiteStorage, clock: FakeClock) -> DeadLetterQueue:
    """The file's dead-letter queue."""
    return DeadLetterQueue(storage, codec, clock=clock)


@pytest.fixture
def queue(storage: SQLiteStorage, dlq: DeadLetterQueue, clock: FakeClock) -> WorkQueue:
    """A queue called ``jobs`` with a DLQ, 10 s visibility, 3 receives at most."""
    return WorkQueue(
        storage, "jobs", codec, visibility_timeout=10, max_receives=3, dlq=dlq, clock=clock
    )


def numbers(items: list[Received]) -> list[int]:
    """The ``n`` of each received Job."""
    return [item.message.n for item in items]


def insert_raw(
    storage: SQLiteStorage, queue: str, body: str | bytes, message_id: str = "raw-1"
) -> None:
    """Put a row in a queue behind the API's back, as a foreign or broken writer would."""
    with storage.database.transaction() as tx:
        tx.execute(
            "INSERT INTO queue_messages (queue, id, body, not_before, visible_at, sent_at) "
            "VALUES (?, ?, ?, 0, 0, 0)",
            (queue, message_id, body),
        )


# -- the rules, one at a time ---------------------------------------------------------------


def test_send_receive_ack(queue: WorkQueue) -> None:
    """A sent message is received once with its envelope and a receipt; after the ack it
    is gone. An empty queue receives []."""
    env = Envelope(Job(1))
    assert env.id == queue.send(env)
    [item] = queue.receive(max=5)
    assert (env, 1, None, env.id) == (
        item.envelope,
        item.receive_count,
        item.group,
        item.message_id,
    )
    assert [] == queue.receive()
    queue.ack(item.receipt)
    assert 0 == len(queue)


def test_receive_in_send_order_up_to_max(queue: WorkQueue) -> None:
    """Receives hand out messages oldest first, at most ``max`` at a time."""
    queue.send_many([Job(n) for n in range(5)])
    assert [0, 1] == numbers(queue.receive(max=2))
    assert [2, 3, 4] == numbers(queue.receive(max=10))


def test_delay(queue: WorkQueue, clock: FakeClock) -> None:
    """A delayed message is invisible until the clock reaches its delay."""
    queue.send(Job(1), delay=30)
    queue.send(Job(2))
    [now] = queue.receive(max=5)
    queue.ack(now.receipt)
    assert 2 == now.message.n
    clock.advance(29.5)
    assert [] == queue.receive()
    clock.advance(0.5)
    assert [1] == numbers(queue.receive())


def test_visibility_timeout_and_stale_receipts(queue: WorkQueue, clock: FakeClock) -> None:
    """A message not acked within the visibility timeout is received again with a new
    receipt; the old receipt is then stale and acking with it says why."""
    queue.send(Job(1))
    [first] = queue.receive()
    clock.advance(9)
    assert [] == queue.receive()
    clock.advance(1)
    [second] = queue.receive()
    assert (2, first.message_id) == (second.receive_count, second.message_id)
    with pytest.raises(StaleReceipt, match="received again") as info:
        queue.ack(first.receipt)
    assert (first.receipt, "jobs") == (info.value.receipt, info.value.queue)
    queue.ack(second.receipt)
    with pytest.raises(StaleReceipt, match="no longer in the queue"):
        queue.ack(second.receipt)
    with pytest.raises(StaleReceipt, match="not a receipt"):
        queue.ack("nonsense")


def test_ack_many(queue: WorkQueue, clock: FakeClock) -> None:
    """``ack_many`` acks every receipt that holds its message, lets the next message of a
    group through, and then raises StaleReceipt for the stale ones (a receipt given twice
    included), counting them."""
    queue.send(Job(1), group="a")
    queue.send(Job(2), group="a")
    queue.send(Job(3))
    queue.send(Job(4))
    one, three, four = queue.receive(max=10)
    queue.extend(one.receipt, 30)
    queue.extend(three.receipt, 30)
    clock.advance(10)
    [four_again] = queue.receive(max=10)
    assert 4 == four_again.message.n
    with pytest.raises(StaleReceipt, match=r"received again .* \(and 1 more stale receipts\)"):
        queue.ack_many([four.receipt, one.receipt, three.receipt, three.receipt])
    assert [2] == numbers(queue.receive(max=10))
    queue.ack_many([])
    queue.ack_many([four_again.receipt])
    assert 1 == len(queue)


def test_ack_many_with_a_stale_and_a_current_receipt_of_one_message(
    queue: WorkQueue, clock: FakeClock
) -> None:
    """A stale receipt listed before the current receipt of the same message does not stop
    the current one from acking it."""
    queue.send(Job(1))
    [old] = queue.receive()
    clock.advance(10)
    [new] = queue.receive()
    with pytest.raises(StaleReceipt, match="received again"):
        queue.ack_many([old.receipt, new.receipt])
    assert 0 == len(queue)


def test_late_ack_before_anyone_else_receives(queue: WorkQueue, clock: FakeClock) -> None:
    """An ack after the visibility timeout still works while nobody received the message
    again."""
    queue.send(Job(1))
    [item] = queue.receive()
    clock.advance(60)
    queue.ack(item.receipt)
    assert [] == queue.receive()


def test_nack_and_extend(queue: WorkQueue, clock: FakeClock) -> None:
    """A nack makes the message visible again after its delay (and spends the receipt);
    ``extend`` keeps it hidden longer than the visibility timeout."""
    queue.send(Job(1))
    queue.send(Job(2))
    one, two = queue.receive(max=2)
    queue.nack(one.receipt, delay=5)
    with pytest.raises(StaleReceipt, match="nacked"):
        queue.ack(one.receipt)
    queue.extend(two.receipt, 30)
    clock.advance(5)
    [again] = queue.receive(max=5)
    assert (1, 2) == (again.message.n, again.receive_count)
    queue.ack(again.receipt)
    clock.advance(20)
    assert [] == queue.receive(max=5)
    queue.ack(two.receipt)


def test_visibility_timeout_per_receive(queue: WorkQueue, clock: FakeClock) -> None:
    """``receive(visibility_timeout=...)`` overrides the queue's timeout for that receive."""
    queue.send(Job(1))
    queue.receive(visibility_timeout=2)
    clock.advance(2)
    assert [1] == numbers(queue.receive())


def test_dedup_window(queue: WorkQueue, clock: FakeClock) -> None:
    """A dedup id seen within the window returns the first id and adds nothing, even after
    the first message was acked; after the window it sends again."""
    first = queue.send(Job(1), dedup_id="order-7")
    assert first == queue.send(Job(2), dedup_id="order-7")
    [item] = queue.receive(max=5)
    queue.ack(item.receipt)
    clock.advance(299)
    assert first == queue.send(Job(3), dedup_id="order-7")
    clock.advance(1)
    again = queue.send(Job(4), dedup_id="order-7")
    assert first != again
    assert [4] == numbers(queue.receive(max=5))


def test_groups_are_fifo_one_at_a_time(queue: WorkQueue, clock: FakeClock) -> None:
    """Messages of one group come one at a time in send order; other groups and messages
    without a group are not held up; a timed-out head comes back before its followers."""
    queue.send(Job(1), group="a")
    queue.send(Job(2), group="a")
    queue.send(Job(3), group="b")
    queue.send(Job(4))
    queue.send(Job(5), group="a")
    batch = queue.receive(max=10)
    assert [1, 3, 4] == numbers(batch)
    queue.ack(batch[0].receipt)
    clock.advance(1)
    [second] = queue.receive(max=10)
    assert (2, "a") == (second.message.n, second.group)
    clock.advance(9)
    assert [3, 4] == numbers(queue.receive(max=10))  # timed out
    clock.advance(1)
    assert [2] == numbers(queue.receive(max=10))  # timed out, and 5 still waits behind it


def test_a_delayed_group_head_holds_its_group(queue: WorkQueue, clock: FakeClock) -> None:
    """The first message of a group sent with a delay keeps the later ones waiting."""
    queue.send(Job(1), group="a", delay=10)
    queue.send(Job(2), group="a")
    assert [] == queue.receive(max=5)
    clock.advance(10)
    [head] = queue.receive(max=5)
    queue.ack(head.receipt)
    assert [2] == numbers(queue.receive(max=5))


def test_max_receives_goes_to_the_dlq(queue: WorkQueue, dlq: DeadLetterQueue) -> None:
    """After ``max_receives`` failed deliveries the message is dead-lettered under
    ``queue:<name>`` with the handler's last error, and not handed out again."""
    queue.send(Job(1), group="a")
    queue.send(Job(2), group="a")
    for attempt in range(3):
        [item] = queue.receive()
        assert (1, attempt + 1) == (item.message.n, item.receive_count)
        queue.nack(item.receipt, error=ValueError(f"attempt {attempt + 1}"))
    [dead] = dlq.list()
    assert ("queue:jobs", "a", "ValueError", "attempt 3", 3, "queue.Job") == (
        dead.source,
        dead.group,
        dead.error_type,
        dead.error_message,
        dead.attempts,
        dead.type_name,
    )
    assert Job(1) == dead.envelope(codec).message
    assert [2] == numbers(queue.receive(max=5))  # the group moved on


def test_timed_out_max_receives_goes_to_the_dlq(
    queue: WorkQueue, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    """A message whose visibility runs out ``max_receives`` times is dead-lettered by the
    next receive, naming the receive count."""
    queue.send(Job(1))
    for _ in range(3):
        assert [1] == numbers(queue.receive())
        clock.advance(10)
    assert [] == queue.receive()
    [dead] = dlq.list()
    assert "eventlite.queue.MaxReceivesExceeded" == dead.error_type
    assert "was received 3 times without an ack" in str(dead.error_message)


def test_ttl_expires_waiting_messages(
    storage: SQLiteStorage, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    """With a TTL, a message still waiting that long is dead-lettered as expired; one in
    flight is not expired until its visibility timeout runs out."""
    queue = WorkQueue(storage, "ttl", codec, ttl=60, visibility_timeout=100, dlq=dlq, clock=clock)
    queue.send(Job(1))
    queue.send(Job(2))
    [taken] = queue.receive()
    clock.advance(60)
    assert [] == queue.receive()
    assert [("eventlite.queue.MessageExpired", "queue:ttl")] == [
        (d.error_type, d.source) for d in dlq.list()
    ]
    queue.ack(taken.receipt)  # in flight: still its receiver's to ack


def test_without_a_dlq_failures_are_dropped_and_logged(
    storage: SQLiteStorage, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A queue without a DLQ drops a message that used up its receives, with an error
    log naming the queue and the message."""
    queue = WorkQueue(storage, "bare", codec, max_receives=1, clock=clock)
    message_id = queue.send(Job(1))
    [item] = queue.receive()
    queue.nack(item.receipt, error=ValueError("nope"))
    assert 0 == len(queue)
    assert [
        f"queue 'bare': dropped message {message_id} (no dead-letter queue configured): "
        "ValueError: nope"
    ] == [r.getMessage() for r in caplog.records]


def test_undecodable_messages_are_dead_lettered(
    storage: SQLiteStorage, queue: WorkQueue, dlq: DeadLetterQueue
) -> None:
    """A row with bad JSON or an unknown type is dead-lettered by the receive that meets
    it, with the decoding error and the raw text; the good messages are received."""
    queue.send(Job(1))
    insert_raw(storage, "jobs", "{not json", "bad-json")
    unknown = codec.encode_envelope(Envelope(Job(2))).replace("queue.Job", "queue.Gone")
    insert_raw(storage, "jobs", unknown, "unknown-type")
    queue.send(Job(3))
    assert [1, 3] == numbers(queue.receive(max=10))
    dead = {d.message_id: d for d in dlq.list()}
    assert ("{not json", "eventlite.exceptions.MessageDecodeError") == (
        dead["bad-json"].message,
        dead["bad-json"].error_type,
    )
    assert ("queue.Gone", "eventlite.exceptions.UnknownMessageType") == (
        dead["unknown-type"].type_name,
        dead["unknown-type"].error_type,
    )


def test_dlq_retry_puts_the_message_back(
    queue: WorkQueue, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    """``dlq.retry(id)`` of a queue's dead letter puts it back at the end of the queue
    with a fresh receive count; the next receive hands it out."""
    original = queue.send(Job(1))
    for _ in range(3):
        [item] = queue.receive()
        queue.nack(item.receipt)
    queue.send(Job(2))
    [dead] = dlq.list()
    dlq.retry(dead.id)
    assert 1 == queue.requeue_retries()
    assert 0 == dlq.count()
    items = queue.receive(max=5)
    assert [(2, 1), (1, 1)] == [(i.message.n, i.receive_count) for i in items]
    assert original == items[1].message_id


def test_stats(queue: WorkQueue, clock: FakeClock) -> None:
    """``stats`` counts waiting, in-flight and delayed messages and the oldest one's age."""
    assert QueueStats("jobs", 0, 0, 0, None) == queue.stats()
    queue.send(Job(1))
    clock.advance(4)
    queue.send(Job(2))
    queue.send(Job(3), delay=10)
    queue.send(Job(4), group="g")
    queue.send(Job(5), group="g")
    queue.receive()
    stats = queue.stats()
    assert QueueStats("jobs", 3, 1, 1, 4.0) == stats
    assert (5, "jobs: 3 waiting, 1 in flight, 1 delayed, oldest 4.0s") == (stats.total, str(stats))


def test_send_joins_the_callers_transaction(queue: WorkQueue, storage: SQLiteStorage) -> None:
    """A send inside the caller's transaction is rolled back with it."""
    with pytest.raises(RuntimeError), storage.transaction():
        queue.send(Job(1))
        raise RuntimeError("the order insert failed")
    assert 0 == len(queue)


def test_bad_input_is_refused(storage: SQLiteStorage, queue: WorkQueue, tmp_path: Path) -> None:
    """Wrong settings and arguments raise clear errors and change nothing."""
    with pytest.raises(ValueError, match="max must be an int >= 1"):
        queue.receive(max=0)
    with pytest.raises(ValueError, match="delay must be a number of seconds >= 0"):
        queue.send(Job(1), delay=-1)
    with pytest.raises(ValueError, match="max_receives"):
        WorkQueue(storage, "x", codec, max_receives=0)
    with pytest.raises(ValueError, match="name"):
        WorkQueue(storage, "", codec)
    with pytest.raises(ValueError, match="visibility_timeout"):
        WorkQueue(storage, "x", codec, visibility_timeout=0)
    other = SQLiteStorage(tmp_path / "other.db")
    with pytest.raises(ValueError, match="same storage"):
        WorkQueue(storage, "x", codec, dlq=DeadLetterQueue(other, codec))
    other.close()
    with pytest.raises(TypeError, match="needs a Storage"):
        WorkQueue("queue.db", "x", codec)  # type: ignore[arg-type]
    with pytest.raises(MessageEncodeError):
        queue.send(Note("x", at=datetime(2024, 1, 1)))
    assert 0 == len(queue)


def test_messages_survive_reopening_the_file(tmp_path: Path, clock: FakeClock) -> None:
    """Sent, in-flight and delayed messages are in the file; another storage on it sees
    them and can ack a receipt handed out by the first."""
    path = tmp_path / "shared.db"
    with SQLiteStorage(path) as first:
        queue = WorkQueue(first, "jobs", codec, clock=clock)
        queue.send_many([Job(1), Job(2)])
        queue.send(Job(3), delay=100)
        [item] = queue.receive()
    with SQLiteStorage(path) as second:
        again = WorkQueue(second, "jobs", codec, clock=clock)
        assert QueueStats("jobs", 1, 1, 1, 0.0) == again.stats()
        again.ack(item.receipt)
        assert [2] == numbers(again.receive(max=5))


def test_queues_share_a_file_but_not_messages(storage: SQLiteStorage, clock: FakeClock) -> None:
    """Queues of different names in one file never see each other's messages; ``Queues``
    names them and gives their stats."""
    queues = Queues(storage, codec, clock=clock, max_receives=2)
    queues["a"].send(Job(1))
    queues["b"].send(Job(2))
    assert queues["a"] is queues["a"]
    assert (2, 7) == (queues["a"].max_receives, queues.get("a", max_receives=7).max_receives)
    assert [1] == numbers(queues["a"].receive(max=5))
    assert ["a", "b"] == queues.names()
    assert [("a", 1), ("b", 0)] == [(s.name, s.in_flight) for s in queues.stats()]


def test_receive_uses_the_ready_index(queue: WorkQueue, storage: SQLiteStorage) -> None:
    """The receive query is a range search of the ready index, not a scan: its cost grows
    with the log of the queue's length (SQLite: the query the backend runs)."""
    conn = storage.database.read_connection()
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT seq FROM queue_messages WHERE queue = ? AND visible_at <= ? "
        "ORDER BY visible_at, seq LIMIT ?",
        ("jobs", 0.0, 10),
    ).fetchall()
    assert [
        "SEARCH queue_messages USING COVERING INDEX queue_messages_ready (queue=? AND visible_at<?)"
    ] == [row[3] for row in plan]


# -- FIFO groups and dead letters: the documented behaviour ----------------------------


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


# -- the app's queues -----------------------------------------------------------------------


def test_the_app_hands_out_its_queues_by_name(tmp_path: Path, clock: FakeClock) -> None:
    """``app.queue(name)`` is made on first use with the app's storage, codec, clock and
    DLQ and the settings given, and is the same object ever after; other settings for it
    raise ValueError; ``app.queues`` lists them."""
    with App(tmp_path / "app.db", registry=registry, clock=clock) as app:
        emails = app.queue("emails", max_receives=1)
        assert emails is app.queue("emails") is app.queue("emails", max_receives=1)
        assert emails is app.queues["emails"]
        assert (app.storage, app.codec, app.clock, app.dlq, 1) == (
            emails.storage,
            emails.codec,
            emails.clock,
            emails.dlq,
            emails.max_receives,
        )
        with pytest.raises(ValueError, match=r"max_receives=3 \(it has 1\)"):
            app.queue("emails", max_receives=3)
        emails.send(Job(1))
        [item] = emails.receive()
        emails.nack(item.receipt, error=RuntimeError("smtp down"))
        assert ["queue:emails"] == [d.source for d in app.dlq.list()]
        app.queue("reports").send(Job(2), delay=5)
        assert ["reports"] == app.queues.names()


def test_an_app_in_memory_has_no_queues() -> None:
    """Work queues need a file: asking an in-memory app raises RuntimeError saying so."""
    with App(registry=registry) as app, pytest.raises(RuntimeError, match="work queues"):
        app.queue("emails")


def test_a_queues_dead_letter_raises_the_dlq_alert_after_the_commit(
    storage: SQLiteStorage, clock: FakeClock
) -> None:
    """A message the queue dead-letters counts for the DLQ's alert like any add: the hook
    is called after the commit, with the count and the new dead letter."""
    calls: list[tuple[int, str | None]] = []
    dlq = DeadLetterQueue(
        storage,
        codec,
        clock=clock,
        alert_threshold=1,
        on_alert=lambda n, d: calls.append((n, d.message_id)),
    )
    queue = WorkQueue(storage, "jobs", codec, max_receives=1, dlq=dlq, clock=clock)
    sent = queue.send(Job(1))
    [item] = queue.receive()
    with storage.transaction():
        queue.nack(item.receipt, error=ValueError("boom"))
        assert [] == calls
    assert [(1, sent)] == calls
    queue.send(Job(2), delay=0)
    [item] = queue.receive()
    clock.advance(60)  # its visibility runs out: the next receive dead-letters it
    assert [] == queue.receive()
    assert 2 == len(calls)
