"""The scheduler thread: calls functions when the clock reaches the times they were set for.

Durable timers in eventlite are stored rows (a delayed retry is an entry of the storage's
:class:`~eventlite.store.retries.RetryStore` with its ``due_at``); the row is the truth and
survives a restart. The
:class:`Scheduler` is the alarm clock beside the rows: whoever stores a due row also asks
the scheduler to call it back at that time, and on start-up reloads the alarms of the rows
it finds. Nothing sleeps in a worker thread waiting for a backoff::

    scheduler = Scheduler(clock)
    scheduler.call_at(clock.now() + 30, consumer.wake)   # consumer.wake() runs in 30 s

Times come from a :class:`~eventlite.clock.Clock`. The thread never sleeps longer than
``max_sleep`` real seconds between looks at the clock, so a :class:`~eventlite.clock.
FakeClock` moved by a test is noticed within that time; :meth:`Scheduler.tick` fires what
is due at once, in the caller's thread, for tests that want no waiting at all.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable

from .clock import Clock, SystemClock

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)


class Scheduler:
    """Calls callbacks at clock times, from one daemon thread started on first use.

    Callbacks run on the scheduler thread one after another, so they must be quick (wake
    a worker, set an event); one that raises is logged and the others still run. With
    ``thread=False`` no thread is started and only :meth:`tick` fires callbacks.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        max_sleep: float = 0.25,
        name: str = "eventlite-scheduler",
        thread: bool = True,
    ) -> None:
        if not (isinstance(max_sleep, (int, float)) and max_sleep > 0):
            raise ValueError(f"max_sleep must be a number of seconds > 0, got {max_sleep!r}")
        self.clock: Clock = clock if clock is not None else SystemClock()
        """Where the scheduler reads the time."""
        self.max_sleep = float(max_sleep)
        """The longest real wait between two looks at the clock."""
        self._name = name
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._use_thread = thread
        self._closed = False

    def call_at(self, when: float, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once the clock reads ``when`` or later (at once if it does
        already). Raises ``RuntimeError`` after :meth:`close`."""
        with self._cv:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            heapq.heappush(self._heap, (when, next(self._seq), callback))
            if self._thread is None and self._use_thread:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cv.notify()

    @property
    def pending(self) -> int:
        """How many callbacks wait for their time."""
        with self._cv:
            return len(self._heap)

    def next_due(self) -> float | None:
        """The earliest time a callback waits for, or None."""
        with self._cv:
            return self._heap[0][0] if self._heap else None

    def tick(self) -> int:
        """Run every callback that is due now, in this thread; returns how many ran."""
        due = self._take_due()
        self._fire(due)
        return len(due)

    def _take_due(self) -> list[Callable[[], object]]:
        now = self.clock.now()
        due: list[Callable[[], object]] = []
        with self._cv:
            while self._heap and self._heap[0][0] <= now:
                due.append(heapq.heappop(self._heap)[2])
        return due

    @staticmethod
    def _fire(callbacks: list[Callable[[], object]]) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("scheduled callback %r failed", callback)

    def _run(self) -> None:
        while True:
            with self._cv:
                if self._closed:
                    return
                if self._heap:
                    wait = min(self._heap[0][0] - self.clock.now(), self.max_sleep)
                else:
                    wait = self.max_sleep
                if wait > 0:
                    self._cv.wait(wait)
                if self._closed:
                    return
            self._fire(self._take_due())

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the thread; callbacks not yet due are dropped (their rows stay). Idempotent."""
        with self._cv:
            self._closed = True
            self._heap.clear()
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<Scheduler {self.pending} pending{state}>"
