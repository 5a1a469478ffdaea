"""The relay: one thread per durable subscriber, delivering what the storage's log holds."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta
from typing import Any, Final, Literal

from ..clock import Clock, SystemClock, seconds
from ..codec import Codec
from ..dlq import DeadLetterQueue
from ..inbox import Inbox
from ..metrics import DeliveryMetrics
from ..retry import RetryPolicy
from ..scheduler import Scheduler
from ..store.leases import LeaseStore
from ..store.storage import Storage
from ._batch import BatchCall, single
from ._consumer import Consumer, start_required
from ._segments import changed_segments, segment_name, stored_segments
from ._status import SubscriberStatus, subscriber_status
from ._subscriber import DeliveryCall
from ._tenure import Share, live_owners

__all__ = ["DEFAULT_RETRY", "DurableSubscriber", "Relay", "Start"]

log = logging.getLogger("eventlite.relay")

Start = Literal["beginning", "end"]
"""Where a subscriber new to a log that holds events begins: every event ever committed
(``"beginning"``), or only the ones committed from now on (``"end"``)."""

DEFAULT_RETRY: Final = RetryPolicy(max_attempts=3, delayed_attempts=0)
"""The policy of durable subscribers that give none: three immediate attempts, then the
dead-letter queue."""

_BATCH_RETRY: Final = RetryPolicy(max_attempts=1, delayed_attempts=0)
"""A batch subscriber's policy for one released dead letter: one attempt, then back."""

_MAINTENANCE_EVERY = 3600.0


class DurableSubscriber:
    """A durable subscriber as registered (``app.subscribe(..., durable=True)``).

    The attributes are read-only; :meth:`status` reads where it stands in the storage.
    """

    __slots__ = ("_relay", "event_type", "handler", "name", "retry", "segments", "uses_uow")

    name: str
    """The stable name: the key of its checkpoint, inbox marks and dead letters (of each
    segment's, ``name#i/N``, when split)."""
    event_type: type[Any]
    """The class subscribed to; stored events of its subclasses are delivered too."""
    handler: Callable[..., Any]
    """The function given to ``subscribe``."""
    retry: RetryPolicy
    """Its retry policy."""
    uses_uow: bool
    """True when the handler writes through a unit of work (and so has an inbox)."""
    segments: int
    """Into how many segments it is split by stream id (1: not split)."""

    def __init__(
        self,
        relay: Relay,
        name: str,
        event_type: type[Any],
        handler: Callable[..., Any],
        retry: RetryPolicy,
        uses_uow: bool,
        segments: int = 1,
    ) -> None:
        self._relay = relay
        self.name = name
        self.event_type = event_type
        self.handler = handler
        self.retry = retry
        self.uses_uow = uses_uow
        self.segments = segments

    def status(self) -> SubscriberStatus:
        """Where this subscriber stands (see :class:`SubscriberStatus`); of a split one,
        the segment furthest behind (:meth:`statuses` has each)."""
        return min(self.statuses(), key=lambda s: (s.checkpoint, s.segment or 0))

    def statuses(self) -> list[SubscriberStatus]:
        """Where each of its segments stands, by segment (one item when not split)."""
        relay = self._relay
        return subscriber_status(relay.storage, relay.dlq, self.name)

    def __repr__(self) -> str:
        return f"<DurableSubscriber {self.name} to {self.event_type.__qualname__}>"


