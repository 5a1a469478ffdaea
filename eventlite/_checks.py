"""What the codec checks before it writes a message: every value against its declared type,
so that what is written reads back as an equal value of the same type.

The codec asks a :class:`Checks` (one per converter) for the check of a message class; the
check is compiled once per class from its field types and raises :class:`Invalid` naming
the field path (``lines[2].amount``), what was expected and the value found. The rules:

- ``int`` takes an ``int`` (not a ``bool``, which reads back as ``1``/``0``; not an
  ``IntEnum``), short enough for Python to read back (``sys.get_int_max_str_digits()``).
- ``float`` takes a finite ``float``: JSON has no NaN or Infinity, and an ``int`` would read
  back as a ``float``.
- ``Decimal`` takes a finite ``Decimal`` (written as a string: no digit is lost).
- ``str`` takes a ``str`` that encodes as UTF-8 (a lone surrogate does not).
- ``bool``, ``bytes``, ``UUID`` and ``date`` take exactly that type (a ``datetime`` is not a
  ``date`` here); ``datetime`` takes a timezone-aware one that has a UTC equivalent.
- An ``Enum`` takes its members (whose values must be JSON strings or numbers); a
  ``Literal`` one of its values, of the same type.
- An attrs class takes an instance of exactly that class (a subclass would be written and
  read back as the declared class), checked field by field.
- ``list``, ``tuple`` (``tuple[X, ...]`` or fixed), ``set``, ``frozenset``, ``dict`` and the
  ``collections.abc`` ones take the concrete type the converter reads back (for instance
  ``Sequence[X]`` reads back as a ``tuple``), checked item by item; ``dict`` keys must be
  of a type that survives as a JSON object key (``str``, ``int``, ``float``, ``Decimal``,
  ``UUID``, ``date``, ``datetime``, an Enum of strings; not ``bool``).
- ``X | None`` takes ``None`` or an ``X``; ``None`` is refused anywhere else. Other unions
  must be readable back unambiguously: their members must be written as different JSON
  kinds (string, integer, float, boolean, array, object), or all be attrs classes that the
  converter can tell apart.
- ``Any``, an unannotated field, and bare ``list``/``dict``/``tuple`` take plain JSON values:
  ``None``, ``bool``, ``int``, ``float``, ``str``, ``list`` and ``dict`` with ``str`` keys.
- A class the converter has a hook of yours for takes instances of that class; your hook
  decides the rest.
- Containers and attrs instances nest at most :data:`MAX_DEPTH` levels.
"""

from __future__ import annotations

import collections.abc as cabc
import enum
import operator
import reprlib
import sys
import threading
import types
import typing
from collections.abc import Callable
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import attrs
import cattrs

MAX_DEPTH: Final = 64
"""How deeply containers and attrs instances may nest inside a message."""

_NONE = type(None)
_NOTHING: Any = object()
# Values of up to this many bits are printed with fewer digits than any limit Python allows
# (``sys.set_int_max_str_digits`` takes no less than 640).
_SMALL_INT: Final = 1 << 2000

Check = Callable[[Any, int], None]
"""``check(value, depth)``: returns when ``value`` may be written, else raises Invalid."""


class Invalid(Exception):
    """A value the codec will not write: why, the value, and where (``path``, built from
    the innermost step outwards)."""

    def __init__(self, reason: str, value: Any = _NOTHING) -> None:
        super().__init__(reason)
        self.reason = reason
        self.value = value
        self.path: list[str] = []

    def where(self) -> str:
        """The field path, such as ``lines[2].amount``."""
        return "".join(reversed(self.path)).lstrip(".")

    def describe(self) -> str:
        """The reason, with the offending value when there is one."""
        if self.value is _NOTHING:
            return self.reason
        return f"{self.reason}, got {describe(self.value)}"


_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlevel = 2
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = _repr.maxdict = 4


