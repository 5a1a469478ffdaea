"""Message classes and the registry that names them.

Declare messages with :func:`event`, :func:`command` or :func:`query`::

    @eventlite.event
    class OrderPlaced:
        order_id: str
        total: Decimal

The decorator turns a plain class into a frozen attrs class (an attrs class is kept as it
is) and registers it under a stable name (the class name, or ``name=``) and a schema
``version=`` (1 unless given). The registry is the only place the codec looks for classes:
nothing named by stored or received data is ever imported.

Building a message checks nothing, so it costs what an attrs class costs: the codec checks
every value against its declared type when it writes the message (see
:mod:`eventlite.codec`). The one exception is numbers written as literals: in a class the
decorator makes, a field declared ``Decimal`` (or ``Decimal | None``) turns an ``int`` or a
numeric ``str`` into a ``Decimal`` and refuses a ``float`` (``TypeError``) or a string that
is not a finite number (``ValueError``), and a field declared ``float`` turns an ``int``
into a ``float``, so ``Deposited(5)`` holds ``Decimal('5')`` and reads back the same.
"""

from __future__ import annotations

import enum
import re
import threading
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

import attrs

from .exceptions import DuplicateMessageType, NotAMessage, UnknownMessageType

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: Any) -> Callable[[T], T]:
        # Only type checkers read it; typing has it from Python 3.11, typing_extensions
        # is not a runtime dependency.
        return lambda fn: fn


__all__ = [
    "MessageKind",
    "MessageType",
    "Registry",
    "Upcaster",
    "command",
    "default_registry",
    "event",
    "query",
]

T = TypeVar("T", bound=type)


class Upcaster(Protocol):
    """A function from the raw JSON dict of one schema version to the dict of the next."""

    def __call__(self, data: dict[str, Any], /) -> dict[str, Any]: ...


class MessageKind(enum.Enum):
    """What a message is for: an event (past), a command (do) or a query (ask)."""

    EVENT = "event"
    COMMAND = "command"
    QUERY = "query"


@attrs.frozen
class MessageType:
    """What the registry knows of one message class."""

    cls: type[Any]
    """The attrs class."""
    name: str
    """The stable name written into stored and sent messages."""
    version: int
    """The current schema version; older stored versions are upcast to it on read."""
    kind: MessageKind
    """Event, command or query."""


