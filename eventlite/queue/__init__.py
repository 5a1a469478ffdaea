"""Work queues: the embedded SQS or RabbitMQ, in the application's storage.

A :class:`WorkQueue` is a named queue of messages for competing consumers::

    emails = app.queue("emails")          # or WorkQueue(storage, "emails", codec, dlq=dlq)
    emails.send(SendWelcomeEmail("ada@example.com"))
    for item in emails.receive(max=10):
        send_the_email(item.message)
        emails.ack(item.receipt)

How a message moves:

- :meth:`~WorkQueue.send` stores it; with ``delay`` it becomes visible that many seconds
  later. With a ``dedup_id`` seen within ``dedup_window`` seconds (five minutes by
  default, counted from the first send, acked or not), the send returns the first
  message's id and adds nothing.
- :meth:`~WorkQueue.receive` hands out visible messages, oldest due first, each with a
  *receipt* and hidden from other receivers for the visibility timeout.
- :meth:`~WorkQueue.ack` deletes it. :meth:`~WorkQueue.nack` makes it visible again (after
  ``delay``). :meth:`~WorkQueue.extend` hides it longer. If the visibility timeout runs out
  with no ack, the next receive hands it out again, with a new receipt: the old one is
  *stale* and acking with it raises :class:`StaleReceipt`.
- A message received ``max_receives`` times without an ack goes to the dead-letter queue
  (source ``queue:<name>``) instead of being handed out again: at once when it is nacked
  the last time, or at the next receive when its last visibility timeout runs out.
- With a ``ttl``, a message still waiting ``ttl`` seconds after it was sent expires: it is
  dead-lettered with the error ``MessageExpired`` (dropped with a warning when the queue has
  no DLQ). A message in flight does not expire until its visibility timeout runs out.
- Messages of one ``group`` are handed out one at a time, in send order: the next waits
  until the one before is acked, dead-lettered or expired (a nacked or timed-out one is
  handed out again first). The order holds among acked messages only: a dead-lettered
  message leaves its group's line, so the next one is handed out at once and overtakes it
  (the queue's dead letters have ``key=None``: the DLQ parks nothing behind them).
- A message whose envelope cannot be decoded (unknown type, bad JSON, a body that is not
  even text) is dead-lettered by the receive that meets it, with the decoding error, and
  is not returned. A handler error of any text is kept for the dead letter (escaped and
  bounded as the DLQ keeps it).
- ``dlq.retry(id)`` of a dead letter of source ``queue:<name>`` puts the message back: the
  next :meth:`~WorkQueue.receive` (or :meth:`~WorkQueue.requeue_retries`) moves it to the
  end of the queue (and of its group, behind the group's messages still queued) with a
  fresh receive count and TTL.

Every time decision reads the queue's :class:`~eventlite.clock.Clock`, so tests drive time
with a :class:`~eventlite.clock.FakeClock`.

The package, along its seams: the queue (:class:`WorkQueue`, :class:`Received`), its
consumer threads (:class:`QueueConsumer`, started by :meth:`WorkQueue.consume`), and the
queues of one storage by name (:class:`Queues`, what ``app.queue(name)`` hands out). The
messages live in the storage's :class:`~eventlite.store.queues.QueueStore`.
"""

from __future__ import annotations

from ..store.queues import MaxReceivesExceeded, MessageExpired, QueueError, QueueStats, StaleReceipt
from ._consumer import QueueConsumer, default_backoff
from ._registry import Queues
from ._work_queue import DEFAULT_DEDUP_WINDOW, Received, WorkQueue

__all__ = [
    "DEFAULT_DEDUP_WINDOW",
    "MaxReceivesExceeded",
    "MessageExpired",
    "QueueConsumer",
    "QueueError",
    "QueueStats",
    "Queues",
    "Received",
    "StaleReceipt",
    "WorkQueue",
    "default_backoff",
]
