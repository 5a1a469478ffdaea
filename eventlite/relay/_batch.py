"""The batch pass: a durable subscriber that takes a page of the log at once (an outbound
bridge sends it to a broker in one batch), its checkpoint moving once per page, after the
page is done."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..envelope import Envelope, _current
from ..exceptions import MessageError, UnknownMessageType
from ..store.events import LogRecord
from ._subscriber import Finish, Subscriber, type_of

__all__ = ["BatchCall", "BatchPass", "single"]

log = logging.getLogger("eventlite.relay")

BatchCall = Callable[[Sequence["LogRecord | Envelope"]], Sequence["Exception | None"]]
"""How the relay calls a batch subscriber: ``call(items)`` with the events of one page of
the log that are of its type, in log order, as stored records
(:class:`~eventlite.store.events.LogRecord`, not decoded: the subscriber decodes what it
needs with the store's ``decode``, or sends the stored form as it is); a dead letter an
operator released comes alone, as its :class:`~eventlite.envelope.Envelope`. It returns
one entry per item, in the same order: None when that event is done, or the error that
refused it (that one goes to the dead-letter queue, the others are done). Raising means
none of them is done: the page is delivered again from the checkpoint after a back-off
(the relay's, as when the storage fails), so the call must be safe to repeat
(at-least-once)."""


def single(batch: BatchCall) -> Callable[[Any, Finish | None], Any]:
    """The one-message call of a batch subscriber, for the dead letters an operator
    releases (:class:`~eventlite.relay._redelivery.Redelivery`): the batch call with one
    envelope, its refusal raised."""

    def call(message: Any, finish: Finish | None) -> Any:
        current = _current.get()
        env = (
            current
            if isinstance(current, Envelope) and current.message is message
            else Envelope(message)
        )
        error = batch([env])[0]
        if error is not None:
            raise error

    return call


class BatchPass:
    """Reads a page of the log after the subscriber's position, hands the stored events
    of its type to the batch call in one go, and moves the checkpoint past the page in
    one transaction with the dead letters of what the call refused.

    A batch subscriber holds back no stream: what it cannot decode or deliver is
    dead-lettered without a key and the events after it go on (an operator's
    ``dlq retry`` delivers it again, later than its successors). It has no delayed
    retries: a call that raises is repeated, page and all, after a back-off.
    """

    def __init__(self, sub: Subscriber, batch: BatchCall) -> None:
        self.sub = sub
        self.batch = batch
        self.relay = sub.relay

    def deliver_new(self) -> bool:
        """Settle one page of the log after the position; False when there was none."""
        sub = self.sub
        cursor = sub.cursor
        records = sub.store.read_records(cursor.position, self.relay.batch_size)
        if not records:
            return False
        wanted: list[LogRecord] = []
        bad: list[tuple[LogRecord, MessageError]] = []
        last = cursor.position
        for record in records:
            if sub.stopping:
                break
            last = record[0]
            interest = sub.interested(record[4])
            if interest is False:
                continue
            if interest is None:
                bad.append((record, UnknownMessageType(type_of(record), last)))
                continue
            wanted.append(record)
        self._settle(wanted, bad, last)
        return True

    def _settle(
        self, wanted: list[LogRecord], bad: list[tuple[LogRecord, MessageError]], last: int
    ) -> None:
        sub = self.sub
        cursor = sub.cursor
        refused: list[tuple[LogRecord, Exception]] = []
        if wanted:
            results = self.batch(wanted)
            if len(results) != len(wanted):
                raise RuntimeError(
                    f"batch subscriber {sub.name} returned {len(results)} results for "
                    f"{len(wanted)} events"
                )
            refused = [(r, e) for r, e in zip(wanted, results, strict=True) if e is not None]
        if not refused and not bad:
            # The page is done: its progress is written as a plain subscriber's is, once
            # batch_size events or checkpoint_interval seconds are settled in memory only
            # (and when idle): the broker confirmed them, so a crash before the write only
            # sends them again.
            cursor.advance(last)
            if wanted:
                sub.count(len(wanted))
            relay = self.relay
            unsaved = cursor.unsaved
            if unsaved and (
                unsaved >= relay.batch_size
                or time.monotonic() - cursor.flushed >= relay.checkpoint_interval
            ):
                cursor.flush()
            return
        letters: list[tuple[LogRecord, Envelope | None, Exception]] = []
        with sub.storage.transaction():
            for record, error in refused:
                env, why = sub.decode(record)
                if env is None:
                    assert why is not None
                    sub.dead_letter_raw(record, why, None)
                    error = why
                else:
                    sub.dlq.add(
                        sub.name, env, key=None, error=error, attempts=1, position=env.position
                    )
                letters.append((record, env, error))
            for record, why in bad:
                sub.dead_letter_raw(record, why, None)
            cursor.move(last)
        cursor.moved(last)
        sub.count(len(wanted) + len(bad))
        for record, env, error in letters:
            sub.metric("dead_lettered", sub.name, record.position, error)
            log.error(
                "batch subscriber %s: %s %s at position %d was refused (%s); dead-lettered, "
                "the events after it go on",
                sub.name,
                type_of(record),
                env.id if env is not None else record.id,
                record.position,
                error,
            )
        for record, why in bad:
            sub.metric("dead_lettered", sub.name, record.position, why)
            log.error(
                "batch subscriber %s: the stored event at position %d (%s) cannot be "
                "delivered (%s); dead-lettered",
                sub.name,
                record.position,
                type_of(record),
                why,
            )
