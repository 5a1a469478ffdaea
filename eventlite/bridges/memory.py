"""A broker in this process's memory, for tests of code built on the bridges.

:class:`MemoryBroker` behaves like a broker with consumer groups: every destination is a
log of messages; each group reads the whole log, shares it among its subscribers, keeps a
key's messages in order for one subscriber, and gives back what a closed subscriber left
unsettled. Nothing survives the process. ``fail_next(n)`` makes the next ``n`` sends fail,
to test what callers do with a refused message.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from .base import (
    Broker,
    Delivery,
    Features,
    OutgoingMessage,
    Publisher,
    SendFailed,
    SendResult,
    Subscriber,
)

__all__ = ["MemoryBroker", "MemoryPublisher", "MemorySubscriber"]


class _Group:
    def __init__(self) -> None:
        self.ready: deque[int] = deque()  # log indexes to hand out, in order
        self.requeued: deque[int] = deque()  # given back; handed out first
        self.unsettled: dict[int, int] = {}  # log index -> subscriber id
        self.deliveries: dict[int, int] = {}  # log index -> times delivered


class MemoryBroker(Broker):
    """An in-process broker with consumer groups; see the module docstring."""

    name = "memory"
    features: Features = Features(
        ordered_per_key_shared=True,
        redelivery_after_crash=False,  # a killed process takes its memory with it
        survives_restart=False,
    )

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._logs: dict[str, list[OutgoingMessage]] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._fail = 0
        self._ids = 0

    def describe(self) -> str:
        """``memory``."""
        return "memory"

    def publisher(self) -> MemoryPublisher:
        """A publisher into this broker."""
        return MemoryPublisher(self)

    def subscriber(self, source: str, *, group: str, prefetch: int = 100) -> MemorySubscriber:
        """A subscriber of ``source`` in ``group`` (the group starts at the log's start)."""
        with self._cond:
            self._group(source, group)
            self._ids += 1
            return MemorySubscriber(self, source, group, prefetch, self._ids)

    def fail_next(self, n: int = 1) -> None:
        """Make the next ``n`` messages sent fail with :class:`SendFailed`."""
        with self._cond:
            self._fail = n

    def messages(self, destination: str) -> list[OutgoingMessage]:
        """Everything sent to ``destination``, in order."""
        with self._cond:
            return list(self._logs.get(destination, []))

    def purge(self, prefix: str) -> None:
        """Forget every destination and group whose name starts with ``prefix``."""
        with self._cond:
            self._logs = {k: v for k, v in self._logs.items() if not k.startswith(prefix)}
            self._groups = {k: v for k, v in self._groups.items() if not k[0].startswith(prefix)}

    def _group(self, source: str, group: str) -> _Group:
        g = self._groups.get((source, group))
        if g is None:
            g = self._groups[(source, group)] = _Group()
            g.ready.extend(range(len(self._logs.get(source, []))))
        return g

    def _append(self, m: OutgoingMessage) -> int:
        log = self._logs.setdefault(m.destination, [])
        log.append(m)
        index = len(log) - 1
        for (source, _), g in self._groups.items():
            if source == m.destination:
                g.ready.append(index)
        self._cond.notify_all()
        return index


class MemoryPublisher(Publisher):
    """Appends to the broker's logs; every send is confirmed unless ``fail_next`` says."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__()
        self._broker = broker

    def _send(self, messages: list[OutgoingMessage], deadline: float) -> list[SendResult]:
        b = self._broker
        out = []
        with b._cond:
            for m in messages:
                if b._fail > 0:
                    b._fail -= 1
                    out.append(SendResult(m, SendFailed(m.destination, m.id, "fail_next")))
                    continue
                index = b._append(m)
                out.append(SendResult(m, None, {"destination": m.destination, "index": index}))
        return out

    def _close(self, timeout: float) -> None:
        pass


class MemorySubscriber(Subscriber):
    """One consumer of a group; a key held unsettled by another subscriber of the group
    waits, so each key stays in order."""

    def __init__(
        self, broker: MemoryBroker, source: str, group: str, prefetch: int, ident: int
    ) -> None:
        super().__init__(source, group, prefetch)
        self._broker = broker
        self._ident = ident

    def _take(self, g: _Group, max: int) -> list[int]:
        log = self._broker._logs.get(self.source, [])
        busy = {log[i].key for i, who in g.unsettled.items() if who != self._ident}
        taken: list[int] = []
        for queue in (g.requeued, g.ready):
            skipped: list[int] = []
            while queue and len(taken) < max:
                i = queue.popleft()
                if log[i].key is not None and log[i].key in busy:
                    skipped.append(i)
                else:
                    taken.append(i)
            queue.extendleft(reversed(skipped))
        return taken

    def _receive(self, max: int, deadline: float) -> list[Delivery]:
        b = self._broker
        with b._cond:
            g = b._group(self.source, self.group)
            while True:
                taken = self._take(g, max)
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0:
                    break
                b._cond.wait(remaining)
            log = b._logs.get(self.source, [])
            out = []
            for i in taken:
                g.unsettled[i] = self._ident
                count = g.deliveries[i] = g.deliveries.get(i, 0) + 1
                m = log[i]
                out.append(
                    Delivery(
                        m.body,
                        headers=dict(m.headers),
                        source=self.source,
                        key=m.key,
                        message_id=m.id,
                        redelivered=count > 1,
                        coordinates={"destination": self.source, "index": i},
                        token=i,
                    )
                )
            return out

    def _settle_all(self, indexes: list[int], requeue: bool) -> None:
        b = self._broker
        with b._cond:
            g = b._group(self.source, self.group)
            back = []
            for i in indexes:
                if g.unsettled.get(i) == self._ident:
                    del g.unsettled[i]
                    if requeue:
                        back.append(i)
            g.requeued.extend(sorted(back))
            b._cond.notify_all()

    def _ack(self, deliveries: list[Delivery]) -> None:
        self._settle_all([d._token for d in deliveries], requeue=False)

    def _nack(self, deliveries: list[Delivery], requeue: bool) -> None:
        self._settle_all([d._token for d in deliveries], requeue)

    def _close(self, timeout: float) -> None:
        b = self._broker
        with b._cond:
            g = b._group(self.source, self.group)
            mine = sorted(i for i, who in g.unsettled.items() if who == self._ident)
        self._settle_all(mine, requeue=True)
