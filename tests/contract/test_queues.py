"""The work queue against a plain model, under random sequences of sends (with delays,
dedup ids and groups), receives, acks, nacks, extensions, clock moves, expiries, dead
letters and their retries. The clock is a FakeClock: no test here sleeps."""

from __future__ import annotations

import tempfile
from pathlib import Path

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)

from eventlite import Codec, Registry
from eventlite.clock import FakeClock
from eventlite.dlq import DeadLetterQueue, DeadLetterStatus
from eventlite.messages import event
from eventlite.queue import StaleReceipt, WorkQueue
from eventlite.sqlite import Database

registry = Registry()
codec = Codec(registry)

MAX_RECEIVES = 3
TTL = 45.0
DEDUP_WINDOW = 20.0
VISIBILITY = 10.0


@event(registry=registry, name="machine.Job")
class Job:
    n: int


@attrs.define
class Message:
    """The model of one queued message."""

    seq: int  # the row's number, part of every receipt
    id: str
    group: str | None
    not_before: float
    visible_at: float | None  # None: waiting behind the head of its group
    expires_at: float
    receives: int = 0
    in_flight: bool = False


@attrs.define
class Dead:
    """The model of one dead letter of the queue."""

    id: str
    group: str | None
    error_type: str
    retrying: bool = False


