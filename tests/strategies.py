"""Hypothesis strategies shared by the tests: message classes made on the fly, and values
for them, over every field type the codec supports; and values of the wrong type, for the
codec to refuse."""

from __future__ import annotations

import enum
import itertools
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Optional, Union
from uuid import UUID

import attrs
from hypothesis import strategies as st

from eventlite.messages import MessageKind, Registry

# Types built at run time from generated parts (a type checker cannot follow them).
_Optional: Any = Optional
_Union: Any = Union
_list: Any = list
_tuple: Any = tuple
_dict: Any = dict
_frozenset: Any = frozenset


class Colour(enum.Enum):
    """An enum field type for generated messages."""

    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    """An int-valued enum field type for generated messages."""

    LOW = 1
    HIGH = 2


_names = itertools.count()

aware_datetimes = st.builds(
    lambda dt, minutes: dt.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=-12 * 60, max_value=12 * 60),
)

# (type, strategy of values of that type); hashable ones can go into frozensets
_hashable_leaves: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (int, st.integers(min_value=-(2**63), max_value=2**63)),
    (str, st.text()),
    (bool, st.booleans()),
    (Decimal, st.decimals(allow_nan=False, allow_infinity=False)),
    (UUID, st.uuids()),
    (date, st.dates()),
    (datetime, aware_datetimes),
    (Colour, st.sampled_from(Colour)),
    (Level, st.sampled_from(Level)),
]
_leaves = [*_hashable_leaves, (float, st.floats(allow_nan=False, allow_infinity=False))]
# Unions read back only when their members are written as different JSON kinds, and when
# cattrs can structure them: members it passes through as they are (str, int, float, bool).
_string_leaves = [(t, s) for t, s in _hashable_leaves if t is str]
_other_leaves = [(t, s) for t, s in _leaves if t in (int, float, bool)]
# what a dict key may be: JSON keys are strings, and bool or IntEnum keys do not read back
_key_leaves = [(t, s) for t, s in _hashable_leaves if t not in (bool, Level)]


def _leaf() -> st.SearchStrategy[tuple[Any, st.SearchStrategy[Any]]]:
    return st.sampled_from(_leaves)


def _extend(
    inner: st.SearchStrategy[tuple[Any, st.SearchStrategy[Any]]],
) -> st.SearchStrategy[tuple[Any, st.SearchStrategy[Any]]]:
    def optional(t: tuple[Any, st.SearchStrategy[Any]]) -> tuple[Any, st.SearchStrategy[Any]]:
        return (_Optional[t[0]], st.none() | t[1])

    def listof(t: tuple[Any, st.SearchStrategy[Any]]) -> tuple[Any, st.SearchStrategy[Any]]:
        return (_list[t[0]], st.lists(t[1], max_size=4))

    def tupleof(t: tuple[Any, st.SearchStrategy[Any]]) -> tuple[Any, st.SearchStrategy[Any]]:
        return (_tuple[t[0], ...], st.lists(t[1], max_size=4).map(tuple))

    def dictof(t: tuple[Any, st.SearchStrategy[Any]]) -> tuple[Any, st.SearchStrategy[Any]]:
        return (_dict[str, t[0]], st.dictionaries(st.text(max_size=5), t[1], max_size=3))

    def nested(
        fields: list[tuple[Any, st.SearchStrategy[Any]]],
    ) -> tuple[Any, st.SearchStrategy[Any]]:
        cls = _make_class(fields)
        return (cls, st.builds(cls, *[s for _, s in fields]))

    def keyed(
        pair: tuple[tuple[Any, st.SearchStrategy[Any]], tuple[Any, st.SearchStrategy[Any]]],
    ) -> tuple[Any, st.SearchStrategy[Any]]:
        (k, ks), (v, vs) = pair
        return (_dict[k, v], st.dictionaries(ks, vs, max_size=3))

    def union(
        pair: tuple[tuple[Any, st.SearchStrategy[Any]], tuple[Any, st.SearchStrategy[Any]]],
    ) -> tuple[Any, st.SearchStrategy[Any]]:
        (a, sa), (b, sb) = pair
        return (_Union[a, b], sa | sb)

    frozensets = st.sampled_from(_hashable_leaves).map(
        lambda t: (_frozenset[t[0]], st.frozensets(t[1], max_size=4))
    )
    return st.one_of(
        inner.map(optional),
        inner.map(listof),
        inner.map(tupleof),
        inner.map(dictof),
        st.tuples(st.sampled_from(_key_leaves), inner).map(keyed),
        st.tuples(st.sampled_from(_string_leaves), st.sampled_from(_other_leaves)).map(union),
        frozensets,
        st.lists(inner, min_size=1, max_size=3).map(nested),
    )


field_types = st.recursive(_leaf(), _extend, max_leaves=6)
"""(type, strategy of its values) pairs, nested up to a few levels."""

lone_surrogates = st.builds(
    lambda before, surrogate, after: before + surrogate + after,
    st.text(max_size=3),
    st.characters(categories=["Cs"]),
    st.text(max_size=3),
)
"""Strings holding a lone surrogate (what ``os.listdir`` gives for names that are not
UTF-8): Python strings, but not valid UTF-8."""

wrong_values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.just(10**5000),
    st.floats(),
    st.text(max_size=5),
    lone_surrogates,
    st.decimals(),
    st.binary(max_size=3),
    st.datetimes(),
    aware_datetimes,
    st.dates(),
    st.uuids(),
    st.sampled_from(Colour),
    st.sampled_from(Level),
    st.lists(st.integers(), max_size=2),
    st.lists(st.integers(), max_size=2).map(tuple),
    st.frozensets(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
"""Values of every kind, most of them of the wrong type for any given field."""


def _maybe_wrong(
    pair: tuple[Any, st.SearchStrategy[Any]],
) -> tuple[Any, st.SearchStrategy[Any]]:
    return (pair[0], pair[1] | wrong_values)


field_types_with_wrong_values = st.recursive(
    st.sampled_from(_leaves).map(_maybe_wrong), _extend, max_leaves=6
)
"""Like :data:`field_types`, but the values of each leaf are sometimes of another type."""


def _make_class(fields: list[tuple[Any, st.SearchStrategy[Any]]]) -> type[Any]:
    name = f"Generated{next(_names)}"
    return attrs.make_class(
        name,
        {f"f{i}": attrs.field(type=t) for i, (t, _) in enumerate(fields)},
        frozen=True,
    )


@st.composite
def messages(draw: st.DrawFn, *, wrong: bool = False) -> tuple[Registry, Any]:
    """A fresh registry holding one generated event class, and an instance of it; with
    ``wrong``, some values (at any depth) are of another type than declared."""
    types = field_types_with_wrong_values if wrong else field_types
    fields = draw(st.lists(types, min_size=0, max_size=5))
    cls = _make_class(fields)
    registry = Registry()
    registry.register(cls, MessageKind.EVENT)
    value = draw(st.builds(cls, *[s for _, s in fields]))
    return registry, value


storable_stream_ids = st.text(min_size=1, max_size=40)
"""Stream ids a store accepts: any valid text."""

stream_ids = st.one_of(storable_stream_ids, lone_surrogates)
"""Stream ids as an app may give them: any text, lone surrogates included (which a store
refuses)."""
