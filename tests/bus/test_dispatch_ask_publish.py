"""The in-memory bus in the caller's thread: commands, queries, events, failures, correlation."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlite.bus import MessageBus, Subscription
from eventlite.envelope import Envelope, current_envelope
from eventlite.exceptions import BusClosed, HandlerAlreadyRegistered, NoHandlerError
from eventlite.messages import Registry, command, event, query
from eventlite.retry import RetryPolicy

registry = Registry()


@command(registry=registry)
class PlaceOrder:
    order_id: str


@command(registry=registry)
class ShipOrder:
    order_id: str


@command(registry=registry)
class PlaceRushOrder(PlaceOrder):
    pass


@query(registry=registry)
class GetOrder:
    order_id: str


@event(registry=registry)
class OrderEvent:
    order_id: str


@event(registry=registry)
class OrderPlaced(OrderEvent):
    total: int = 0


@event(registry=registry)
class OrderShipped(OrderEvent):
    carrier: str = "post"


class Failure(Exception):
    """An exception raised on purpose by a test handler."""


@pytest.fixture
def bus() -> Any:
    with MessageBus(registry) as b:
        yield b


class Errors:
    """An error hook that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Envelope, str, BaseException]] = []

    def __call__(self, envelope: Envelope, name: str, exc: BaseException) -> None:
        self.calls.append((envelope, name, exc))


# -- commands and queries ----------------------------------------------------------------------


def test_dispatch_runs_the_handler_and_returns_its_result(bus: MessageBus) -> None:
    """dispatch() calls the command's one handler with the command and returns its result."""
    seen = []

    def place(cmd: PlaceOrder) -> str:
        seen.append(cmd)
        return f"placed {cmd.order_id}"

    bus.register(PlaceOrder, place)
    result = bus.dispatch(PlaceOrder("o-1"))
    assert "placed o-1" == result
    assert [PlaceOrder("o-1")] == seen


def test_ask_runs_the_query_handler_and_returns_its_answer(bus: MessageBus) -> None:
    """ask() calls the query's one handler and returns its answer."""

    @bus.handles(GetOrder)
    def get(q: GetOrder) -> dict[str, str]:
        return {"id": q.order_id}

    assert {"id": "o-7"} == bus.ask(GetOrder("o-7"))


def test_handles_returns_the_function_unchanged(bus: MessageBus) -> None:
    """The @bus.handles decorator registers the function and gives it back as it was."""

    def place(cmd: PlaceOrder) -> int:
        return 1

    assert place is bus.handles(PlaceOrder)(place)


@pytest.mark.parametrize("message_type", [PlaceOrder, GetOrder])
def test_a_second_handler_raises_handler_already_registered(
    bus: MessageBus, message_type: type[Any]
) -> None:
    """Commands and queries have exactly one handler: a second registration is refused and
    the first handler stays in place."""

    def first(m: Any) -> str:
        return "first"

    def second(m: Any) -> str:
        return "second"

    bus.register(message_type, first)
    with pytest.raises(HandlerAlreadyRegistered) as info:
        bus.register(message_type, second)
    assert message_type is info.value.message_type
    assert first is info.value.existing
    assert message_type.__qualname__ in str(info.value)
    send = bus.dispatch if message_type is PlaceOrder else bus.ask
    assert "first" == send(message_type("o-1"))


def test_dispatch_without_a_handler_raises_no_handler_error(bus: MessageBus) -> None:
    """A command with no handler raises NoHandlerError naming its type."""
    with pytest.raises(NoHandlerError) as info:
        bus.dispatch(ShipOrder("o-1"))
    assert ShipOrder is info.value.message_type
    assert "ShipOrder" in str(info.value)


def test_ask_without_a_handler_raises_no_handler_error(bus: MessageBus) -> None:
    """A query with no handler raises NoHandlerError naming its type."""
    with pytest.raises(NoHandlerError) as info:
        bus.ask(GetOrder("o-1"))
    assert GetOrder is info.value.message_type


@pytest.mark.parametrize("send", ["dispatch", "ask"])
def test_the_handlers_exception_reaches_the_caller_unchanged(bus: MessageBus, send: str) -> None:
    """The exact exception object the handler raised comes out of dispatch() and ask()."""
    boom = Failure("no stock")

    def fail(m: Any) -> None:
        raise boom

    bus.register(PlaceOrder, fail)
    bus.register(GetOrder, fail)
    message = PlaceOrder("o-1") if send == "dispatch" else GetOrder("o-1")
    with pytest.raises(Failure) as info:
        getattr(bus, send)(message)
    assert boom is info.value


