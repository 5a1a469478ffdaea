"""The pool of worker threads that runs background subscribers.

Each worker has its own bounded queue of ``(envelope, subscribers)``. Events with the same
ordering key go to the same worker, so each subscriber sees them in publish order; events
without a key are spread over the workers. ``enqueue`` waits while the queue it needs is
full, except on a worker thread (workers waiting on each other would deadlock).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from ..envelope import Envelope, _current
from ..exceptions import BusClosed
from ._subscriptions import Pair, Subscription

_set = _current.set
_reset = _current.reset
_get_ident = threading.get_ident

Report = Callable[[Envelope, Subscription, BaseException], None]
"""How a worker reports a subscriber failure: ``report(envelope, subscription, exc)``."""


@attrs.frozen
class WorkerStats:
    """A snapshot of one background worker, from :meth:`MessageBus.worker_stats`."""

    queued: int
    """Deliveries waiting in the worker's queue (never more than ``queue_size``, except for
    events published by handlers running on the workers)."""
    pending: int
    """Deliveries queued or being handled: the worker's lag."""
    blocked_publishers: int
    """Threads waiting in ``publish`` for room in this worker's queue."""


class _Worker:
    """One background thread with its own bounded queue of ``(envelope, subscribers)``."""

    __slots__ = (
        "lock",
        "not_empty",
        "not_full",
        "idle",
        "queue",
        "size",
        "enqueued",
        "done",
        "sleeping",
        "blocked",
        "drainers",
        "stop",
        "stopped",
        "thread",
    )

    def __init__(self, size: int) -> None:
        self.lock = threading.Lock()
        self.not_empty = threading.Condition(self.lock)
        self.not_full = threading.Condition(self.lock)
        self.idle = threading.Condition(self.lock)
        self.queue: deque[tuple[Envelope, tuple[Pair, ...]]] = deque()
        self.size = size
        # Counted under the lock; the worker is idle when done == enqueued.
        self.enqueued = 0
        self.done = 0
        # Who waits on which condition, so nobody pays for a notify that wakes no one.
        self.sleeping = False
        self.blocked = 0
        self.drainers = 0
        self.stop = False
        self.stopped = False
        self.thread: threading.Thread | None = None


class WorkerPool:
    """``count`` worker threads, started at once, each with a queue of ``queue_size``."""

    def __init__(self, count: int, queue_size: int, report: Report) -> None:
        workers = tuple(_Worker(queue_size) for _ in range(count))
        self._report = report
        self._spread = itertools.count()
        idents = set()
        for i, w in enumerate(workers):
            thread = threading.Thread(
                target=self._work, args=(w,), name=f"eventlite-bus-worker-{i}", daemon=True
            )
            w.thread = thread
            thread.start()
            assert thread.ident is not None
            idents.add(thread.ident)
        self.workers = workers
        self.idents: frozenset[int] = frozenset(idents)
        """The thread idents of the workers."""

    def on_worker(self) -> bool:
        """True when called from one of the pool's threads."""
        return _get_ident() in self.idents

    def enqueue(self, env: Envelope, subs: tuple[Pair, ...], key: Any) -> None:
        """Queue ``env`` for ``subs`` on the worker of ``key``; wait while its queue is full.

        Raises :class:`BusClosed` once the worker has stopped.
        """
        workers = self.workers
        if key is None:
            w = workers[next(self._spread) % len(workers)]
        else:
            w = workers[hash(key) % len(workers)]
        with w.lock:
            if len(w.queue) >= w.size:
                self._wait_for_room(w)
            if w.stopped:
                raise BusClosed(
                    f"cannot publish {env.type}: this MessageBus was closed and its worker "
                    "threads have stopped"
                )
            w.queue.append((env, subs))
            w.enqueued += 1
            if w.sleeping:
                w.not_empty.notify()

    def _wait_for_room(self, w: _Worker) -> None:
        """Wait, holding ``w.lock``, until ``w``'s queue has room."""
        if _get_ident() in self.idents:
            # Workers waiting on each other's full queues would deadlock; what handlers
            # publish is bounded by what they were given, so let it in.
            return
        w.blocked += 1
        try:
            while len(w.queue) >= w.size and not w.stopped:
                w.not_full.wait()
        finally:
            w.blocked -= 1

    def drain(self, timeout: float | None) -> bool:
        """Wait until every worker is idle at once; False if ``timeout`` seconds passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # A worker's counts only grow; two passes that read the same counts, all idle, show
        # a moment when every worker was idle at once.
        previous: list[int] | None = None
        while True:
            counts: list[int] = []
            for w in self.workers:
                with w.lock:
                    while w.done != w.enqueued:
                        remaining = None
                        if deadline is not None:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                return False
                        w.drainers += 1
                        try:
                            w.idle.wait(remaining)
                        finally:
                            w.drainers -= 1
                    counts.append(w.enqueued)
            if counts == previous:
                return True
            previous = counts

    def stop(self, deadline: float | None) -> bool:
        """Tell the workers to stop once their queues are empty and join them until
        ``deadline`` (a ``time.monotonic()`` value); True when every thread ended."""
        for w in self.workers:
            with w.lock:
                w.stop = True
                w.not_empty.notify()
        finished = True
        for w in self.workers:
            assert w.thread is not None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            w.thread.join(remaining)
            finished = finished and not w.thread.is_alive()
        return finished

    def stats(self) -> list[WorkerStats]:
        """A snapshot of each worker."""
        stats = []
        for w in self.workers:
            with w.lock:
                stats.append(WorkerStats(len(w.queue), w.enqueued - w.done, w.blocked))
        return stats

    def _work(self, w: _Worker) -> None:
        lock = w.lock
        report = self._report
        while True:
            with lock:
                while not w.queue:
                    if w.stop:
                        w.stopped = True
                        w.not_full.notify_all()
                        return
                    w.sleeping = True
                    w.not_empty.wait()
                    w.sleeping = False
                batch = w.queue
                w.queue = deque()
                if w.blocked:
                    w.not_full.notify_all()
            try:
                for env, subs in batch:
                    message = env._message
                    token = _set(env)
                    for call, sub in subs:
                        if sub._active:
                            try:
                                call(message)
                            except BaseException as exc:
                                # Not only Exception: nothing may end a worker thread.
                                report(env, sub, exc)
                    _reset(token)
            finally:
                with lock:
                    w.done += len(batch)
                    if w.drainers and w.done == w.enqueued:
                        w.idle.notify_all()
