"""Durable subscribers, and the relay that delivers every committed event to them.

A durable subscriber has a stable name and a **checkpoint**: the log position up to which
the fate of every event is settled for it (handled, skipped as not its type, waiting for a
delayed retry, or dead-lettered). The checkpoint lives in the SQLite file beside the
events (table ``subscriber_checkpoints``) and only moves in a transaction that also makes
that fate durable: the handler's own unit of work (with the inbox mark), the stored retry
row, or the dead letter. So a crash anywhere between a commit and its delivery loses
nothing: after a restart the relay reads the log again from the checkpoint.

::

    app = App("shop.db")

    @app.subscribes(OrderPlaced, durable=True, name="send-confirmation")
    def send_confirmation(event: OrderPlaced, mailer: Mailer) -> None:
        mailer.send(event.email, "Thank you for your order")

Each durable subscriber has its own thread. It wakes at once when this process commits
(the app tells it), and polls every ``poll_interval`` seconds for commits made by other
processes sharing the file. Events reach it in commit order, one at a time, so each stream
is seen in order.

Failures follow the subscriber's :class:`~eventlite.retry.RetryPolicy`: ``max_attempts``
immediate attempts, then ``delayed_attempts`` delayed ones (stored rows in
``delivery_retries``, woken by the :class:`~eventlite.scheduler.Scheduler`), then the
:class:`~eventlite.dlq.DeadLetterQueue`. While a message waits for a delayed retry or sits
in the DLQ, later messages of its stream are held behind it for that subscriber, in
order; other streams flow on. A stored event that cannot be decoded is dead-lettered at
once, raw row and reason, and delivery goes on; one whose type name the registry does not
know is dead-lettered without a key, so it holds back no stream.

See ``docs/delivery.md`` for the guarantees, and why checkpoints rather than an outbox.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Final, Literal

import attrs

from .clock import Clock, SystemClock, to_datetime
from .codec import Codec
from .dlq import DeadLetter, DeadLetterNotFound, DeadLetterQueue
from .envelope import Envelope, message_context
from .exceptions import MessageDecodeError, MessageError, UnknownMessageType
from .inbox import Inbox
from .metrics import DeliveryMetrics
from .retry import RetryPolicy
from .scheduler import Scheduler
from .sqlite import SQLiteStorage
from .sqlite._database import Database, Transaction, storage_error
from .sqlite.events import EVENT_COLUMNS, decode_row

__all__ = [
    "DeliveryCall",
    "DurableSubscriber",
    "Finish",
    "Relay",
    "Start",
    "SubscriberStatus",
    "subscriber_status",
]

log = logging.getLogger(__name__)

Finish = Callable[[Transaction], None]
"""Bookkeeping the relay needs written in the handler's own transaction (the inbox mark
and the checkpoint or retry row); a handler with a unit of work runs it at commit."""

DeliveryCall = Callable[[Any, "Finish | None"], Any]
"""How the relay calls a durable handler: ``call(message, finish)``. A call that writes
through a unit of work must run ``finish(tx)`` inside that unit's commit; one that does
not ignores it and the relay writes the bookkeeping itself after the call returns."""

Start = Literal["beginning", "end"]
"""Where a subscriber new to the file begins: every event ever committed, or only new ones."""

DEFAULT_RETRY: Final = RetryPolicy(max_attempts=3, delayed_attempts=0)
"""The policy of durable subscribers that give none: three immediate attempts, then the
dead-letter queue."""

_COLUMNS = EVENT_COLUMNS
_PAGE = f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
_ONE = f"SELECT {_COLUMNS} FROM events WHERE position = ?"
_HEAD = "SELECT max(position) FROM events"
_MOVE = (
    "UPDATE subscriber_checkpoints SET position = ?, updated_at = ? WHERE name = ? AND position = ?"
)
_STRANDED = (
    "SELECT key FROM delivery_retries WHERE subscriber = ? GROUP BY key "
    "HAVING count(due_at) = 0 ORDER BY min(position)"
)
"""Keys whose rows are all held followers: their head was settled, but the release of the
messages behind it stopped part-way (a crash, a close, a storage error)."""
_MAINTENANCE_EVERY = 3600.0


class _AlreadyHandled(Exception):
    """The inbox holds the message id: roll the redelivery's effects back, skip it."""


class _CheckpointMoved(Exception):
    """Another process moved this subscriber's checkpoint: roll back, reload it."""


@attrs.frozen
class SubscriberStatus:
    """Where one durable subscriber stands, from :func:`subscriber_status`."""

    name: str
    """The subscriber's stable name."""
    checkpoint: int
    """The log position up to which every event's fate is settled (0: none yet)."""
    head: int
    """The position of the last committed event."""
    lag: int
    """``head - checkpoint``: events not yet looked at."""
    blocked_keys: tuple[str, ...]
    """Streams held back behind a delayed retry or a dead letter, sorted."""
    retrying: int
    """Messages waiting for a delayed retry."""
    parked: int
    """Messages held behind a delayed retry of their stream."""
    dead_letters: int
    """Entries of this subscriber in the dead-letter queue (dead, parked or retrying)."""
    updated_at: float
    """When the checkpoint last moved (epoch seconds)."""

    def __str__(self) -> str:
        keys = ", ".join(self.blocked_keys) if self.blocked_keys else "-"
        return (
            f"{self.name}: checkpoint {self.checkpoint}/{self.head} (lag {self.lag}), "
            f"retrying {self.retrying}, parked {self.parked}, dead letters "
            f"{self.dead_letters}, blocked keys: {keys}; moved "
            f"{to_datetime(self.updated_at).isoformat(timespec='seconds')}"
        )


