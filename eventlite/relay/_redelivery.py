"""Operator redelivery: dead letters released for retry (from Python or the CLI, in any
process) are delivered again by the subscriber that failed them, in order."""

from __future__ import annotations

import logging
from contextlib import suppress

from ..dlq import DeadLetter, DeadLetterNotFound
from ..envelope import Envelope
from ..exceptions import MessageError
from ..store.storage import Transaction
from ._subscriber import AlreadyHandled, Finish, Outcome, Subscriber

__all__ = ["Redelivery"]

log = logging.getLogger("eventlite.relay")


class Redelivery:
    """Claims the subscriber's ``retrying`` dead letters and delivers them; a success
    resolves the entry (with the inbox mark, in the handler's commit), a failure puts its
    key back to sleep (:meth:`DeadLetterQueue.fail_again`)."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub

    def redeliver(self) -> bool:
        """Deliver the entries an operator released for retry, in order; True if any."""
        sub = self.sub
        entries = sub.dlq.claim_retries(sub.name)
        if not entries:
            return False
        failed: set[str] = set()
        for entry in entries:
            if sub.stopping:
                break
            if entry.key is not None and entry.key in failed:
                continue
            if not self._redeliver(entry) and entry.key is not None:
                failed.add(entry.key)
        return True

    def _redeliver(self, entry: DeadLetter) -> bool:
        sub = self.sub
        try:
            env = self._envelope(entry)
        except MessageError as exc:
            why = exc
            sub.settle(f"dead letter #{entry.id}", lambda: self._fail_again(entry, why))
            return False
        sub.count()
        if (sub.uses_uow and sub.inbox_store.contains(sub.name, env.id)) or not isinstance(
            env.message, sub.event_type
        ):
            # Handled already, or dead-lettered raw before its type was known and not
            # this subscriber's: nothing to deliver.
            self._resolve(entry)
            return True

        def finish(tx: Transaction) -> None:
            sub.mark(env)
            try:
                sub.dlq.resolve(entry.id)
            except DeadLetterNotFound:
                raise AlreadyHandled() from None  # an operator discarded it meanwhile

        outcome = sub.attempt(env, sub.policy.max_attempts, finish)
        if outcome.kind == "failed":
            error = outcome.error
            assert error is not None
            sub.settle(f"dead letter #{entry.id}", lambda: self._fail_again(entry, error, env))
            return False
        sub.settle(f"dead letter #{entry.id}", lambda: self._succeeded(entry, outcome, finish))
        log.info(
            "durable subscriber %s: dead letter #%d (%s at position %s) redelivered",
            sub.name,
            entry.id,
            env.type,
            env.position,
        )
        return True

    def _envelope(self, entry: DeadLetter) -> Envelope:
        """The envelope of a dead letter: for a stored event, read again from the log (so
        a type registered since it failed now decodes)."""
        if entry.position is not None:
            _, env, why = self.sub.read(entry.position)
            if env is not None:
                return env
            assert why is not None
            raise why
        return entry.envelope(self.sub.relay.codec)

    def _succeeded(self, entry: DeadLetter, outcome: Outcome, finish: Finish) -> None:
        sub = self.sub
        if outcome.finished or (outcome.kind == "ok" and sub.uses_uow and sub.finish_alone(finish)):
            return
        self._resolve(entry)

    def _resolve(self, entry: DeadLetter) -> None:
        with suppress(DeadLetterNotFound):
            self.sub.dlq.resolve(entry.id)

    def _fail_again(self, entry: DeadLetter, error: Exception, env: Envelope | None = None) -> None:
        sub = self.sub
        with suppress(DeadLetterNotFound):
            sub.dlq.fail_again(entry.id, error)
        sub.metric(
            "dead_lettered", sub.name, env.position if env is not None else entry.position, error
        )
