"""Hypothesis strategies for registered message classes (needs ``hypothesis``).

:func:`from_type` builds instances of one attrs message class from its field types;
:func:`messages` draws instances of any class in a registry. Every value they make is one
the :class:`~eventlite.Codec` can write and read back unchanged, so a round trip is a
one-line property::

    @given(strategies.messages(registry))
    def test_round_trip(message):
        codec = Codec(registry)
        name = codec.message_type(message).name
        assert message == codec.decode(name, codec.encode(message))

Field types understood: ``int``, ``float`` (finite), ``str``, ``bool``, ``Decimal`` (finite),
timezone-aware ``datetime``, ``date``, ``UUID``, ``Enum`` subclasses, ``Literal``,
``Optional``/unions, ``list``, ``tuple`` (``tuple[X, ...]`` and fixed shapes), ``set``,
``frozenset``, ``dict`` and nested attrs classes. Anything else raises ``TypeError`` naming
the class and field; give that field a strategy of its own as a keyword of
:func:`from_type`.
"""

from __future__ import annotations

import collections.abc as cabc
import enum
import types
import typing
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import attrs
from hypothesis import strategies as st

from ..envelope import Envelope, Metadata
from ..messages import MessageKind, Registry

__all__ = ["aware_datetimes", "envelopes", "for_type", "from_type", "messages"]

T = TypeVar("T")

MAX_SIZE = 4
"""The most items a generated collection holds: enough to find ordering and duplicate bugs,
few enough to keep nested messages small."""

_NONE = type(None)


def aware_datetimes(
    min_value: datetime = datetime(1900, 1, 2),
    max_value: datetime = datetime(2200, 1, 1),
) -> st.SearchStrategy[datetime]:
    """Timezone-aware datetimes with fixed UTC offsets (up to ±14 h), microsecond precision.

    Fixed offsets, not zone names: a wall time that a named zone skips or repeats compares
    unequal to every other zone's time, so it could never survive a round trip through UTC.
    The bounds are naive datetimes, kept a day inside the year range so that no offset
    pushes a value out of it.
    """
    return st.builds(
        lambda dt, minutes: dt.replace(tzinfo=timezone(timedelta(minutes=minutes))),
        st.datetimes(min_value=min_value, max_value=max_value),
        st.integers(min_value=-14 * 60, max_value=14 * 60),
    )


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or origin is types.UnionType


# What the codec reads each back as: ``Sequence[X]`` as a tuple, ``MutableSequence[X]`` as a
# list; the codec writes only values of the type it reads back.
_SEQUENCES = {list, cabc.MutableSequence}
_TUPLES = {cabc.Sequence}
_SETS = {set, cabc.MutableSet}
_FROZENSETS = {frozenset, cabc.Set}
_MAPPINGS = {dict, cabc.Mapping, cabc.MutableMapping}


