"""Competing consumer threads over a work queue: :class:`QueueConsumer`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ..envelope import message_context
from ..store.dead_letters import safe_text
from ..store.queues import StaleReceipt
from ._work_queue import Received, WorkQueue, check_seconds

__all__ = ["QueueConsumer", "default_backoff"]

_log = logging.getLogger("eventlite.queue")


def default_backoff(attempt: int) -> float:
    """Seconds before delivery attempt ``attempt`` (2 or more) of a nacked message: 0.1 s,
    doubling, at most 30 s. A :class:`~eventlite.retry.RetryPolicy`'s ``delay`` has the
    same signature and can replace it."""
    return min(30.0, 0.1 * 2.0 ** max(0, attempt - 2))


class QueueConsumer:
    """Competing consumer threads over one :class:`~eventlite.queue.WorkQueue`.

    Each thread receives up to ``prefetch`` messages at a time and, for each, runs
    ``handler(message)`` with the message's envelope current (so messages the handler
    sends are correlated to it). A message whose handler returns is acked at once, before
    the next message of the batch is handled (so a long batch cannot outlast the visibility
    timeout of messages already handled); one whose handler raises is nacked with the
    exception and a delay of ``backoff(receive_count + 1)`` seconds, so after
    ``max_receives`` failures it is dead-lettered. Undecodable messages never reach the
    handler: the receive dead-letters them. An idle thread waits ``poll_interval`` seconds
    between receives, less when a message is sent in this process.

    An error outside the handler (a receive, ack, nack or release that fails, for instance
    because the file stays locked) does not end a thread: it is logged on the
    ``eventlite.queue`` logger with its traceback, the rest of the batch is given back,
    and the thread waits ``poll_interval`` seconds and goes on. Messages it could not
    settle come back after their visibility timeout.

    Prefetched messages wait their turn hidden: once half the visibility timeout has
    passed since the receive (or the last extension), the thread extends the messages of
    its batch not handled yet by another timeout before it runs the next handler. So only
    one handler call has to fit in the visibility timeout, not a whole batch.

    :meth:`stop` lets each thread finish the message it is handling, gives back the rest
    of its batch (visible at once, the receive not counted) and joins the threads. A
    ``with`` block stops on exit.
    """

    def __init__(
        self,
        queue: WorkQueue,
        handler: Callable[[Any], object],
        *,
        threads: int = 2,
        prefetch: int = 10,
        backoff: Callable[[int], float] | None = None,
        poll_interval: float = 0.5,
        visibility_timeout: float | None = None,
    ) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be an int >= 1, got {prefetch!r}")
        self.queue = queue
        """The queue consumed."""
        self.handler = handler
        """Called with each message."""
        self.threads = threads
        """How many threads receive and handle."""
        self.prefetch = prefetch
        """How many messages a thread receives at a time."""
        self.backoff = backoff if backoff is not None else default_backoff
        """Seconds before the next attempt of a failed message, by attempt number."""
        self.poll_interval = check_seconds("poll_interval", poll_interval, positive=True)
        """Real seconds an idle thread waits before receiving again."""
        self.visibility_timeout = visibility_timeout
        """Visibility timeout of its receives (None: the queue's)."""
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._handled = 0
        self._failed = 0

    @property
    def handled(self) -> int:
        """Messages whose handler returned."""
        return self._handled

    @property
    def failed(self) -> int:
        """Handler calls that raised."""
        return self._failed

    @property
    def running(self) -> bool:
        """Whether the threads run (started and not stopped)."""
        return bool(self._workers) and not self._stopping.is_set()

    def start(self) -> None:
        """Start the threads (once)."""
        with self._lock:
            if self._workers:
                raise RuntimeError("this consumer was started already")
            for i in range(self.threads):
                worker = threading.Thread(
                    target=self._run,
                    name=f"eventlite-queue-{self.queue.name}-{i}",
                    daemon=True,
                )
                self._workers.append(worker)
                worker.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking messages, let the running handlers finish, join the threads (up to
        ``timeout`` seconds each). Idempotent."""
        self._stopping.set()
        self.queue._notify()
        for worker in self._workers:
            if worker is not threading.current_thread():
                worker.join(timeout)

    def __enter__(self) -> QueueConsumer:
        if not self._workers:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        queue = self.queue
        while not self._stopping.is_set():
            try:
                received_at = queue.clock.now()
                batch = queue.receive(max=self.prefetch, visibility_timeout=self.visibility_timeout)
            except Exception:
                _log.exception("queue %r: receive failed; trying again", queue.name)
                self._stopping.wait(self.poll_interval)
                continue
            if not batch:
                if not self._stopping.is_set():
                    queue.wait(self.poll_interval)
                continue
            try:
                self._handle(batch, received_at)
            except Exception:
                # An ack, nack or release that failed (the file busy, say): the messages it
                # did not settle come back after their visibility timeout. Keep the thread.
                _log.exception("queue %r: settling a batch failed; going on", queue.name)
                self._stopping.wait(self.poll_interval)

    def _handle(self, batch: list[Received], received_at: float) -> None:
        """Handle a batch received at ``received_at`` (by the queue's clock), acking each
        message as soon as its handler returns. Once half the visibility timeout has passed
        since the receive (or the last extension), the messages not handled yet are hidden
        for another timeout before the next handler runs; one that went stale meanwhile
        (received again by someone else) is left to its new owner."""
        queue = self.queue
        timeout = (
            queue.visibility_timeout if self.visibility_timeout is None else self.visibility_timeout
        )
        held_since = received_at
        pending = list(batch)  # received, not handled yet
        try:
            while pending:
                now = queue.clock.now()
                if now - held_since >= timeout / 2:
                    lost = queue._extend_many([item.receipt for item in pending], timeout)
                    held_since = now
                    if lost:
                        _log.warning(
                            "queue %r: %d prefetched messages timed out before their turn "
                            "and were received again; leaving them to their new receiver",
                            queue.name,
                            len(lost),
                        )
                        pending = [item for item in pending if item.receipt not in lost]
                        if not pending:
                            break
                item = pending.pop(0)
                try:
                    with message_context(item.envelope):
                        self.handler(item.message)
                except Exception as exc:
                    with self._lock:
                        self._failed += 1
                    _log.warning(
                        "queue %r: handler failed on message %s (receive %d): %s: %s",
                        queue.name,
                        item.message_id,
                        item.receive_count,
                        type(exc).__name__,
                        safe_text(exc, 1_000),
                    )
                    try:
                        queue.nack(item.receipt, self.backoff(item.receive_count + 1), error=exc)
                    except StaleReceipt as stale:
                        _log.warning("%s", stale)
                else:
                    with self._lock:
                        self._handled += 1
                    # Ack at once: a handled message must not come back because the rest
                    # of its batch outlasted its visibility timeout.
                    try:
                        queue.ack(item.receipt)
                    except StaleReceipt as stale:
                        _log.warning("%s (the message will be handled again)", stale)
                if self._stopping.is_set():
                    break
        finally:
            if pending:
                queue._release([item.receipt for item in pending])
