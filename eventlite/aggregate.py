"""Event-sourced aggregates: state rebuilt from the events that changed it.

An aggregate records events; each recorded event is applied at once by the method decorated
``@applies(EventType)`` and kept as pending until the unit of work appends it to the
aggregate's stream. Loading replays the stream (or a snapshot plus the events after it)
through the same methods, so state changes live in exactly one place::

    class Account(Aggregate):
        balance: Decimal = Decimal(0)

        def deposit(self, amount: Decimal) -> None:
            if amount <= 0:
                raise ValueError("deposit must be positive")
            self.record(Deposited(self.id, amount))

        @applies(Deposited)
        def _deposited(self, event: Deposited) -> None:
            self.balance += event.amount

State fields are the class's annotated attributes (``balance`` above); their defaults are
the state of a new aggregate, and they are what a snapshot saves. An event with no
``@applies`` method changes no state but still counts toward the version.
"""

from __future__ import annotations

import copy
import hashlib
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

__all__ = ["Aggregate", "applies"]

A = TypeVar("A", bound="Aggregate")
F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__eventlite_applies__"
_INTERNAL = frozenset({"id", "version"})


def applies(event_type: type[Any]) -> Callable[[F], F]:
    """Mark an aggregate method as the one that applies ``event_type`` (and its subclasses,
    unless they have a method of their own) to the aggregate's state."""

    def mark(fn: F) -> F:
        setattr(fn, _MARK, event_type)
        return fn

    return mark


class Aggregate:
    """Base class of event-sourced aggregates.

    ``id`` is the aggregate's id; ``version`` counts every event applied, pending ones
    included. The stream is ``stream_id_for(id)``: ``"<stream_prefix>-<id>"``, where
    ``stream_prefix`` defaults to the class name. A subclass that defines ``__init__`` must
    accept the id alone, since loading calls ``cls(id)`` before replaying.
    """

    stream_prefix: ClassVar[str | None] = None
    """The prefix of this aggregate type's stream ids; the class name when None."""
    snapshot_every: ClassVar[int | None] = None
    """Write a snapshot each time the version crosses a multiple of this (None: never)."""

    _appliers: ClassVar[dict[type[Any], Callable[[Any, Any], None]]] = {}
    _applier_cache: ClassVar[dict[type[Any], Callable[[Any, Any], None] | None]] = {}
    _state_fields: ClassVar[tuple[str, ...] | None] = None

    id: str
    version: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        appliers = dict(cls._appliers)
        for value in cls.__dict__.values():
            event_type = getattr(value, _MARK, None)
            if event_type is not None:
                appliers[event_type] = value
        cls._appliers = appliers
        cls._applier_cache = {}
        cls._state_fields = None

    def __init__(self, id: str) -> None:
        self.id = id
        self.version = 0
        self._pending: list[Any] = []
        self._loaded_version = 0
        for name in self.state_fields():
            default = getattr(type(self), name, None)
            # mutable defaults (lists, dicts of lists, ...) are copied all the way down, so
            # instances never share any part of them
            setattr(self, name, copy.deepcopy(default))

    @classmethod
    def stream_id_for(cls, aggregate_id: str) -> str:
        """The stream that holds the events of the aggregate with this id."""
        return f"{cls.stream_prefix or cls.__name__}-{aggregate_id}"

    @property
    def stream_id(self) -> str:
        """This aggregate's stream id."""
        return self.stream_id_for(self.id)

    def record(self, event: Any) -> None:
        """Apply ``event`` to the state at once and keep it to be saved."""
        self._apply(event)
        self._pending.append(event)

    @property
    def pending_events(self) -> Sequence[Any]:
        """Events recorded since the aggregate was loaded or last saved."""
        return tuple(self._pending)

    @property
    def loaded_version(self) -> int:
        """The version the aggregate had when loaded: the expected version on save."""
        return self._loaded_version

    def _apply(self, event: Any) -> None:
        cls = type(self)
        event_type = type(event)
        try:
            fn = cls._applier_cache[event_type]
        except KeyError:
            fn = None
            for base in event_type.__mro__:
                fn = cls._appliers.get(base)
                if fn is not None:
                    break
            cls._applier_cache = {**cls._applier_cache, event_type: fn}
        if fn is not None:
            fn(self, event)
        self.version += 1

    def _mark_saved(self) -> None:
        self._pending.clear()
        self._loaded_version = self.version

    @classmethod
    def _rehydrate(cls: type[A], aggregate_id: str, events: Sequence[Any], version: int = 0) -> A:
        agg = cls(aggregate_id)
        agg.version = version
        for event in events:
            agg._apply(event)
        agg._loaded_version = agg.version
        return agg

    @classmethod
    def state_fields(cls) -> tuple[str, ...]:
        """The names of the annotated state attributes, base classes first."""
        fields = cls._state_fields
        if fields is None:
            hints = typing.get_type_hints(cls)
            fields = tuple(
                name
                for name, hint in hints.items()
                if not name.startswith("_")
                and name not in _INTERNAL
                and typing.get_origin(hint) is not ClassVar
            )
            cls._state_fields = fields
        return fields

    @classmethod
    def state_fingerprint(cls) -> str:
        """A digest of the state fields and their types: a snapshot taken under another
        shape is not trusted."""
        hints = typing.get_type_hints(cls)
        text = ";".join(f"{name}:{hints[name]!r}" for name in cls.state_fields())
        return hashlib.sha256(f"{cls.__qualname__}|{text}".encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        state = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.state_fields())
        sep = ", " if state else ""
        return f"{type(self).__name__}(id={self.id!r}, version={self.version}{sep}{state})"