def test_only_the_exact_command_type_is_routed(bus: MessageBus) -> None:
    """A command handler is found by the command's exact class, not by a base class."""
    bus.register(PlaceOrder, lambda c: "plain")
    with pytest.raises(NoHandlerError):
        bus.dispatch(PlaceRushOrder("o-1"))


# -- the wrong kind of message ---------------------------------------------------------------


def test_dispatching_an_event_is_a_clear_type_error(bus: MessageBus) -> None:
    """dispatch() of an event says it is an event and to publish it."""
    with pytest.raises(
        TypeError,
        match=r"OrderPlaced is an event, and dispatch\(\) takes commands: send it with publish\(\)",
    ):
        bus.dispatch(OrderPlaced("o-1"))


def test_publishing_a_command_is_a_clear_type_error(bus: MessageBus) -> None:
    """publish() of a command says it is a command and to dispatch it."""
    with pytest.raises(
        TypeError,
        match=r"PlaceOrder is a command, and publish\(\) takes events: "
        r"send it with dispatch\(\)",
    ):
        bus.publish(PlaceOrder("o-1"))


def test_publishing_a_query_is_a_clear_type_error(bus: MessageBus) -> None:
    """publish() of a query says it is a query and to ask it."""
    with pytest.raises(
        TypeError, match=r"GetOrder is a query, and publish\(\) takes events: send it with ask\(\)"
    ):
        bus.publish(GetOrder("o-1"))


def test_dispatch_of_a_query_and_ask_of_a_command_say_which_method_to_use(
    bus: MessageBus,
) -> None:
    """Sending a query with dispatch() or a command with ask() names the right method."""
    bus.register(GetOrder, lambda q: None)
    bus.register(PlaceOrder, lambda c: None)
    with pytest.raises(
        TypeError,
        match=r"GetOrder is a query, and dispatch\(\) takes commands: "
        r"send it with ask\(\)",
    ):
        bus.dispatch(GetOrder("o-1"))
    with pytest.raises(
        TypeError,
        match=r"PlaceOrder is a command, and ask\(\) takes queries: "
        r"send it with dispatch\(\)",
    ):
        bus.ask(PlaceOrder("o-1"))


def test_subscribing_to_a_command_or_registering_an_event_handler_is_refused(
    bus: MessageBus,
) -> None:
    """Commands get one handler through register(); events get subscribers."""
    with pytest.raises(TypeError, match=r"PlaceOrder is a command, and subscribe\(\) takes events"):
        bus.subscribe(PlaceOrder, lambda c: None)
    with pytest.raises(TypeError, match=r"OrderPlaced is an event, .*with subscribe\(\)"):
        bus.register(OrderPlaced, lambda e: None)


def test_plain_classes_work_as_commands_queries_and_events(bus: MessageBus) -> None:
    """Classes the registry does not know are allowed on the in-memory bus: registered ones
    can be dispatched or asked, subscribed ones published."""

    class Ping:
        pass

    class Pinged:
        pass

    received: list[Any] = []
    bus.register(Ping, lambda p: "pong")
    bus.subscribe(Pinged, received.append)
    event_ = Pinged()
    bus.publish(event_)
    assert ("pong", "pong") == (bus.dispatch(Ping()), bus.ask(Ping()))
    assert [event_] == received


# -- events ------------------------------------------------------------------------------------


def test_sync_subscribers_run_in_the_callers_thread_in_subscription_order(
    bus: MessageBus,
) -> None:
    """Synchronous subscribers, of the class and of its bases, run in the order they
    subscribed, before publish() returns."""
    calls: list[str] = []
    bus.subscribe(OrderPlaced, lambda e: calls.append("placed-1"))
    bus.subscribe(OrderEvent, lambda e: calls.append("base"))
    bus.subscribe(OrderPlaced, lambda e: calls.append("placed-2"))
    bus.publish(OrderPlaced("o-1"))
    assert ["placed-1", "base", "placed-2"] == calls