class Relay:
    """Delivers committed events to durable subscribers: one thread per subscriber.

    :param storage: where the log, checkpoints, inbox and delayed retries are kept (a
        durable :class:`~eventlite.store.Storage`; its event store is the log).
    :param codec: decodes stored events (its registry decides which are of interest).
    :param dlq: where messages go when their retries are exhausted.
    :param clock: decides when delayed retries are due (default: the system clock).
    :param scheduler: wakes subscribers when a delayed retry falls due (default: a new one
        on ``clock``, closed with the relay).
    :param metrics: delivery hooks (see :mod:`eventlite.metrics`).
    :param poll_interval: seconds between looks for commits of other processes and for
        operators' retries of dead letters.
    :param batch_size: events read from the log per query.
    :param lease_seconds: each subscriber is delivered by one process at a time, the holder
        of its lease (renewed every third of this time; another process takes over once it
        expires). Seconds or a ``timedelta``; None for no leases.
    :param owner: this process's name in the leases (default: host, process id and a
        random part).
    :param checkpoint_interval: the longest a subscriber without a unit of work keeps its
        progress in memory before writing its checkpoint (it also writes it every
        ``batch_size`` events, and when idle or drained); a crash redelivers at most that
        much to it. Subscribers with a unit of work write it with every message.
    :param inbox_retention: seconds inbox marks are kept (purged about hourly); None keeps
        them for ever.

    :meth:`wake` after a local commit; :meth:`drain` in tests; :meth:`close` at the end.
    """

    def __init__(
        self,
        storage: Storage,
        codec: Codec,
        *,
        dlq: DeadLetterQueue,
        clock: Clock | None = None,
        scheduler: Scheduler | None = None,
        metrics: DeliveryMetrics | None = None,
        poll_interval: float = 0.05,
        batch_size: int = 500,
        checkpoint_interval: float = 0.1,
        inbox_retention: float | None = 7 * 86400.0,
        lease_seconds: float | timedelta | None = 30.0,
        owner: str | None = None,
    ) -> None:
        if not isinstance(storage, Storage):
            raise TypeError(f"Relay needs a Storage (app.storage), got {type(storage).__name__}")
        if not (isinstance(poll_interval, (int, float)) and poll_interval > 0):
            raise ValueError(f"poll_interval must be seconds > 0, got {poll_interval!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not (isinstance(checkpoint_interval, (int, float)) and checkpoint_interval >= 0):
            raise ValueError(
                f"checkpoint_interval must be seconds >= 0, got {checkpoint_interval!r}"
            )
        self.storage = storage
        """Where the log and the delivery state are kept."""
        self.lease_seconds: float | None = (
            None if lease_seconds is None else seconds(lease_seconds, "lease_seconds")
        )
        """How long a subscriber's lease lasts without renewal (None: no leases)."""
        if self.lease_seconds is not None and not self.lease_seconds > 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This process's name in the subscribers' leases."""
        self.leases: LeaseStore | None = None
        """Where the subscribers' leases are kept: None without leases, or when the
        storage keeps none (in memory)."""
        if self.lease_seconds is not None and storage.keeps("leases"):
            self.leases = storage.leases
            live_owners.add(self.owner)
        self.store = storage.events
        """The event store whose log is delivered."""
        self.codec = codec
        """Decodes stored events."""
        self.dlq = dlq
        """The dead-letter queue of exhausted deliveries."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """Decides when delayed retries are due."""
        self._own_scheduler = scheduler is None
        self.scheduler = scheduler if scheduler is not None else Scheduler(self.clock)
        """Wakes subscribers when their delayed retries fall due."""
        self.metrics = metrics if metrics is not None else DeliveryMetrics()
        """Delivery hooks."""
        self.poll_interval = float(poll_interval)
        """Seconds between polls for other processes' commits."""
        self.batch_size = batch_size
        """Events read per query, and the most a plain subscriber leaves unwritten."""
        self.checkpoint_interval = float(checkpoint_interval)
        """Seconds a plain subscriber's progress may stay unwritten."""
        self.inbox = Inbox(storage, clock=self.clock)
        """Message ids handled by subscribers that write through a unit of work."""
        self.inbox_retention = inbox_retention
        """Seconds inbox marks are kept, or None."""
        self._lock = threading.Lock()
        self._consumers: dict[str, Consumer] = {}
        self._subscribers: dict[str, DurableSubscriber] = {}
        self._shares: list[Share] = []
        self._idents: frozenset[int] = frozenset()
        self._work = 0
        self._next_maintenance = 0.0
        self._closed = False

    # -- registering ------------------------------------------------------------------

    def add(
        self,
        name: str,
        event_type: type[Any],
        call: DeliveryCall,
        *,
        handler: Callable[..., Any] | None = None,
        uses_uow: bool = False,
        retry: RetryPolicy | None = None,
        start: Start | None = None,
        on_pass: Callable[[], bool] | None = None,
        segments: int = 1,
    ) -> DurableSubscriber:
        """Add a durable subscriber and start its thread (a thread per segment).

        ``call`` is how it is invoked (see :data:`DeliveryCall`); ``uses_uow`` says that
        ``call`` runs ``finish`` in its own commit. ``start`` says where a subscriber new to
        the storage begins: at the ``"beginning"`` of the log (every event ever committed)
        or at its ``"end"`` (only events committed from now on). It is required when the
        subscriber is new and the log already holds events; a known subscriber resumes at
        its checkpoint, and one new to an empty log starts at its beginning.
        ``on_pass()``, when given, runs in the subscriber's thread at the start of every
        pass (those of :meth:`drain` too), before new events are read: work the
        subscriber owns besides the log, such as recording a process manager's due
        timeouts; it returns whether it did something (then another pass follows).

        ``segments=N`` (N > 1) splits the subscriber by a hash of the stream id into N
        segments (see :mod:`._segments` and ``docs/scaling.md``): each has its own thread,
        checkpoint (``name#i/N``), inbox marks, retries, dead letters and lease, so up to
        N processes share its work; each stream stays in one segment, in order.

        Raises ``ValueError`` for a name already in use in this relay, for a new
        subscriber without ``start`` on a log that holds events (naming the subscriber and
        the head of the log), for ``segments`` other than the number the storage holds
        checkpoints of (naming the subscriber and both numbers), and for ``segments`` with
        ``on_pass``; ``RuntimeError`` after :meth:`close`.
        """
        return self._add(
            name, event_type, call, handler, uses_uow, retry, start, on_pass, None, segments
        )

    def add_batch(
        self,
        name: str,
        event_type: type[Any],
        batch: BatchCall,
        *,
        handler: Callable[..., Any] | None = None,
        start: Start | None = None,
    ) -> DurableSubscriber:
        """Add a durable subscriber that takes the log a page at a time and start its
        thread: ``batch(envelopes)`` gets the events of ``event_type`` of one page (up to
        ``batch_size`` events of the log), in order, and says which it refused (see
        :data:`~eventlite.relay.BatchCall`); the checkpoint moves past the page once the
        call returned, with the dead letters of the refused ones. A call that raises is
        repeated from the checkpoint after a back-off. ``start`` is as for :meth:`add`.

        An outbound bridge (``app.publish_to``) is one: a page is one confirmed send.
        """
        return self._add(
            name, event_type, single(batch), handler, False, _BATCH_RETRY, start, None, batch, 1
        )

    def _add(
        self,
        name: str,
        event_type: type[Any],
        call: DeliveryCall,
        handler: Callable[..., Any] | None,
        uses_uow: bool,
        retry: RetryPolicy | None,
        start: Start | None,
        on_pass: Callable[[], bool] | None,
        batch: BatchCall | None,
        segments: int,
    ) -> DurableSubscriber:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a durable subscriber needs a non-empty name, got {name!r}")
        if start is not None and start not in ("beginning", "end"):
            raise ValueError(f"start must be 'beginning' or 'end', got {start!r}")
        if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
            raise ValueError(f"segments must be an int >= 1, got {segments!r}")
        if segments > 1 and "#" in name:
            raise ValueError(
                f"a durable subscriber split into segments cannot have '#' in its name "
                f"({name!r}): its segments are named '<name>#<i>/<N>'"
            )
        if segments > 1 and on_pass is not None:
            raise ValueError("on_pass= is for subscribers that are not split into segments")
        policy = retry if retry is not None else DEFAULT_RETRY
        with self._lock:
            if self._closed:
                raise RuntimeError("the relay is closed")
            if name in self._subscribers:
                raise ValueError(
                    f"a durable subscriber named {name!r} already exists; each needs its own "
                    "name (the name keys its checkpoint in the storage)"
                )
            share = None
            if segments == 1:
                consumers = [
                    Consumer(self, name, event_type, call, uses_uow, policy, on_pass, batch)
                ]
            else:
                if self.leases is not None and self.lease_seconds is not None:
                    share = Share(self.leases, name, segments, self.owner, self.lease_seconds)
                consumers = [
                    Consumer(
                        self,
                        segment_name(name, i, segments),
                        event_type,
                        call,
                        uses_uow,
                        policy,
                        share=share,
                        segment=(i, segments),
                    )
                    for i in range(segments)
                ]
            with self.storage.transaction():
                # Check and write the checkpoints as one step, one process at a time (the
                # write transaction shuts other writers out on SQLite, the log's lock on
                # PostgreSQL): of two processes adding this subscriber at the same moment
                # with different segments, the second sees the first one's checkpoints.
                self.store.lock_log()
                stored = stored_segments(name, (c.name for c in self.storage.checkpoints.list()))
                changed = changed_segments(name, stored, segments)
                if changed is not None:
                    raise changed
                for consumer in consumers:
                    consumer.load(start)
            if share is not None:
                self._shares.append(share)
            sub = DurableSubscriber(
                self,
                name,
                event_type,
                handler if handler is not None else call,
                policy,
                uses_uow,
                segments,
            )
            self._subscribers = {**self._subscribers, name: sub}
            self._consumers = {**self._consumers, **{c.name: c for c in consumers}}
            for consumer in consumers:
                consumer.start()
            self._idents = frozenset(
                c.thread.ident for c in self._consumers.values() if c.thread.ident is not None
            )
        return sub

    def check_start(self, name: str, start: Start | None) -> None:
        """Raise the ``ValueError`` :meth:`add` would raise for a subscriber ``name`` new to a
        log that holds events, given no ``start``: for callers that must refuse before
        they register anything else (a saga, a process manager)."""
        if start is None and self.storage.checkpoints.get(name) is None:
            head = self.store.head_position()
            if head > 0:
                raise start_required(name, head)

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the subscribers this relay delivers to, in the order added."""
        return tuple(self._subscribers)

    def subscriptions(self) -> list[tuple[str, type[Any]]]:
        """``(name, event type)`` of every subscriber this relay delivers to, in the order
        added (a process manager's event type stands for all the types it handles)."""
        return [(s.name, s.event_type) for s in self._subscribers.values()]

    def threads(self) -> dict[str, bool]:
        """Each subscriber's name (each segment's, ``name#i/N``, when split) and whether
        its thread is alive (after :meth:`close`, an alive one is still busy with a
        message)."""
        return {c.name: c.thread.is_alive() for c in self._consumers.values()}

    # -- running ----------------------------------------------------------------------

    def wake(self) -> None:
        """Tell every subscriber that something was committed: look at the log now."""
        for consumer in self._consumers.values():
            consumer.wake()

    @property
    def work_done(self) -> int:
        """How many messages the relay has settled (delivered, skipped, parked, retried,
        dead-lettered) since it started; grows while it works."""
        return self._work

    def drain(self, timeout: float | None = 10.0) -> bool:
        """Wait until every subscriber has settled every event committed before the call,
        every delayed retry due by the clock, and every dead letter an operator asked to
        retry; events committed by the handlers meanwhile are included.

        Returns True when that is done, False if ``timeout`` seconds passed first. Raises
        ``RuntimeError`` when called from a durable handler (it would wait for itself).
        """
        if threading.get_ident() in self._idents:
            raise RuntimeError("relay.drain() was called from a durable subscriber's thread")
        deadline = None if timeout is None else time.monotonic() + timeout
        consumers = list(self._consumers.values())
        tickets = [c.request() for c in consumers]
        for consumer, ticket in zip(consumers, tickets, strict=True):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not consumer.wait_for(ticket, remaining):
                return False
        return True

    def subscribers(self) -> list[SubscriberStatus]:
        """The status of every durable subscriber known to the storage, sorted by name."""
        return subscriber_status(self.storage, self.dlq)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop every subscriber's thread after the message it is handling, write the
        checkpoints, and stop the scheduler (if the relay made it). Idempotent. Returns
        False if a thread was still busy after ``timeout`` seconds."""
        with self._lock:
            self._closed = True
            consumers = list(self._consumers.values())
        live_owners.discard(self.owner)  # its leases may be taken over from now on
        for consumer in consumers:
            consumer.stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = True
        for consumer in consumers:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            consumer.thread.join(remaining)
            finished = finished and not consumer.thread.is_alive()
        for share in self._shares:
            with suppress(Exception):
                share.close()
        if self._own_scheduler:
            self.scheduler.close()
        return finished

    def _count(self, n: int = 1) -> None:
        self._work += n  # only grows; a lost update under a race only delays a drain loop

    def _maintain(self) -> None:
        """About hourly (by the clock): forget inbox marks older than the retention."""
        now = self.clock.now()
        if self.inbox_retention is None or now < self._next_maintenance:
            return
        with self._lock:
            if now < self._next_maintenance:
                return
            self._next_maintenance = now + _MAINTENANCE_EVERY
        removed = self.inbox.purge(self.inbox_retention)
        if removed:
            log.info("purged %d inbox marks older than %s s", removed, self.inbox_retention)

    def __repr__(self) -> str:
        names = ", ".join(self._consumers) or "no subscribers"
        return f"<Relay {self.storage.description}: {names}>"
