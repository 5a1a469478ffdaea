"""One durable subscriber as the relay's passes see it: its name, policy and stores, the
handler attempts, the decoding of stored records, and the dead-letter writes they share."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..clock import to_datetime
from ..dlq import DeadLetter
from ..envelope import Envelope, _current
from ..exceptions import MessageDecodeError, MessageError, StorageError, UnknownMessageType
from ..metrics import DeliveryMetrics
from ..retry import RetryPolicy
from ..store.checkpoints import CheckpointMoved
from ..store.events import LogRecord
from ..store.leases import LeaseLost
from ..store.storage import Transaction
from ._checkpoints import Cursor

if TYPE_CHECKING:
    from ._relay import Relay

__all__ = [
    "AlreadyHandled",
    "DeliveryCall",
    "Finish",
    "Outcome",
    "Subscriber",
    "describe",
    "type_of",
]

log = logging.getLogger("eventlite.relay")
_set_current = _current.set
_reset_current = _current.reset

Finish = Callable[[Transaction], None]
"""Bookkeeping the relay needs written in the handler's own transaction (the inbox mark
and the checkpoint or retry row); a handler with a unit of work runs it at commit. Its
writes join the thread's open transaction, which is the one it is given."""

DeliveryCall = Callable[[Any, "Finish | None"], Any]
"""How the relay calls a durable handler: ``call(message, finish)``. A call that writes
through a unit of work must run ``finish(tx)`` inside that unit's commit; one that does
not ignores it and the relay writes the bookkeeping itself after the call returns."""


class AlreadyHandled(Exception):
    """The inbox holds the message id: roll the redelivery's effects back, skip it."""


class Outcome:
    """How a delivery ended: ``ok``, ``skipped`` (inbox), or ``failed`` with the error."""

    __slots__ = ("error", "finished", "first_failed_at", "kind")

    def __init__(self) -> None:
        self.kind = "failed"
        self.error: Exception | None = None
        self.first_failed_at: float | None = None
        self.finished = False  # the finish hook committed with the handler's work


def describe(error: BaseException) -> str:
    """``"Type: message"`` of an error, for logs and stored rows."""
    return f"{type(error).__name__}: {error}"


def type_of(record: LogRecord) -> str:
    """The record's type name as text, whatever the column holds."""
    name = record.type
    return name if type(name) is str else repr(name)


def _message_id(record: LogRecord) -> str | None:
    return record.id if type(record.id) is str else None


