"""One durable subscriber's thread: its passes over operators' retries, delayed retries and
the log; the tickets :meth:`Relay.drain` waits for; and its back-off while storage fails."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final

from ..exceptions import StorageError
from ..metrics import DeliveryMetrics
from ..retry import RetryPolicy
from ..store.checkpoints import CheckpointMoved
from ..store.leases import LeaseLost
from ._batch import BatchCall, BatchPass
from ._log import LogPass
from ._redelivery import Redelivery
from ._retries import DelayedRetries
from ._subscriber import DeliveryCall, Subscriber, describe
from ._tenure import Share, Tenure

if TYPE_CHECKING:
    from ._relay import Relay, Start

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "Consumer", "start_required"]

log = logging.getLogger("eventlite.relay")

BACKOFF_FIRST: Final = 0.05
"""Seconds a subscriber waits after its first failed pass (the storage failing)."""
BACKOFF_MAX: Final = 5.0
"""The longest wait between two passes while the storage keeps failing."""


def start_required(name: str, head: int) -> ValueError:
    """The error for a subscriber new to a log that holds events, added without a start."""
    return ValueError(
        f"durable subscriber {name!r} is new and the log is not empty (head position "
        f"{head}): say where it starts, start='beginning' (it is delivered every stored "
        "event) or start='end' (only events committed from now on)"
    )


def backoff(failures: int) -> float:
    """The wait after ``failures`` failed passes in a row: doubling from
    :data:`BACKOFF_FIRST`, at most :data:`BACKOFF_MAX`."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(failures - 1, 16)))