class Registry:
    """The application's message types, by class and by stable name.

    Thread-safe: registration takes a lock and replaces the lookup tables (copy-on-write),
    so lookups never lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, MessageType] = {}
        self._by_class: dict[type[Any], MessageType] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(
        self,
        cls: type[Any],
        kind: MessageKind,
        *,
        name: str | None = None,
        version: int = 1,
    ) -> MessageType:
        """Register an attrs class; raises :class:`DuplicateMessageType` when the name is
        taken by another class. Registering the same class again under the same name is a
        no-op that returns the existing entry."""
        if not attrs.has(cls):
            raise NotAMessage(f"{cls.__qualname__} is not an attrs class")
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"{cls.__qualname__}: version must be an int >= 1, got {version!r}")
        type_name = name if name is not None else cls.__name__
        if not type_name:
            raise ValueError(f"{cls.__qualname__}: the message name must not be empty")
        entry = MessageType(cls=cls, name=type_name, version=version, kind=kind)
        with self._lock:
            existing = self._by_name.get(type_name)
            if existing is not None:
                if existing.cls is cls and existing == entry:
                    return existing
                raise DuplicateMessageType(
                    f"message name {type_name!r} is already registered for "
                    f"{existing.cls.__module__}.{existing.cls.__qualname__}; "
                    f"cannot register {cls.__module__}.{cls.__qualname__} under it"
                )
            other = self._by_class.get(cls)
            if other is not None:
                raise DuplicateMessageType(
                    f"{cls.__qualname__} is already registered as {other.name!r}"
                )
            self._by_name = {**self._by_name, type_name: entry}
            self._by_class = {**self._by_class, cls: entry}
        return entry

    def by_name(self, name: str, *, position: int | None = None) -> MessageType:
        """The entry for a stable name; raises :class:`UnknownMessageType` naming it."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownMessageType(name, position) from None

    def by_class(self, cls: type[Any]) -> MessageType:
        """The entry for a class; raises :class:`NotAMessage` for an unregistered class."""
        try:
            return self._by_class[cls]
        except KeyError:
            if "__eventlite_name__" in cls.__dict__:
                raise NotAMessage(
                    f"{cls.__qualname__} is declared as {cls.__eventlite_name__!r} in another "
                    "registry than this one; declare it with registry=<this registry> (for "
                    "an App: registry=app.registry), or give the App the registry it uses"
                ) from None
            raise NotAMessage(
                f"{cls.__qualname__} is not a registered message; decorate it with "
                "@eventlite.event, @eventlite.command or @eventlite.query"
            ) from None

    def find(self, cls: type[Any]) -> MessageType | None:
        """The entry for a class, or None."""
        return self._by_class.get(cls)

    def __contains__(self, item: object) -> bool:
        return item in self._by_class or item in self._by_name

    def __iter__(self) -> Iterator[MessageType]:
        return iter(list(self._by_name.values()))

    def upcaster(self, name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorate a function that turns the raw dict of ``name`` at ``from_version`` into
        the dict of ``from_version + 1``. Upcasters chain: v1 → v2 → v3."""

        def decorate(fn: Upcaster) -> Upcaster:
            self.add_upcaster(name, from_version, fn)
            return fn

        return decorate

    def add_upcaster(self, name: str, from_version: int, fn: Upcaster) -> None:
        """Register ``fn`` as the upcaster of ``name`` from ``from_version`` to the next."""
        with self._lock:
            key = (name, from_version)
            if key in self._upcasters:
                raise ValueError(f"{name!r} already has an upcaster from version {from_version}")
            self._upcasters = {**self._upcasters, key: fn}

    def upcast(
        self, name: str, data: dict[str, Any], from_version: int, to_version: int
    ) -> dict[str, Any]:
        """Run the chain of upcasters from ``from_version`` up to ``to_version``.

        Raises ``LookupError`` when a link of the chain is missing."""
        upcasters = self._upcasters
        for v in range(from_version, to_version):
            try:
                fn = upcasters[(name, v)]
            except KeyError:
                raise LookupError(f"no upcaster for {name!r} from version {v} to {v + 1}") from None
            data = fn(data)
        return data

    def names(self) -> Mapping[str, MessageType]:
        """A snapshot of the entries by name."""
        return dict(self._by_name)


default_registry = Registry()
"""The registry the decorators use unless given ``registry=``."""


def _to_decimal(owner: str) -> Callable[[Any], Any]:
    def convert_to_decimal(value: Any) -> Any:
        kind = type(value)
        if kind is int:
            return Decimal(value)
        if kind is str:
            try:
                number = Decimal(value)
            except InvalidOperation:
                raise ValueError(f"{owner}: {value!r} is not a decimal number") from None
            if not number.is_finite():
                raise ValueError(f"{owner}: {value!r} is not a finite decimal number")
            return number
        if kind is float:
            raise TypeError(
                f"{owner}: a float cannot be a Decimal, it would bring its binary rounding "
                f"along: pass Decimal({str(value)!r}) or the string {str(value)!r}"
            )
        return value  # a Decimal, or a value the codec will refuse, naming the field

    return convert_to_decimal


def _to_float(value: Any) -> Any:
    if type(value) is int:
        try:
            number = float(value)
        except OverflowError:
            return value
        if number == value:
            return number
    return value


_DECIMAL_TEXT = re.compile(
    r"(decimal\.)?Decimal|Optional\[(decimal\.)?Decimal\]|(decimal\.)?Decimal \| None"
    r"|None \| (decimal\.)?Decimal"
)


def _number_kind(annotation: Any) -> type[Any] | None:
    """``Decimal`` or ``float`` when a field so declared (or Optional) gets a converter."""
    if isinstance(annotation, str):
        text = annotation.strip()
        if text == "float":
            return float
        return Decimal if _DECIMAL_TEXT.fullmatch(text) else None
    if annotation is float or annotation is Decimal:
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = set(typing.get_args(annotation))
        if args == {Decimal, type(None)}:
            return Decimal
    return None


def _convert_numbers(cls: type[Any], fields: list[attrs.Attribute[Any]]) -> list[Any]:
    """The attrs field transformer of the classes the decorators make (see the module doc)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a forward reference not resolvable yet: read the text instead
        hints = {}
    out: list[Any] = []
    for field in fields:
        kind = _number_kind(hints.get(field.name, field.type))
        if kind is not None and field.converter is None:
            if kind is Decimal:
                converter = _to_decimal(f"{cls.__qualname__}.{field.name}")
            else:
                converter = _to_float
            field = field.evolve(converter=converter)
        out.append(field)
    return out


def _declare(
    cls: type[Any],
    kind: MessageKind,
    name: str | None,
    version: int,
    registry: Registry | None,
) -> type[Any]:
    # A subclass of an attrs class is not an attrs class of its own until decorated: check
    # the class itself, or the fields it adds would be silently dropped.
    if "__attrs_attrs__" not in cls.__dict__:
        cls = attrs.frozen(cls, field_transformer=_convert_numbers)
    entry = (registry if registry is not None else default_registry).register(
        cls, kind, name=name, version=version
    )
    # Read by Envelope.type without a registry lookup; only the class's own entry counts,
    # so an undecorated subclass does not borrow its base's name.
    type.__setattr__(cls, "__eventlite_name__", entry.name)
    return cls


def _decorate(
    cls: Any, kind: MessageKind, name: str | None, version: int, registry: Registry | None
) -> Any:
    if cls is not None:
        return _declare(cls, kind, name, version, registry)
    return lambda c: _declare(c, kind, name, version, registry)


@overload
def event(cls: T, /) -> T:
    """``@event`` on a class: declare it with the defaults."""


@overload
def event(
    *, name: str | None = None, version: int = 1, registry: Registry | None = None
) -> Callable[[T], T]:
    """``@event(...)``: declare with a name, a schema version or a registry."""


@dataclass_transform(frozen_default=True, field_specifiers=(attrs.field,))
def event(
    cls: Any = None,
    /,
    *,
    name: str | None = None,
    version: int = 1,
    registry: Registry | None = None,
) -> Any:
    """Declare an event class (past tense: ``OrderPlaced``), delivered to zero or many
    subscribers: ``@event`` or ``@event(name=..., version=..., registry=...)``.

    A plain class becomes a frozen attrs class; it is registered under ``name`` (default:
    the class name) at schema ``version`` (default 1) in ``registry`` (default:
    :data:`default_registry`). Raises :class:`DuplicateMessageType` for a name taken by
    another class."""
    return _decorate(cls, MessageKind.EVENT, name, version, registry)


@overload
def command(cls: T, /) -> T:
    """``@command`` on a class: declare it with the defaults."""


@overload
def command(
    *, name: str | None = None, version: int = 1, registry: Registry | None = None
) -> Callable[[T], T]:
    """``@command(...)``: declare with a name, a schema version or a registry."""


@dataclass_transform(frozen_default=True, field_specifiers=(attrs.field,))
def command(
    cls: Any = None,
    /,
    *,
    name: str | None = None,
    version: int = 1,
    registry: Registry | None = None,
) -> Any:
    """Declare a command class (imperative: ``PlaceOrder``), handled by exactly one handler.
    Takes the same arguments as :func:`event`."""
    return _decorate(cls, MessageKind.COMMAND, name, version, registry)


@overload
def query(cls: T, /) -> T:
    """``@query`` on a class: declare it with the defaults."""


@overload
def query(
    *, name: str | None = None, version: int = 1, registry: Registry | None = None
) -> Callable[[T], T]:
    """``@query(...)``: declare with a name, a schema version or a registry."""


@dataclass_transform(frozen_default=True, field_specifiers=(attrs.field,))
def query(
    cls: Any = None,
    /,
    *,
    name: str | None = None,
    version: int = 1,
    registry: Registry | None = None,
) -> Any:
    """Declare a query class (a question: ``GetOrder``), answered by exactly one handler.
    Takes the same arguments as :func:`event`."""
    return _decorate(cls, MessageKind.QUERY, name, version, registry)
