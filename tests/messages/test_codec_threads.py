"""The codec's checks are compiled on first use, from whichever thread comes first: threads
encoding a new message type at the same moment all get a finished check."""

from __future__ import annotations

import threading
from decimal import Decimal

import attrs

from eventlite import Codec, Registry, event

registry = Registry()


@attrs.frozen
class Line:
    amount: Decimal
    parent: Line | None = None
    order: Order | None = None


@attrs.frozen
class Order:
    lines: tuple[Line, ...]


@event(registry=registry, name="threads.Placed")
class Placed:
    order: Order
    note: str


class Slow:
    """A type of the application's own, with a hook that takes a while to make."""

    def __init__(self, text: str) -> None:
        self.text = text


@event(registry=registry, name="threads.Noted")
class Noted:
    line: Line
    slow: Slow


def test_a_check_being_compiled_is_never_used_half_made() -> None:
    """While one thread compiles a class's check (slowly: its field's hook takes 0.2 s to
    make), another encoding the same class waits for the finished check instead of using
    the half-made one."""
    codec = Codec(registry)
    made = threading.Event()

    def slow_hook_factory(tp: type) -> object:
        if not made.is_set():
            made.set()
            threading.Event().wait(0.2)
        return lambda value: value.text

    codec.converter.register_unstructure_hook_factory(lambda t: t is Slow, slow_hook_factory)  # type: ignore[type-var]
    message = Noted(Line(Decimal(1)), Slow("s"))
    errors: list[BaseException] = []

    def encode() -> None:
        try:
            codec.encode(message)
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=encode)
    first.start()
    assert made.wait(10)
    second = threading.Thread(target=encode)
    second.start()
    first.join(10)
    second.join(10)
    assert [] == errors