def subscriber_status(
    database: Database, dlq: DeadLetterQueue | None = None, name: str | None = None
) -> list[SubscriberStatus]:
    """The status of every durable subscriber known to the file (or of one, by ``name``),
    sorted by name; read from the file alone, so it works in any process (the CLI).

    ``dlq`` adds each subscriber's dead letters and the keys they block (default: a
    :class:`DeadLetterQueue` over ``database``).
    """
    dlq = dlq if dlq is not None else DeadLetterQueue(SQLiteStorage(database))
    try:
        with database.read() as conn:
            head = int(conn.execute(_HEAD).fetchone()[0] or 0)
            sql = "SELECT name, position, updated_at FROM subscriber_checkpoints"
            params: tuple[str, ...] = ()
            if name is not None:
                sql += " WHERE name = ?"
                params = (name,)
            checkpoints = conn.execute(sql + " ORDER BY name", params).fetchall()
            retries: dict[str, tuple[int, int, set[str]]] = {}
            for sub, key, due in conn.execute(
                "SELECT subscriber, key, due_at FROM delivery_retries"
            ):
                waiting, parked, keys = retries.get(sub, (0, 0, set()))
                keys.add(key)
                if due is None:
                    retries[sub] = (waiting, parked + 1, keys)
                else:
                    retries[sub] = (waiting + 1, parked, keys)
    except sqlite3.Error as exc:
        raise storage_error(exc, "reading subscriber status", database.path) from exc
    out = []
    for sub, position, updated_at in checkpoints:
        waiting, parked, keys = retries.get(sub, (0, 0, set()))
        letters = dlq.list(sub, limit=None)
        keys = keys | {d.key for d in letters if d.key is not None}
        out.append(
            SubscriberStatus(
                name=sub,
                checkpoint=position,
                head=head,
                lag=max(0, head - position),
                blocked_keys=tuple(sorted(keys)),
                retrying=waiting,
                parked=parked,
                dead_letters=len(letters),
                updated_at=updated_at,
            )
        )
    return out


class DurableSubscriber:
    """A durable subscriber as registered (``app.subscribe(..., durable=True)``).

    The attributes are read-only; :meth:`status` reads where it stands in the file.
    """

    __slots__ = ("_consumer", "event_type", "handler", "name", "retry", "uses_uow")

    name: str
    """The stable name: the key of its checkpoint, inbox marks and dead letters."""
    event_type: type[Any]
    """The class subscribed to; stored events of its subclasses are delivered too."""
    handler: Callable[..., Any]
    """The function given to ``subscribe``."""
    retry: RetryPolicy
    """Its retry policy."""
    uses_uow: bool
    """True when the handler writes through a unit of work (and so has an inbox)."""

    def __init__(
        self,
        consumer: _Consumer,
        name: str,
        event_type: type[Any],
        handler: Callable[..., Any],
        retry: RetryPolicy,
        uses_uow: bool,
    ) -> None:
        self._consumer = consumer
        self.name = name
        self.event_type = event_type
        self.handler = handler
        self.retry = retry
        self.uses_uow = uses_uow

    def status(self) -> SubscriberStatus:
        """Where this subscriber stands (see :class:`SubscriberStatus`)."""
        relay = self._consumer.relay
        return subscriber_status(relay.database, relay.dlq, self.name)[0]

    def __repr__(self) -> str:
        return f"<DurableSubscriber {self.name} to {self.event_type.__qualname__}>"


class _Outcome:
    """How a delivery ended: ``ok``, ``skipped`` (inbox), or ``failed`` with the error."""

    __slots__ = ("error", "finished", "first_failed_at", "kind")

    def __init__(self) -> None:
        self.kind = "failed"
        self.error: Exception | None = None
        self.first_failed_at: float | None = None
        self.finished = False  # the finish hook committed with the handler's work


