"""The sequenced dead-letter queue: what it records, how lines of one key stay in order,
retries, discards, purges, the alert hook, and the file underneath."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from eventlite import (
    Codec,
    Envelope,
    EventliteError,
    MessageDecodeError,
    Registry,
    StorageError,
    UnknownMessageType,
)
from eventlite.clock import FakeClock, to_datetime
from eventlite.dlq import (
    DeadLetter,
    DeadLetterNotFound,
    DeadLetterQueue,
    DeadLetterStatus,
    queue_source,
)
from eventlite.memory import MemoryStorage
from eventlite.messages import event
from eventlite.sqlite import SQLiteStorage

registry = Registry()
codec = Codec(registry)

DEAD = DeadLetterStatus.DEAD
PARKED = DeadLetterStatus.PARKED
RETRYING = DeadLetterStatus.RETRYING


@event(registry=registry, name="dlq.Paid")
class Paid:
    order_id: str
    n: int


class CardDeclined(Exception):
    """A handler error for the tests."""


def declined(text: str = "card declined") -> CardDeclined:
    """An exception with a traceback, as a handler raises it."""
    try:
        raise CardDeclined(text)
    except CardDeclined as exc:
        return exc


def paid(order_id: str, n: int = 0) -> Envelope:
    """A new envelope of a Paid event."""
    return Envelope(Paid(order_id, n))


@pytest.fixture
def dlq(storage: SQLiteStorage, clock: FakeClock) -> DeadLetterQueue:
    """A DLQ on the test's file and clock."""
    return DeadLetterQueue(storage, codec, clock=clock)


class Relay:
    """A minimal consumer of one source, as a relay uses the DLQ: park when blocked,
    dead-letter on failure, redeliver retries first."""

    def __init__(self, dlq: DeadLetterQueue, source: str, failing: set[int]) -> None:
        self.dlq = dlq
        self.source = source
        self.failing = failing
        self.delivered: list[tuple[str, int]] = []

    def _deliver(self, env: Envelope) -> None:
        if env.message.n in self.failing:
            raise declined(f"message {env.message.n} fails")
        self.delivered.append((env.message.order_id, env.message.n))

    def handle(self, env: Envelope) -> None:
        key = env.message.order_id
        if self.dlq.is_blocked(self.source, key):
            self.dlq.park(self.source, env, key=key)
            return
        try:
            self._deliver(env)
        except CardDeclined as exc:
            self.dlq.add(self.source, env, key=key, error=exc, attempts=3)

    def redeliver(self) -> int:
        return self.dlq.redeliver(self.source, lambda dl: self._deliver(dl.envelope(codec)))


# -- what is recorded ---------------------------------------------------------------------


