"""What reading process managers returns, what goes wrong, and how fired timeouts are
marked in the log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import attrs

from ..exceptions import EventliteError
from ..store.processes import ProcessStatus

__all__ = [
    "HEADER_KEY",
    "HEADER_PROCESS",
    "HEADER_TIMEOUT",
    "ProcessError",
    "ProcessInstance",
    "ProcessNotFound",
    "ProcessTimeout",
    "timeout_stream",
]

HEADER_PROCESS: Final = "eventlite-process"
"""Header of a fired timeout's event: the name of the process manager that scheduled it."""
HEADER_KEY: Final = "eventlite-process-key"
"""Header of a fired timeout's event: the key of its instance."""
HEADER_TIMEOUT: Final = "eventlite-timeout"
"""Header of a fired timeout's event: the timeout's id (also the event's id)."""


def timeout_stream(process: str, key: str) -> str:
    """The stream a fired timeout of instance ``key`` of ``process`` is recorded in."""
    return f"process:{process}/{key}"


class ProcessError(EventliteError):
    """A process manager cannot be defined, wired or run as asked."""


class ProcessNotFound(ProcessError, LookupError):
    """No instance of this process manager has this key."""

    def __init__(self, process: str, key: str) -> None:
        self.process = process
        self.key = key
        super().__init__(f"process manager {process!r} has no instance with key {key!r}")


@attrs.frozen
class ProcessInstance:
    """One instance of a process manager, as stored after its last handling."""

    process: str
    """The process manager's name."""
    key: str
    """The correlation key of the instance."""
    status: ProcessStatus
    """``running`` or ``done``."""
    state: Any
    """The state as the last handling left it (its class, or a dict when the manager is
    not added to the app that reads it)."""
    started_at: datetime
    """When the instance was created (UTC)."""
    updated_at: datetime
    """When it was last stored (UTC)."""
    finished_at: datetime | None
    """When it completed (UTC), or None."""


@attrs.frozen
class ProcessTimeout:
    """A process-manager timeout waiting in the storage: scheduled, or fired and not yet
    handled. (Not an error: see :class:`~eventlite.saga.StepTimeout` for that kind.)"""

    id: str
    """The id :meth:`ProcessContext.schedule <eventlite.process.ProcessContext.schedule>`
    returned; also the id of the event it fires as."""
    process: str
    """The process manager that scheduled it."""
    key: str
    """The instance it belongs to."""
    name: str | None
    """The name it was scheduled under, or None."""
    type: str
    """The registered type name of its message."""
    message: Any
    """The message it fires, or None when it cannot be decoded any more."""
    due_at: datetime
    """When it falls due (UTC)."""
    fired: bool
    """True once its message is recorded in the log (waiting to be handled)."""