class Consumer:
    """One durable subscriber's thread, its passes and its bookkeeping."""

    def __init__(
        self,
        relay: Relay,
        name: str,
        event_type: type[Any],
        call: DeliveryCall,
        uses_uow: bool,
        policy: RetryPolicy,
        on_pass: Callable[[], bool] | None = None,
        batch: BatchCall | None = None,
        share: Share | None = None,
        segment: tuple[int, int] = (0, 1),
    ) -> None:
        self.relay = relay
        self.sub = sub = Subscriber(relay, name, event_type, call, uses_uow, policy)
        sub.segment, sub.segments = segment
        sub.wake = self.wake
        self.name = name
        self.event_type = event_type
        self.on_pass = on_pass
        self.retries = DelayedRetries(sub)
        self.log: LogPass | BatchPass = (
            LogPass(sub, self.retries) if batch is None else BatchPass(sub, batch)
        )
        self.redelivery = Redelivery(sub)
        self.cv = threading.Condition(threading.Lock())
        self.woken = True  # a first pass at once: the log may hold a backlog
        self.last_full = 0.0
        self.failures = 0  # failed passes in a row
        self._traced: type[BaseException] | None = None  # whose traceback this run logged
        self.reports_lag = type(relay.metrics).lag is not DeliveryMetrics.lag
        self.requested = 0
        self.completed = 0
        # this process's hold on the subscriber's lease (None without leases)
        self.tenure: Tenure | None = None
        leases, ttl = relay.leases, relay.lease_seconds
        if leases is not None and ttl is not None:
            tenure = self.tenure = Tenure(leases, name, relay.owner, ttl, share, segment[0])
            tenure.before_release = self._before_release
            sub.cursor.guard = tenure.check
            sub.cursor.transaction = sub.storage.transaction
        self.thread = threading.Thread(target=self.run, name=f"eventlite-relay-{name}", daemon=True)

    # -- life ---------------------------------------------------------------------------

    def load(self, start: Start | None) -> None:
        """Create or read the checkpoint, find pending retries and set their alarms.

        A subscriber new to a log that holds events must be told where to start; on an
        empty log, or when its checkpoint exists, ``start`` is not needed."""
        sub = self.sub
        store = sub.store
        with sub.storage.transaction():
            checkpoint = sub.cursor.checkpoints.get(self.name)
            if checkpoint is None:
                head = store.head_position()
                if start is None and head > 0:
                    raise start_required(self.name, head)
                first = head if start == "end" else 0
                checkpoint = sub.cursor.checkpoints.create(self.name, first, sub.clock.now())
        sub.cursor.start_at(checkpoint.position)
        self.retries.load()

    def start(self) -> None:
        """Start the thread."""
        self.thread.start()

    def wake(self) -> None:
        """Look at the log now."""
        with self.cv:
            if not self.woken:
                self.woken = True
                self.cv.notify()

    def stop(self) -> None:
        """Stop after the message being handled."""
        with self.cv:
            self.sub.stopping = True
            self.cv.notify_all()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self.sub.stopping

    def request(self) -> int:
        """A ticket for one full pass from now, for :meth:`Relay.drain`."""
        with self.cv:
            self.requested += 1
            self.cv.notify_all()
            return self.requested

    def wait_for(self, ticket: int, timeout: float | None) -> bool:
        """Wait until the pass of ``ticket`` is complete; False on timeout or stop."""
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

    # -- the thread ---------------------------------------------------------------------

    def run(self) -> None:
        relay = self.relay
        sub = self.sub
        cursor = sub.cursor
        full = True  # the first pass also looks for dead letters released for retry
        while True:
            with self.cv:
                if self.stopping:
                    break
                if not self.woken and self.requested == self.completed:
                    timeout = relay.poll_interval
                    if cursor.unsaved:
                        due = cursor.flushed + relay.checkpoint_interval - time.monotonic()
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
            tenure = self.tenure
            if tenure is not None:
                try:
                    held = tenure.hold()
                    if held and tenure.fresh:
                        # taken (over): the storage says where delivery stands
                        sub.pending = None
                        self._recover()
                        tenure.fresh = False
                except StorageError as exc:
                    self._storage_failed(exc)
                    continue
                if not held:
                    # another process delivers to this subscriber: nothing to do here
                    self._complete(ticket)
                    continue
            try:
                while self.work(full) and not self.stopping:
                    pass
                if ticket > self.completed or (
                    time.monotonic() - cursor.flushed >= relay.checkpoint_interval
                ):
                    cursor.flush()
                if self.reports_lag:
                    lag = max(0, sub.store.head_position() - cursor.position)
                    sub.metric("lag", self.name, lag)
                relay._maintain()
            except LeaseLost as lost:
                sub.pending = None
                if self.tenure is not None:
                    self.tenure.drop()
                log.warning(
                    "durable subscriber %s: its lease passed to %s; what this process had "
                    "not committed is left to it",
                    self.name,
                    lost.holder.owner if lost.holder is not None else "nobody",
                )
                with suppress(Exception):
                    self._recover()
                continue
            except CheckpointMoved:
                sub.pending = None
                self._recover()
                log.warning(
                    "durable subscriber %s: its checkpoint was moved by another process (is "
                    "it running twice?); resuming from position %d",
                    self.name,
                    cursor.position,
                )
                continue
            except StorageError as exc:
                self._storage_failed(exc)
                continue
            except Exception as exc:
                self.failures += 1
                delay = backoff(self.failures)
                if self.failures == 1 or type(exc) is not self._traced:
                    self._traced = type(exc)
                    log.exception(
                        "durable subscriber %s: delivery failed; trying again in %.3g s from "
                        "its checkpoint",
                        self.name,
                        delay,
                    )
                else:  # this kind of failure's traceback is in the log already
                    log.error(
                        "durable subscriber %s: delivery failed again (%s); trying again in "
                        "%.3g s from its checkpoint (failure %d in a row)",
                        self.name,
                        describe(exc),
                        delay,
                        self.failures,
                    )
                sub.pending = None
                with suppress(Exception):
                    self._recover()
                self._pause(delay)
                continue
            full = False
            if self.failures:
                log.info(
                    "durable subscriber %s: delivery works again after %d failed passes",
                    self.name,
                    self.failures,
                )
                self.failures = 0
            self._complete(ticket)
        with suppress(Exception):
            cursor.flush()
        if self.tenure is not None:
            with suppress(Exception):
                self.tenure.release()

    def _before_release(self) -> None:
        """Before a segment is given back to the fair share: write its checkpoint. Raises
        (so the segment is kept for now) while a handled message's fate is unrecorded."""
        pending = self.sub.pending
        if pending is not None:
            raise RuntimeError(f"{pending[0]} is not recorded yet")
        self.sub.cursor.flush()

    def _complete(self, ticket: int) -> None:
        """The pass of ``ticket`` is complete (for :meth:`Relay.drain`)."""
        with self.cv:
            if ticket > self.completed:
                self.completed = ticket
                self.cv.notify_all()

    def work(self, full: bool) -> bool:
        """One pass: a write the storage refused last time, operators' retries (on a
        ``full`` pass: a poll, a drain), due delayed retries, the subscriber's own
        ``on_pass`` work, new events. True if it did anything (so another pass may find
        more)."""
        sub = self.sub
        pending = sub.pending
        if pending is not None:
            pending[1]()
            sub.pending = None
            log.info("durable subscriber %s: recorded %s after all", self.name, pending[0])
        did = full and self.redelivery.redeliver()
        did = self.retries.fire_due() or did
        if self.on_pass is not None:
            did = self.on_pass() or did
        return self.log.deliver_new() or did

    def _storage_failed(self, exc: StorageError) -> None:
        """The storage failed under a pass: keep what is settled in memory (nothing is
        handled again), back off, and try again."""
        self.failures += 1
        delay = backoff(self.failures)
        pending = self.sub.pending
        if pending is not None:
            log.warning(
                "durable subscriber %s: could not record %s (%s); trying again in %.3g s, "
                "without running its handler again (failure %d in a row)",
                self.name,
                pending[0],
                describe(exc),
                delay,
                self.failures,
            )
        else:
            log.warning(
                "durable subscriber %s: the storage failed (%s); trying again in %.3g s "
                "(failure %d in a row)",
                self.name,
                describe(exc),
                delay,
                self.failures,
            )
        self._pause(delay)

    def _recover(self) -> None:
        """Take the checkpoint and the held keys from the storage again."""
        self.sub.cursor.reload()
        self.retries.reload()

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` (a back-off): commits and drains do not cut it short, a stop
        does."""
        deadline = time.monotonic() + seconds
        with self.cv:
            while not self.stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cv.wait(remaining)
            self.woken = True
