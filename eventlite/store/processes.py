"""Process-manager instances and their scheduled timeouts.

The process-manager runtime (:mod:`eventlite.process`) keeps each instance as a
:class:`ProcessRecord` and each timeout as a :class:`TimeoutRecord` through a
:class:`ProcessStore`; :class:`ProcessStatus` is re-exported by :mod:`eventlite.process`.
"""

from __future__ import annotations

import abc
import builtins
import enum

import attrs

__all__ = ["ProcessRecord", "ProcessStatus", "ProcessStore", "TimeoutRecord"]


class ProcessStatus(enum.Enum):
    """Where a process-manager instance stands."""

    RUNNING = "running"
    """Reacting to events."""
    DONE = "done"
    """Completed; later events for its key are ignored."""


@attrs.frozen
class ProcessRecord:
    """One instance of a process manager as a :class:`ProcessStore` keeps it."""

    process: str
    """The process manager's name."""
    key: str
    """The instance's correlation key."""
    status: ProcessStatus
    """Running or done."""
    state: str
    """Its state as JSON text."""
    revision: int
    """How many times it was saved (1 once created)."""
    started_at: float
    """When it was created (seconds since the epoch)."""
    updated_at: float
    """When it was last saved."""
    finished_at: float | None
    """When it was saved done, or None."""


@attrs.frozen
class TimeoutRecord:
    """A timeout a process-manager instance scheduled: the message to record in the log
    when it falls due, encoded."""

    id: str
    """Unique; also the id of the event it fires as."""
    process: str
    """The process manager that scheduled it."""
    key: str
    """The instance it belongs to."""
    name: str | None
    """The name it was scheduled under (unique among its instance's timeouts), or None."""
    type: str
    """The registered type name of its message."""
    schema_version: int
    """The schema version of ``data``."""
    data: str
    """The message as JSON text."""
    correlation_id: str
    """The flow of the event that scheduled it."""
    causation_id: str | None
    """The event that scheduled it, if any."""
    due_at: float
    """When it falls due (seconds since the epoch, on the app's clock)."""
    fired_at: float | None
    """When its message was recorded in the log; None while it waits."""
    created_at: float
    """When it was scheduled."""


class ProcessStore(abc.ABC):
    """Process-manager instances, keyed by (manager name, correlation key), and the
    timeouts they scheduled.

    **Instances** are saved whole by compare-and-set on their ``revision``
    (:meth:`save`), so a manager running by mistake in two processes cannot overwrite an
    instance: the second writer gets False.

    **Timeouts** wait until due (:meth:`due`), are claimed once when their message is
    recorded in the log (:meth:`fire`), and are deleted when the instance handles that
    message (:meth:`delete`), when cancelled (:meth:`cancel`, :meth:`delete`), or when the
    instance completes (:meth:`cancel_all`). A fired timeout stays until then, so a
    cancellation after firing still keeps its message from the handler.

    **Transactions.** Every write joins the calling thread's open
    ``storage.transaction()`` (the runtime writes an instance, its timeouts and the
    event's inbox mark in one), else commits on its own; reads inside one see its writes.

    **Order.** Instances are listed oldest first (``started_at``, then manager, then key);
    timeouts earliest first (``due_at``, then ``id``).

    **Errors.** The storage failing raises :class:`~eventlite.exceptions.StorageError`;
    unknown names, keys and ids are not errors.
    """

    # -- instances ----------------------------------------------------------------------

    @abc.abstractmethod
    def load(self, process: str, key: str) -> ProcessRecord | None:
        """The stored instance, or None."""

    @abc.abstractmethod
    def list(
        self,
        process: str | None = None,
        *,
        status: ProcessStatus | None = None,
        limit: int | None = None,
    ) -> builtins.list[ProcessRecord]:
        """Stored instances, oldest first, of one manager and one status when given; at
        most ``limit`` of them."""

    @abc.abstractmethod
    def save(
        self,
        process: str,
        key: str,
        *,
        state: str,
        status: ProcessStatus,
        revision: int,
        now: float,
    ) -> bool:
        """Write the instance's ``state`` and ``status`` over the stored ``revision``:
        0 means not stored yet (it is created, started ``now``). The stored revision
        becomes ``revision + 1``, ``updated_at`` ``now``, ``finished_at`` ``now`` when
        :attr:`~ProcessStatus.DONE` (else None). False, writing nothing, when the stored
        revision is another (an instance exists already, for 0)."""

    # -- timeouts -----------------------------------------------------------------------

    @abc.abstractmethod
    def schedule(self, timeout: TimeoutRecord) -> None:
        """Store a waiting timeout (``fired_at`` is ignored). A named one replaces the
        timeout of the same instance and name, fired or not."""

    @abc.abstractmethod
    def cancel(self, process: str, key: str, timeout: str) -> None:
        """Delete the instance's timeout whose id or name is ``timeout``, if any."""

    @abc.abstractmethod
    def cancel_all(self, process: str, key: str) -> None:
        """Delete every timeout of the instance."""

    @abc.abstractmethod
    def delete(self, timeout_id: str) -> bool:
        """Delete one timeout by id; whether it was there."""

    @abc.abstractmethod
    def find_timeout(self, timeout_id: str) -> TimeoutRecord | None:
        """The timeout with this id, fired or not, or None."""

    @abc.abstractmethod
    def timeouts(
        self, process: str | None = None, key: str | None = None
    ) -> builtins.list[TimeoutRecord]:
        """Every stored timeout (waiting or fired), earliest first, of one manager and
        one instance when given."""

    @abc.abstractmethod
    def due(self, process: str, now: float, limit: int) -> builtins.list[TimeoutRecord]:
        """Up to ``limit`` timeouts of ``process`` not fired with ``due_at <= now``,
        earliest first."""

    @abc.abstractmethod
    def fire(self, timeout_id: str, now: float) -> bool:
        """Claim a due timeout for firing: set its ``fired_at`` to ``now`` if it is there
        and not fired. False when another firer claimed it or it was cancelled."""

    @abc.abstractmethod
    def next_due(self, process: str) -> float | None:
        """The earliest ``due_at`` among ``process``'s timeouts not fired, or None."""