class Relay:
    """Delivers committed events to durable subscribers: one thread per subscriber.

    :param database: the SQLite file holding the events and the delivery tables.
    :param codec: decodes stored events (its registry decides which are of interest).
    :param dlq: where messages go when their retries are exhausted.
    :param clock: decides when delayed retries are due (default: the system clock).
    :param scheduler: wakes subscribers when a delayed retry falls due (default: a new one
        on ``clock``, closed with the relay).
    :param metrics: delivery hooks (see :mod:`eventlite.metrics`).
    :param poll_interval: seconds between looks for commits of other processes and for
        operators' retries of dead letters.
    :param batch_size: events read from the log per query.
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
        database: Database,
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
    ) -> None:
        if not (isinstance(poll_interval, (int, float)) and poll_interval > 0):
            raise ValueError(f"poll_interval must be seconds > 0, got {poll_interval!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.database = database
        """The SQLite file."""
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
        """Events read per query."""
        self.checkpoint_interval = float(checkpoint_interval)
        """Seconds a plain subscriber's progress may stay unwritten."""
        self.inbox = Inbox(database, clock=self.clock)
        """Message ids handled by subscribers that write through a unit of work."""
        self.inbox_retention = inbox_retention
        """Seconds inbox marks are kept, or None."""
        self._lock = threading.Lock()
        self._consumers: dict[str, _Consumer] = {}
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
        start: Start = "beginning",
        on_pass: Callable[[], bool] | None = None,
    ) -> DurableSubscriber:
        """Add a durable subscriber and start its thread.

        ``call`` is how it is invoked (see :data:`DeliveryCall`); ``uses_uow`` says that
        ``call`` runs ``finish`` in its own commit. ``start`` says where a subscriber new to
        the file begins: at the ``"beginning"`` of the log (every event ever committed) or
        at its ``"end"`` (only events committed from now on); a known subscriber resumes at
        its checkpoint. ``on_pass()``, when given, runs in the subscriber's thread at the
        start of every pass (those of :meth:`drain` too), before new events are read: work
        the subscriber owns besides the log, such as recording a process manager's due
        timeouts; it returns whether it did something (then another pass follows). Raises
        ``ValueError`` for a name already in use in this relay, ``RuntimeError`` after
        :meth:`close`.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a durable subscriber needs a non-empty name, got {name!r}")
        if start not in ("beginning", "end"):
            raise ValueError(f"start must be 'beginning' or 'end', got {start!r}")
        policy = retry if retry is not None else DEFAULT_RETRY
        with self._lock:
            if self._closed:
                raise RuntimeError("the relay is closed")
            if name in self._consumers:
                raise ValueError(
                    f"a durable subscriber named {name!r} already exists; each needs its own "
                    "name (the name keys its checkpoint in the file)"
                )
            consumer = _Consumer(self, name, event_type, call, uses_uow, policy, on_pass)
            consumer.load(start)
            sub = DurableSubscriber(
                consumer,
                name,
                event_type,
                handler if handler is not None else call,
                policy,
                uses_uow,
            )
            self._consumers = {**self._consumers, name: consumer}
            consumer.start()
            self._idents = frozenset(
                c.thread.ident for c in self._consumers.values() if c.thread.ident is not None
            )
        return sub

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the subscribers this relay delivers to, in the order added."""
        return tuple(self._consumers)

    def subscriptions(self) -> list[tuple[str, type[Any]]]:
        """``(name, event type)`` of every subscriber this relay delivers to, in the order
        added (a process manager's event type stands for all the types it handles)."""
        return [(c.name, c.event_type) for c in self._consumers.values()]

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
        """The status of every durable subscriber known to the file, sorted by name."""
        return subscriber_status(self.database, self.dlq)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop every subscriber's thread after the message it is handling, write the
        checkpoints, and stop the scheduler (if the relay made it). Idempotent. Returns
        False if a thread was still busy after ``timeout`` seconds."""
        with self._lock:
            self._closed = True
            consumers = list(self._consumers.values())
        for consumer in consumers:
            consumer.stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = True
        for consumer in consumers:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            consumer.thread.join(remaining)
            finished = finished and not consumer.thread.is_alive()
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
        return f"<Relay {self.database.path!r}: {', '.join(self._consumers) or 'no subscribers'}>"


class _Consumer:
    """One durable subscriber's thread, cursor and bookkeeping."""

    def __init__(
        self,
        relay: Relay,
        name: str,
        event_type: type[Any],
        call: DeliveryCall,
        uses_uow: bool,
        policy: RetryPolicy,
        on_pass: Callable[[], bool] | None = None,
    ) -> None:
        self.relay = relay
        self.name = name
        self.event_type = event_type
        self.call = call
        self.uses_uow = uses_uow
        self.policy = policy
        self.on_pass = on_pass
        self.db = relay.database
        self.dlq = relay.dlq
        self.clock = relay.clock
        self.metrics = relay.metrics
        self.position = 0  # every event up to here is settled (in memory)
        self.committed = 0  # ... and up to here the file says so
        self.retry_keys: set[str] = set()  # keys with rows in delivery_retries
        self.interest: dict[str, bool] = {}
        self.cv = threading.Condition(threading.Lock())
        self.woken = True  # a first pass at once: the log may hold a backlog
        self.flushed = time.monotonic()
        self.last_full = 0.0
        self.reports_lag = type(self.metrics).lag is not DeliveryMetrics.lag
        self.stopping = False
        self.requested = 0
        self.completed = 0
        self.thread = threading.Thread(target=self.run, name=f"eventlite-relay-{name}", daemon=True)

    # -- life ---------------------------------------------------------------------------

    def load(self, start: Start) -> None:
        """Create or read the checkpoint; find pending retries and set their alarms."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            first = 0
            if start == "end":
                first = int(tx.execute(_HEAD).fetchone()[0] or 0)
            tx.execute(
                "INSERT OR IGNORE INTO subscriber_checkpoints (name, position, updated_at) "
                "VALUES (?, ?, ?)",
                (self.name, first, now),
            )
            self.position = self.committed = self._read_checkpoint(tx.conn)
            self.retry_keys = {
                row[0]
                for row in tx.execute(
                    "SELECT DISTINCT key FROM delivery_retries WHERE subscriber = ?",
                    (self.name,),
                )
            }
            due = tx.execute(
                "SELECT min(due_at) FROM delivery_retries WHERE subscriber = ?", (self.name,)
            ).fetchone()[0]
        if due is not None:
            self.relay.scheduler.call_at(due, self.wake)

    def _read_checkpoint(self, conn: sqlite3.Connection) -> int:
        row = conn.execute(
            "SELECT position FROM subscriber_checkpoints WHERE name = ?", (self.name,)
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        with self.cv:
            if not self.woken:
                self.woken = True
                self.cv.notify()

    def stop(self) -> None:
        with self.cv:
            self.stopping = True
            self.cv.notify_all()

    def request(self) -> int:
        """A ticket for one full pass from now, for :meth:`Relay.drain`."""
        with self.cv:
            self.requested += 1
            self.cv.notify_all()
            return self.requested

    def wait_for(self, ticket: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cv:
            while self.completed < ticket:
                if self.stopping or not self.thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.cv.wait(remaining)
        return True

    def run(self) -> None:
        relay = self.relay
        full = True  # the first pass also looks for dead letters released for retry
        while True:
            with self.cv:
                if self.stopping:
                    break
                if not self.woken and self.requested == self.completed:
                    timeout = relay.poll_interval
                    if self.position > self.committed:
                        due = self.flushed + relay.checkpoint_interval - time.monotonic()
                        timeout = max(0.0, min(timeout, due))
                    full = not self.cv.wait(timeout) or full
                if self.stopping:
                    break
                self.woken = False
                ticket = self.requested
                # A full pass on a poll, a drain, and at least every poll interval even
                # while commits keep waking the thread (so operators' retries get seen).
                full = (
                    full
                    or ticket > self.completed
                    or time.monotonic() - self.last_full >= relay.poll_interval
                )
            if full:
                self.last_full = time.monotonic()
            try:
                while self.work(full) and not self.stopping:
                    pass
                if ticket > self.completed or (
                    time.monotonic() - self.flushed >= relay.checkpoint_interval
                ):
                    self.flush()
                if self.reports_lag:
                    head = self.db.read_connection().execute(_HEAD).fetchone()[0] or 0
                    self._metric("lag", self.name, max(0, int(head) - self.position))
                relay._maintain()
                full = False
            except _CheckpointMoved:
                self._reload()
                log.warning(
                    "durable subscriber %s: its checkpoint was moved by another process (is "
                    "it running twice?); resuming from position %d",
                    self.name,
                    self.position,
                )
                continue
            except Exception:
                log.exception(
                    "durable subscriber %s: delivery failed; trying again in %s s from its "
                    "checkpoint",
                    self.name,
                    relay.poll_interval,
                )
                with suppress(Exception):
                    self._reload()
                with self.cv:
                    if not self.stopping:
                        self.cv.wait(relay.poll_interval)
                continue
            with self.cv:
                if ticket > self.completed:
                    self.completed = ticket
                    self.cv.notify_all()
        with suppress(Exception):
            self.flush()

    def _reload(self) -> None:
        """Take the checkpoint and the held keys from the file again, after a failure or
        another process's move: what was settled only in memory is looked at again."""
        conn = self.db.read_connection()
        try:
            self.position = self.committed = self._read_checkpoint(conn)
            self.retry_keys = {
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT key FROM delivery_retries WHERE subscriber = ?",
                    (self.name,),
                )
            }
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading a checkpoint", self.db.path) from exc

    def work(self, full: bool) -> bool:
        """One pass: operators' retries (on a ``full`` pass: a poll, a drain), due delayed
        retries, the subscriber's own ``on_pass`` work, new events. True if it did anything
        (so another pass may find more)."""
        did = full and self.redeliver_dead_letters()
        did = self.fire_due_retries() or did
        if self.on_pass is not None:
            did = self.on_pass() or did
        return self.deliver_new() or did

    # -- the log ------------------------------------------------------------------------

    def deliver_new(self) -> bool:
        """Settle one page of events after the checkpoint."""
        try:
            rows = (
                self.db.read_connection()
                .execute(_PAGE, (self.position, self.relay.batch_size))
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading events", self.db.path) from exc
        if not rows:
            return False
        dlq_active = self.dlq.count(self.name) > 0
        blocked: dict[str, bool] = {}
        try:
            for row in rows:
                if self.stopping:
                    break
                position, key, type_name = row[0], row[1], row[4]
                interest = self._interested(type_name)
                if interest is False:
                    self.position = position
                    continue
                if interest is None:
                    self._dead_letter_unknown(row)
                    continue
                if key in self.retry_keys:
                    self._park_behind_retry(row)
                    continue
                if dlq_active:
                    is_blocked = blocked.get(key)
                    if is_blocked is None:
                        is_blocked = blocked[key] = self.dlq.is_blocked(self.name, key)
                    if is_blocked:
                        self._park_in_dlq(row)
                        continue
                try:
                    env = self._decode(row)
                except MessageError as exc:
                    self._dead_letter_row(row, exc)
                    dlq_active = True
                    blocked[key] = True
                    continue
                if not self._deliver_from_log(env):
                    dlq_active = True
                    blocked[key] = True
        finally:
            if self.position - self.committed >= self.relay.batch_size:
                self.flush()
        return True

    def _interested(self, type_name: str) -> bool | None:
        """Whether the subscriber takes this type; None for a name the registry lacks."""
        known = self.interest.get(type_name)
        if known is not None:
            return known
        try:
            entry = self.relay.codec.registry.by_name(type_name)
        except UnknownMessageType:
            return None
        known = self.interest[type_name] = issubclass(entry.cls, self.event_type)
        return known

    def _deliver_from_log(self, env: Envelope) -> bool:
        """Deliver one event in log order; False when it went to the DLQ."""
        position = env.position
        assert position is not None
        if self.uses_uow and self.relay.inbox.contains(self.name, env.id):
            self.position = position
            self.relay._count()
            return True

        def finish(tx: Transaction) -> None:
            self._mark(tx, env)
            self._move(tx, position)

        outcome = self._attempt(env, self.policy.max_attempts, finish)
        self.relay._count()
        if outcome.kind != "failed":
            self.position = position
            if outcome.finished:
                self.committed = position
            elif outcome.kind == "skipped":
                self._adopt_checkpoint(position)
            return True
        error = outcome.error
        assert error is not None and outcome.first_failed_at is not None
        key = env.stream_id
        assert key is not None
        if self.policy.delayed_attempts > 0:
            now = self.clock.now()
            delay = self.policy.retry_delay(1)
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO delivery_retries (subscriber, position, key, attempts, "
                    "due_at, first_failed_at, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        self.name,
                        position,
                        key,
                        self.policy.max_attempts,
                        now + delay,
                        outcome.first_failed_at,
                        _describe(error),
                    ),
                )
                self._move(tx, position)
            self.position = self.committed = position
            self.retry_keys.add(key)
            self.relay.scheduler.call_at(now + delay, self.wake)
            self._metric("retry_scheduled", self.name, env, 1, delay)
            log.warning(
                "durable subscriber %s failed %d time(s) on %s at position %d (%s); "
                "retrying in %.3g s, stream %r held behind it",
                self.name,
                self.policy.max_attempts,
                env.type,
                position,
                _describe(error),
                delay,
                key,
            )
            return True
        with self.db.transaction() as tx:
            self._dead_letter(env, error, self.policy.max_attempts, outcome.first_failed_at)
            self._move(tx, position)
        self.position = self.committed = position
        return False

    def _park_behind_retry(self, row: tuple[Any, ...]) -> None:
        position, key = row[0], row[1]
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO delivery_retries (subscriber, position, key, attempts) "
                "VALUES (?, ?, ?, 0)",
                (self.name, position, key),
            )
            self._move(tx, position)
        self.position = self.committed = position
        self.relay._count()
        self._metric("parked", self.name, position, key)

    def _park_in_dlq(self, row: tuple[Any, ...]) -> None:
        position, key = row[0], row[1]
        with self.db.transaction() as tx:
            self._park_row(row)
            self._move(tx, position)
        self.position = self.committed = position
        self.relay._count()
        self._metric("parked", self.name, position, key)

    def _park_row(self, row: tuple[Any, ...]) -> None:
        """Park one stored event in the DLQ behind the dead letter of its stream."""
        try:
            what: Envelope | str = self._decode(row)
        except MessageError:
            what = _raw(row)
        self.dlq.park(self.name, what, key=row[1], position=row[0], type_name=row[4])

    def _dead_letter_unknown(self, row: tuple[Any, ...]) -> None:
        """A stored event whose type name the registry does not know: dead-letter the raw
        row without a key. Nothing says it is for this subscriber, so it must not hold
        its stream (a subscriber skips unwanted types by name); the entry is kept so an
        operator sees the missing registration, and retrying it once the class is
        registered delivers it if it is of this subscriber's type."""
        position, key, type_name = row[0], row[1], row[4]
        error = UnknownMessageType(type_name, position)
        with self.db.transaction() as tx:
            self._add_unknown(row, error)
            self._move(tx, position)
        self.position = self.committed = position
        self.relay._count()
        self._metric("dead_lettered", self.name, position, error)
        log.error(
            "durable subscriber %s: the stored event at position %d (stream %r) has a type "
            "this app does not know (%s); dead-lettered without holding its stream",
            self.name,
            position,
            key,
            error,
        )

    def _add_unknown(self, row: tuple[Any, ...], error: MessageError) -> None:
        """Add a raw row of an unknown type to the DLQ with no key (joins the caller's
        transaction)."""
        self.dlq.add(
            self.name,
            _raw(row),
            key=None,
            error=error,
            attempts=1,
            position=row[0],
            type_name=row[4],
            message_id=row[3],
        )

    def _dead_letter_row(self, row: tuple[Any, ...], error: MessageError) -> None:
        """A stored event that cannot be decoded: dead-letter the raw row, with why."""
        position, key = row[0], row[1]
        with self.db.transaction() as tx:
            self.dlq.add(
                self.name,
                _raw(row),
                key=key,
                error=error,
                attempts=1,
                position=position,
                type_name=row[4],
                message_id=row[3],
            )
            self._move(tx, position)
        self.position = self.committed = position
        self.relay._count()
        self._metric("dead_lettered", self.name, position, error)
        log.error(
            "durable subscriber %s: the stored event at position %d cannot be decoded "
            "(%s); dead-lettered, stream %r held behind it",
            self.name,
            position,
            error,
            key,
        )

    def _dead_letter(
        self, env: Envelope, error: Exception, attempts: int, first_failed_at: float
    ) -> DeadLetter:
        """Add ``env`` to the DLQ (joins the caller's transaction)."""
        letter = self.dlq.add(
            self.name,
            env,
            key=env.stream_id,
            error=error,
            attempts=attempts,
            first_failed_at=to_datetime(first_failed_at),
            position=env.position,
        )
        self._metric("dead_lettered", self.name, env.position, error)
        log.error(
            "durable subscriber %s failed %d time(s) on %s at position %s; dead-lettered "
            "as #%d, stream %r held behind it: %s",
            self.name,
            attempts,
            env.type,
            env.position,
            letter.id,
            env.stream_id,
            _describe(error),
        )
        return letter

    def flush(self) -> None:
        """Write the in-memory checkpoint to the file, if it moved."""
        if self.position > self.committed:
            position = self.position
            with self.db.transaction() as tx:
                self._move(tx, position)
            self.committed = position
        self.flushed = time.monotonic()

    def _adopt_checkpoint(self, position: int) -> None:
        """The inbox skipped the message at ``position``: an earlier attempt's unit of work
        committed (inbox mark and checkpoint together) before an exception surfaced. If
        the file's checkpoint is at ``position``, that commit moved it: take it as ours,
        so the next move's compare-and-set does not take it for another process's."""
        try:
            stored = self._read_checkpoint(self.db.read_connection())
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading a checkpoint", self.db.path) from exc
        if stored == position:
            self.committed = position

    def _move(self, tx: Transaction, position: int) -> None:
        cursor = tx.execute(_MOVE, (position, self.clock.now(), self.name, self.committed))
        if cursor.rowcount != 1:
            raise _CheckpointMoved()

    def _mark(self, tx: Transaction, env: Envelope) -> None:
        if not self.relay.inbox.mark(tx, self.name, env.id):
            raise _AlreadyHandled()

    # -- handling -----------------------------------------------------------------------

    def _attempt(self, env: Envelope, attempts: int, finish: Finish) -> _Outcome:
        """Call the handler up to ``attempts`` times at once, until it succeeds."""
        outcome = _Outcome()
        name = self.name

        def finishing(tx: Transaction) -> None:
            finish(tx)
            outcome.finished = True

        for attempt in range(1, attempts + 1):
            outcome.finished = False
            started = time.perf_counter()
            try:
                with message_context(env):
                    self.call(env.message, finishing if self.uses_uow else None)
            except _AlreadyHandled:
                outcome.kind = "skipped"
                return outcome
            except _CheckpointMoved:
                raise
            except Exception as exc:
                if outcome.first_failed_at is None:
                    outcome.first_failed_at = self.clock.now()
                outcome.error = exc
                self._metric("failed", name, env, attempt, exc)
                log.warning(
                    "durable subscriber %s failed attempt %d of %d on %s %s (%s)",
                    name,
                    attempt,
                    attempts,
                    env.type,
                    env.id,
                    _describe(exc),
                )
                continue
            self._metric("handled", name, env, time.perf_counter() - started)
            outcome.kind = "ok"
            if self.uses_uow and not outcome.finished:
                # The handler committed its unit of work early (uow.commit() inside) and the
                # final commit had nothing left: write the bookkeeping on its own.
                with suppress(_AlreadyHandled), self.db.transaction() as tx:
                    finish(tx)
                outcome.finished = True
            return outcome
        return outcome

    def _metric(self, hook: str, *args: Any) -> None:
        try:
            getattr(self.metrics, hook)(*args)
        except Exception:
            logging.getLogger("eventlite.metrics").exception("metrics hook %s failed", hook)

    # -- delayed retries ----------------------------------------------------------------

    def fire_due_retries(self) -> bool:
        """Release the streams left without a head (see :data:`_STRANDED`), then run the
        delayed retries that are due by the clock."""
        if not self.retry_keys:
            return False
        now = self.clock.now()
        try:
            conn = self.db.read_connection()
            stranded = [row[0] for row in conn.execute(_STRANDED, (self.name,))]
            heads = conn.execute(
                "SELECT position, key, attempts, first_failed_at FROM delivery_retries "
                "WHERE subscriber = ? AND due_at IS NOT NULL AND due_at <= ? "
                "ORDER BY due_at, position",
                (self.name, now),
            ).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading delayed retries", self.db.path) from exc
        for key in stranded:
            if self.stopping:
                return True
            log.warning(
                "durable subscriber %s: stream %r still holds messages behind a settled "
                "retry (an earlier release stopped part-way); releasing them",
                self.name,
                key,
            )
            self._release(key)
        for position, key, attempts, first_failed_at in heads:
            if self.stopping:
                break
            self._retry_head(position, key, attempts, first_failed_at)
        return bool(stranded or heads)

    def _load(self, position: int) -> tuple[Envelope | None, tuple[Any, ...], MessageError | None]:
        """The stored event at ``position``: (envelope, row, None), or (None, row, why)
        when it cannot be decoded."""
        try:
            row = self.db.read_connection().execute(_ONE, (position,)).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading an event", self.db.path) from exc
        if row is None:
            raise MessageDecodeError("?", "the event is missing from the log", position)
        try:
            return self._decode(row), row, None
        except MessageError as exc:
            return None, row, exc

    def _retry_head(self, position: int, key: str, attempts: int, first_failed_at: float) -> None:
        """One delayed retry of the message at ``position``, the head of ``key``."""
        env, row, why = self._load(position)
        if env is None:
            assert why is not None
            if self._interested(row[4]) is None:
                self._drop_unknown_retry(row, why)
                self._release(key)
                return
            self._exhaust_undecodable(key, row, why)
            return

        def finish(tx: Transaction) -> None:
            self._mark(tx, env)
            self._forget_retry(tx, position)

        outcome = self._attempt(env, 1, finish)
        self.relay._count()
        if outcome.kind == "skipped" or (outcome.kind == "ok" and not outcome.finished):
            with self.db.transaction() as tx:
                self._forget_retry(tx, position)
        if outcome.kind != "failed":
            self._release(key)
            return
        error = outcome.error
        assert error is not None
        made = attempts + 1
        retry = made - self.policy.max_attempts  # the delayed retry just made
        if retry < self.policy.delayed_attempts:
            self._schedule(env, position, made, retry + 1, error)
            return
        self._exhaust(key, env, error, made, first_failed_at)

    def _schedule(
        self, env: Envelope, position: int, attempts: int, retry: int, error: Exception
    ) -> None:
        now = self.clock.now()
        delay = self.policy.retry_delay(retry)
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE delivery_retries SET attempts = ?, due_at = ?, error = ?, "
                "first_failed_at = coalesce(first_failed_at, ?) "
                "WHERE subscriber = ? AND position = ?",
                (attempts, now + delay, _describe(error), now, self.name, position),
            )
        self.relay.scheduler.call_at(now + delay, self.wake)
        self._metric("retry_scheduled", self.name, env, retry, delay)
        log.warning(
            "durable subscriber %s: attempt %d on %s at position %d failed (%s); delayed "
            "retry %d of %d in %.3g s",
            self.name,
            attempts,
            env.type,
            position,
            _describe(error),
            retry,
            self.policy.delayed_attempts,
            delay,
        )

    def _forget_retry(self, tx: Transaction, position: int) -> None:
        tx.execute(
            "DELETE FROM delivery_retries WHERE subscriber = ? AND position = ?",
            (self.name, position),
        )

    def _release(self, key: str) -> None:
        """The head of ``key`` is settled: deliver the messages held behind it, in order,
        until one fails (it becomes the new head) or none is left."""
        try:
            positions = [
                row[0]
                for row in self.db.read_connection().execute(
                    "SELECT position FROM delivery_retries WHERE subscriber = ? AND key = ? "
                    "ORDER BY position",
                    (self.name, key),
                )
            ]
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading held messages", self.db.path) from exc
        for position in positions:
            if self.stopping:
                return
            env, row, why = self._load(position)
            if env is None:
                assert why is not None
                if self._interested(row[4]) is None:
                    self._drop_unknown_retry(row, why)
                    continue
                self._exhaust_undecodable(key, row, why)
                return
            if self.uses_uow and self.relay.inbox.contains(self.name, env.id):
                with self.db.transaction() as tx:
                    self._forget_retry(tx, position)
                continue

            def finish(tx: Transaction, env: Envelope = env, position: int = position) -> None:
                self._mark(tx, env)
                self._forget_retry(tx, position)

            outcome = self._attempt(env, self.policy.max_attempts, finish)
            self.relay._count()
            if outcome.kind == "skipped" or (outcome.kind == "ok" and not outcome.finished):
                with self.db.transaction() as tx:
                    self._forget_retry(tx, position)
            if outcome.kind != "failed":
                continue
            error = outcome.error
            assert error is not None
            if self.policy.delayed_attempts > 0:
                self._schedule(env, position, self.policy.max_attempts, 1, error)
            else:
                first = outcome.first_failed_at
                assert first is not None
                self._exhaust(key, env, error, self.policy.max_attempts, first)
            return
        self.retry_keys.discard(key)

    def _exhaust(
        self, key: str, env: Envelope, error: Exception, attempts: int, first_failed_at: float
    ) -> None:
        """Retries are spent: the head goes to the DLQ, the messages behind it are parked
        there behind it, in order, and the key's retry rows are deleted, atomically."""
        position = env.position
        with self.db.transaction() as tx:
            self._dead_letter(env, error, attempts, first_failed_at)
            self._park_followers(tx, key, position)
        self.retry_keys.discard(key)

    def _exhaust_undecodable(self, key: str, row: tuple[Any, ...], why: MessageError) -> None:
        """A held message can no longer be decoded (the registry changed): dead-letter it
        raw, and park what was behind it."""
        position = row[0]
        with self.db.transaction() as tx:
            self.dlq.add(
                self.name,
                _raw(row),
                key=key,
                error=why,
                attempts=1,
                position=position,
                type_name=row[4],
                message_id=row[3],
            )
            self._park_followers(tx, key, position)
        self._metric("dead_lettered", self.name, position, why)
        self.retry_keys.discard(key)

    def _drop_unknown_retry(self, row: tuple[Any, ...], why: MessageError) -> None:
        """A held message whose type the registry no longer knows (parked before that
        rule, or the registry changed): dead-letter it without a key, like one read from
        the log, and let the stream go on."""
        with self.db.transaction() as tx:
            self._add_unknown(row, why)
            self._forget_retry(tx, row[0])
        self.relay._count()
        self._metric("dead_lettered", self.name, row[0], why)

    def _park_followers(self, tx: Transaction, key: str, after: int | None) -> None:
        followers = [
            r[0]
            for r in tx.execute(
                "SELECT position FROM delivery_retries WHERE subscriber = ? AND key = ? "
                "AND position > ? ORDER BY position",
                (self.name, key, after or 0),
            )
        ]
        for position in followers:
            row = tx.execute(_ONE, (position,)).fetchone()
            if row is not None:
                self._park_row(row)
        tx.execute(
            "DELETE FROM delivery_retries WHERE subscriber = ? AND key = ?", (self.name, key)
        )

    # -- dead letters an operator retried -----------------------------------------------

    def redeliver_dead_letters(self) -> bool:
        """Deliver the entries an operator released for retry, in order; a failure puts
        its key back to sleep."""
        entries = self.dlq.claim_retries(self.name)
        if not entries:
            return False
        failed: set[str] = set()
        for entry in entries:
            if self.stopping:
                break
            if entry.key is not None and entry.key in failed:
                continue
            if not self._redeliver(entry) and entry.key is not None:
                failed.add(entry.key)
        return True

    def _redeliver(self, entry: DeadLetter) -> bool:
        try:
            env = self._entry_envelope(entry)
        except MessageError as exc:
            with suppress(DeadLetterNotFound):
                self.dlq.fail_again(entry.id, exc)
            self._metric("dead_lettered", self.name, entry.position, exc)
            return False
        self.relay._count()
        if self.uses_uow and self.relay.inbox.contains(self.name, env.id):
            with suppress(DeadLetterNotFound):
                self.dlq.resolve(entry.id)
            return True
        if not isinstance(env.message, self.event_type):
            # Dead-lettered raw before its type was known, and not this subscriber's.
            with suppress(DeadLetterNotFound):
                self.dlq.resolve(entry.id)
            return True

        def finish(tx: Transaction) -> None:
            self._mark(tx, env)
            try:
                self.dlq.resolve(entry.id)
            except DeadLetterNotFound:
                raise _AlreadyHandled() from None  # an operator discarded it meanwhile

        outcome = self._attempt(env, self.policy.max_attempts, finish)
        if outcome.kind == "failed":
            assert outcome.error is not None
            with suppress(DeadLetterNotFound):
                self.dlq.fail_again(entry.id, outcome.error)
            self._metric("dead_lettered", self.name, env.position, outcome.error)
            return False
        if not outcome.finished:
            with suppress(DeadLetterNotFound):
                self.dlq.resolve(entry.id)
        log.info(
            "durable subscriber %s: dead letter #%d (%s at position %s) redelivered",
            self.name,
            entry.id,
            env.type,
            env.position,
        )
        return True

    def _entry_envelope(self, entry: DeadLetter) -> Envelope:
        """The envelope of a dead letter: for a stored event, read again from the log (so
        a type registered since it failed now decodes)."""
        if entry.position is not None:
            env, _, why = self._load(entry.position)
            if env is not None:
                return env
            assert why is not None
            raise why
        return entry.envelope(self.relay.codec)

    # -- rows ---------------------------------------------------------------------------

    def _decode(self, row: tuple[Any, ...]) -> Envelope:
        return decode_row(self.relay.codec, row)


def _raw(row: tuple[Any, ...]) -> str:
    """A stored row as JSON text, kept in the DLQ when the row cannot be decoded."""
    pos, sid, ver, eid, typ, sv, data, corr, caus, user, hdrs, ts = row
    return json.dumps(
        {
            "position": pos,
            "stream_id": sid,
            "version": ver,
            "id": eid,
            "type": typ,
            "schema_version": sv,
            "data": data,
            "correlation_id": corr,
            "causation_id": caus,
            "user_id": user,
            "headers": hdrs,
            "timestamp_us": ts,
        },
        ensure_ascii=False,
    )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
