"""The log pass: settle the events after a durable subscriber's checkpoint, in order."""

from __future__ import annotations

import logging
import time

from ..envelope import Envelope
from ..exceptions import MessageError, UnknownMessageType
from ..store.events import LogRecord
from ..store.storage import Transaction
from ._retries import DelayedRetries
from ._segments import segment_of
from ._subscriber import AlreadyHandled, Finish, Outcome, Subscriber, type_of

__all__ = ["LogPass"]

log = logging.getLogger("eventlite.relay")


def _plain(tx: Transaction) -> None:
    """The finish hook of a plain handler: never called (it has no unit of work)."""


class LogPass:
    """Reads the log after the subscriber's position, a page at a time, and settles each
    event: skipped (not its type), handled, held behind a delayed retry or a dead letter
    of its stream, or dead-lettered (its retries spent, or it cannot be decoded)."""

    def __init__(self, sub: Subscriber, retries: DelayedRetries) -> None:
        self.sub = sub
        self.retries = retries
        self.relay = sub.relay

    def flush_due(self) -> None:
        """Keep the promise on unsaved progress: write the checkpoint once ``batch_size``
        events or ``checkpoint_interval`` seconds are settled in memory only."""
        cursor = self.sub.cursor
        unsaved = cursor.unsaved
        if unsaved and (
            unsaved >= self.relay.batch_size
            or time.monotonic() - cursor.flushed >= self.relay.checkpoint_interval
        ):
            cursor.flush()

    def deliver_new(self) -> bool:
        """Settle one page of events after the position; False when there was none."""
        sub = self.sub
        cursor = sub.cursor
        relay = self.relay
        batch_size = relay.batch_size
        records = sub.store.read_records(cursor.position, batch_size)
        if not records:
            return False
        interval = relay.checkpoint_interval
        monotonic = time.monotonic
        interest_of = sub.interest.get
        decode = sub.store.decode
        name = sub.name
        dlq = sub.dlq
        dlq_active = dlq.count(name) > 0
        blocked: dict[str, bool] = {}
        segments = sub.segments
        segment = sub.segment
        for record in records:
            if sub.stopping:
                break
            # Before handling more, keep the promise on unsaved progress (flush_due, inlined:
            # this loop runs for every event of the log).
            unsaved = cursor.position - cursor.committed
            if unsaved and (unsaved >= batch_size or monotonic() - cursor.flushed >= interval):
                cursor.flush()
            position = record[0]  # the fields by index: this loop is the hot path
            type_name = record[4]
            interest = interest_of(type_name)
            if interest is None:
                interest = sub.interested(type_name)
            if interest is False:
                cursor.position = position  # settled in memory: not this subscriber's type
                continue
            key: str | None = record[1]
            if type(key) is not str:
                key = None  # such a row cannot be decoded, and holds no stream back
            if segments > 1 and segment_of(key, segments) != segment:
                cursor.position = position  # settled in memory: another segment's stream
                continue
            if interest is None:
                self._dead_letter_unknown(record)
                continue
            if key is not None and key in sub.retry_keys:
                self.retries.hold(record, key)
                continue
            if dlq_active and key is not None:
                is_blocked = blocked.get(key)
                if is_blocked is None:
                    is_blocked = blocked[key] = dlq.is_blocked(name, key)
                if is_blocked:
                    self._park(record, key)
                    continue
            try:
                env = decode(record)
            except Exception:
                _, why = sub.decode(record)  # the same failure, as a MessageError
                assert why is not None
                self._dead_letter_undecodable(record, why, key)
                if key is not None:
                    dlq_active = blocked[key] = True
                continue
            if not self._deliver(env, position):
                dlq_active = True
                if key is not None:
                    blocked[key] = True
        self.flush_due()
        return True

    def _deliver(self, env: Envelope, position: int) -> bool:
        """Deliver the event at ``position`` in log order; False when it went to the DLQ."""
        sub = self.sub
        cursor = sub.cursor
        if sub.uses_uow and sub.inbox_store.contains(sub.name, env.id):
            cursor.position = position
            sub.count()
            return True

        finish: Finish = _plain
        if sub.uses_uow:

            def finish(tx: Transaction) -> None:
                # sub.mark(env) and cursor.move(position), one call each: the hottest path
                # of a subscriber with a unit of work
                now = sub.clock.now()
                if not sub.inbox_store.mark(sub.name, env.id, now):
                    raise AlreadyHandled()
                sub.checkpoints.move(sub.name, cursor.committed, position, now)

        outcome = sub.attempt(env, sub.policy.max_attempts, finish)
        if outcome.kind == "ok" and sub.uses_uow and not outcome.finished:
            sub.settle(
                f"the inbox mark of {env.type} at position {position}",
                lambda: self._finish(finish, position),
            )
            return True
        if outcome.kind != "failed":
            if outcome.finished:
                cursor.moved(position)
            else:
                cursor.position = position  # settled in memory (a plain handler)
                if outcome.kind == "skipped":
                    cursor.adopt(position)
            sub.count()
            return True
        if sub.policy.delayed_attempts > 0:
            sub.settle(
                f"the delayed retry of {env.type} at position {position}",
                lambda: self.retries.begin(env, outcome),
            )
            return True
        sub.settle(
            f"the dead letter of {env.type} at position {position}",
            lambda: self._dead_letter(env, outcome),
        )
        return False

    def _finish(self, finish: Finish, position: int) -> None:
        sub = self.sub
        if sub.finish_alone(finish):
            sub.cursor.moved(position)
        else:
            sub.cursor.advance(position)
            sub.cursor.adopt(position)
        sub.count()

    def _dead_letter(self, env: Envelope, outcome: Outcome) -> None:
        sub = self.sub
        position = env.position
        assert position is not None and outcome.error is not None
        assert outcome.first_failed_at is not None
        with sub.storage.transaction():
            letter = sub.dead_letter(
                env, outcome.error, sub.policy.max_attempts, outcome.first_failed_at
            )
            sub.cursor.move(position)
        sub.cursor.moved(position)
        sub.count()
        sub.log_dead_letter(letter, env, outcome.error)

    def _park(self, record: LogRecord, key: str) -> None:
        """Park an event behind the dead letter of its stream."""
        sub = self.sub
        position = record.position
        with sub.storage.transaction():
            sub.park(record, key)
            sub.cursor.move(position)
        sub.cursor.moved(position)
        sub.count()
        sub.metric("parked", sub.name, position, key)

    def _dead_letter_unknown(self, record: LogRecord) -> None:
        """A stored event whose type name the registry does not know: dead-letter the raw
        record without a key. Nothing says it is for this subscriber, so it must not hold
        its stream (a subscriber skips unwanted types by name); the entry is kept so an
        operator sees the missing registration, and retrying it once the class is
        registered delivers it if it is of this subscriber's type."""
        sub = self.sub
        position = record.position
        error = UnknownMessageType(type_of(record), position)
        with sub.storage.transaction():
            sub.dead_letter_raw(record, error, None)
            sub.cursor.move(position)
        sub.cursor.moved(position)
        sub.count()
        sub.metric("dead_lettered", sub.name, position, error)
        log.error(
            "durable subscriber %s: the stored event at position %d (stream %r) has a type "
            "this app does not know (%s); dead-lettered without holding its stream",
            sub.name,
            position,
            record.stream_id,
            error,
        )

    def _dead_letter_undecodable(
        self, record: LogRecord, error: MessageError, key: str | None
    ) -> None:
        """A stored event that cannot be decoded: dead-letter the raw record, with why; its
        stream (when it has one) waits behind it."""
        sub = self.sub
        position = record.position
        with sub.storage.transaction():
            sub.dead_letter_raw(record, error, key)
            sub.cursor.move(position)
        sub.cursor.moved(position)
        sub.count()
        sub.metric("dead_lettered", sub.name, position, error)
        log.error(
            "durable subscriber %s: the stored event at position %d cannot be decoded "
            "(%s); dead-lettered, %s",
            sub.name,
            position,
            error,
            "holding back no stream" if key is None else f"stream {key!r} held behind it",
        )