class WorkQueueMachine(RuleBasedStateMachine):
    """Every operation is applied to the queue and to the model; the results must match,
    and after every step so must the stats and the dead letters."""

    receipts = Bundle("receipts")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.database = Database(Path(self.tmp.name) / "q.db", synchronous="normal")
        self.clock = FakeClock()
        self.dlq = DeadLetterQueue(self.database, codec, clock=self.clock)
        self.queue = WorkQueue(
            self.database,
            codec,
            "jobs",
            visibility_timeout=VISIBILITY,
            max_receives=MAX_RECEIVES,
            ttl=TTL,
            dlq=self.dlq,
            dedup_window=DEDUP_WINDOW,
            clock=self.clock,
        )
        self.messages: list[Message] = []  # in send order
        self.dedup: dict[str, tuple[str, float]] = {}
        self.dead: list[Dead] = []  # in dead-letter order
        self.counter = 0
        self.next_seq = 1

    def teardown(self) -> None:
        self.database.close()
        self.tmp.cleanup()

    # -- the model's rules ------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.clock.now()

    def _append(self, message_id: str, group: str | None, delay: float) -> None:
        busy = group is not None and any(m.group == group for m in self.messages)
        not_before = self.now + delay
        self.next_seq += 1
        self.messages.append(
            Message(
                self.next_seq - 1,
                message_id,
                group,
                not_before,
                None if busy else not_before,
                self.now + TTL,
            )
        )

    def _promote(self, group: str | None) -> bool:
        if group is None:
            return False
        members = [m for m in self.messages if m.group == group]
        if members and members[0].visible_at is None:
            members[0].visible_at = members[0].not_before
            return True
        return False

    def _kill(self, message: Message, error_type: str) -> None:
        self.messages.remove(message)
        self.dead.append(Dead(message.id, message.group, error_type))

    def _in_flight(self, m: Message) -> bool:
        return m.in_flight and m.visible_at is not None and m.visible_at > self.now

    def _holder(self, receipt: tuple[str, int, int]) -> Message | None:
        _, seq, count = receipt
        for m in self.messages:
            if m.seq == seq and m.receives == count and m.in_flight:
                return m
        return None

    # -- rules ----------------------------------------------------------------------

    @rule(
        delay=st.sampled_from([0, 0, 5]),
        dedup_id=st.sampled_from([None, None, "a", "b"]),
        group=st.sampled_from([None, None, "g1", "g2"]),
    )
    def send(self, delay: float, dedup_id: str | None, group: str | None) -> None:
        self.counter += 1
        remembered = self.dedup.get(dedup_id) if dedup_id is not None else None
        message_id = self.queue.send(Job(self.counter), delay=delay, dedup_id=dedup_id, group=group)
        if remembered is not None and remembered[1] > self.now:
            assert remembered[0] == message_id
            return
        if dedup_id is not None:
            self.dedup[dedup_id] = (message_id, self.now + DEDUP_WINDOW)
        self._append(message_id, group, delay)

    @rule(target=receipts, max=st.integers(min_value=1, max_value=3))
    def receive(self, max: int) -> object:
        now = self.now
        for entry in [d for d in self.dead if d.retrying]:
            self.dead.remove(entry)
            self._append(entry.id, entry.group, 0)
        expired = sorted(
            (m for m in self.messages if m.expires_at <= now and not self._in_flight(m)),
            key=lambda m: (m.expires_at, m.seq),
        )
        for m in expired:
            self._kill(m, "eventlite.queue.MessageExpired")
        for group in sorted({m.group for m in expired if m.group is not None}):
            self._promote(group)
        expected: list[tuple[str, str, int, str | None]] = []
        while len(expected) < max:
            ready = [m for m in self.messages if m.visible_at is not None and m.visible_at <= now]
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
            expected.append((f"{m.seq}.{m.receives}", m.id, m.receives, m.group))
        received = self.queue.receive(max=max)
        assert expected == [(r.receipt, r.message_id, r.receive_count, r.group) for r in received]
        return multiple(
            *[(r.receipt, int(r.receipt.split(".")[0]), r.receive_count) for r in received]
        )

    @rule(receipt=receipts)
    def ack(self, receipt: tuple[str, int, int]) -> None:
        holder = self._holder(receipt)
        if holder is None:
            try:
                self.queue.ack(receipt[0])
            except StaleReceipt:
                return
            raise AssertionError(f"ack with stale receipt {receipt} succeeded")
        self.queue.ack(receipt[0])
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
            self.queue.ack_many([receipt[0] for receipt in chosen])
        except StaleReceipt:
            assert any_stale
        else:
            assert not any_stale

    @rule(receipt=receipts, delay=st.sampled_from([0, 3]), with_error=st.booleans())
    def nack(self, receipt: tuple[str, int, int], delay: float, with_error: bool) -> None:
        holder = self._holder(receipt)
        error = RuntimeError("handler failed") if with_error else None
        if holder is None:
            try:
                self.queue.nack(receipt[0], delay, error=error)
            except StaleReceipt:
                return
            raise AssertionError(f"nack with stale receipt {receipt} succeeded")
        self.queue.nack(receipt[0], delay, error=error)
        if holder.receives >= MAX_RECEIVES:
            self._kill(
                holder, "RuntimeError" if with_error else "eventlite.queue.MaxReceivesExceeded"
            )
            self._promote(holder.group)
        else:
            holder.in_flight = False
            holder.visible_at = self.now + delay

    @rule(receipt=receipts, seconds=st.sampled_from([5, 20]))
    def extend(self, receipt: tuple[str, int, int], seconds: float) -> None:
        holder = self._holder(receipt)
        if holder is None:
            try:
                self.queue.extend(receipt[0], seconds)
            except StaleReceipt:
                return
            raise AssertionError(f"extend with stale receipt {receipt} succeeded")
        self.queue.extend(receipt[0], seconds)
        holder.visible_at = self.now + seconds

    @rule(seconds=st.sampled_from([1, 5, 10, 30]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: any(not d.retrying for d in self.dead))
    @rule(index=st.integers(min_value=0))
    def retry_dead_letter(self, index: int) -> None:
        waiting = [d for d in self.dead if not d.retrying]
        entry = waiting[index % len(waiting)]
        stored = [e for e in self.dlq.list(limit=None) if e.message_id == entry.id]
        assert 1 == len(stored)
        self.dlq.retry(stored[0].id)
        entry.retrying = True

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def stats_match(self) -> None:
        now = self.now
        in_flight = sum(1 for m in self.messages if self._in_flight(m))
        delayed = sum(
            1
            for m in self.messages
            if not self._in_flight(m)
            and (m.visible_at if m.visible_at is not None else m.not_before) > now
        )
        stats = self.queue.stats()
        assert (len(self.messages) - in_flight - delayed, in_flight, delayed) == (
            stats.depth,
            stats.in_flight,
            stats.delayed,
        )
        assert len(self.messages) == len(self.queue)

    @invariant()
    def dead_letters_match(self) -> None:
        stored = self.dlq.list("queue:jobs", limit=None)
        expected = [
            (d.id, d.group, d.error_type, "retrying" if d.retrying else "dead") for d in self.dead
        ]
        assert expected == [(e.message_id, e.group, e.error_type, e.status.value) for e in stored]
        assert all(e.status is not DeadLetterStatus.PARKED for e in stored)

    @invariant()
    def one_in_flight_per_group(self) -> None:
        for group in ("g1", "g2"):
            visible = [m for m in self.messages if m.group == group and m.visible_at is not None]
            assert len(visible) <= 1


WorkQueueMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
test_work_queue_machine = WorkQueueMachine.TestCase