class Subscriber:
    """The state and the shared steps of one durable subscriber (see the package doc).

    ``pending`` is the write that records the fate of a message whose handler already ran,
    when the storage failed under it: the consumer runs it again, before anything else,
    until it commits, so the handler is not run again meanwhile.
    """

    def __init__(
        self,
        relay: Relay,
        name: str,
        event_type: type[Any],
        call: DeliveryCall,
        uses_uow: bool,
        policy: RetryPolicy,
    ) -> None:
        self.relay = relay
        self.name = name
        self.event_type = event_type
        self.call = call
        self.uses_uow = uses_uow
        self.policy = policy
        self.storage = relay.storage
        self.store = relay.store
        self.retries = relay.storage.retries
        self.inbox_store = relay.storage.inbox
        self.dlq = relay.dlq
        self.clock = relay.clock
        self.metrics = relay.metrics
        self.checkpoints = relay.storage.checkpoints
        self.cursor = Cursor(self.checkpoints, name, relay.clock)
        self.retry_keys: set[str] = set()  # keys with rows in the retry store
        # this subscriber is segment `segment` of `segments` (0 of 1: not split)
        self.segment = 0
        self.segments = 1
        self.interest: dict[str, bool] = {}
        self.stopping = False
        self.pending: tuple[str, Callable[[], None]] | None = None
        self.wake: Callable[[], None] = lambda: None  # set by the consumer
        self.count: Callable[..., None] = relay._count
        """Count one settled message, for :meth:`Relay.drain`."""
        self.times_handling = type(relay.metrics).handled is not DeliveryMetrics.handled

    # -- settling ------------------------------------------------------------------------

    def settle(self, what: str, write: Callable[[], None]) -> None:
        """Run ``write``, which records the fate of a message whose handler already ran
        (a transaction, then what follows its commit). When the storage fails under it,
        it is kept as :attr:`pending` and the :class:`StorageError` goes on up."""
        self.pending = (what, write)
        write()
        self.pending = None

    # -- reading ------------------------------------------------------------------------

    def interested(self, type_name: object) -> bool | None:
        """Whether the subscriber takes this type; None for a name the registry lacks."""
        known = self.interest.get(type_name) if type(type_name) is str else None
        if known is not None:
            return known
        if type(type_name) is not str:
            return None
        try:
            entry = self.relay.codec.registry.by_name(type_name)
        except UnknownMessageType:
            return None
        known = self.interest[type_name] = issubclass(entry.cls, self.event_type)
        return known

    def decode(self, record: LogRecord) -> tuple[Envelope | None, MessageError | None]:
        """The record's envelope, or why it cannot be decoded (any failure of the decoder
        counts: the record is then dead-lettered, never retried from the log)."""
        try:
            return self.store.decode(record), None
        except MessageError as exc:
            return None, exc
        except StorageError:
            raise
        except Exception as exc:
            return None, MessageDecodeError(type_of(record), describe(exc), record.position)

    def read(self, position: int) -> tuple[LogRecord | None, Envelope | None, MessageError | None]:
        """The stored event at ``position`` and its envelope, or why it cannot be decoded;
        ``(None, None, error)`` when the log has no such event."""
        record = self.store.record_at(position)
        if record is None:
            return (
                None,
                None,
                MessageDecodeError("?", "the event is missing from the log", position),
            )
        env, why = self.decode(record)
        return record, env, why

    # -- handling -----------------------------------------------------------------------

    def mark(self, env: Envelope) -> None:
        """The inbox mark of ``env`` (joins the open transaction); raises
        :class:`AlreadyHandled` when it was there."""
        if not self.inbox_store.mark(self.name, env.id, self.clock.now()):
            raise AlreadyHandled()

    def attempt(self, env: Envelope, attempts: int, finish: Finish) -> Outcome:
        """Call the handler up to ``attempts`` times at once, until it succeeds. A handler
        with a unit of work commits ``finish`` with its work (``outcome.finished``)."""
        outcome = Outcome()
        name = self.name
        finishing: Finish | None = None
        if self.uses_uow:

            def finishing(tx: Transaction) -> None:
                finish(tx)
                outcome.finished = True

        timed = self.times_handling
        started = 0.0
        for attempt in range(1, attempts + 1):
            outcome.finished = False
            if timed:
                started = time.perf_counter()
            try:
                # message_context(env), without a generator: the bus's hot path does the same
                token = _set_current(env)
                try:
                    self.call(env.message, finishing)
                finally:
                    _reset_current(token)
            except AlreadyHandled:
                outcome.kind = "skipped"
                return outcome
            except (CheckpointMoved, LeaseLost):
                raise
            except Exception as exc:
                if outcome.first_failed_at is None:
                    outcome.first_failed_at = self.clock.now()
                outcome.error = exc
                self.metric("failed", name, env, attempt, exc)
                log.warning(
                    "durable subscriber %s failed attempt %d of %d on %s %s (%s)",
                    name,
                    attempt,
                    attempts,
                    env.type,
                    env.id,
                    describe(exc),
                )
                continue
            if timed:
                self.metric("handled", name, env, time.perf_counter() - started)
            outcome.kind = "ok"
            return outcome
        return outcome

    def finish_alone(self, finish: Finish) -> bool:
        """Write a unit-of-work handler's bookkeeping on its own, when its final commit
        had nothing left (it committed early, or rolled back). False when the inbox
        already held the message (nothing written)."""
        try:
            with self.storage.transaction() as tx:
                finish(tx)
        except AlreadyHandled:
            return False
        return True

    def metric(self, hook: str, *args: Any) -> None:
        """Call a metrics hook; one that raises is logged, never raised."""
        try:
            getattr(self.metrics, hook)(*args)
        except Exception:
            logging.getLogger("eventlite.metrics").exception("metrics hook %s failed", hook)

    # -- dead letters -------------------------------------------------------------------

    def dead_letter(
        self, env: Envelope, error: Exception, attempts: int, first_failed_at: float
    ) -> DeadLetter:
        """Add ``env`` to the DLQ (joins the open transaction); log it after the commit."""
        return self.dlq.add(
            self.name,
            env,
            key=env.stream_id,
            error=error,
            attempts=attempts,
            first_failed_at=to_datetime(first_failed_at),
            position=env.position,
        )

    def dead_letter_raw(self, record: LogRecord, error: MessageError, key: str | None) -> None:
        """Add a stored record that cannot be decoded to the DLQ, raw (joins the open
        transaction). ``key=None`` holds back no stream."""
        self.dlq.add(
            self.name,
            record.raw(),
            key=key,
            error=error,
            attempts=1,
            position=record.position,
            type_name=type_of(record),
            message_id=_message_id(record),
        )

    def park(self, record: LogRecord, key: str) -> None:
        """Park one stored event in the DLQ behind the dead letter of ``key`` (joins the
        open transaction): as its envelope, or raw when it cannot be decoded."""
        env, _ = self.decode(record)
        self.dlq.park(
            self.name,
            env if env is not None else record.raw(),
            key=key,
            position=record.position,
            type_name=type_of(record),
        )

    def log_dead_letter(self, letter: DeadLetter, env: Envelope, error: Exception) -> None:
        """Report a committed dead letter of a handler's failures."""
        self.metric("dead_lettered", self.name, env.position, error)
        log.error(
            "durable subscriber %s failed %d time(s) on %s at position %s; dead-lettered "
            "as #%d, stream %r held behind it: %s",
            self.name,
            letter.attempts,
            env.type,
            env.position,
            letter.id,
            env.stream_id,
            describe(error),
        )