def test_add_records_every_field(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    """A dead letter keeps the wire envelope, source, key, type, id, position, the error's
    type, message and traceback, the attempts, the first and last failure times, and the
    time it was added."""
    env = Envelope(Paid("o-1", 7), stream_id="order-o-1", version=2, position=41)
    first = to_datetime(clock.now() - 30)
    clock.advance(5)
    added = dlq.add("billing", env, key="o-1", error=declined(), attempts=3, first_failed_at=first)
    stored = dlq.get(added.id)
    assert added == stored
    assert (
        "billing",
        "o-1",
        DEAD,
        "dlq.Paid",
        env.id,
        41,
        f"{__name__}.CardDeclined",
        "card declined",
        3,
        first,
        to_datetime(clock.now()),
        to_datetime(clock.now()),
        None,
    ) == (
        stored.source,
        stored.key,
        stored.status,
        stored.type_name,
        stored.message_id,
        stored.position,
        stored.error_type,
        stored.error_message,
        stored.attempts,
        stored.first_failed_at,
        stored.last_failed_at,
        stored.created_at,
        stored.group,
    )
    assert codec.encode_envelope(env) == stored.message
    assert env == stored.envelope(codec)
    assert stored.traceback is not None and "raise CardDeclined(text)" in stored.traceback


def test_builtin_error_types_are_unqualified(dlq: DeadLetterQueue) -> None:
    """A builtin exception is recorded by its bare name."""
    added = dlq.add("s", paid("o-1"), key=None, error=ValueError("bad"), attempts=1)
    assert ("ValueError", "bad") == (added.error_type, added.error_message)


def test_raw_text_is_kept_and_explains_itself(dlq: DeadLetterQueue) -> None:
    """Text that could not be decoded is stored as it came; its type and id are read from
    it when it is JSON, and decoding it again raises the codec's error."""
    unknown = '{"id": "m-1", "type": "nobody.Knows", "data": {}}'
    broken = "{not json"
    a = dlq.add("bridge", unknown, key=None, error=declined(), attempts=1)
    b = dlq.add("bridge", broken, key=None, error=declined(), attempts=1)
    assert (unknown, "nobody.Knows", "m-1") == (a.message, a.type_name, a.message_id)
    assert (broken, None, None) == (b.message, b.type_name, b.message_id)
    with pytest.raises(UnknownMessageType):
        a.envelope(codec)
    with pytest.raises(MessageDecodeError):
        b.envelope(codec)


def test_str_is_readable(dlq: DeadLetterQueue) -> None:
    """``str(dead_letter)`` names the id, status, source, key, type, message id, position,
    error and attempts, one fact per line."""
    env = Envelope(Paid("o-1", 1), stream_id="s", version=1, position=9)
    added = dlq.add("billing", env, key="o-1", error=declined(), attempts=2)
    lines = str(added).splitlines()
    assert f"#{added.id} dead source=billing key=o-1" == lines[0]
    assert f"  message: dlq.Paid {env.id} at position 9" == lines[1]
    assert f"  error: {__name__}.CardDeclined: card declined" == lines[2]
    assert lines[3].startswith("  attempts: 2, first failed 2023-11-14T22:13:20+00:00")


def test_get_missing_names_the_id(dlq: DeadLetterQueue) -> None:
    """Asking for an id that is not there raises DeadLetterNotFound, a LookupError and an
    EventliteError whose message names the id."""
    with pytest.raises(DeadLetterNotFound, match="no dead letter with id 42") as info:
        dlq.get(42)
    assert 42 == info.value.id
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, EventliteError)
    for call in (dlq.retry, dlq.resolve, dlq.discard):
        with pytest.raises(DeadLetterNotFound):
            call(42)
    with pytest.raises(DeadLetterNotFound):
        dlq.fail_again(42, declined())