def test_a_subscriber_of_a_base_class_receives_its_subclasses(bus: MessageBus) -> None:
    """A base-class subscriber gets every subclass; a subclass subscriber only its own."""
    base: list[Any] = []
    placed: list[Any] = []
    bus.subscribe(OrderEvent, base.append)
    bus.subscribe(OrderPlaced, placed.append)
    events = [OrderPlaced("o-1", 5), OrderShipped("o-1"), OrderEvent("o-2")]
    bus.publish(*events)
    assert events == base
    assert [events[0]] == placed


def test_publish_with_no_subscribers_does_nothing(bus: MessageBus) -> None:
    """Publishing an event nobody subscribed to is allowed (and returns None, as typed)."""
    bus.publish(OrderShipped("o-1"))


def test_subscribe_returns_a_handle_with_a_default_name(bus: MessageBus) -> None:
    """subscribe() returns a Subscription naming the handler by module and qualified name."""

    def notify(e: OrderPlaced) -> None:
        pass

    sub = bus.subscribe(OrderPlaced, notify)
    assert isinstance(sub, Subscription)
    expected = f"{__name__}.test_subscribe_returns_a_handle_with_a_default_name.<locals>.notify"
    assert (expected, OrderPlaced, notify, False) == (
        sub.name,
        sub.event_type,
        sub.handler,
        sub.background,
    )
    assert (sub,) == bus.subscriptions()


def test_unsubscribe_by_handle_and_by_function(bus: MessageBus) -> None:
    """A handle's unsubscribe() and bus.unsubscribe(function) both stop deliveries; they
    return whether something was subscribed."""
    first: list[Any] = []
    second: list[Any] = []
    handle = bus.subscribe(OrderPlaced, first.append)
    bus.subscribes(OrderEvent)(second.append)
    bus.publish(OrderPlaced("o-1"))
    assert True is handle.unsubscribe()
    assert False is handle.active
    assert False is handle.unsubscribe()
    assert True is bus.unsubscribe(second.append)
    assert False is bus.unsubscribe(second.append)
    bus.publish(OrderPlaced("o-2"))
    assert ([OrderPlaced("o-1")], [OrderPlaced("o-1")]) == (first, second)


def test_a_new_subscriber_gets_events_of_a_class_already_published(bus: MessageBus) -> None:
    """The cached subscriber list of a class is rebuilt when someone subscribes."""
    early: list[Any] = []
    late: list[Any] = []
    bus.subscribe(OrderEvent, early.append)
    bus.publish(OrderPlaced("o-1"))
    bus.subscribe(OrderEvent, late.append)
    bus.publish(OrderPlaced("o-2"))
    assert ([OrderPlaced("o-1"), OrderPlaced("o-2")], [OrderPlaced("o-2")]) == (early, late)


