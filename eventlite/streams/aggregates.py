"""Windowed aggregations: an accumulator folded over the values of a window.

An :class:`Aggregator` starts from ``initial`` and folds ``add(acc, value)`` over each
value; ``result(acc)`` is what the window emits. ``merge(a, b)`` combines two
accumulators, which session windows need when an event bridges two sessions.

Accumulators live in stream state, so they must be JSON-ready data, tuples, datetimes or
registered messages (see :mod:`eventlite.streams._values`), and are treated as immutable:
``add`` returns a new one rather than changing its argument. For results that do not depend
on arrival order, ``add`` and ``merge`` should be commutative and associative (integer
sums, counts, min, max are; float sums differ in their last bits with the order).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["Aggregator", "count", "max_of", "mean_of", "min_of", "sum_of"]

Field = Callable[[Any], Any] | None
"""Which number of a value to aggregate: a function of it, or None for the value itself."""


@attrs.frozen
class Aggregator:
    """How a window aggregates its values (see the module doc)."""

    initial: Any
    """The accumulator of an empty window (never changed in place)."""
    add: Callable[[Any, Any], Any]
    """``add(acc, value)``: the accumulator with one more value."""
    merge: Callable[[Any, Any], Any] | None = None
    """``merge(a, b)``: the accumulator of two windows' values together (sessions need it)."""
    result: Callable[[Any], Any] | None = None
    """``result(acc)``: what the window emits; None emits the accumulator itself."""


def _identity(value: Any) -> Any:
    return value


def _count_add(acc: int, value: Any) -> int:
    return acc + 1


def count() -> Aggregator:
    """How many values the window has."""
    return Aggregator(0, _count_add, operator.add)


def sum_of(field: Field = None) -> Aggregator:
    """The sum of ``field(value)`` (of the values themselves when None)."""
    get = field or _identity

    def add(acc: Any, value: Any) -> Any:
        return acc + get(value)

    return Aggregator(0, add, operator.add)


def _pick(better: Callable[[Any, Any], bool], field: Field) -> Aggregator:
    get = field or _identity

    def add(acc: Any, value: Any) -> Any:
        x = get(value)
        return x if acc is None or better(x, acc) else acc

    def merge(a: Any, b: Any) -> Any:
        if a is None:
            return b
        if b is None:
            return a
        return b if better(b, a) else a

    return Aggregator(None, add, merge)


def min_of(field: Field = None) -> Aggregator:
    """The smallest ``field(value)``."""
    return _pick(operator.lt, field)


def max_of(field: Field = None) -> Aggregator:
    """The greatest ``field(value)``."""
    return _pick(operator.gt, field)


def _mean_result(acc: list[Any]) -> float:
    total, n = acc
    return float(total / n)


def _mean_merge(a: list[Any], b: list[Any]) -> list[Any]:
    return [a[0] + b[0], a[1] + b[1]]


def mean_of(field: Field = None) -> Aggregator:
    """The mean of ``field(value)`` (the accumulator is ``[sum, count]``)."""
    get = field or _identity

    def add(acc: list[Any], value: Any) -> list[Any]:
        return [acc[0] + get(value), acc[1] + 1]

    return Aggregator([0, 0], add, _mean_merge, _mean_result)
