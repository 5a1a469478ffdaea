"""Metrics hooks of durable delivery: subclass :class:`DeliveryMetrics`, pass it to the app.

::

    class Prometheus(DeliveryMetrics):
        def handled(self, subscriber, envelope, seconds):
            HANDLING_SECONDS.labels(subscriber).observe(seconds)

        def lag(self, subscriber, lag):
            LAG.labels(subscriber).set(lag)

    app = App("shop.db", metrics=Prometheus())

Every hook runs on a relay thread, right where the thing happens, so keep it quick. A hook
that raises is logged on the ``eventlite.metrics`` logger and otherwise ignored: metrics
never change what is delivered. :class:`CountingMetrics` keeps simple counts in memory.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import attrs

from .envelope import Envelope

__all__ = ["CountingMetrics", "DeliveryMetrics", "SubscriberCounts"]


class DeliveryMetrics:
    """What durable delivery reports; every method does nothing until overridden."""

    def handled(self, subscriber: str, envelope: Envelope, seconds: float) -> None:
        """``subscriber`` handled ``envelope`` in ``seconds`` (its successful attempt)."""

    def failed(
        self, subscriber: str, envelope: Envelope, attempt: int, error: BaseException
    ) -> None:
        """Attempt number ``attempt`` (1-based) of ``subscriber`` on ``envelope`` raised."""

    def retry_scheduled(
        self, subscriber: str, envelope: Envelope, retry: int, delay: float
    ) -> None:
        """Delayed retry number ``retry`` of ``envelope`` was stored, due in ``delay`` s."""

    def dead_lettered(
        self, subscriber: str, position: int | None, error: BaseException | str
    ) -> None:
        """A message (the stored event at ``position``) went to the dead-letter queue."""

    def parked(self, subscriber: str, position: int | None, key: str) -> None:
        """A message waits behind an earlier one of its ``key`` (a retry or dead letter)."""

    def lag(self, subscriber: str, lag: int) -> None:
        """After each pass: how many log positions ``subscriber`` is behind the head."""

    def bridged(self, bridge: str, counter: str, n: int) -> None:
        """A broker bridge counted ``n`` of ``counter``: ``sent`` (confirmed by the
        broker), ``refused`` (dead-lettered on the way out), ``handled``, ``duplicates``
        (dropped by the inbox), ``dead_lettered`` (on the way in), ``failed`` (a batch
        given up on a broker or handling failure)."""


@attrs.define
class SubscriberCounts:
    """What :class:`CountingMetrics` counted for one subscriber."""

    handled: int = 0
    """Messages handled."""
    failures: int = 0
    """Failed attempts, immediate or delayed."""
    retries_scheduled: int = 0
    """Delayed retries stored."""
    dead_letters: int = 0
    """Messages dead-lettered."""
    parked: int = 0
    """Messages parked behind an earlier one of their key."""
    handling_seconds: float = 0.0
    """Seconds spent in successful handling, summed."""
    max_handling_seconds: float = 0.0
    """The longest successful handling."""
    lag: int = 0
    """The lag last reported."""
    bridged: dict[str, int] = attrs.field(factory=dict)
    """A bridge's counters by name (``sent``, ``handled``, ``duplicates``...)."""


class CountingMetrics(DeliveryMetrics):
    """Counts per subscriber, in memory; read them with :meth:`counts`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, SubscriberCounts] = defaultdict(SubscriberCounts)

    def counts(self, subscriber: str) -> SubscriberCounts:
        """A copy of the counts of ``subscriber`` (zeros for one never seen)."""
        with self._lock:
            c = self._counts[subscriber]
            return attrs.evolve(c, bridged=dict(c.bridged))

    def handled(self, subscriber: str, envelope: Envelope, seconds: float) -> None:
        """Count one handling and its time."""
        with self._lock:
            c = self._counts[subscriber]
            c.handled += 1
            c.handling_seconds += seconds
            c.max_handling_seconds = max(c.max_handling_seconds, seconds)

    def failed(
        self, subscriber: str, envelope: Envelope, attempt: int, error: BaseException
    ) -> None:
        """Count one failed attempt."""
        with self._lock:
            self._counts[subscriber].failures += 1

    def retry_scheduled(
        self, subscriber: str, envelope: Envelope, retry: int, delay: float
    ) -> None:
        """Count one delayed retry."""
        with self._lock:
            self._counts[subscriber].retries_scheduled += 1

    def dead_lettered(
        self, subscriber: str, position: int | None, error: BaseException | str
    ) -> None:
        """Count one dead letter."""
        with self._lock:
            self._counts[subscriber].dead_letters += 1

    def parked(self, subscriber: str, position: int | None, key: str) -> None:
        """Count one parked message."""
        with self._lock:
            self._counts[subscriber].parked += 1

    def lag(self, subscriber: str, lag: int) -> None:
        """Keep the last lag."""
        with self._lock:
            self._counts[subscriber].lag = lag

    def bridged(self, bridge: str, counter: str, n: int) -> None:
        """Add ``n`` to the bridge's ``counter``."""
        with self._lock:
            counts = self._counts[bridge].bridged
            counts[counter] = counts.get(counter, 0) + n
