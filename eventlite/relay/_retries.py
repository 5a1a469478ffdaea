"""Delayed retries: a failed message waits as a stored head, the later messages of its
stream are held behind it, and the scheduler wakes the subscriber when it is due."""

from __future__ import annotations

import logging

from ..envelope import Envelope
from ..exceptions import MessageError
from ..store.events import LogRecord
from ..store.retries import RetryEntry
from ..store.storage import Transaction
from ._subscriber import Finish, Outcome, Subscriber, describe, type_of

__all__ = ["DelayedRetries"]

log = logging.getLogger("eventlite.relay")


class DelayedRetries:
    """One subscriber's delayed retries, kept in the storage's
    :class:`~eventlite.store.retries.RetryStore` (the truth, surviving restarts) and woken
    by the relay's :class:`~eventlite.scheduler.Scheduler` (the alarm clock beside it)."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.store = sub.retries
        self.scheduler = sub.relay.scheduler

    # -- state --------------------------------------------------------------------------

    def load(self) -> None:
        """Take the held keys from the storage and set the alarm of the next due retry."""
        sub = self.sub
        sub.retry_keys = set(self.store.keys(sub.name))
        due = self.store.next_due(sub.name)
        if due is not None:
            self.scheduler.call_at(due, sub.wake)

    def reload(self) -> None:
        """Take the held keys from the storage again (after a failure)."""
        self.sub.retry_keys = set(self.store.keys(self.sub.name))

    # -- from the log -------------------------------------------------------------------

    def begin(self, env: Envelope, outcome: Outcome) -> None:
        """A message from the log failed its immediate attempts: store it as the head of
        its stream, due after the first delay, and move the checkpoint past it."""
        sub = self.sub
        policy = sub.policy
        position = env.position
        key = env.stream_id
        error = outcome.error
        assert position is not None and key is not None and error is not None
        assert outcome.first_failed_at is not None
        now = sub.clock.now()
        delay = policy.retry_delay(1)
        with sub.storage.transaction():
            self.store.schedule(
                sub.name,
                position,
                key,
                attempts=policy.max_attempts,
                due_at=now + delay,
                first_failed_at=outcome.first_failed_at,
                error=describe(error),
            )
            sub.cursor.move(position)
        sub.cursor.moved(position)
        sub.retry_keys.add(key)
        sub.count()
        self.scheduler.call_at(now + delay, sub.wake)
        sub.metric("retry_scheduled", sub.name, env, 1, delay)
        log.warning(
            "durable subscriber %s failed %d time(s) on %s at position %d (%s); "
            "retrying in %.3g s, stream %r held behind it",
            sub.name,
            policy.max_attempts,
            env.type,
            position,
            describe(error),
            delay,
            key,
        )

    def hold(self, record: LogRecord, key: str) -> None:
        """Hold a message from the log behind the delayed retry of its stream."""
        sub = self.sub
        position = record.position
        with sub.storage.transaction():
            self.store.hold(sub.name, position, key)
            sub.cursor.move(position)
        sub.cursor.moved(position)
        sub.count()
        sub.metric("parked", sub.name, position, key)

    # -- when they are due --------------------------------------------------------------

    def fire_due(self) -> bool:
        """Release the streams left without a head (stranded), then run the delayed
        retries due by the clock. True if there was any."""
        sub = self.sub
        if not sub.retry_keys:
            return False
        stranded = self.store.stranded(sub.name)
        heads = self.store.due(sub.name, sub.clock.now())
        for key in stranded:
            if sub.stopping:
                return True
            log.warning(
                "durable subscriber %s: stream %r still holds messages behind a settled "
                "retry (an earlier release stopped part-way); releasing them",
                sub.name,
                key,
            )
            self._release(key)
        for head in heads:
            if sub.stopping:
                break
            self._retry_head(head)
        return bool(stranded or heads)

    def _retry_head(self, head: RetryEntry) -> None:
        """One delayed retry of the head of a stream."""
        sub = self.sub
        position, key = head.position, head.key
        record, env, why = sub.read(position)
        if record is None:
            self._forget_missing(position)
            self._release(key)
            return
        if env is None:
            assert why is not None
            if sub.interested(record.type) is None:
                self._drop_unknown(record, why)
                self._release(key)
                return
            self._exhaust_undecodable(key, record, why)
            return

        def finish(tx: Transaction) -> None:
            sub.mark(env)
            self.store.forget(sub.name, position)

        outcome = sub.attempt(env, 1, finish)
        if outcome.kind != "failed":
            sub.settle(
                f"the retried {env.type} at position {position}",
                lambda: self._succeeded(outcome, finish, position),
            )
            self._release(key)
            return
        error = outcome.error
        assert error is not None
        made = head.attempts + 1
        retry = made - sub.policy.max_attempts  # the delayed retry just made
        if retry < sub.policy.delayed_attempts:
            sub.settle(
                f"the next retry of {env.type} at position {position}",
                lambda: self._schedule(env, made, retry + 1, error),
            )
            return
        first = head.first_failed_at if head.first_failed_at is not None else sub.clock.now()
        sub.settle(
            f"the dead letter of {env.type} at position {position}",
            lambda: self._exhaust(key, env, error, made, first),
        )

    def _succeeded(self, outcome: Outcome, finish: Finish, position: int) -> None:
        """A held or retried message went through: forget its row (with the inbox mark,
        for a unit-of-work handler whose commit did not write it)."""
        sub = self.sub
        if not outcome.finished and not (
            outcome.kind == "ok" and sub.uses_uow and sub.finish_alone(finish)
        ):
            self.store.forget(sub.name, position)
        sub.count()

    def _schedule(self, env: Envelope, attempts: int, retry: int, error: Exception) -> None:
        """Store delayed retry number ``retry`` of ``env`` (a head, or a held message that
        failed in its turn and becomes the head)."""
        sub = self.sub
        position = env.position
        assert position is not None
        now = sub.clock.now()
        delay = sub.policy.retry_delay(retry)
        with sub.storage.transaction():
            self.store.reschedule(
                sub.name,
                position,
                attempts=attempts,
                due_at=now + delay,
                error=describe(error),
                first_failed_at=now,
            )
        sub.count()
        self.scheduler.call_at(now + delay, sub.wake)
        sub.metric("retry_scheduled", sub.name, env, retry, delay)
        log.warning(
            "durable subscriber %s: attempt %d on %s at position %d failed (%s); delayed "
            "retry %d of %d in %.3g s",
            sub.name,
            attempts,
            env.type,
            position,
            describe(error),
            retry,
            sub.policy.delayed_attempts,
            delay,
        )

    def _release(self, key: str) -> None:
        """The head of ``key`` is settled: deliver the messages held behind it, in order,
        until one fails (it becomes the new head) or none is left."""
        sub = self.sub
        for position in self.store.followers(sub.name, key):
            if sub.stopping or not self._release_one(key, position):
                return
        sub.retry_keys.discard(key)

    def _release_one(self, key: str, position: int) -> bool:
        """Deliver one held message; False when the stream must stay held (it failed and
        waits for a retry, or it went to the DLQ with the rest parked behind it)."""
        sub = self.sub
        policy = sub.policy
        record, env, why = sub.read(position)
        if record is None:
            self._forget_missing(position)
            return True
        if env is None:
            assert why is not None
            if sub.interested(record.type) is None:
                self._drop_unknown(record, why)
                return True
            self._exhaust_undecodable(key, record, why)
            return False
        if sub.uses_uow and sub.inbox_store.contains(sub.name, env.id):
            self.store.forget(sub.name, position)
            sub.count()
            return True

        def finish(tx: Transaction) -> None:
            sub.mark(env)
            self.store.forget(sub.name, position)

        outcome = sub.attempt(env, policy.max_attempts, finish)
        if outcome.kind != "failed":
            sub.settle(
                f"the released {env.type} at position {position}",
                lambda: self._succeeded(outcome, finish, position),
            )
            return True
        error = outcome.error
        assert error is not None
        if policy.delayed_attempts > 0:
            sub.settle(
                f"the delayed retry of {env.type} at position {position}",
                lambda: self._schedule(env, policy.max_attempts, 1, error),
            )
            return False
        first = outcome.first_failed_at
        assert first is not None
        sub.settle(
            f"the dead letter of {env.type} at position {position}",
            lambda: self._exhaust(key, env, error, policy.max_attempts, first),
        )
        return False

    # -- when retries are spent ---------------------------------------------------------

    def _exhaust(
        self, key: str, env: Envelope, error: Exception, attempts: int, first_failed_at: float
    ) -> None:
        """Retries are spent: the head goes to the DLQ, the messages behind it are parked
        there behind it, in order, and the key's rows are deleted, atomically."""
        sub = self.sub
        with sub.storage.transaction():
            letter = sub.dead_letter(env, error, attempts, first_failed_at)
            self._park_followers(key, env.position or 0)
        sub.retry_keys.discard(key)
        sub.count()
        sub.log_dead_letter(letter, env, error)

    def _exhaust_undecodable(self, key: str, record: LogRecord, why: MessageError) -> None:
        """A held message can no longer be decoded (the registry changed): dead-letter it
        raw, and park what was behind it."""
        sub = self.sub
        position = record.position
        with sub.storage.transaction():
            sub.dead_letter_raw(record, why, key)
            self._park_followers(key, position)
        sub.retry_keys.discard(key)
        sub.count()
        sub.metric("dead_lettered", sub.name, position, why)
        log.error(
            "durable subscriber %s: the held event at position %d cannot be decoded (%s); "
            "dead-lettered, stream %r held behind it",
            sub.name,
            position,
            why,
            key,
        )

    def _drop_unknown(self, record: LogRecord, why: MessageError) -> None:
        """A held message whose type the registry no longer knows (held before that rule,
        or the registry changed): dead-letter it without a key, like one read from the
        log, and let the stream go on."""
        sub = self.sub
        with sub.storage.transaction():
            sub.dead_letter_raw(record, why, None)
            self.store.forget(sub.name, record.position)
        sub.count()
        sub.metric("dead_lettered", sub.name, record.position, why)
        log.error(
            "durable subscriber %s: the held event at position %d has a type this app does "
            "not know (%s); dead-lettered without holding its stream",
            sub.name,
            record.position,
            type_of(record),
        )

    def _forget_missing(self, position: int) -> None:
        """A row whose event is gone from the log (deleted by hand): forget it."""
        sub = self.sub
        self.store.forget(sub.name, position)
        sub.count()
        log.error(
            "durable subscriber %s: the held event at position %d is missing from the log; "
            "its retry row is dropped",
            sub.name,
            position,
        )

    def _park_followers(self, key: str, after: int) -> None:
        """Park the messages held behind ``after`` in the DLQ, and drop the key's rows
        (joins the open transaction)."""
        sub = self.sub
        for position in self.store.followers(sub.name, key, after):
            record = sub.store.record_at(position)
            if record is not None:
                sub.park(record, key)
        self.store.drop(sub.name, key)
