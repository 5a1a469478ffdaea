"""Firing due timeouts: each recorded in the log once as an event of its instance's stream."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ..clock import Clock
from ..codec import Codec
from ..codec import dumps as _dumps
from ..envelope import Envelope, Metadata
from ..exceptions import MessageError
from ..store.events import StreamAppend
from ..store.processes import TimeoutRecord
from ..store.storage import Storage
from ._records import HEADER_KEY, HEADER_PROCESS, HEADER_TIMEOUT, timeout_stream

if TYPE_CHECKING:
    from ..dlq import DeadLetterQueue

__all__ = ["TimeoutFirer"]

_log = logging.getLogger("eventlite.process")
_FIRE_BATCH: Final = 500


class TimeoutFirer:
    """Fires the due timeouts of one process manager, and asks for a wake-up at the next.

    ``alarm(when)`` asks the relay for a pass at a clock time; ``dlq`` takes timeouts whose
    message no longer decodes (without one they stay, marked fired, to be seen).
    """

    def __init__(
        self,
        process: str,
        *,
        storage: Storage,
        codec: Codec,
        clock: Clock,
        dlq: DeadLetterQueue | None,
        alarm: Callable[[float], object],
    ) -> None:
        self.process = process
        self._storage = storage
        self._store = storage.processes
        self._codec = codec
        self._clock = clock
        self._dlq = dlq
        self._alarm = alarm

    def fire_due(self) -> bool:
        """Record the message of every timeout due by the clock in the log (the subscriber
        then delivers it); returns whether any was due. The relay calls it on every pass."""
        name = self.process
        store = self._store
        now = self._clock.now()
        due = store.due(name, now, _FIRE_BATCH)
        if not due:
            return False
        with self._storage.transaction():
            appends: list[StreamAppend] = []
            for timeout in due:
                if not store.fire(timeout.id, now):
                    continue  # cancelled, or fired by another process meanwhile
                try:
                    message = self._codec.decode(
                        timeout.type, timeout.data, version=timeout.schema_version
                    )
                except MessageError as exc:
                    self._undecodable(timeout, exc)
                    continue
                headers = {
                    HEADER_PROCESS: name,
                    HEADER_KEY: timeout.key,
                    HEADER_TIMEOUT: timeout.id,
                }
                env = Envelope(
                    message,
                    id=timeout.id,
                    metadata=Metadata(
                        timeout.correlation_id, timeout.causation_id, headers=headers
                    ),
                )
                appends.append(StreamAppend(timeout_stream(name, timeout.key), [env]))
            if appends:
                self._storage.events.append_many(appends)
        self.wake_at_next()
        return True

    def _undecodable(self, timeout: TimeoutRecord, why: MessageError) -> None:
        """A timeout whose message no longer decodes (its class was renamed or removed):
        dead-letter it raw and drop it, so the other timeouts still fire. Without a DLQ it
        stays, marked fired, for ``app.processes.timeouts()`` to show."""
        raw = _dumps(
            {"timeout": timeout.id, "key": timeout.key, "type": timeout.type, "data": timeout.data}
        )
        dlq = self._dlq
        if dlq is not None:
            dlq.add(
                self.process,
                raw,
                key=None,
                error=why,
                attempts=1,
                type_name=timeout.type,
                message_id=timeout.id,
            )
            self._store.delete(timeout.id)
        _log.error(
            "process manager %s: timeout %s (%s) of %r cannot be decoded (%s)%s",
            self.process,
            timeout.id,
            timeout.type,
            timeout.key,
            why,
            "; dead-lettered" if dlq is not None else "",
        )

    def next_due(self) -> float | None:
        """The clock time of the earliest timeout not yet fired, or None."""
        return self._store.next_due(self.process)

    def wake_at_next(self) -> None:
        """Ask for a wake-up when the earliest waiting timeout falls due (after a restart,
        after firing)."""
        due = self.next_due()
        if due is not None:
            self.wake_at(due)

    def wake_at(self, when: float) -> None:
        """Ask for a wake-up at clock time ``when``."""
        try:
            self._alarm(when)
        except RuntimeError:  # the scheduler closed with the app: the row stays for next time
            _log.debug("process manager %s: no alarm set, the scheduler is closed", self.process)