def for_type(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for values of one field type, as the codec understands them.

    Raises ``TypeError`` for a type it cannot generate (``Any``, a bare ``list`` with no item
    type, a class the codec has no hook for).
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is not None:
        return _for_generic(tp, origin, args)
    supertype = getattr(tp, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return for_type(supertype)
    if not isinstance(tp, type):
        raise TypeError(f"cannot generate values of {tp!r}")
    if tp in (list, tuple, set, frozenset, dict):
        raise TypeError(f"cannot generate a bare {tp.__name__}: give its item type")
    if issubclass(tp, enum.Enum):  # before int and str: IntEnum and StrEnum are both
        return st.sampled_from(tp)
    if issubclass(tp, bool):
        return st.booleans()
    if attrs.has(tp):
        # deferred, so that a class that refers to itself through an Optional field works
        return st.deferred(lambda: from_type(tp))
    leaf = _LEAVES.get(tp)
    if leaf is None:
        raise TypeError(f"cannot generate values of {tp.__qualname__}")
    return leaf()


def _for_generic(tp: Any, origin: Any, args: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    if _is_union(origin):
        options = [for_type(a) for a in args if a is not _NONE]
        strategy: st.SearchStrategy[Any] = st.one_of(options)
        return st.none() | strategy if _NONE in args else strategy
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(for_type(args[0]), max_size=MAX_SIZE).map(tuple)
        if args in ((), ((),)):
            return st.just(())
        return st.tuples(*(for_type(a) for a in args))
    if origin in _SEQUENCES:
        return st.lists(for_type(args[0]), max_size=MAX_SIZE)
    if origin in _TUPLES:
        return st.lists(for_type(args[0]), max_size=MAX_SIZE).map(tuple)
    if origin in _SETS:
        return st.sets(for_type(args[0]), max_size=MAX_SIZE)
    if origin in _FROZENSETS:
        return st.frozensets(for_type(args[0]), max_size=MAX_SIZE)
    if origin in _MAPPINGS:
        return st.dictionaries(for_type(args[0]), for_type(args[1]), max_size=MAX_SIZE)
    raise TypeError(f"cannot generate values of {tp!r}")


_LEAVES: dict[type[Any], Callable[[], st.SearchStrategy[Any]]] = {
    int: st.integers,
    str: st.text,
    float: lambda: st.floats(allow_nan=False, allow_infinity=False),
    Decimal: lambda: st.decimals(allow_nan=False, allow_infinity=False),
    datetime: aware_datetimes,
    date: st.dates,
    UUID: st.uuids,
}


def from_type(cls: type[T], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[T]:
    """Instances of the attrs class ``cls``, each field drawn from its type.

    Keyword arguments replace the strategy of the fields they name (by attribute name),
    for fields whose type says too little (``order_id=st.from_regex(r"o-[0-9]+")``) or that
    the codec reads through a hook of its own. Fields that ``__init__`` does not take are
    left to their defaults. Raises ``TypeError`` when ``cls`` is not an attrs class, when a
    keyword names no field, or when a field's type cannot be generated.
    """
    build: Callable[..., T] = cls
    if not (isinstance(cls, type) and attrs.has(cls)):
        raise TypeError(f"from_type() takes an attrs class, got {cls!r}")
    try:
        attrs.resolve_types(cls)
    except NameError as exc:
        raise TypeError(
            f"{cls.__qualname__}: a field's type annotation names something not importable "
            f"from its module ({exc}); pass strategies for such fields as keywords"
        ) from None
    known = {f.name for f in attrs.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(f"{cls.__qualname__} has no field(s) {', '.join(unknown)}")
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for field in attrs.fields(cls):
        if not field.init:
            continue
        strategy = fields.get(field.name)
        if strategy is None:
            if field.type is None:
                raise TypeError(
                    f"{cls.__qualname__}.{field.name} has no type annotation; pass "
                    f"from_type({cls.__qualname__}, {field.name}=<strategy>)"
                )
            try:
                strategy = for_type(field.type)
            except TypeError as exc:
                raise TypeError(
                    f"{cls.__qualname__}.{field.name}: {exc}; pass "
                    f"from_type({cls.__qualname__}, {field.name}=<strategy>)"
                ) from None
        kwargs[field.alias or field.name] = strategy
    return st.builds(build, **kwargs)


def messages(
    registry: Registry, *, kinds: Iterable[MessageKind] | None = None
) -> st.SearchStrategy[Any]:
    """Instances of every class registered in ``registry`` (only of these ``kinds`` when
    given), shrinking towards the first class by name.

    The classes are read when this is called; raises ``ValueError`` when none qualifies.
    """
    wanted = set(MessageKind) if kinds is None else set(kinds)
    entries = sorted(
        (e for e in registry if e.kind in wanted),
        key=lambda e: e.name,
    )
    if not entries:
        kinds_text = ", ".join(sorted(k.value for k in wanted))
        raise ValueError(f"the registry holds no message class of kind {kinds_text}")
    return st.one_of([from_type(e.cls) for e in entries])


def envelopes(messages: st.SearchStrategy[Any]) -> st.SearchStrategy[Envelope]:
    """Envelopes around the drawn messages, with random ids, correlation and causation ids,
    user id, headers and a UTC timestamp (microsecond precision), as they travel between
    processes (no stream, version or position)."""
    ids = st.uuids().map(str)
    metadata = st.builds(
        Metadata,
        correlation_id=ids,
        causation_id=st.none() | ids,
        user_id=st.none() | st.text(max_size=10),
        headers=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    )
    timestamps = st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.just(timezone.utc),
    )
    return st.builds(
        lambda message, id, meta, ts: Envelope(message, id=id, metadata=meta, timestamp=ts),
        messages,
        ids,
        metadata,
        timestamps,
    )
