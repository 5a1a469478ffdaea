"""The in-memory message bus: commands, queries and events inside one process.

- A command (``PlaceOrder``) or a query (``GetOrder``) has exactly one handler, run in the
  caller's thread by :meth:`MessageBus.dispatch` or :meth:`MessageBus.ask`, which return its
  result and let its exception through unchanged.
- An event (``OrderPlaced``) has zero or many subscribers. :meth:`MessageBus.publish` runs
  the synchronous ones in the caller's thread, in the order they subscribed, and queues the
  background ones on a pool of worker threads. A subscriber of a base class also receives
  its subclasses.

Every message travels in an :class:`~eventlite.envelope.Envelope`, current while its
handler runs, so the messages a handler sends are correlated to it (see
:func:`~eventlite.envelope.current_envelope`). The envelope of a command, a query, or an
event with only synchronous subscribers is made when something first needs it (a
middleware, ``current_envelope()``, a message the handler sends, an error report), so a
dispatch that needs none costs no envelope.

One subscriber's failure never stops the others and is never silently dropped: the
subscriber is retried per its :class:`~eventlite.retry.RetryPolicy` (immediate attempts),
then the failure is logged on the ``eventlite.bus`` logger and passed to every error hook
as ``hook(envelope, subscriber_name, exception)``.

Background delivery keeps order per key: events with the same ordering key (the key given
to ``publish``, else the stored event's stream id) go to the same worker thread, so each
subscriber sees them in publish order; events with different keys run in parallel. Each
worker's queue is bounded, and ``publish`` waits while the queue it needs is full.

Registration is copy-on-write: registering, subscribing and unsubscribing replace immutable
tables under a lock, so ``dispatch``, ``ask`` and ``publish`` never take a lock (a background
delivery takes its worker queue's lock, briefly).

The package: ``_bus`` (the :class:`MessageBus`), ``_chain`` (each handler's middleware chain
and retries), ``_subscriptions`` (subscriptions and the delivery plan of each event class),
``_workers`` (the background worker pool).
"""

from __future__ import annotations

from ._bus import ErrorHook, MessageBus
from ._subscriptions import Subscription
from ._workers import WorkerStats

__all__ = ["ErrorHook", "MessageBus", "Subscription", "WorkerStats"]