def test_a_failing_subscriber_does_not_stop_the_others_and_is_reported(
    bus: MessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    """When one subscriber raises, the later ones still run, publish() does not raise, the
    failure is logged with its traceback, and the error hook gets the envelope, the
    subscriber's name and the exception."""
    errors = Errors()
    bus.add_error_hook(errors)
    after: list[Any] = []
    boom = Failure("mailer down")
    seen: list[Envelope | None] = []

    def mailer(e: OrderPlaced) -> None:
        seen.append(current_envelope())
        raise boom

    bus.subscribe(OrderPlaced, mailer, name="mailer")
    bus.subscribe(OrderPlaced, after.append)
    placed = OrderPlaced("o-1")
    with caplog.at_level(logging.ERROR, logger="eventlite.bus"):
        bus.publish(placed)

    assert [placed] == after
    assert [(seen[0], "mailer", boom)] == errors.calls
    assert placed is errors.calls[0][0].message
    [record] = caplog.records
    assert "eventlite.bus" == record.name
    assert "mailer" in record.getMessage()
    assert "OrderPlaced" in record.getMessage()
    assert record.exc_info is not None and boom is record.exc_info[1]


def test_an_error_hook_that_raises_is_logged_and_the_next_hook_still_runs(
    bus: MessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken error hook does not hide the failure from the hooks after it."""
    later = Errors()

    def broken(envelope: Envelope, name: str, exc: BaseException) -> None:
        raise RuntimeError("hook broke")

    bus.add_error_hook(broken)
    bus.add_error_hook(later)
    bus.subscribe(OrderPlaced, lambda e: 1 / 0, name="divider")
    with caplog.at_level(logging.ERROR, logger="eventlite.bus"):
        bus.publish(OrderPlaced("o-1"))
    assert ["divider"] == [name for _, name, _ in later.calls]
    assert any("error hook" in r.getMessage() for r in caplog.records)


def test_on_error_is_an_error_hook_and_hooks_can_be_removed() -> None:
    """The on_error argument is the first error hook; remove_error_hook() stops one."""
    first, second = Errors(), Errors()
    with MessageBus(registry, on_error=first) as bus:
        bus.add_error_hook(second)
        bus.subscribe(OrderPlaced, lambda e: 1 / 0)
        bus.publish(OrderPlaced("o-1"))
        bus.remove_error_hook(second)
        bus.publish(OrderPlaced("o-2"))
    assert (2, 1) == (len(first.calls), len(second.calls))


@given(max_attempts=st.integers(1, 5), failures=st.integers(0, 7))
def test_a_subscriber_gets_the_attempts_its_retry_policy_states(
    max_attempts: int, failures: int
) -> None:
    """A subscriber that fails its first ``failures`` calls is called until it succeeds, at
    most ``max_attempts`` times, and reaches the error hook only when no attempt succeeded."""
    errors = Errors()
    calls = []

    def flaky(e: OrderPlaced) -> None:
        calls.append(e)
        if len(calls) <= failures:
            raise Failure(f"attempt {len(calls)}")

    with MessageBus(registry, on_error=errors) as bus:
        bus.subscribe(OrderPlaced, flaky, retry=RetryPolicy(max_attempts=max_attempts))
        bus.publish(OrderPlaced("o-1"))
    assert min(failures + 1, max_attempts) == len(calls)
    expected = [f"attempt {max_attempts}"] if failures >= max_attempts else []
    assert expected == [str(exc) for _, _, exc in errors.calls]


def test_the_bus_retry_policy_is_the_default_and_a_subscriber_can_opt_out() -> None:
    """retry= on the bus applies to subscribers without their own policy;
    RetryPolicy(max_attempts=1) turns retries off for one subscriber."""
    counts = {"default": 0, "once": 0}

    def failing(name: str) -> Any:
        def handler(e: OrderPlaced) -> None:
            counts[name] += 1
            raise Failure(name)

        return handler

    with MessageBus(registry, retry=RetryPolicy(max_attempts=3)) as bus:
        bus.subscribe(OrderPlaced, failing("default"))
        sub = bus.subscribe(OrderPlaced, failing("once"), retry=RetryPolicy(max_attempts=1))
        bus.publish(OrderPlaced("o-1"))
    assert {"default": 3, "once": 1} == counts
    assert RetryPolicy(max_attempts=1) == sub.retry


def test_a_base_exception_from_a_sync_subscriber_is_not_swallowed(bus: MessageBus) -> None:
    """KeyboardInterrupt and friends stop publish(): only Exceptions are reported."""

    def interrupt(e: OrderPlaced) -> None:
        raise KeyboardInterrupt

    bus.subscribe(OrderPlaced, interrupt)
    with pytest.raises(KeyboardInterrupt):
        bus.publish(OrderPlaced("o-1"))
    assert None is current_envelope()


# -- envelopes and correlation -----------------------------------------------------------------


def test_the_envelope_is_current_only_while_a_handler_runs(bus: MessageBus) -> None:
    """current_envelope() gives the handled message's envelope inside a handler, and None
    again once the handler has returned or raised."""
    seen: list[Envelope | None] = []

    def handle(m: Any) -> None:
        seen.append(current_envelope())

    bus.register(PlaceOrder, handle)
    bus.subscribe(OrderPlaced, handle)
    bus.dispatch(PlaceOrder("o-1"))
    bus.publish(OrderPlaced("o-1"), key="o-1")
    assert [PlaceOrder("o-1"), OrderPlaced("o-1")] == [e.message for e in seen if e]
    assert ["PlaceOrder", "OrderPlaced"] == [e.type for e in seen if e]
    assert [None, "o-1"] == [e.key for e in seen if e]
    assert None is current_envelope()


def test_a_command_its_event_and_the_next_command_share_one_correlation_id(
    bus: MessageBus,
) -> None:
    """Command -> event -> command: all three carry the first one's correlation id, and
    each causation id is the id of the message whose handler sent it."""
    envelopes: dict[str, Envelope] = {}

    def place(cmd: PlaceOrder) -> None:
        envelopes["place"] = current_envelope()  # type: ignore[assignment]
        bus.publish(OrderPlaced(cmd.order_id))

    def on_placed(e: OrderPlaced) -> None:
        envelopes["placed"] = current_envelope()  # type: ignore[assignment]
        bus.dispatch(ShipOrder(e.order_id))

    def ship(cmd: ShipOrder) -> None:
        envelopes["ship"] = current_envelope()  # type: ignore[assignment]

    bus.register(PlaceOrder, place)
    bus.register(ShipOrder, ship)
    bus.subscribe(OrderPlaced, on_placed)
    bus.dispatch(PlaceOrder("o-1"))

    place_env, placed_env, ship_env = envelopes["place"], envelopes["placed"], envelopes["ship"]
    assert place_env.id == place_env.correlation_id
    assert None is place_env.causation_id
    assert [place_env.id] * 2 == [placed_env.correlation_id, ship_env.correlation_id]
    assert (place_env.id, placed_env.id) == (placed_env.causation_id, ship_env.causation_id)


def test_publish_envelopes_delivers_stored_events_with_their_envelope(bus: MessageBus) -> None:
    """publish_envelopes() hands subscribers the message and makes that very envelope
    current, stream id, version and position included."""
    seen: list[tuple[Any, Envelope | None]] = []
    bus.subscribe(OrderEvent, lambda e: seen.append((e, current_envelope())))
    stored = [
        Envelope(OrderPlaced("o-1"), stream_id="order-o-1", version=1, position=10),
        Envelope(OrderShipped("o-1"), stream_id="order-o-1", version=2, position=11),
    ]
    bus.publish_envelopes(*stored)
    assert [(env.message, env) for env in stored] == seen
    assert ["order-o-1", "order-o-1"] == [env.key for env in stored]


def test_events_made_by_a_handler_are_delivered_after_the_current_one(bus: MessageBus) -> None:
    """publish() of several events delivers them in the order given, each to all its
    subscribers, with a nested publish running inside the handler that made it."""
    log: list[str] = []

    def on_placed(e: OrderPlaced) -> None:
        log.append(f"placed {e.order_id}")
        if e.order_id == "o-1":
            bus.publish(OrderShipped("o-1"))

    bus.subscribe(OrderPlaced, on_placed)
    bus.subscribe(OrderShipped, lambda e: log.append(f"shipped {e.order_id}"))
    bus.publish(OrderPlaced("o-1"), OrderPlaced("o-2"))
    assert ["placed o-1", "shipped o-1", "placed o-2"] == log


# -- closing -----------------------------------------------------------------------------------


def test_a_closed_bus_refuses_messages_with_a_clear_error() -> None:
    """After close() (here: leaving the with block), publish, dispatch and ask raise
    BusClosed naming the message type."""
    with MessageBus(registry) as bus:
        bus.register(PlaceOrder, lambda c: None)
        bus.subscribe(OrderPlaced, lambda e: None)
    assert True is bus.closed
    with pytest.raises(BusClosed, match=r"cannot publish OrderPlaced: this MessageBus was closed"):
        bus.publish(OrderPlaced("o-1"))
    with pytest.raises(BusClosed, match=r"cannot dispatch PlaceOrder"):
        bus.dispatch(PlaceOrder("o-1"))
    with pytest.raises(BusClosed, match=r"cannot ask GetOrder"):
        bus.ask(GetOrder("o-1"))
    with pytest.raises(BusClosed):
        bus.subscribe(OrderPlaced, lambda e: None)
    assert True is bus.close()


@pytest.mark.parametrize("kwargs", [{"workers": 0}, {"queue_size": 0}, {"workers": 1.5}])
def test_bad_pool_settings_are_refused(kwargs: dict[str, Any]) -> None:
    """workers and queue_size must be ints of at least 1."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MessageBus(registry, **kwargs)


def test_handlers_lists_registered_commands_and_queries() -> None:
    """bus.handlers() maps each command and query type to the handler registered for it."""
    reg = Registry()

    @command(registry=reg)
    class Ping:
        pass

    @query(registry=reg)
    class Ask:
        pass

    def ping(c: Ping) -> None: ...

    def ask(q: Ask) -> int:
        return 1

    bus = MessageBus(reg)
    bus.register(Ping, ping)
    bus.register(Ask, ask)
    listing = bus.handlers()
    assert {Ping: ping, Ask: ask} == listing
    listing.clear()
    assert 2 == len(bus.handlers())
