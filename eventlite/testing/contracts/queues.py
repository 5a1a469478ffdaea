"""The :class:`~eventlite.store.queues.QueueStore` contract: every backend's work-queue store
passes these tests (see :mod:`eventlite.testing.contracts`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ...codec import Codec
from ...store.dead_letters import DeadLetterStatus, Failure
from ...store.queues import Handout, QueueStats, QueueStore, StaleReceipt
from ...store.storage import Storage
from . import StorageFactory

__all__ = ["QueueStoreContract"]

T0 = 1_700_000_000.0
"""The contract's first "now" (epoch seconds)."""
VISIBILITY = 10.0
MAX_RECEIVES = 3
TTL = 45.0
DEDUP_WINDOW = 20.0


def failure(text: str = "handler failed") -> Failure:
    """The failure of an exception raised with ``text``."""
    try:
        raise RuntimeError(text)
    except RuntimeError as exc:
        return Failure.of(exc)


def identity(body: str | bytes) -> str | bytes:
    """The contract's decoder: a body is the message."""
    return body


class Reject(Exception):
    """What the contract's picky decoder raises."""


def picky(body: str | bytes) -> str | bytes:
    """A decoder that rejects bodies starting with ``bad``."""
    if str(body).startswith("bad"):
        raise Reject(f"cannot decode {body!r}")
    return body