def describe(value: Any) -> str:
    """``type value``, the value's repr shortened to a line."""
    if type(value) is int and not -_SMALL_INT < value < _SMALL_INT:
        return f"an int of {value.bit_length()} bits"
    try:
        text = _repr.repr(value)
    except Exception:
        text = f"<{type(value).__qualname__} object>"
    name = type(value).__qualname__
    if value is None or type(value) is bool or text.split("(")[0].endswith(name):
        return text
    return f"{name} {text}"


def _wrong(expected: str, value: Any) -> Invalid:
    if value is None:
        return Invalid(f"expected {expected} (None is only allowed in an Optional field)", None)
    return Invalid(f"expected {expected}", value)


# -- leaves ----------------------------------------------------------------------------------


def _utf8(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Invalid(
            f"expected a string that encodes as UTF-8 (lone surrogate {value[exc.start]!r} "
            f"at index {exc.start})",
            value,
        ) from None


def check_str(value: Any, depth: int) -> None:
    """A ``str`` that encodes as UTF-8."""
    if type(value) is not str:
        raise _wrong("str", value)
    if not value.isascii():
        _utf8(value)


def _int_fits(value: int) -> bool:
    limit = sys.get_int_max_str_digits()
    if not limit or -_SMALL_INT < value < _SMALL_INT:
        return True
    try:
        return len(str(abs(value))) <= limit
    except ValueError:
        return False


def check_int(value: Any, depth: int) -> None:
    """An ``int`` (not a bool or an IntEnum) that Python can read back from JSON."""
    if type(value) is not int:
        if isinstance(value, float) and value.is_integer():
            raise Invalid("expected int (a float would read back as an int)", value)
        raise _wrong("int", value)
    if not _int_fits(value):
        raise Invalid(
            f"expected an int of at most {sys.get_int_max_str_digits()} digits, which is what "
            "Python reads back from JSON (sys.get_int_max_str_digits())",
            value,
        )


def check_float(value: Any, depth: int) -> None:
    """A finite ``float``."""
    if type(value) is not float:
        if type(value) is int:
            raise Invalid(
                "expected float (an int would read back as a float: write 3.0, not 3)", value
            )
        raise _wrong("float", value)
    if value - value != 0.0:
        raise Invalid("expected a finite float (JSON has no NaN or Infinity)", value)


def check_decimal(value: Any, depth: int) -> None:
    """A finite ``Decimal``."""
    if type(value) is not Decimal:
        if isinstance(value, float):
            raise Invalid(
                "expected Decimal (not a float, whose binary rounding it would carry: "
                "write Decimal('1.10'), or Decimal(str(x)))",
                value,
            )
        raise _wrong("Decimal", value)
    if not value.is_finite():
        raise Invalid("expected a finite Decimal", value)


def check_datetime(value: Any, depth: int) -> None:
    """A timezone-aware ``datetime`` that exists in UTC."""
    if type(value) is not datetime:
        raise _wrong("datetime", value)
    if value.utcoffset() is None:
        raise Invalid(
            "expected a timezone-aware datetime (a naive datetime has no zone to convert to "
            "UTC: attach one, e.g. tzinfo=timezone.utc)",
            value,
        )
    try:
        value.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise Invalid(
            "expected a datetime that exists in UTC (this one is out of range)", value
        ) from None


def _exact(tp: type[Any], expected: str | None = None) -> Check:
    name = expected or tp.__qualname__

    def check_exact(value: Any, depth: int) -> None:
        if type(value) is not tp:
            if tp is date and type(value) is datetime:
                raise Invalid("expected date (a datetime is not a date here)", value)
            raise _wrong(name, value)

    return check_exact


def check_json(value: Any, depth: int) -> None:
    """A plain JSON value, for ``Any``: None, bool, int, float, str, list, dict of str keys."""
    t = type(value)
    if value is None or t is bool:
        return
    if t is str:
        check_str(value, depth)
    elif t is int:
        check_int(value, depth)
    elif t is float:
        check_float(value, depth)
    elif t is list:
        if depth > MAX_DEPTH:
            raise Invalid(f"nested deeper than {MAX_DEPTH} levels")
        for i, item in enumerate(value):
            try:
                check_json(item, depth + 1)
            except Invalid as exc:
                exc.path.append(f"[{i}]")
                raise
    elif t is dict:
        if depth > MAX_DEPTH:
            raise Invalid(f"nested deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            step = f"[{_repr.repr(key)}]"
            if type(key) is not str:
                bad_key = Invalid("expected a str key (a field typed Any keeps plain JSON)", key)
                bad_key.path.append(step)
                raise bad_key
            try:
                check_str(key, depth)
                check_json(item, depth + 1)
            except Invalid as exc:
                exc.path.append(step)
                raise
    else:
        raise Invalid(
            "expected a plain JSON value (None, bool, int, float, str, list, or dict with "
            "str keys) in a field typed Any; declare the field's type to write other values",
            value,
        )


class Compiled(typing.NamedTuple):
    """The two checks of one declared type.

    ``fast(value, depth) -> bool`` is what :meth:`Checks.fast` runs before every write: it
    tests types and leaves to the writing itself what the writing refuses anyway (NaN and
    Infinity, huge ints, naive datetimes and non-finite Decimals in the converter's hooks,
    strings that are not UTF-8). ``full(value, depth)`` checks everything and raises
    :class:`Invalid` with the field path; it runs when ``fast`` or the writing failed, to
    say why. ``leaf`` is the one class a value must have when that class alone decides
    (``str``, ``int``, ``UUID``, an Enum...), else None.
    """

    fast: Fast
    full: Check
    leaf: type[Any] | None = None


Fast = Callable[[Any, int], bool]
"""``fast(value, depth) -> bool``: False when the value may not be written (see Compiled)."""


def _fast_json(value: Any, depth: int) -> bool:
    t = type(value)
    if t is list:
        return depth <= MAX_DEPTH and all(_fast_json(v, depth + 1) for v in value)
    if t is dict:
        return depth <= MAX_DEPTH and all(
            type(k) is str and _fast_json(v, depth + 1) for k, v in value.items()
        )
    return value is None or t is str or t is int or t is float or t is bool


def _leaf(tp: type[Any], full: Check) -> Compiled:
    def fast_leaf(value: Any, depth: int) -> bool:
        return type(value) is tp

    return Compiled(fast_leaf, full, tp)


_LEAVES: dict[Any, Compiled] = {
    str: _leaf(str, check_str),
    int: _leaf(int, check_int),
    float: _leaf(float, check_float),
    bool: _leaf(bool, _exact(bool)),
    bytes: _leaf(bytes, _exact(bytes)),
    UUID: _leaf(UUID, _exact(UUID)),
    date: _leaf(date, _exact(date)),
    datetime: _leaf(datetime, check_datetime),
    # a NaN or infinite Decimal is refused by the converter's unstructure hook
    Decimal: _leaf(Decimal, check_decimal),
}
_JSON = Compiled(_fast_json, check_json)

# How each kind of value is written in JSON, to tell whether a union reads back unambiguously.
_JSON_KIND = {
    str: "string",
    bytes: "string",
    Decimal: "string",
    UUID: "string",
    date: "string",
    datetime: "string",
    int: "integer",
    float: "float",
    bool: "boolean",
    _NONE: "null",
}
# bool is not among them: cattrs reads the key "false" back as True
_KEY_TYPES = (str, int, float, Decimal, UUID, date, datetime)


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or origin is types.UnionType


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__
    return repr(tp).replace("typing.", "").replace("collections.abc.", "")


class Unsupported(Exception):
    """A declared type the codec cannot write and read back; names the type and why."""


class Checks:
    """The compiled checks of the message classes one converter writes."""

    def __init__(self, converter: cattrs.Converter) -> None:
        self._converter = converter
        # Read without the lock: only finished checks are ever published here.
        self._cache: dict[Any, Compiled] = {}
        # Checks being compiled (by the thread holding the lock), published to _cache all
        # together once the outermost compilation is done: a class may refer to itself, or
        # to a class that refers back to it, through forwarders that work only then.
        self._building: dict[Any, Compiled] = {}
        self._depth = 0
        self._unsupported: dict[Any, str] = {}
        self._lock = threading.RLock()

    def fast(self, message: Any) -> bool:
        """True when ``message`` passes the fast check (see :class:`Compiled`)."""
        compiled = self._cache.get(type(message))
        if compiled is None:
            compiled = self.compile(type(message))
        return compiled.fast(message, 1)

    def check(self, message: Any) -> None:
        """Raise :class:`Invalid` unless every value of ``message`` may be written."""
        compiled = self._cache.get(type(message))
        if compiled is None:
            compiled = self.compile(type(message))
        compiled.full(message, 1)

    def compile(self, tp: Any) -> Compiled:
        """The checks of a declared type (compiled once, then cached). A type the codec does
        not support, or a class with a field of such a type, gets checks that refuse every
        value, saying why."""
        compiled = self._cache.get(tp)
        if compiled is not None:
            return compiled
        try:
            return self._compiled(tp)
        except Unsupported as exc:
            return _refuse(str(exc))

    def _compiled(self, tp: Any) -> Compiled:
        """:meth:`compile`, but raising :class:`Unsupported`, so that a container or class
        of an unsupported type is unsupported as a whole (cattrs could not read it back,
        even when the value at hand, say an empty list, holds nothing of that type)."""
        compiled = self._cache.get(tp)
        if compiled is not None:
            return compiled
        with self._lock:
            compiled = self._cache.get(tp) or self._building.get(tp)
            if compiled is not None:
                return compiled
            reason = self._unsupported.get(tp)
            if reason is not None:
                raise Unsupported(reason)
            self._depth += 1
            try:
                compiled = self._build(tp)
                self._building[tp] = compiled
            except Unsupported as exc:
                self._unsupported[tp] = str(exc)
                raise
            finally:
                self._depth -= 1
                if self._depth == 0:
                    built, self._building = self._building, {}
                    if tp in built:  # the outermost compilation succeeded
                        self._cache.update(built)
            return compiled

    # -- building --------------------------------------------------------------------------

    def _build(self, tp: Any) -> Compiled:
        if tp is Any or tp is object:
            return _JSON
        if tp is _NONE or tp is None:
            return _leaf(_NONE, _check_none)
        supertype = getattr(tp, "__supertype__", None)  # typing.NewType
        if supertype is not None:
            return self._compiled(supertype)
        origin = typing.get_origin(tp)
        if origin is not None:
            return self._build_generic(tp, origin, typing.get_args(tp))
        if isinstance(tp, (str, typing.ForwardRef)):
            raise Unsupported(f"the type annotation {tp!r} could not be resolved")
        if not isinstance(tp, type):
            raise Unsupported(f"{tp!r} is not a type the codec can write")
        leaf = _LEAVES.get(tp)
        if leaf is not None:
            return leaf
        if tp in (list, tuple, set, frozenset, dict):
            return self._build_generic(tp, tp, ())
        if issubclass(tp, enum.Enum):
            return self._build_enum(tp)
        if attrs.has(tp):
            return self._build_class(tp)
        if self._converter.get_unstructure_hook(tp) is self._converter.get_unstructure_hook(object):
            raise Unsupported(
                f"{tp.__qualname__} is not a type the codec can write: use an attrs class, "
                "or register unstructure and structure hooks for it on the codec's converter"
            )
        return _instance_of(tp)

    def _build_enum(self, tp: type[enum.Enum]) -> Compiled:
        for member in tp:
            v = member.value
            ok = type(v) in (str, int) or (type(v) is float and v - v == 0.0)
            if not ok:
                raise Unsupported(
                    f"enum {tp.__qualname__} has a member ({member.name}) whose value is not a "
                    "JSON string or number"
                )
        return _leaf(tp, _exact(tp))

    def _build_class(self, cls: type[Any]) -> Compiled:
        try:
            attrs.resolve_types(cls)
        except Exception as exc:
            raise Unsupported(
                f"the field types of {cls.__qualname__} cannot be resolved ({exc})"
            ) from None
        # A class may contain itself (through an Optional or a list): publish forwarders
        # first, so the fields being compiled can refer to the finished checks.
        box: list[Compiled] = []

        def forward_fast(value: Any, depth: int) -> bool:
            return box[0].fast(value, depth)

        def forward_full(value: Any, depth: int) -> None:
            box[0].full(value, depth)

        self._building[cls] = Compiled(forward_fast, forward_full)
        fields = []
        for field in attrs.fields(cls):
            try:
                fields.append(
                    (field.name, self._compiled(Any if field.type is None else field.type))
                )
            except Unsupported as exc:
                self._building.pop(cls, None)
                raise Unsupported(f"{cls.__qualname__}.{field.name}: {exc}") from None
        compiled = _class(cls, fields)
        box.append(compiled)
        return compiled

    def _build_generic(self, tp: Any, origin: Any, args: tuple[Any, ...]) -> Compiled:
        if _is_union(origin):
            return self._build_union(tp, args)
        if origin is typing.Literal:
            return _literal(args)
        if origin is typing.Annotated:
            return self._compiled(args[0])
        if origin is typing.ClassVar or origin is typing.Final:
            return self._compiled(args[0]) if args else _JSON
        if origin is tuple:
            if args in ((), ((),)) and tp is not tuple:
                return _empty_tuple()
            if not args or (len(args) == 2 and args[1] is Ellipsis):
                item = self._compiled(args[0]) if args else _JSON
                return _sequence(tuple, "tuple", item)
            return _fixed_tuple([self._compiled(a) for a in args])
        concrete = self._concrete(tp, origin)
        if concrete in (list, tuple, set, frozenset):
            assert concrete is not None
            item = self._compiled(args[0]) if args else _JSON
            return _sequence(concrete, concrete.__name__, item)
        if concrete is dict:
            key_tp, value_tp = args if args else (str, Any)
            return _mapping(self._key(key_tp), self._compiled(value_tp))
        raise Unsupported(f"{_type_name(tp)} is not a container type the codec can write")

    def _concrete(self, tp: Any, origin: Any) -> type[Any] | None:
        """The class the converter reads a value of this container type back as."""
        if origin in (list, tuple, set, frozenset, dict):
            return origin  # type: ignore[no-any-return]
        if not (isinstance(origin, type) and issubclass(origin, cabc.Collection)):
            return None
        empty: Any = {} if issubclass(origin, cabc.Mapping) else []
        try:
            return type(self._converter.structure(empty, tp))
        except Exception:
            return None

    def _key(self, tp: Any) -> Compiled:
        if tp is Any or tp is object:
            return _LEAVES[str]
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            ok = all(type(m.value) is str for m in tp)
        elif typing.get_origin(tp) is typing.Literal:
            ok = all(type(a) is str for a in typing.get_args(tp))
        else:
            ok = tp in _KEY_TYPES or getattr(tp, "__supertype__", None) in _KEY_TYPES
        if ok:
            return self._compiled(tp)
        raise Unsupported(
            f"{_type_name(tp)} cannot be a dict key: JSON object keys are strings, so keys "
            "must be str, int, float, Decimal, UUID, date, datetime or an Enum of strings"
        )

    def _build_union(self, tp: Any, args: tuple[Any, ...]) -> Compiled:
        members = [a for a in args if a is not _NONE]
        optional = len(members) != len(args)
        if len(members) == 1:
            inner = self._compiled(members[0])
            return _optional(inner) if optional else inner
        kinds: dict[str, Any] = {}
        classes = []
        for member in members:
            if attrs.has(member):
                classes.append(member)
                continue
            for kind in self._json_kinds(member):
                if kind in kinds:
                    raise Unsupported(
                        f"{_type_name(tp)} cannot be read back unambiguously: "
                        f"{_type_name(kinds[kind])} and {_type_name(member)} are both written "
                        f"as a JSON {kind}"
                    )
                kinds[kind] = member
        if classes and "object" in kinds:
            raise Unsupported(
                f"{_type_name(tp)} cannot be read back unambiguously: "
                f"{_type_name(kinds['object'])} and attrs classes are all JSON objects"
            )
        try:
            # without None: cattrs finds the hook of an Optional's inner union only when
            # it first structures a value
            self._converter.get_structure_hook(typing.Union[tuple(members)])  # noqa: UP007
        except Exception as exc:
            raise Unsupported(f"{_type_name(tp)} cannot be read back ({exc})") from None
        by_type: dict[type[Any], Compiled] = {}
        for member in members:
            for t in self._runtime_types(member):
                by_type[t] = self._compiled(member)
        return _union(_type_name(tp), by_type, optional)

    def _json_kinds(self, tp: Any) -> list[str]:
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            return sorted({_JSON_KIND.get(type(a), "value") for a in typing.get_args(tp)})
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return sorted({_JSON_KIND.get(type(m.value), "value") for m in tp})
        kind = _JSON_KIND.get(tp)
        if kind is not None:
            return [kind]
        concrete = tp if origin is None else origin
        if concrete is dict or (isinstance(concrete, type) and issubclass(concrete, cabc.Mapping)):
            return ["object"]
        if isinstance(concrete, type) and issubclass(concrete, cabc.Collection):
            return ["array"]
        return [f"value of {_type_name(tp)}"]

    def _runtime_types(self, tp: Any) -> list[type[Any]]:
        """The classes a value of the declared type ``tp`` has at run time."""
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            return list({type(a) for a in typing.get_args(tp)})
        if origin is typing.Annotated:
            return self._runtime_types(typing.get_args(tp)[0])
        if origin is not None:
            concrete = self._concrete(tp, origin) if origin is not tuple else tuple
            return [] if concrete is None else [concrete]
        supertype = getattr(tp, "__supertype__", None)
        if supertype is not None:
            return self._runtime_types(supertype)
        if tp in (list, tuple, set, frozenset, dict):
            return [tp]
        return [tp] if isinstance(tp, type) else []


# -- combinators: each builds the fast and the full check of a composite type ----------------


def _refuse(reason: str) -> Compiled:
    def fast_unsupported(value: Any, depth: int) -> bool:
        return False

    def check_unsupported(value: Any, depth: int) -> None:
        raise Invalid(reason)

    return Compiled(fast_unsupported, check_unsupported)


def _check_none(value: Any, depth: int) -> None:
    if value is not None:
        raise Invalid("expected None", value)


def _instance_of(tp: type[Any]) -> Compiled:
    def fast_instance(value: Any, depth: int) -> bool:
        return isinstance(value, tp)

    def check_instance(value: Any, depth: int) -> None:
        if not isinstance(value, tp):
            raise _wrong(tp.__qualname__, value)

    return Compiled(fast_instance, check_instance)


def _optional(inner: Compiled) -> Compiled:
    leaf = inner.leaf
    inner_fast = inner.fast
    inner_full = inner.full

    if leaf is not None:

        def fast_optional(value: Any, depth: int) -> bool:
            return value is None or type(value) is leaf

    else:

        def fast_optional(value: Any, depth: int) -> bool:
            return value is None or inner_fast(value, depth)

    def check_optional(value: Any, depth: int) -> None:
        if value is not None:
            inner_full(value, depth)

    return Compiled(fast_optional, check_optional)


def _union(name: str, by_type: dict[type[Any], Compiled], optional: bool) -> Compiled:
    def fast_union(value: Any, depth: int) -> bool:
        if value is None:
            return optional
        member = by_type.get(type(value))
        return member is not None and member.fast(value, depth)

    def check_union(value: Any, depth: int) -> None:
        if value is None and optional:
            return
        member = by_type.get(type(value))
        if member is None:
            raise _wrong(name, value)
        member.full(value, depth)

    return Compiled(fast_union, check_union)


def _literal(values: tuple[Any, ...]) -> Compiled:
    allowed = {(type(v), v) for v in values}
    text = ", ".join(repr(v) for v in values)

    def fast_literal(value: Any, depth: int) -> bool:
        try:
            return (type(value), value) in allowed
        except TypeError:  # an unhashable value
            return False

    def check_literal(value: Any, depth: int) -> None:
        if not fast_literal(value, depth):
            raise Invalid(f"expected one of {text}", value)

    return Compiled(fast_literal, check_literal)


def _empty_tuple() -> Compiled:
    def fast_empty(value: Any, depth: int) -> bool:
        return type(value) is tuple and not value

    def check_empty(value: Any, depth: int) -> None:
        if not fast_empty(value, depth):
            raise Invalid("expected an empty tuple", value)

    return Compiled(fast_empty, check_empty)


def _too_deep() -> Invalid:
    return Invalid(f"nested deeper than {MAX_DEPTH} levels")


def _all_fast(item: Compiled) -> Callable[[Any, int], bool]:
    """``ok(items, depth)``: whether every item of an iterable passes ``item``'s fast check.

    Loops are written out: ``type(v)`` in bytecode is far cheaper than ``map(type, ...)``.
    """
    leaf = item.leaf
    if leaf is not None:

        def all_leaves(items: Any, depth: int) -> bool:
            for element in items:  # noqa: SIM110 - faster than all() over a generator
                if type(element) is not leaf:
                    return False
            return True

        return all_leaves
    fast = item.fast

    def all_items(items: Any, depth: int) -> bool:
        for element in items:  # noqa: SIM110 - faster than all() over a generator
            if not fast(element, depth):
                return False
        return True

    return all_items


def _sequence(concrete: type[Any], name: str, item: Compiled) -> Compiled:
    items_ok = _all_fast(item)
    check_item = item.full
    unordered = concrete is set or concrete is frozenset

    def fast_sequence(value: Any, depth: int) -> bool:
        return type(value) is concrete and depth <= MAX_DEPTH and items_ok(value, depth + 1)

    def check_sequence(value: Any, depth: int) -> None:
        if type(value) is not concrete:
            raise _wrong(name, value)
        if depth > MAX_DEPTH:
            raise _too_deep()
        for i, element in enumerate(value):
            try:
                check_item(element, depth + 1)
            except Invalid as exc:
                exc.path.append(f"[{_repr.repr(element) if unordered else i}]")
                raise

    return Compiled(fast_sequence, check_sequence)


def _fixed_tuple(items: list[Compiled]) -> Compiled:
    size = len(items)
    fasts = [c.fast for c in items]
    fulls = [c.full for c in items]

    def fast_fixed(value: Any, depth: int) -> bool:
        if type(value) is not tuple or len(value) != size or depth > MAX_DEPTH:
            return False
        return all(ok(v, depth + 1) for ok, v in zip(fasts, value, strict=True))

    def check_fixed(value: Any, depth: int) -> None:
        if type(value) is not tuple:
            raise _wrong(f"tuple of {size}", value)
        if len(value) != size:
            raise Invalid(f"expected a tuple of {size} items", value)
        if depth > MAX_DEPTH:
            raise _too_deep()
        for i, (check, element) in enumerate(zip(fulls, value, strict=True)):
            try:
                check(element, depth + 1)
            except Invalid as exc:
                exc.path.append(f"[{i}]")
                raise

    return Compiled(fast_fixed, check_fixed)


def _mapping(key: Compiled, item: Compiled) -> Compiled:
    keys_ok = _all_fast(key)
    values_ok = _all_fast(item)
    check_key = key.full
    check_item = item.full

    def fast_mapping(value: Any, depth: int) -> bool:
        return (
            type(value) is dict
            and depth <= MAX_DEPTH
            and keys_ok(value, depth)
            and values_ok(value.values(), depth + 1)
        )

    def check_mapping(value: Any, depth: int) -> None:
        if type(value) is not dict:
            raise _wrong("dict", value)
        if depth > MAX_DEPTH:
            raise _too_deep()
        for k, v in value.items():
            try:
                check_key(k, depth)
            except Invalid as exc:
                exc.reason = f"dict key: {exc.reason}"
                raise
            try:
                check_item(v, depth + 1)
            except Invalid as exc:
                exc.path.append(f"[{_repr.repr(k)}]")
                raise

    return Compiled(fast_mapping, check_mapping)


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """Reads the named attributes in one C call, as a tuple."""
    if len(names) == 1:
        get_one = operator.attrgetter(names[0])
        return lambda obj: (get_one(obj),)
    return operator.attrgetter(*names)


def _classes_are(types: tuple[type[Any], ...]) -> Callable[[tuple[Any, ...]], bool]:
    """``ok(values)``: whether each value has exactly the class at its place in ``types``.

    Written out for up to four values, then four at a time: in bytecode, ``type(v) is t``
    costs a fraction of a loop step (and no code is generated at run time).
    """
    n = len(types)
    if n == 0:
        return lambda values: True
    if n == 1:
        (t0,) = types
        return lambda values: type(values[0]) is t0
    if n == 2:
        t0, t1 = types

        def two(values: tuple[Any, ...]) -> bool:
            a, b = values
            return type(a) is t0 and type(b) is t1

        return two
    if n == 3:
        t0, t1, t2 = types

        def three(values: tuple[Any, ...]) -> bool:
            a, b, c = values
            return type(a) is t0 and type(b) is t1 and type(c) is t2

        return three
    if n == 4:
        t0, t1, t2, t3 = types

        def four(values: tuple[Any, ...]) -> bool:
            a, b, c, d = values
            return type(a) is t0 and type(b) is t1 and type(c) is t2 and type(d) is t3

        return four
    head = _classes_are(types[:4])
    rest = _classes_are(types[4:])
    return lambda values: head(values[:4]) and rest(values[4:])


def _class(cls: type[Any], fields: list[tuple[str, Compiled]]) -> Compiled:
    name = cls.__qualname__
    # The fast check reads the fields whose class alone decides (leaves) in one C call and
    # tests their classes written out; the other fields get their own fast checks.
    leaves = [(n, c.leaf) for n, c in fields if c.leaf is not None]
    get_leaves = _getter([n for n, _ in leaves]) if leaves else None
    leaves_ok = _classes_are(tuple(t for _, t in leaves if t is not None))
    others = tuple((n, c.fast) for n, c in fields if c.leaf is None)
    fulls = [(n, c.full) for n, c in fields]

    def fast_class(obj: Any, depth: int) -> bool:
        if type(obj) is not cls or depth > MAX_DEPTH:
            return False
        if get_leaves is not None and not leaves_ok(get_leaves(obj)):
            return False
        if others:
            inner = depth + 1
            for field, ok in others:
                if not ok(getattr(obj, field), inner):
                    return False
        return True

    def check_class(obj: Any, depth: int) -> None:
        if type(obj) is not cls:
            if isinstance(obj, cls):
                raise Invalid(
                    f"expected {name} (an instance of a subclass would be written and read "
                    f"back as a {name})",
                    obj,
                )
            raise _wrong(name, obj)
        if depth > MAX_DEPTH:
            raise _too_deep()
        inner = depth + 1
        for field, check in fulls:
            try:
                check(getattr(obj, field), inner)
            except Invalid as exc:
                exc.path.append(f".{field}")
                raise

    return Compiled(fast_class, check_class)
