"""Subscriptions, and the delivery plan of each concrete event class built from them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..retry import RetryPolicy
from ._chain import Handler

if TYPE_CHECKING:
    from ._bus import MessageBus

Pair = tuple[Handler, "Subscription"]
"""A subscriber as the bus calls it: its composed chain, and the subscription it belongs to."""

Plan = tuple[tuple[Pair, ...], tuple[Pair, ...]]
"""For one concrete event class: its synchronous and its background subscribers, in order."""


class Subscription:
    """One subscriber of one event type, as returned by :meth:`MessageBus.subscribe`.

    Call :meth:`unsubscribe` to stop deliveries. Treat the attributes as read-only.
    """

    __slots__ = (
        "event_type",
        "handler",
        "name",
        "background",
        "retry",
        "_bus",
        "_seq",
        "_call",
        "_active",
    )

    event_type: type[Any]
    """The class subscribed to; instances of its subclasses are delivered too."""
    handler: Callable[[Any], Any]
    """The function given to ``subscribe``; it receives the event."""
    name: str
    """The subscriber's name in logs, error hooks and metrics."""
    background: bool
    """True when the subscriber runs on the bus's worker threads."""
    retry: RetryPolicy | None
    """The policy in effect (the subscriber's own, else the bus default), or None."""

    def __init__(
        self,
        bus: MessageBus,
        event_type: type[Any],
        handler: Callable[[Any], Any],
        name: str,
        background: bool,
        retry: RetryPolicy | None,
        seq: int,
        call: Handler,
    ) -> None:
        self._bus = bus
        self.event_type = event_type
        self.handler = handler
        self.name = name
        self.background = background
        self.retry = retry
        self._seq = seq
        self._call = call
        self._active = True

    @property
    def active(self) -> bool:
        """False once unsubscribed."""
        return self._active

    def unsubscribe(self) -> bool:
        """Stop deliveries to this subscriber; True if it was subscribed until now.

        Events published afterwards do not reach it, nor do background deliveries still
        queued; a delivery already running, or a ``publish`` already under way in another
        thread, may still complete.
        """
        return self._bus.unsubscribe(self)

    def __repr__(self) -> str:
        how = "background" if self.background else "sync"
        state = "" if self._active else ", unsubscribed"
        return f"<Subscription {self.name} to {self.event_type.__qualname__} ({how}{state})>"


def plan_for(cls: type[Any], by_type: Mapping[type[Any], tuple[Subscription, ...]]) -> Plan:
    """The subscribers of ``cls`` and of its bases, in subscription order, split into the
    synchronous and the background ones."""
    subs = [sub for base in cls.__mro__ for sub in by_type.get(base, ())]
    subs.sort(key=lambda s: s._seq)
    return (
        tuple((s._call, s) for s in subs if not s.background),
        tuple((s._call, s) for s in subs if s.background),
    )


def matches(sub: Subscription, target: Subscription | Callable[[Any], Any]) -> bool:
    """Whether ``unsubscribe(target)`` removes ``sub``: the subscription itself, or every
    subscription of a handler function (a wrapper, such as the App's dependency injection,
    names what it wraps in ``__wrapped__``)."""
    if isinstance(target, Subscription):
        return sub is target
    return getattr(sub.handler, "__wrapped__", sub.handler) == target or sub.handler == target
