"""Type helpers the layers share (private)."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any, cast

__all__ = ["any_of"]


def any_of(name: str, types: Iterable[type[Any]]) -> type[Any]:
    """An abstract class that the given classes are registered with, so ``issubclass`` and
    ``isinstance`` accept them and their subclasses: one durable subscription for several
    unrelated event classes. ``name`` names it in reprs ("<name> events")."""
    marker = abc.ABCMeta(f"{name} events", (abc.ABC,), {"__module__": __name__})
    for t in types:
        marker.register(t)
    return cast("type[Any]", marker)
