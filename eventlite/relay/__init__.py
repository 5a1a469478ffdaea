"""Durable subscribers, and the relay that delivers every committed event to them.

A durable subscriber has a stable name and a **checkpoint**: the log position up to which
the fate of every event is settled for it (handled, skipped as not its type, waiting for a
delayed retry, or dead-lettered). The checkpoint lives in the storage beside the events
(:class:`~eventlite.store.checkpoints.CheckpointStore`) and only moves in a transaction
that also makes that fate durable: the handler's own unit of work (with the inbox mark),
the stored retry row, or the dead letter. So a crash anywhere between a commit and its
delivery loses nothing: after a restart the relay reads the log again from the
checkpoint.

::

    app = App("shop.db")

    @app.subscribes(OrderPlaced, durable=True, name="send-confirmation", start="beginning")
    def send_confirmation(event: OrderPlaced, mailer: Mailer) -> None:
        mailer.send(event.email, "Thank you for your order")

Each durable subscriber has its own thread. It wakes at once when this process commits
(the app tells it), and polls every ``poll_interval`` seconds for commits made by other
processes sharing the storage. Events reach it in commit order, one at a time, so each
stream is seen in order.

Failures follow the subscriber's :class:`~eventlite.retry.RetryPolicy`: ``max_attempts``
immediate attempts, then ``delayed_attempts`` delayed ones (stored rows of the
:class:`~eventlite.store.retries.RetryStore`, woken by the
:class:`~eventlite.scheduler.Scheduler`), then the :class:`~eventlite.dlq.DeadLetterQueue`.
While a message waits for a delayed retry or sits in the DLQ, later messages of its stream
are held behind it for that subscriber, in order; other streams flow on. A stored event
that cannot be decoded, whatever its shape, is dead-lettered at once, raw record and
reason, and delivery goes on; one whose type name the registry does not know is
dead-lettered without a key, so it holds back no stream. While the storage fails, a
subscriber backs off (see :data:`BACKOFF_MAX`) and never runs a handler again for a
message it already handled.

A subscriber added with ``segments=N`` is split by a hash of the stream id into N
segments, each with its own thread, checkpoint and lease (:func:`segment_of`,
:func:`segment_name`; ``docs/scaling.md``), so up to N processes share its work.

The package reads top-down: :mod:`._relay` (the relay and its subscribers),
:mod:`._consumer` (a subscriber's thread and passes), :mod:`._log` (the pass over the
log), :mod:`._batch` (the pass of a subscriber that takes a page at once),
:mod:`._segments` (a subscriber split by stream id), :mod:`._tenure` (leases and the fair
share of segments), :mod:`._retries` (delayed retries), :mod:`._redelivery` (dead letters
an operator released), :mod:`._checkpoints` (the cursor and its checkpoint),
:mod:`._status`, and :mod:`._subscriber` (what the passes share). It reads the log only
through :meth:`EventStore.read_records <eventlite.store.EventStore.read_records>`,
``record_at`` and ``decode``, and writes only through the store protocols.

See ``docs/delivery.md`` for the guarantees, and why checkpoints rather than an outbox.
"""

from __future__ import annotations

from ._batch import BatchCall
from ._consumer import BACKOFF_FIRST, BACKOFF_MAX
from ._relay import DEFAULT_RETRY, DurableSubscriber, Relay, Start
from ._segments import parse_segment, segment_name, segment_of
from ._status import SubscriberStatus, subscriber_status
from ._subscriber import DeliveryCall, Finish
from ._tenure import Tenure, live_owners

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "BatchCall",
    "DEFAULT_RETRY",
    "DeliveryCall",
    "DurableSubscriber",
    "Finish",
    "Relay",
    "Start",
    "SubscriberStatus",
    "Tenure",
    "parse_segment",
    "segment_name",
    "segment_of",
    "live_owners",
    "subscriber_status",
]
