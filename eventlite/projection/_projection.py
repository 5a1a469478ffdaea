"""What a projection is: the base class, the ``@projects`` mark, its error."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

import attrs

from ..exceptions import EventliteError

__all__ = ["Progress", "Projection", "ProjectionError", "ProjectionMode", "projects"]

ProjectionMode = Literal["inline", "tracking"]
"""``"inline"``: updated in the events' own transaction. ``"tracking"``: by a thread."""

Progress = Callable[[int, int], object]
"""``progress(done, total)``: the log position a rebuild has reached, and the head."""

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__eventlite_projects__"


class ProjectionError(EventliteError):
    """A projection's handler failed (``__cause__`` is the handler's exception).

    ``name`` is the projection; ``position`` the stored event it was applying, when known.
    """

    def __init__(self, name: str, message: str, position: int | None = None) -> None:
        self.name = name
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"projection {name!r}{where}: {message}")


def projects(*event_types: type[Any]) -> Callable[[F], F]:
    """Mark a :class:`Projection` method as the handler of these event types.

    The method is called ``method(event, db)``, ``db`` being the storage's read-model
    helper (on SQLite a ``sqlite_utils.Database``) bound to the transaction that also
    moves the checkpoint; one with a parameter named ``envelope`` also gets the stored
    :class:`~eventlite.envelope.Envelope` (position, stream, timestamp, metadata) as
    ``envelope=``. A handler of a base class also handles its subclasses, unless they
    have a handler of their own. (Named ``projects``, not ``handles``, so it is never
    mistaken for the bus's command handlers.)
    """
    if not event_types:
        raise TypeError("@projects needs at least one event type")
    for t in event_types:
        if not isinstance(t, type):
            raise TypeError(f"@projects takes event classes, got {t!r}")

    def mark(fn: F) -> F:
        setattr(fn, _MARK, (*getattr(fn, _MARK, ()), *event_types))
        return fn

    return mark


@attrs.frozen
class Handler:
    """One ``@projects`` method: the function, and whether it takes ``envelope=``."""

    fn: Callable[..., Any]
    wants_envelope: bool


class Projection:
    """Base class of projections (see :mod:`eventlite.projection`).

    Subclasses set ``tables`` (the read-model tables a rebuild drops) or override
    :meth:`reset`, create their tables in :meth:`setup`, and mark handlers with
    :func:`projects`. ``name`` keys the checkpoint and defaults to the class name: keep it
    stable across releases. ``db`` below is the storage's read-model helper: a
    ``sqlite_utils.Database`` on SQLite.

    For speed, a projection may gather changes in memory and write them once per batch:
    :meth:`begin_batch` is called before each batch (clear the buffers there) and
    :meth:`end_batch` after it, inside the batch's transaction.
    """

    name: ClassVar[str] = ""
    """The projection's stable name (default: the class name)."""
    tables: ClassVar[tuple[str, ...]] = ()
    """The read-model tables; :meth:`reset` drops them before a rebuild."""
    _handlers: ClassVar[dict[type[Any], Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__
        handlers: dict[type[Any], Handler] = {}
        for klass in reversed(cls.__mro__):
            own: dict[type[Any], str] = {}
            for attr, value in vars(klass).items():
                for event_type in getattr(value, _MARK, ()):
                    if event_type in own:
                        raise TypeError(
                            f"{cls.__qualname__}: {klass.__qualname__}.{own[event_type]} and "
                            f".{attr} both project {event_type.__qualname__}"
                        )
                    own[event_type] = attr
                    wants = "envelope" in inspect.signature(value).parameters
                    handlers[event_type] = Handler(value, wants)
        cls._handlers = handlers

    @classmethod
    def handled_types(cls) -> frozenset[type[Any]]:
        """The event classes this projection has a handler for."""
        return frozenset(cls._handlers)

    def setup(self, db: Any) -> None:
        """Create the read-model tables if they are missing (``if_not_exists=True``).

        Called inside a transaction when the projection is added to a projector and after
        every :meth:`reset`. The default creates nothing.
        """

    def reset(self, db: Any) -> None:
        """Empty the read model before a rebuild; the default drops every table in
        :attr:`tables` (then :meth:`setup` runs again)."""
        for table in self.tables:
            db.table(table).drop(ignore=True)

    def begin_batch(self) -> None:
        """Called before each batch of events is applied (also before a retried one)."""

    def end_batch(self, db: Any) -> None:
        """Called after each batch, in its transaction, before the checkpoint moves."""

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self.name!r}>"
