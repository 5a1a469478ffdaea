"""The work queues of one storage by name: :class:`Queues`."""

from __future__ import annotations

import threading
from typing import Any

from ..clock import Clock, SystemClock
from ..codec import Codec
from ..dlq import DeadLetterQueue
from ..store.queues import QueueStats
from ..store.storage import Storage
from ._work_queue import WorkQueue

__all__ = ["Queues"]


class Queues:
    """Work queues of one storage by name, sharing a codec, DLQ, clock and defaults.

    ``queues["emails"]`` is the :class:`WorkQueue` named ``emails`` (made on first use with
    the defaults); :meth:`declare` makes it with settings of its own, once;
    ``queues.get("emails", max_receives=3)`` makes a separate one with other settings.
    :meth:`names` and :meth:`stats` list every queue holding messages, for the CLI.
    ``defaults`` are :class:`WorkQueue` settings (``visibility_timeout``,
    ``max_receives``, ``ttl``, ``dedup_window``).
    """

    def __init__(
        self,
        storage: Storage,
        codec: Codec | None = None,
        *,
        dlq: DeadLetterQueue | None = None,
        clock: Clock | None = None,
        **defaults: Any,
    ) -> None:
        if not isinstance(storage, Storage):
            raise TypeError(
                "Queues needs a Storage (app.storage, or SQLiteStorage('app.db')), got "
                f"{type(storage).__name__}"
            )
        self._storage = storage
        self._codec = codec if codec is not None else Codec()
        self._dlq = dlq
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._defaults = defaults
        self._queues: dict[str, WorkQueue] = {}
        self._lock = threading.Lock()

    def get(self, name: str, **settings: Any) -> WorkQueue:
        """A new :class:`WorkQueue` called ``name`` with these settings over the defaults."""
        return WorkQueue(
            self._storage,
            name,
            self._codec,
            dlq=self._dlq,
            clock=self._clock,
            **{**self._defaults, **settings},
        )

    def declare(self, name: str, **settings: Any) -> WorkQueue:
        """The queue called ``name``, made on first use with ``settings`` over the defaults
        and the same object ever after. Raises ``ValueError`` when ``settings`` differ from
        those it was made with (a queue has one configuration), and what
        :class:`WorkQueue` raises for bad settings."""
        with self._lock:
            queue = self._queues.get(name)
            if queue is None:
                queue = self._queues[name] = self.get(name, **settings)
                return queue
        different = {
            key: (getattr(queue, key, None), value)
            for key, value in settings.items()
            if getattr(queue, key, None) != value
        }
        if different:
            detail = ", ".join(
                f"{k}={new!r} (it has {old!r})" for k, (old, new) in different.items()
            )
            raise ValueError(f"work queue {name!r} exists with other settings: {detail}")
        return queue

    def __getitem__(self, name: str) -> WorkQueue:
        return self.declare(name)

    def names(self) -> list[str]:
        """Every queue that holds messages, by name."""
        return self._storage.queues.names()

    def stats(self) -> list[QueueStats]:
        """:meth:`WorkQueue.stats` of every queue that holds messages."""
        return [self[name].stats() for name in self.names()]