def test_bad_arguments_are_refused(dlq: DeadLetterQueue, storage: SQLiteStorage) -> None:
    """Wrong types are refused with a clear error and nothing is stored."""
    with pytest.raises(TypeError, match="key must be a str or None"):
        dlq.add("s", paid("o"), key=5, error=declined(), attempts=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="only a message with a key can be parked"):
        dlq.park("s", paid("o"), key=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="error must be the exception"):
        dlq.add("s", paid("o"), key=None, error="boom", attempts=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempts must be an int"):
        dlq.add("s", paid("o"), key=None, error=declined(), attempts=-1)
    with pytest.raises(ValueError, match="source must be a non-empty str"):
        dlq.add("", paid("o"), key=None, error=declined(), attempts=1)
    with pytest.raises(TypeError, match="raw str or bytes"):
        dlq.add("s", 42, key=None, error=declined(), attempts=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alert_threshold"):
        DeadLetterQueue(storage, codec, alert_threshold=0)
    with pytest.raises(ValueError, match="needs an alert_threshold"):
        DeadLetterQueue(storage, codec, on_alert=lambda n, d: None)
    with pytest.raises(TypeError, match="needs a Storage"):
        DeadLetterQueue("x.db", codec)  # type: ignore[arg-type]
    assert 0 == dlq.count()


# -- sequencing -----------------------------------------------------------------------------


def test_key_parks_behind_its_dead_letter_while_others_flow(dlq: DeadLetterQueue) -> None:
    """After message 2 of key K fails, K's later messages are parked in order behind it;
    key L and the same key for another source are delivered."""
    relay = Relay(dlq, "billing", failing={2})
    for order_id, n in [("K", 1), ("K", 2), ("L", 3), ("K", 4), ("L", 5), ("K", 6)]:
        relay.handle(paid(order_id, n))
    assert [("K", 1), ("L", 3), ("L", 5)] == relay.delivered
    entries = dlq.list("billing")
    assert [(2, DEAD), (4, PARKED), (6, PARKED)] == [
        (e.envelope(codec).message.n, e.status) for e in entries
    ]
    assert (True, False, False) == (
        dlq.is_blocked("billing", "K"),
        dlq.is_blocked("billing", "L"),
        dlq.is_blocked("shipping", "K"),
    )


def test_retry_releases_the_line_in_order(dlq: DeadLetterQueue) -> None:
    """``retry`` of the dead letter makes it and its parked followers retrying; the
    consumer redelivers them in order and the key flows again."""
    relay = Relay(dlq, "billing", failing={2})
    for n in (1, 2, 3, 4):
        relay.handle(paid("K", n))
    relay.failing.clear()
    released = dlq.retry(dlq.list(status=DEAD)[0].id)
    assert [(2, RETRYING), (3, RETRYING), (4, RETRYING)] == [
        (e.envelope(codec).message.n, e.status) for e in released
    ]
    assert True is dlq.is_blocked("billing", "K")  # retrying entries still hold the key
    assert [2, 3, 4] == [e.envelope(codec).message.n for e in dlq.claim_retries("billing")]
    assert 3 == relay.redeliver()
    relay.handle(paid("K", 5))
    assert [1, 2, 3, 4, 5] == [n for _, n in relay.delivered]
    assert (0, False) == (dlq.count(), dlq.is_blocked("billing", "K"))


def test_failed_redelivery_parks_the_line_again(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    """When a redelivery fails, the entry is dead again with one more attempt and the new
    error, and the entries behind it go back to parked; earlier ones that succeeded are
    gone."""
    relay = Relay(dlq, "billing", failing={2})
    for n in (1, 2, 3, 4):
        relay.handle(paid("K", n))
    relay.failing = {3}
    dlq.retry(dlq.list()[0].id)
    clock.advance(60)
    assert 1 == relay.redeliver()  # 2 goes through, 3 fails, 4 is not tried
    entries = dlq.list()
    assert [(3, DEAD, 1), (4, PARKED, 0)] == [
        (e.envelope(codec).message.n, e.status, e.attempts) for e in entries
    ]
    assert ("message 3 fails", to_datetime(clock.now())) == (
        entries[0].error_message,
        entries[0].last_failed_at,
    )
    assert [1, 2] == [n for _, n in relay.delivered]


def test_fail_again_counts_attempts(dlq: DeadLetterQueue) -> None:
    """``fail_again`` adds one attempt and records the new error each time."""
    added = dlq.add("s", paid("K"), key="K", error=declined("first"), attempts=3)
    dlq.retry(added.id)
    again = dlq.fail_again(added.id, declined("second"))
    assert (DEAD, 4, "second") == (again.status, again.attempts, again.error_message)


def test_discard_releases_the_followers(dlq: DeadLetterQueue) -> None:
    """Discarding a dead letter drops it for good and makes its parked followers retrying,
    in order; a parked entry behind a second dead letter stays parked."""
    relay = Relay(dlq, "billing", failing={2})
    for n in (1, 2, 3):
        relay.handle(paid("K", n))
    # A second failure recorded while the key is blocked (a relay that did not check).
    dlq.add("billing", paid("K", 4), key="K", error=declined(), attempts=1)
    dlq.park("billing", paid("K", 5), key="K")
    first = dlq.list()[0]
    assert first == dlq.discard(first.id)
    assert [(3, RETRYING), (4, DEAD), (5, PARKED)] == [
        (e.envelope(codec).message.n, e.status) for e in dlq.list()
    ]


def test_retry_behind_an_earlier_dead_letter_waits(dlq: DeadLetterQueue) -> None:
    """Retrying a dead letter that has an earlier dead letter of its key ahead of it
    parks it instead: it cannot overtake; retrying the first releases both."""
    a = dlq.add("s", paid("K", 1), key="K", error=declined(), attempts=1)
    b = dlq.add("s", paid("K", 2), key="K", error=declined(), attempts=1)
    assert [] == dlq.retry(b.id)
    assert PARKED == dlq.get(b.id).status
    assert [a.id, b.id] == [e.id for e in dlq.retry(a.id)]


def test_park_joins_a_line_being_retried(dlq: DeadLetterQueue) -> None:
    """A message parked while its key's line is being retried joins the retries at the
    end, so it is redelivered after them; parked with no line at all, it is retrying at
    once."""
    a = dlq.add("s", paid("K", 1), key="K", error=declined(), attempts=1)
    dlq.retry(a.id)
    b = dlq.park("s", paid("K", 2), key="K")
    c = dlq.park("s", paid("M", 3), key="M")
    assert (RETRYING, RETRYING) == (b.status, c.status)
    assert [a.id, b.id, c.id] == [e.id for e in dlq.claim_retries("s")]


def test_messages_without_a_key_block_nothing(dlq: DeadLetterQueue) -> None:
    """A dead letter without a key never blocks; retrying it releases only itself."""
    a = dlq.add("s", paid("x", 1), key=None, error=declined(), attempts=1)
    b = dlq.add("s", paid("x", 2), key=None, error=declined(), attempts=1)
    assert False is dlq.is_blocked("s", None)
    assert [a.id] == [e.id for e in dlq.retry(a.id)]
    assert [] == dlq.retry(a.id)
    assert DEAD == dlq.get(b.id).status


def test_retry_all_releases_a_whole_source(dlq: DeadLetterQueue) -> None:
    """``retry_all`` makes every entry of the source retrying, other sources untouched."""
    dlq.add("s", paid("K", 1), key="K", error=declined(), attempts=1)
    dlq.park("s", paid("K", 2), key="K")
    dlq.add("s", paid("L", 3), key="L", error=declined(), attempts=1)
    dlq.add("other", paid("K", 4), key="K", error=declined(), attempts=1)
    assert 3 == dlq.retry_all("s")
    assert 0 == dlq.retry_all("s")
    assert ({RETRYING}, DEAD) == (
        {e.status for e in dlq.list("s")},
        dlq.list("other")[0].status,
    )


def test_list_and_count_filter(dlq: DeadLetterQueue) -> None:
    """``list`` returns entries in order, filtered by source and status, up to ``limit``;
    ``count`` counts with the same filters; ``sources`` counts per source."""
    for n in range(5):
        dlq.add("a", paid("K", n), key=f"K{n}", error=declined(), attempts=1)
    dlq.park("a", paid("K0", 9), key="K0")
    dlq.add(queue_source("jobs"), paid("J"), key=None, error=declined(), attempts=1)
    assert [0, 1] == [e.envelope(codec).message.n for e in dlq.list("a", limit=2)]
    assert 7 == len(dlq.list(limit=None))
    assert (7, 6, 5, 1, 1) == (
        dlq.count(),
        dlq.count("a"),
        dlq.count("a", status=DEAD),
        dlq.count("a", status="parked"),
        dlq.count("queue:jobs"),
    )
    assert {"a": 6, "queue:jobs": 1} == dlq.sources()
    with pytest.raises(ValueError):
        dlq.count(status="lost")


# -- purge, alert, transactions, the file ---------------------------------------------------


def test_purge_older_than(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    """``purge(older_than=...)`` drops the entries whose last failure is at least that old,
    and releases what was parked behind them."""
    old = dlq.add("s", paid("K", 1), key="K", error=declined(), attempts=1)
    clock.advance(timedelta(days=3).total_seconds())
    parked = dlq.park("s", paid("K", 2), key="K")
    recent = dlq.add("s", paid("L", 3), key="L", error=declined(), attempts=1)
    clock.advance(timedelta(days=5).total_seconds())
    assert 1 == dlq.purge(older_than=timedelta(days=7))
    with pytest.raises(DeadLetterNotFound):
        dlq.get(old.id)
    assert [(parked.id, RETRYING), (recent.id, DEAD)] == [(e.id, e.status) for e in dlq.list()]
    assert 0 == dlq.purge("other")
    assert 2 == dlq.purge("s")
    assert 0 == dlq.count()


def test_alert_fires_on_each_add_past_the_threshold(
    storage: SQLiteStorage, clock: FakeClock
) -> None:
    """``on_alert(count, dead_letter)`` is called after each add that leaves at least
    ``alert_threshold`` entries, not before, and never for a park."""
    calls: list[tuple[int, int]] = []
    dlq = DeadLetterQueue(
        storage,
        codec,
        clock=clock,
        alert_threshold=3,
        on_alert=lambda n, d: calls.append((n, d.id)),
    )
    ids = [dlq.add("s", paid("K", n), key="K", error=declined(), attempts=1).id for n in range(2)]
    dlq.park("s", paid("K", 9), key="K")  # 3 entries, but a park does not alert
    ids.append(dlq.add("s", paid("L"), key="L", error=declined(), attempts=1).id)
    ids.append(dlq.add("s", paid("M"), key="M", error=declined(), attempts=1).id)
    assert [(4, ids[2]), (5, ids[3])] == calls


def test_alert_waits_for_the_commit(storage: SQLiteStorage, clock: FakeClock) -> None:
    """Inside a caller's transaction the alert comes after the commit, and a rolled back
    add alerts nobody."""
    calls: list[int] = []
    dlq = DeadLetterQueue(
        storage, codec, clock=clock, alert_threshold=1, on_alert=lambda n, d: calls.append(n)
    )
    with storage.transaction():
        dlq.add("s", paid("K"), key="K", error=declined(), attempts=1)
        assert [] == calls
    assert [1] == calls
    with pytest.raises(RuntimeError), storage.transaction():
        dlq.add("s", paid("K"), key="K", error=declined(), attempts=1)
        raise RuntimeError("roll back")
    assert ([1], 1) == (calls, dlq.count())


def test_alert_hook_errors_are_logged(
    storage: SQLiteStorage, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing hook does not fail the add; it is logged. Without a hook, reaching the
    threshold logs a warning."""

    def broken(count: int, dead_letter: DeadLetter) -> None:
        raise RuntimeError("pager down")

    hooked = DeadLetterQueue(storage, codec, clock=clock, alert_threshold=1, on_alert=broken)
    quiet = DeadLetterQueue(storage, codec, clock=clock, alert_threshold=2)
    with caplog.at_level(logging.WARNING, logger="eventlite.dlq"):
        hooked.add("s", paid("K"), key="K", error=declined(), attempts=1)
        quiet.add("s", paid("L"), key="L", error=declined(), attempts=1)
    assert 2 == hooked.count()
    messages = [r.getMessage() for r in caplog.records]
    assert "alert hook" in messages[0]
    assert messages[1].startswith("the dead-letter queue holds 2 entries (alert threshold 2)")


def test_writes_join_the_callers_transaction(dlq: DeadLetterQueue, storage: SQLiteStorage) -> None:
    """An add inside the caller's transaction is rolled back with it; committed with it,
    it is there, and is_blocked sees it inside the transaction already."""
    with pytest.raises(RuntimeError), storage.transaction():
        dlq.add("s", paid("K"), key="K", error=declined(), attempts=1)
        assert True is dlq.is_blocked("s", "K")
        raise RuntimeError("the checkpoint write failed")
    assert (0, False) == (dlq.count(), dlq.is_blocked("s", "K"))
    with storage.transaction():
        dlq.add("s", paid("K"), key="K", error=declined(), attempts=1)
    assert 1 == dlq.count()


def test_entries_survive_reopening_the_file(tmp_path: Path, clock: FakeClock) -> None:
    """Dead letters, their statuses and order are in the file: a new process (a new
    storage on the file) sees them, and a retry there is seen by the first one."""
    path = tmp_path / "shared.db"
    with SQLiteStorage(path) as first:
        dlq = DeadLetterQueue(first, codec, clock=clock)
        dead = dlq.add("s", paid("K", 1), key="K", error=declined(), attempts=2)
        parked = dlq.park("s", paid("K", 2), key="K")
        before = dlq.list()
    with SQLiteStorage(path) as again:
        reopened = DeadLetterQueue(again, codec, clock=clock)
        assert before == reopened.list()
        assert True is reopened.is_blocked("s", "K")
        cli = DeadLetterQueue(SQLiteStorage(path), codec, clock=clock)
        cli.retry(dead.id)
        cli.storage.close()
        assert [dead.id, parked.id] == [e.id for e in reopened.claim_retries("s")]


def test_closed_storage_raises_storage_error(dlq: DeadLetterQueue, storage: SQLiteStorage) -> None:
    """After the file is closed, operations raise StorageError rather than sqlite3 errors."""
    storage.close()
    with pytest.raises(StorageError):
        dlq.add("s", paid("K"), key="K", error=declined(), attempts=1)


def test_concurrent_adds(dlq: DeadLetterQueue) -> None:
    """Threads adding at once each get their own id and every entry is kept."""
    start = threading.Barrier(4)

    def work(t: int) -> None:
        start.wait()
        for n in range(25):
            dlq.add(f"s{t}", paid(f"K{n}", n), key=f"K{n}", error=declined(), attempts=1)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [e.id for e in dlq.list(limit=None)]
    assert (100, sorted(ids)) == (len(set(ids)), ids)


# -- purge by age keeps parked entries with their dead letter ----------------------------


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


def test_a_storage_without_dead_letters_is_refused_clearly() -> None:
    """Built over a storage that keeps no dead letters (in memory), the DLQ raises
    StorageError naming the feature; something that is not a storage is a TypeError."""
    with pytest.raises(StorageError, match="dead letters need durable storage"):
        DeadLetterQueue(MemoryStorage(), codec)
