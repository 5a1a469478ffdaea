"""What a process manager is: its name, state class, correlation and handlers."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import attrs

from ..codec import Codec
from ..codec import dumps as _dumps
from ._records import ProcessError

if TYPE_CHECKING:
    from ._context import ProcessContext

__all__ = ["ProcessHandler", "ProcessManager"]

S = TypeVar("S")
F = TypeVar("F", bound=Callable[..., Any])

ProcessHandler = Callable[[Any, "ProcessContext[Any]"], object]
"""A handler of a process manager: ``handler(event, process)``."""

_Correlate = Callable[[Any], object]


@attrs.frozen
class Route:
    """A handler and whether its event types may start an instance."""

    fn: ProcessHandler
    starts: bool


class ProcessManager(Generic[S]):
    """The definition of a process manager: its name, state class, correlation and handlers.

    :param name: stable across releases: it names the durable subscriber (checkpoint, inbox,
        dead letters) and keys the stored instances.
    :param state: the class of an instance's state: an attrs class whose fields all have
        defaults (stored through the codec's converter; make it mutable, or assign a new
        value to ``process.state``), or ``dict`` (the default; JSON values only).
    :param correlate: for each event class, a function from an event to the key of its
        instance (a ``str``; other values are turned into one with ``str()``), or None when
        the event is not for this manager. A function for a base class serves its
        subclasses too.

    Mark handlers with :meth:`starts` and :meth:`handles`; each is called
    ``handler(event, process)`` with a :class:`~eventlite.process.ProcessContext`. Add the
    manager to an app with ``app.process_manager(manager)``. The definition holds no
    connection: one definition may be added to several apps (one after the other, or in
    different processes).
    """

    @overload
    def __init__(
        self: ProcessManager[dict[str, Any]],
        name: str,
        *,
        correlate: Mapping[type[Any], _Correlate] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        name: str,
        *,
        state: type[S],
        correlate: Mapping[type[Any], _Correlate] | None = None,
    ) -> None: ...

    def __init__(
        self,
        name: str,
        *,
        state: type[Any] = dict,
        correlate: Mapping[type[Any], _Correlate] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a process manager needs a non-empty name, got {name!r}")
        if state is not dict:
            if not (isinstance(state, type) and attrs.has(state)):
                raise TypeError(
                    f"process manager {name!r}: state must be dict or an attrs class, got {state!r}"
                )
            required = [f.name for f in attrs.fields(state) if f.default is attrs.NOTHING]
            if required:
                raise TypeError(
                    f"process manager {name!r}: every field of {state.__qualname__} needs a "
                    f"default (a new instance starts as {state.__qualname__}()); these have "
                    f"none: {required}"
                )
        correlate = dict(correlate or {})
        for event_type, fn in correlate.items():
            if not isinstance(event_type, type) or not callable(fn):
                raise TypeError(
                    f"process manager {name!r}: correlate maps event classes to functions, "
                    f"got {event_type!r}: {fn!r}"
                )
        self.name = name
        """The stable name."""
        self.state_type: type[Any] = state
        """The class of an instance's state."""
        self._correlate: dict[type[Any], _Correlate] = correlate
        self._routes: dict[type[Any], Route] = {}
        self._keys: dict[type[Any], _Correlate | None] = {}
        self._found: dict[type[Any], Route | None] = {}
        self._running = False  # added to an app: its subscription is fixed

    # -- handlers -----------------------------------------------------------------------

    def starts(self, *event_types: type[Any]) -> Callable[[F], F]:
        """Mark ``handler(event, process)`` as the handler of event types that start an
        instance: for a key without one, a new instance (state ``state()``) is created and
        given to the handler; for a running instance the handler runs on it. Each type needs
        a ``correlate`` function."""
        return self._mark(event_types, starts=True)

    def handles(self, *event_types: type[Any]) -> Callable[[F], F]:
        """Mark ``handler(event, process)`` as the handler of event types that continue an
        instance. An event of these types for a key without an instance is ignored (with an
        INFO log line). Types used only as timeout messages need no ``correlate``
        function: a fired timeout carries its instance's key."""
        return self._mark(event_types, starts=False)

    def _mark(self, event_types: Sequence[type[Any]], *, starts: bool) -> Callable[[F], F]:
        if self._running:
            raise ProcessError(
                f"process manager {self.name!r} runs in an app already: its subscription "
                "is fixed, so define every handler before app.process_manager()"
            )
        if not event_types:
            raise TypeError("give at least one event class")
        for t in event_types:
            if not isinstance(t, type):
                raise TypeError(f"process manager {self.name!r}: expected a class, got {t!r}")
            if t in self._routes:
                raise ValueError(
                    f"process manager {self.name!r} already has a handler for {t.__qualname__}"
                )
            if starts and self._key_function(t) is None:
                raise ValueError(
                    f"process manager {self.name!r}: {t.__qualname__} starts instances, so "
                    "it needs a correlate function (correlate={EventType: fn})"
                )

        def mark(handler: F) -> F:
            for t in event_types:
                if t in self._routes:
                    raise ValueError(
                        f"process manager {self.name!r} already has a handler for {t.__qualname__}"
                    )
                self._routes[t] = Route(handler, starts)
            self._found.clear()
            return handler

        return mark

    def handled_types(self) -> frozenset[type[Any]]:
        """The event classes this manager has a handler for (subclasses are handled too)."""
        return frozenset(self._routes)

    def starting_types(self) -> frozenset[type[Any]]:
        """The event classes whose handler may start an instance."""
        return frozenset(t for t, r in self._routes.items() if r.starts)

    def key_of(self, event: Any) -> str | None:
        """The key of the instance ``event`` belongs to, or None when it is not for this
        manager (no ``correlate`` function for its class, or the function said None)."""
        fn = self._key_function(type(event))
        if fn is None:
            return None
        key = fn(event)
        if key is None:
            return None
        return key if isinstance(key, str) else str(key)

    def _key_function(self, cls: type[Any]) -> _Correlate | None:
        try:
            return self._keys[cls]
        except KeyError:
            pass
        fn = next((self._correlate[c] for c in cls.__mro__ if c in self._correlate), None)
        self._keys[cls] = fn
        return fn

    def _route(self, cls: type[Any]) -> Route | None:
        try:
            return self._found[cls]
        except KeyError:
            pass
        found = next((self._routes[c] for c in cls.__mro__ if c in self._routes), None)
        self._found[cls] = found
        return found

    # -- state --------------------------------------------------------------------------

    def _new_state(self) -> Any:
        return self.state_type()

    def _dump_state(self, state: Any, codec: Codec) -> str:
        kind = self.state_type
        if not isinstance(state, kind):
            raise TypeError(
                f"process manager {self.name!r}: state must stay a {kind.__qualname__}, got "
                f"{state!r}"
            )
        if kind is dict:
            return _dumps(state)
        return _dumps(codec.converter.unstructure(state))

    def _load_state(self, text: str, codec: Codec) -> Any:
        raw = json.loads(text)
        if self.state_type is dict:
            return raw
        return codec.converter.structure(raw, self.state_type)

    def __repr__(self) -> str:
        return f"<ProcessManager {self.name!r} {sorted(t.__qualname__ for t in self._routes)}>"
