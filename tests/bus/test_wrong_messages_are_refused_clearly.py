"""A message sent the wrong way gets an error that says what it is and what to call, and
nothing is delivered (issue 9, part 5)."""

from __future__ import annotations

from typing import Any

import pytest

from eventlite.app import App
from eventlite.bus import MessageBus
from eventlite.envelope import Envelope
from eventlite.exceptions import NoHandlerError, NotAMessage
from eventlite.messages import Registry, command, event, query

registry = Registry()


@command(registry=registry)
class PlaceOrder:
    order_id: str


@query(registry=registry)
class GetOrder:
    order_id: str


@event(registry=registry)
class OrderPlaced:
    order_id: str


class Undecorated:
    """A class somebody forgot to declare."""


def test_asking_a_command_says_it_is_a_command_and_to_dispatch_it() -> None:
    """app.ask(command) says what the message is and which method to call (it used to say
    "send it with bus.dispatch()" as if the user had called dispatch)."""
    with App(registry=registry) as app:
        app.bus.register(PlaceOrder, lambda c: None)
        with pytest.raises(TypeError) as info:
            app.ask(PlaceOrder("o-1"))
    assert (
        "PlaceOrder is a command, and ask() takes queries: send it with dispatch() instead"
        == str(info.value)
    )


def test_an_undecorated_class_is_not_a_message() -> None:
    """Dispatching or asking an instance of a class that is neither declared nor given a
    handler raises NotAMessage naming the class and the decorator to use (it raised
    NoHandlerError, where the docs say NotAMessage)."""
    with MessageBus(registry) as bus:
        with pytest.raises(NotAMessage, match=r"Undecorated .*@eventlite\.command"):
            bus.dispatch(Undecorated())
        with pytest.raises(NotAMessage, match=r"Undecorated .*@eventlite\.query"):
            bus.ask(Undecorated())
        with pytest.raises(NoHandlerError, match="PlaceOrder"):
            bus.dispatch(PlaceOrder("o-1"))


def test_a_class_declared_in_another_registry_says_so() -> None:
    """A message declared in another registry than the bus's is NotAMessage saying so."""
    other = Registry()

    @command(registry=other)
    class Elsewhere:
        pass

    with MessageBus(registry) as bus, pytest.raises(NotAMessage, match="another registry"):
        bus.dispatch(Elsewhere())


@pytest.mark.parametrize("wrong", [PlaceOrder("o-2"), GetOrder("o-2")])
def test_publish_refuses_a_command_among_events_before_delivering_any(wrong: Any) -> None:
    """bus.publish(event, command) raises before the first event reaches its subscribers
    (it used to deliver the event, then refuse the command)."""
    received: list[Any] = []
    with MessageBus(registry) as bus:
        bus.subscribe(OrderPlaced, received.append)
        with pytest.raises(TypeError, match=r"and publish\(\) takes events"):
            bus.publish(OrderPlaced("o-1"), wrong)
        with pytest.raises(TypeError, match=r"and publish\(\) takes events"):
            bus.publish_envelopes(Envelope(OrderPlaced("o-1")), Envelope(wrong))
    assert [] == received