class QueueStoreContract:
    """The work-queue store contract, as pytest tests over a ``make_storage`` fixture."""

    state_machine_examples = 60
    """Examples of the state machine test (raise it for a soak run)."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Iterator[Storage]:
        """A new, empty storage."""
        storage = make_storage(Codec())
        yield storage
        storage.close()

    @pytest.fixture
    def store(self, storage: Storage) -> QueueStore:
        """Its work-queue store."""
        return storage.queues

    @staticmethod
    def receive(
        store: QueueStore,
        *,
        now: float = T0,
        max: int = 10,
        decode: Any = identity,
        dead_letters: bool = True,
        ttl: float | None = None,
        queue: str = "q",
    ) -> list[Handout[Any]]:
        """Receive with the contract's settings, failures dropped from the result."""
        got, _ = store.receive(
            queue,
            decode,
            max=max,
            now=now,
            visibility_timeout=VISIBILITY,
            max_receives=MAX_RECEIVES,
            ttl=ttl,
            dead_letters=dead_letters,
        )
        return got

    @staticmethod
    def send(store: QueueStore, *bodies: str, group: str | None = None, now: float = T0) -> None:
        """Send each body with itself as its id."""
        store.send("q", [(b, b) for b in bodies], now=now, group=group)

    # -- the basics ---------------------------------------------------------------------

    def test_send_receive_ack(self, store: QueueStore) -> None:
        """Messages come out in send order, at most ``max``, each with a receipt and a
        receive count; after the ack they are gone; other queues are not touched."""
        self.send(store, "a", "b", "c")
        store.send("other", [("x", "x")], now=T0)
        first = self.receive(store, max=2)
        assert [("a", 1, None), ("b", 1, None)] == [(v, c, g) for v, _, c, g in first]
        assert ["c"] == [v for v, *_ in self.receive(store)]
        assert [] == self.receive(store)
        store.ack("q", first[0][1])
        store.ack_many("q", [first[1][1]])
        assert (1, 1, ["other", "q"]) == (store.count("q"), store.count("other"), store.names())

    def test_delay_and_visibility_timeout(self, store: QueueStore) -> None:
        """A delayed message waits for its time; one not acked within the visibility
        timeout comes back with a new receipt, and the old one is stale."""
        store.send("q", [("later", "later")], now=T0, delay=30)
        self.send(store, "now")
        [(_, old, _, _)] = self.receive(store)
        assert [] == self.receive(store, now=T0 + VISIBILITY - 1)
        again = self.receive(store, now=T0 + VISIBILITY)
        assert [("now", 2)] == [(v, c) for v, _, c, _ in again]
        with pytest.raises(StaleReceipt, match="received again") as info:
            store.ack("q", old)
        assert (old, "q") == (info.value.receipt, info.value.queue)
        assert "later" in [v for v, *_ in self.receive(store, now=T0 + 30)]
        with pytest.raises(StaleReceipt, match="not a receipt"):
            store.ack("q", "nonsense")

    def test_nack_extend_and_release(self, store: QueueStore) -> None:
        """nack shows a message again after its delay and spends the receipt; extend hides
        it longer; release gives it back at once without counting the receive."""
        self.send(store, "a", "b", "c")
        (_, ra, _, _), (_, rb, _, _), (_, rc, _, _) = self.receive(store)
        store.nack("q", ra, now=T0, delay=5, failure=None, max_receives=9, dead_letters=True)
        with pytest.raises(StaleReceipt, match="nacked"):
            store.ack("q", ra)
        store.extend("q", rb, until=T0 + 100)
        assert {"nonsense"} == store.extend_many("q", [rc, "nonsense"], until=T0 + 100)
        store.release("q", [rc], now=T0 + 1)
        got = self.receive(store, now=T0 + 5)
        assert [("a", 2), ("c", 1)] == sorted((v, c) for v, _, c, _ in got)
        assert "b" not in [v for v, *_ in self.receive(store, now=T0 + 99)]

    def test_ack_many_reports_stale_receipts(self, store: QueueStore) -> None:
        """ack_many acks every receipt that holds its message, then raises StaleReceipt for
        the first stale one, counting the others (a receipt given twice included)."""
        self.send(store, "a", "b")
        (_, ra, _, _), (_, rb, _, _) = self.receive(store)
        store.ack("q", rb)
        with pytest.raises(StaleReceipt, match=r"\(and 1 more stale receipts\)"):
            store.ack_many("q", [ra, rb, ra])
        assert 0 == store.count("q")

    def test_dedup_window(self, store: QueueStore) -> None:
        """A dedup id used within the window returns the first id and adds nothing, acked
        or not; after the window it sends again."""
        first = store.send_deduplicated("q", ("m-1", "one"), dedup_id="d", window=20, now=T0)
        assert first == store.send_deduplicated(
            "q", ("m-2", "two"), dedup_id="d", window=20, now=T0 + 19
        )
        assert 1 == store.count("q")
        assert "m-3" == store.send_deduplicated(
            "q", ("m-3", "three"), dedup_id="d", window=20, now=T0 + 20
        )
        assert ("m-1", 2) == (first, store.count("q"))

    def test_groups_hand_out_one_at_a_time_in_order(self, store: QueueStore) -> None:
        """A group's messages are visible one at a time, in send order; the next becomes
        visible when the one before is acked; other messages are not held up."""
        self.send(store, "a1", "a2", group="a")
        self.send(store, "b1", group="b")
        self.send(store, "x")
        got = self.receive(store)
        assert ["a1", "b1", "x"] == [v for v, *_ in got]
        store.ack("q", got[0][1])
        assert [("a2", "a")] == [(v, g) for v, _, _, g in self.receive(store, now=T0 + 1)]

    # -- failures -----------------------------------------------------------------------

    def test_max_receives_dead_letters_in_the_same_transaction(self, storage: Storage) -> None:
        """A message nacked for the last time becomes a dead letter of source queue:<name>,
        key None, with its group and the failure; inside a transaction that rolls back,
        neither the dead letter nor the removal from the queue happens."""
        store, letters = storage.queues, storage.dead_letters
        self.send(store, "a", group="g")
        for attempt in range(MAX_RECEIVES - 1):
            [(_, receipt, _, _)] = self.receive(store, now=T0 + attempt)
            store.nack(
                "q", receipt, now=T0, delay=0, failure=failure(), max_receives=3, dead_letters=True
            )
        [(_, receipt, count, _)] = self.receive(store, now=T0 + 5)
        assert MAX_RECEIVES == count
        with pytest.raises(RuntimeError), storage.transaction():
            store.nack(
                "q",
                receipt,
                now=T0 + 6,
                delay=0,
                failure=failure("last"),
                max_receives=3,
                dead_letters=True,
            )
            assert (0, 1) == (store.count("q"), letters.count())
            raise RuntimeError("roll back")
        assert (1, 0) == (store.count("q"), letters.count())
        failed = store.nack(
            "q",
            receipt,
            now=T0 + 6,
            delay=0,
            failure=failure("last"),
            max_receives=3,
            dead_letters=True,
        )
        assert failed is not None and failed.dead_letter is not None
        dead = letters.get(failed.dead_letter.id)
        assert failed.dead_letter == dead
        assert ("queue:q", None, "g", "a", "a", "RuntimeError", "last", 3) == (
            dead.source,
            dead.key,
            dead.group,
            dead.message,
            dead.message_id,
            dead.error_type,
            dead.error_message,
            dead.attempts,
        )
        assert ("q", "a", "g") == (failed.queue, failed.message_id, failed.group)

    def test_timed_out_max_receives_and_ttl_fail_at_receive(self, storage: Storage) -> None:
        """The next receive fails a message whose last visibility timeout ran out
        (MaxReceivesExceeded) and one waiting past its TTL (MessageExpired), unless in
        flight; without dead letters they are reported, not kept."""
        store = storage.queues
        store.send("q", [("old", "old")], now=T0, ttl=TTL)
        self.send(store, "tired")
        store.send("q", [("busy", "busy")], now=T0, ttl=TTL)
        for n in range(MAX_RECEIVES):
            got = self.receive(store, now=T0 + n * VISIBILITY, max=3)
            if n == 0:
                busy = next(r for v, r, _, _ in got if v == "busy")
                store.extend("q", busy, until=T0 + 1000)
        got, failed = store.receive(
            "q",
            identity,
            max=10,
            now=T0 + TTL,
            visibility_timeout=VISIBILITY,
            max_receives=MAX_RECEIVES,
            ttl=TTL,
            dead_letters=False,
        )
        assert [] == got
        assert [
            ("old", "eventlite.queue.MessageExpired", None),
            ("tired", "eventlite.queue.MaxReceivesExceeded", None),
        ] == sorted((f.message_id, f.failure.error_type, f.dead_letter) for f in failed)
        assert (1, 0) == (store.count("q"), storage.dead_letters.count())

    def test_undecodable_messages_fail_and_the_batch_fills_up(self, storage: Storage) -> None:
        """A message whose decode raises is dead-lettered with that error and the raw body,
        and the receive goes on until its batch is full; a failed group head lets the next
        of its group through."""
        store = storage.queues
        self.send(store, "bad-1", "ok-1", "bad-2", "ok-2", "ok-3")
        self.send(store, "bad-g", "ok-g", group="g")
        got, failed = store.receive(
            "q",
            picky,
            max=3,
            now=T0,
            visibility_timeout=VISIBILITY,
            max_receives=MAX_RECEIVES,
            ttl=None,
            dead_letters=True,
        )
        assert ["ok-1", "ok-2", "ok-3"] == [v for v, *_ in got]
        assert ["bad-1", "bad-2"] == [f.message_id for f in failed]
        dead = storage.dead_letters.list("queue:q")
        assert [(f"{__name__}.Reject", "bad-1", 0)] == [
            (d.error_type, d.message, d.attempts) for d in dead[:1]
        ]
        assert ["ok-g"] == [v for v, *_ in self.receive(store, decode=picky)]  # bad-g failed
        assert 3 == storage.dead_letters.count("queue:q")

    def test_a_failure_of_any_text_is_kept(self, storage: Storage) -> None:
        """A nack failure whose text holds lone surrogates and NUL characters is kept on
        the message and reaches its dead letter, escaped (the last receive names it)."""
        store = storage.queues
        self.send(store, "a")
        [(_, receipt, _, _)] = self.receive(store)
        try:
            raise OSError("cannot open caf\udcc3\udca9\x00.txt")
        except OSError as exc:
            weird = Failure.of(exc)
        store.nack("q", receipt, now=T0, delay=0, failure=weird, max_receives=9, dead_letters=True)
        self.receive(store, now=T0)  # receive 2 and 3 time out
        self.receive(store, now=T0 + VISIBILITY)
        _, [failed] = store.receive(
            "q",
            identity,
            max=1,
            now=T0 + 2 * VISIBILITY,
            visibility_timeout=VISIBILITY,
            max_receives=MAX_RECEIVES,
            ttl=None,
            dead_letters=True,
        )
        assert failed.dead_letter is not None
        assert failed.dead_letter.error_message is not None
        assert failed.dead_letter.error_message.endswith(
            "the last handler error was OSError: cannot open caf\\udcc3\\udca9\\x00.txt"
        )
        assert failed.dead_letter == storage.dead_letters.get(failed.dead_letter.id)

    def test_requeue_puts_retried_dead_letters_back_at_the_end(self, storage: Storage) -> None:
        """A queue's dead letter released for retry goes back to the end of the queue and
        of its group, with a fresh receive count; the dead letter is gone."""
        store, letters = storage.queues, storage.dead_letters
        self.send(store, "a1", "a2", group="g")
        got = self.receive(store)
        failed = store.nack(
            "q", got[0][1], now=T0, delay=0, failure=failure(), max_receives=1, dead_letters=True
        )
        assert failed is not None and failed.dead_letter is not None
        self.send(store, "a3", group="g")
        letters.retry(failed.dead_letter.id)
        assert 1 == store.requeue_retries("q", now=T0 + 1, ttl=None)
        assert (0, 3) == (letters.count(), store.count("q"))
        order = []
        for n in range(3):
            [(value, receipt, count, group)] = self.receive(store, now=T0 + 2 + n)
            order.append((value, count, group))
            store.ack("q", receipt)
        assert [("a2", 1, "g"), ("a3", 1, "g"), ("a1", 1, "g")] == order

    def test_stats_and_purge(self, store: QueueStore) -> None:
        """stats counts waiting (behind a group head included), in-flight and delayed
        messages and the oldest one's age; purge deletes them all."""
        assert QueueStats("q", 0, 0, 0, None) == store.stats("q", now=T0)
        self.send(store, "a")
        self.send(store, "b", now=T0 + 4)
        store.send("q", [("c", "c")], now=T0 + 4, delay=10)
        self.send(store, "g1", "g2", group="g", now=T0 + 4)
        self.receive(store, now=T0 + 4, max=1)
        assert QueueStats("q", 3, 1, 1, 4.0) == store.stats("q", now=T0 + 4)
        assert (5, 0, []) == (store.purge("q"), store.count("q"), store.names())

    def test_writes_join_the_callers_transaction(self, storage: Storage) -> None:
        """A send inside storage.transaction() rolls back with it."""
        with pytest.raises(RuntimeError), storage.transaction():
            self.send(storage.queues, "a")
            assert 1 == storage.queues.count("q")
            raise RuntimeError("the order insert failed")
        assert 0 == storage.queues.count("q")

    # -- everything together, against a model -------------------------------------------

    def test_state_machine(self, make_storage: StorageFactory) -> None:
        """Random sends (with delays, dedup ids and groups), receives, acks, nacks,
        extensions, clock moves, expiries, dead letters and their retries agree with a
        plain model, and so do the stats and the dead letters after every step."""
        run_state_machine_as_test(
            _queue_machine(make_storage),
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )


@attrs.define
class _Message:
    """The model of one queued message."""

    seq: int  # the order it was stored in, part of every receipt
    id: str
    group: str | None
    not_before: float
    visible_at: float | None  # None: waiting behind the head of its group
    expires_at: float
    receives: int = 0
    in_flight: bool = False


@attrs.define
class _Dead:
    """The model of one dead letter of the queue."""

    id: str
    group: str | None
    error_type: str
    retrying: bool = False


def _queue_machine(make_storage: StorageFactory) -> type[RuleBasedStateMachine]:
    class QueueMachine(RuleBasedStateMachine):
        """Every operation is applied to the store and to the model; the results must
        match, and after every step so must the stats and the dead letters."""

        receipts = Bundle("receipts")

        def __init__(self) -> None:
            super().__init__()
            self.storage = make_storage(Codec())
            self.store = self.storage.queues
            self.now = T0
            self.messages: list[_Message] = []  # in send order
            self.dedup: dict[str, tuple[str, float]] = {}
            self.dead: list[_Dead] = []
            self.counter = 0

        def teardown(self) -> None:
            self.storage.close()

        # -- the model's rules ------------------------------------------------------

        def _append(self, message_id: str, group: str | None, delay: float) -> None:
            busy = group is not None and any(m.group == group for m in self.messages)
            not_before = self.now + delay
            self.messages.append(
                _Message(
                    self.counter,
                    message_id,
                    group,
                    not_before,
                    None if busy else not_before,
                    self.now + TTL,
                )
            )

        def _promote(self, group: str | None) -> None:
            if group is None:
                return
            members = [m for m in self.messages if m.group == group]
            if members and members[0].visible_at is None:
                members[0].visible_at = members[0].not_before

        def _kill(self, message: _Message, error_type: str) -> None:
            self.messages.remove(message)
            self.dead.append(_Dead(message.id, message.group, error_type))

        def _in_flight(self, m: _Message) -> bool:
            return m.in_flight and m.visible_at is not None and m.visible_at > self.now

        def _holder(self, receipt: tuple[str, int, int]) -> _Message | None:
            # By the model's seq, not the message id: a dead letter requeued comes back
            # with its id but as a new message, which an old receipt does not hold.
            _, seq, count = receipt
            for m in self.messages:
                if m.seq == seq and m.receives == count and m.in_flight:
                    return m
            return None

        # -- rules --------------------------------------------------------------------

        @rule(
            delay=st.sampled_from([0, 0, 5]),
            dedup_id=st.sampled_from([None, None, "a", "b"]),
            group=st.sampled_from([None, None, "g1", "g2"]),
        )
        def send(self, delay: float, dedup_id: str | None, group: str | None) -> None:
            self.counter += 1
            message_id = f"m-{self.counter}"
            if dedup_id is None:
                self.store.send(
                    "q", [(message_id, message_id)], now=self.now, delay=delay, ttl=TTL, group=group
                )
                self._append(message_id, group, delay)
                return
            remembered = self.dedup.get(dedup_id)
            got = self.store.send_deduplicated(
                "q",
                (message_id, message_id),
                dedup_id=dedup_id,
                window=DEDUP_WINDOW,
                now=self.now,
                delay=delay,
                ttl=TTL,
                group=group,
            )
            if remembered is not None and remembered[1] > self.now:
                assert remembered[0] == got
                return
            assert message_id == got
            self.dedup[dedup_id] = (message_id, self.now + DEDUP_WINDOW)
            self._append(message_id, group, delay)

        @rule(target=receipts, max=st.integers(min_value=1, max_value=3))
        def receive(self, max: int) -> object:
            now = self.now
            for entry in [d for d in self.dead if d.retrying]:
                self.dead.remove(entry)
                self.counter += 1
                self._append(entry.id, entry.group, 0)
            expired = sorted(
                (m for m in self.messages if m.expires_at <= now and not self._in_flight(m)),
                key=lambda m: (m.expires_at, m.seq),
            )
            for m in expired:
                self._kill(m, "eventlite.queue.MessageExpired")
            for group in sorted({m.group for m in expired if m.group is not None}):
                self._promote(group)
            expected: list[tuple[str, int, str | None]] = []
            handed: list[int] = []
            while len(expected) < max:
                ready = [
                    m for m in self.messages if m.visible_at is not None and m.visible_at <= now
                ]
                if not ready:
                    break
                m = min(ready, key=lambda m: (m.visible_at, m.seq))
                if m.receives >= MAX_RECEIVES:
                    self._kill(m, "eventlite.queue.MaxReceivesExceeded")
                    self._promote(m.group)
                    continue
                m.receives += 1
                m.in_flight = True
                m.visible_at = now + VISIBILITY
                expected.append((m.id, m.receives, m.group))
                handed.append(m.seq)
            got, _ = self.store.receive(
                "q",
                identity,
                max=max,
                now=now,
                visibility_timeout=VISIBILITY,
                max_receives=MAX_RECEIVES,
                ttl=TTL,
                dead_letters=True,
            )
            assert expected == [(value, count, group) for value, _, count, group in got]
            return multiple(
                *[
                    (receipt, seq, count)
                    for (_, receipt, count, _), seq in zip(got, handed, strict=True)
                ]
            )

        @rule(receipt=receipts)
        def ack(self, receipt: tuple[str, int, int]) -> None:
            holder = self._holder(receipt)
            if holder is None:
                with pytest.raises(StaleReceipt):
                    self.store.ack("q", receipt[0])
                return
            self.store.ack("q", receipt[0])
            self.messages.remove(holder)
            self._promote(holder.group)

        @rule(chosen=st.lists(receipts, max_size=4))
        def ack_many(self, chosen: list[tuple[str, int, int]]) -> None:
            any_stale = False
            for receipt in chosen:
                holder = self._holder(receipt)
                if holder is None:
                    any_stale = True
                    continue
                self.messages.remove(holder)
                self._promote(holder.group)
            try:
                self.store.ack_many("q", [receipt[0] for receipt in chosen])
            except StaleReceipt:
                assert any_stale
            else:
                assert not any_stale

        @rule(receipt=receipts, delay=st.sampled_from([0, 3]), with_error=st.booleans())
        def nack(self, receipt: tuple[str, int, int], delay: float, with_error: bool) -> None:
            holder = self._holder(receipt)
            error = failure() if with_error else None

            def nack() -> Any:
                return self.store.nack(
                    "q",
                    receipt[0],
                    now=self.now,
                    delay=delay,
                    failure=error,
                    max_receives=MAX_RECEIVES,
                    dead_letters=True,
                )

            if holder is None:
                with pytest.raises(StaleReceipt):
                    nack()
                return
            failed = nack()
            if holder.receives >= MAX_RECEIVES:
                assert failed is not None
                self._kill(
                    holder, "RuntimeError" if with_error else "eventlite.queue.MaxReceivesExceeded"
                )
                self._promote(holder.group)
            else:
                assert failed is None
                holder.in_flight = False
                holder.visible_at = self.now + delay

        @rule(receipt=receipts, seconds=st.sampled_from([5, 20]))
        def extend(self, receipt: tuple[str, int, int], seconds: float) -> None:
            holder = self._holder(receipt)
            if holder is None:
                with pytest.raises(StaleReceipt):
                    self.store.extend("q", receipt[0], until=self.now + seconds)
                return
            self.store.extend("q", receipt[0], until=self.now + seconds)
            holder.visible_at = self.now + seconds

        @rule(seconds=st.sampled_from([1, 5, 10, 30]))
        def advance(self, seconds: float) -> None:
            self.now += seconds

        @precondition(lambda self: any(not d.retrying for d in self.dead))
        @rule(index=st.integers(min_value=0))
        def retry_dead_letter(self, index: int) -> None:
            waiting = [d for d in self.dead if not d.retrying]
            entry = waiting[index % len(waiting)]
            stored = [e for e in self.storage.dead_letters.list() if e.message_id == entry.id]
            assert 1 == len(stored)
            self.storage.dead_letters.retry(stored[0].id)
            entry.retrying = True

        # -- invariants -----------------------------------------------------------------

        @invariant()
        def stats_match(self) -> None:
            in_flight = sum(1 for m in self.messages if self._in_flight(m))
            delayed = sum(
                1
                for m in self.messages
                if not self._in_flight(m)
                and (m.visible_at if m.visible_at is not None else m.not_before) > self.now
            )
            stats = self.store.stats("q", now=self.now)
            assert (len(self.messages) - in_flight - delayed, in_flight, delayed) == (
                stats.depth,
                stats.in_flight,
                stats.delayed,
            )
            assert len(self.messages) == self.store.count("q")

        @invariant()
        def dead_letters_match(self) -> None:
            stored = self.storage.dead_letters.list("queue:q")
            expected = [
                (d.id, d.group, d.error_type, "retrying" if d.retrying else "dead")
                for d in self.dead
            ]
            assert expected == [
                (e.message_id, e.group, e.error_type, e.status.value) for e in stored
            ]
            assert all(e.status is not DeadLetterStatus.PARKED for e in stored)

        @invariant()
        def one_visible_per_group(self) -> None:
            for group in ("g1", "g2"):
                visible = [
                    m for m in self.messages if m.group == group and m.visible_at is not None
                ]
                assert len(visible) <= 1

    return QueueMachine
