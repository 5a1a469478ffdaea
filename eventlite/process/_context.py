"""What a process manager's handler receives: one instance, and what it may do with it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Generic, TypeVar

from .._ids import new_id
from ..clock import Clock
from ..codec import Codec
from ..envelope import Envelope
from ..store.processes import TimeoutRecord
from ._definition import ProcessManager

__all__ = ["ProcessContext"]

S = TypeVar("S")


class ProcessContext(Generic[S]):
    """What a process manager's handler receives with the event: one instance.

    Change :attr:`state` (or assign it); call :meth:`dispatch`, :meth:`schedule`,
    :meth:`cancel` and :meth:`complete`. State, timeouts and completion are stored when the
    handler returns, with the event's inbox mark; if the handler raises, none of it is.
    """

    __slots__ = (
        "_changes",
        "_clock",
        "_codec",
        "_dispatch",
        "_done",
        "_manager",
        "envelope",
        "is_new",
        "key",
        "name",
        "state",
    )

    def __init__(
        self,
        manager: ProcessManager[Any],
        key: str,
        state: S,
        *,
        is_new: bool,
        envelope: Envelope | None,
        dispatch: Callable[[Any], Any],
        clock: Clock,
        codec: Codec,
    ) -> None:
        self.name = manager.name
        """The process manager's name."""
        self.key = key
        """The instance's correlation key."""
        self.state: S = state
        """The instance's state: change it, or assign a new value of the same class."""
        self.is_new = is_new
        """True when this event created the instance."""
        self.envelope = envelope
        """The envelope of the event being handled."""
        self._manager = manager
        self._dispatch = dispatch
        self._clock = clock
        self._codec = codec
        # timeouts to store, and ids or names of timeouts to cancel, in the order asked
        self._changes: list[TimeoutRecord | str] = []
        self._done = False

    @property
    def done(self) -> bool:
        """Whether :meth:`complete` was called in this handling."""
        return self._done

    def dispatch(self, command: Any) -> Any:
        """Run ``command``'s handler now, on the app's bus, correlated to the event being
        handled; returns its result and lets its exception through (which fails this
        handling: nothing is stored and the event is retried)."""
        return self._dispatch(command)

    def schedule(self, message: Any, *, after: timedelta | float, name: str | None = None) -> str:
        """Deliver ``message`` (a registered message, typically an event such as
        ``PaymentOverdue``) to this instance once ``after`` (a ``timedelta`` or seconds,
        ``>= 0``) has passed on the app's clock; returns the timeout's id.

        A ``name`` lets :meth:`cancel` find it by name; scheduling under a name that has a
        timeout waiting replaces that one. Raises ``ValueError`` for a negative delay or a
        message this manager has no handler for, and
        :class:`~eventlite.exceptions.MessageError` for one the codec cannot store.
        """
        seconds = after.total_seconds() if isinstance(after, timedelta) else after
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"after must be a timedelta or seconds >= 0, got {after!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"a timeout's name must be a non-empty str or None, got {name!r}")
        if self._manager._route(type(message)) is None:
            raise ValueError(
                f"process manager {self.name!r} has no handler for {type(message).__qualname__}"
                ": a timeout is delivered to the handler of its message's class"
            )
        entry = self._codec.message_type(message)
        data = self._codec.encode(message)
        timeout_id = new_id()
        env = self.envelope
        now = self._clock.now()
        self._changes.append(
            TimeoutRecord(
                id=timeout_id,
                process=self.name,
                key=self.key,
                name=name,
                type=entry.name,
                schema_version=entry.version,
                data=data,
                correlation_id=env.correlation_id if env is not None else timeout_id,
                causation_id=env.id if env is not None else None,
                due_at=now + float(seconds),
                fired_at=None,
                created_at=now,
            )
        )
        return timeout_id

    def cancel(self, timeout: str) -> None:
        """Cancel a timeout of this instance: ``timeout`` is the id :meth:`schedule`
        returned or the name it was given. A timeout cancelled before its message is handled
        never reaches the handler; cancelling one that is gone does nothing."""
        if not isinstance(timeout, str) or not timeout:
            raise ValueError(f"cancel takes a timeout id or name, got {timeout!r}")
        self._changes.append(timeout)

    def complete(self) -> None:
        """Mark the instance done (stored with this handling) and cancel its timeouts; later
        events for its key are ignored."""
        self._done = True

    def __repr__(self) -> str:
        return f"<ProcessContext {self.name} {self.key!r}{' done' if self._done else ''}>"
