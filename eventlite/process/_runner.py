"""Running one process manager for its durable subscriber: each delivered event handled
on its instance, and the outcome written with the event's inbox mark."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._types import any_of
from ..clock import Clock
from ..codec import Codec
from ..envelope import Envelope, current_envelope
from ..store.processes import ProcessStatus, TimeoutRecord
from ..store.storage import Storage, Transaction
from ._context import ProcessContext
from ._definition import ProcessManager
from ._records import HEADER_KEY, HEADER_PROCESS, HEADER_TIMEOUT, ProcessError
from ._timeouts import TimeoutFirer

if TYPE_CHECKING:
    from ..dlq import DeadLetterQueue
    from ..unit_of_work import UnitOfWork

__all__ = ["ProcessRunner"]

_log = logging.getLogger("eventlite.process")


class ProcessRunner:
    """Runs one process manager for its durable subscriber (made by
    :meth:`ProcessManagers.runner <eventlite.process.ProcessManagers.runner>`).

    :meth:`handle` is the subscriber's handler (it takes the unit of work its state is
    written through); :meth:`fire_due` is the relay's ``on_pass`` hook, run in the same
    thread, so events and timeouts of the manager are handled one at a time.
    """

    def __init__(
        self,
        manager: ProcessManager[Any],
        *,
        storage: Storage,
        codec: Codec,
        clock: Clock,
        dispatch: Callable[[Any], Any],
        dlq: DeadLetterQueue | None,
        alarm: Callable[[float], object],
    ) -> None:
        self.manager = manager
        """The definition this runner runs."""
        self._store = storage.processes
        self._codec = codec
        self._clock = clock
        self._dispatch = dispatch
        self._timeouts = TimeoutFirer(
            manager.name, storage=storage, codec=codec, clock=clock, dlq=dlq, alarm=alarm
        )
        self.event_type: type[Any] = any_of(manager.name, manager.handled_types())
        """A class that every handled event class (and subclass) counts as a subclass of:
        what the durable subscriber subscribes to."""

    # -- events -------------------------------------------------------------------------

    def handle(self, message: Any, uow: UnitOfWork) -> None:
        """Handle one delivered event: find or create its instance, run the handler, and
        write the state, timeouts and completion through ``uow`` (whose commit also carries
        the inbox mark). Events that are not for an instance are ignored, with a log line."""
        manager = self.manager
        name = manager.name
        env = current_envelope()
        target = self._target(message, env)
        if target is None:
            return
        key, timeout_id = target
        route = manager._route(type(message))
        if route is None:  # pragma: no cover - the subscription has only handled types
            return
        stored = self._store.load(name, key)
        if stored is None:
            if not route.starts or timeout_id is not None:
                _log.info(
                    "process manager %s: %s for key %r, which has no instance and does not "
                    "start one; ignored",
                    name,
                    type(message).__qualname__,
                    key,
                )
                return
            state, revision = manager._new_state(), 0
        else:
            if stored.status is ProcessStatus.DONE:
                _log.info(
                    "process manager %s: instance %r is done; %s ignored",
                    name,
                    key,
                    type(message).__qualname__,
                )
                return
            state, revision = manager._load_state(stored.state, self._codec), stored.revision
        context: ProcessContext[Any] = ProcessContext(
            manager,
            key,
            state,
            is_new=revision == 0,
            envelope=env,
            dispatch=self._dispatch,
            clock=self._clock,
            codec=self._codec,
        )
        route.fn(message, context)
        text = manager._dump_state(context.state, self._codec)  # a bad state fails here

        def write(tx: Transaction | None, _events: Sequence[Envelope]) -> None:
            assert tx is not None  # process managers need durable storage
            self._write(tx, context, text, revision, timeout_id)

        uow.on_commit_write(write)

    def _target(self, message: Any, env: Envelope | None) -> tuple[str, str | None] | None:
        """(key, timeout id) of the instance a delivered message is for: a fired timeout of
        this manager names both in its headers, any other event is correlated (timeout id
        None). None, logged, when it is for no instance: a cancelled timeout, no key."""
        name = self.manager.name
        headers = env.metadata.headers if env is not None else {}
        timeout_id, key = headers.get(HEADER_TIMEOUT), headers.get(HEADER_KEY)
        if headers.get(HEADER_PROCESS) == name and timeout_id is not None and key is not None:
            if self._store.find_timeout(timeout_id) is not None:
                return key, timeout_id
            _log.info(
                "process manager %s: timeout %s (%s) of %r was cancelled; not handled",
                name,
                timeout_id,
                type(message).__qualname__,
                key,
            )
            return None
        key = self.manager.key_of(message)
        if key is None:
            _log.debug(
                "process manager %s: %s has no key for it; ignored",
                name,
                type(message).__qualname__,
            )
            return None
        return key, None

    def _write(
        self,
        tx: Transaction,
        context: ProcessContext[Any],
        text: str,
        revision: int,
        timeout_id: str | None,
    ) -> None:
        """Store the outcome of one handling in the commit's transaction ``tx``."""
        store = self._store
        name, key = self.manager.name, context.key
        now = self._clock.now()
        if timeout_id is not None and not store.delete(timeout_id):
            raise ProcessError(
                f"process manager {name!r}: timeout {timeout_id} of {key!r} was cancelled "
                "while it was being handled"
            )
        status = ProcessStatus.DONE if context.done else ProcessStatus.RUNNING
        if not store.save(name, key, state=text, status=status, revision=revision, now=now):
            raise ProcessError(
                f"process manager {name!r}: instance {key!r} changed while this event was "
                f"handled (expected revision {revision}); is the manager running in two "
                "processes?"
            )
        if context.done:
            store.cancel_all(name, key)
            return
        earliest: float | None = None
        for change in context._changes:
            if isinstance(change, TimeoutRecord):
                store.schedule(change)
                earliest = change.due_at if earliest is None else min(earliest, change.due_at)
            else:
                store.cancel(name, key, change)
        if earliest is not None:
            due = earliest
            tx.on_commit(lambda: self._timeouts.wake_at(due))

    # -- timeouts -----------------------------------------------------------------------

    def fire_due(self) -> bool:
        """Record every timeout of the manager due by the clock in the log; whether any
        was due (see :class:`~eventlite.process._timeouts.TimeoutFirer`)."""
        return self._timeouts.fire_due()

    def next_due(self) -> float | None:
        """The clock time of the manager's earliest timeout not yet fired, or None."""
        return self._timeouts.next_due()

    def wake_at_next(self) -> None:
        """Ask for a wake-up when the earliest waiting timeout falls due."""
        self._timeouts.wake_at_next()

    def __repr__(self) -> str:
        return f"<ProcessRunner {self.manager.name!r}>"
