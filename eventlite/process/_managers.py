"""The process managers of one storage: adding them to an app, reading their instances
and timeouts."""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..clock import Clock, to_datetime
from ..codec import Codec
from ..exceptions import MessageError
from ..store.processes import ProcessRecord, ProcessStatus, TimeoutRecord
from ..store.storage import Storage
from ._definition import ProcessManager
from ._records import ProcessInstance, ProcessNotFound, ProcessTimeout
from ._runner import ProcessRunner

if TYPE_CHECKING:
    from ..dlq import DeadLetterQueue

__all__ = ["ProcessManagers"]


class ProcessManagers:
    """The process managers of one storage: what ``app.processes`` is.

    Reads the instances and timeouts of every manager stored there (the state of an
    instance comes back as its class when its manager was added here, else as a dict),
    cancels timeouts from outside, and makes the runner of each manager the app adds
    (``app.process_manager(manager)`` calls :meth:`runner`). ``storage`` must keep process
    state (a backend without it, such as the in-memory one, raises
    :class:`~eventlite.exceptions.StorageError`). Every method may be called from any
    thread.
    """

    def __init__(self, storage: Storage, codec: Codec, *, clock: Clock) -> None:
        if not isinstance(storage, Storage):
            raise TypeError(
                f"ProcessManagers needs a Storage (for example app.storage), got "
                f"{type(storage).__name__}"
            )
        self.storage = storage
        """Where the instances, their timeouts and the log are."""
        self._store = storage.processes
        self.codec = codec
        """Encodes states and timeout messages."""
        self.clock = clock
        """Decides when timeouts are due and dates the instances."""
        self._managers: dict[str, ProcessManager[Any]] = {}

    @property
    def managers(self) -> dict[str, ProcessManager[Any]]:
        """The process managers added here, by name."""
        return dict(self._managers)

    def runner(
        self,
        manager: ProcessManager[Any],
        *,
        dispatch: Callable[[Any], Any],
        dlq: DeadLetterQueue | None,
        alarm: Callable[[float], object],
    ) -> ProcessRunner:
        """Add ``manager`` and make the runner its durable subscriber calls (the app's
        plumbing: ``app.process_manager(manager)`` is the way in).

        ``dispatch`` runs the commands handlers dispatch, ``dlq`` takes timeouts whose
        message can no longer be decoded, ``alarm(when)`` asks for a wake-up of the
        subscriber at a clock time. Raises ``ValueError`` for a manager without a starting
        handler or a name added already, ``TypeError`` for something that is not a
        :class:`ProcessManager`.
        """
        if not isinstance(manager, ProcessManager):
            raise TypeError(f"expected a ProcessManager, got {type(manager).__name__}")
        if not manager.starting_types():
            raise ValueError(
                f"process manager {manager.name!r} has no @starts handler: nothing would ever "
                "create an instance"
            )
        if manager.name in self._managers:
            raise ValueError(f"a process manager named {manager.name!r} was already added")
        self._managers = {**self._managers, manager.name: manager}
        manager._running = True
        return ProcessRunner(
            manager,
            storage=self.storage,
            codec=self.codec,
            clock=self.clock,
            dispatch=dispatch,
            dlq=dlq,
            alarm=alarm,
        )

    # -- reading ------------------------------------------------------------------------

    def get(self, process: str, key: str) -> ProcessInstance:
        """The stored instance ``key`` of process manager ``process``; raises
        :class:`ProcessNotFound`."""
        record = self._store.load(process, key)
        if record is None:
            raise ProcessNotFound(process, key)
        return self._instance(record)

    def find(self, process: str, key: str) -> ProcessInstance | None:
        """The stored instance, or None."""
        record = self._store.load(process, key)
        return None if record is None else self._instance(record)

    def list(
        self,
        process: str | None = None,
        *,
        status: ProcessStatus | str | None = None,
        limit: int | None = None,
    ) -> builtins.list[ProcessInstance]:
        """Stored instances, oldest first, optionally of one manager and one status."""
        records = self._store.list(
            process, status=None if status is None else ProcessStatus(status), limit=limit
        )
        return [self._instance(r) for r in records]

    def timeouts(
        self, process: str | None = None, key: str | None = None
    ) -> builtins.list[ProcessTimeout]:
        """The timeouts waiting (scheduled, or fired and not yet handled), earliest first,
        optionally of one manager and one instance."""
        return [self._timeout(t) for t in self._store.timeouts(process, key)]

    def cancel(self, timeout_id: str) -> bool:
        """Cancel a waiting timeout by id, from outside its process manager's handlers;
        returns whether one was waiting. Its message never reaches the handler."""
        return self._store.delete(timeout_id)

    def _instance(self, record: ProcessRecord) -> ProcessInstance:
        manager = self._managers.get(record.process)
        state = (
            manager._load_state(record.state, self.codec) if manager else json.loads(record.state)
        )
        return ProcessInstance(
            process=record.process,
            key=record.key,
            status=record.status,
            state=state,
            started_at=to_datetime(record.started_at),
            updated_at=to_datetime(record.updated_at),
            finished_at=None if record.finished_at is None else to_datetime(record.finished_at),
        )

    def _timeout(self, record: TimeoutRecord) -> ProcessTimeout:
        try:
            message = self.codec.decode(record.type, record.data, version=record.schema_version)
        except MessageError:
            message = None
        return ProcessTimeout(
            id=record.id,
            process=record.process,
            key=record.key,
            name=record.name,
            type=record.type,
            message=message,
            due_at=to_datetime(record.due_at),
            fired=record.fired_at is not None,
        )

    def __repr__(self) -> str:
        return f"<ProcessManagers {self.storage.description!r} {sorted(self._managers)}>"
