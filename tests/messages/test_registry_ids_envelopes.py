"""Message declaration, the registry, ids and envelopes."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import attrs
import pytest

from eventlite import _ids
from eventlite.envelope import Envelope, Metadata, current_envelope, message_context
from eventlite.exceptions import DuplicateMessageType, NotAMessage, UnknownMessageType
from eventlite.messages import MessageKind, Registry, command, default_registry, event, query

registry = Registry()


@event(registry=registry)
class OrderPlaced:
    order_id: str


@command(registry=registry, name="orders.Place", version=2)
class PlaceOrder:
    order_id: str


@query(registry=registry)
class GetOrder:
    order_id: str


def test_decorator_makes_a_frozen_attrs_class() -> None:
    """A plain class becomes a frozen attrs class."""
    placed = OrderPlaced("o-1")
    assert attrs.has(OrderPlaced)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        placed.order_id = "o-2"  # type: ignore[misc]


def test_decorator_keeps_an_existing_attrs_class() -> None:
    """An attrs class is registered as it is, not rebuilt."""
    reg = Registry()

    @attrs.define
    class Mutable:
        x: int

    assert Mutable is event(registry=reg)(Mutable)


def test_registry_names_kinds_and_versions() -> None:
    """The registry knows each class by name and by class, with kind and version."""
    entry = registry.by_name("orders.Place")
    assert (PlaceOrder, MessageKind.COMMAND, 2) == (entry.cls, entry.kind, entry.version)
    assert entry == registry.by_class(PlaceOrder)
    assert MessageKind.EVENT == registry.by_class(OrderPlaced).kind
    assert MessageKind.QUERY == registry.by_class(GetOrder).kind
    assert {"OrderPlaced", "orders.Place", "GetOrder"} == {e.name for e in registry}


def test_empty_registry_is_still_used() -> None:
    """A new, empty registry passed to a decorator receives the class (not the default)."""
    reg = Registry()

    @event(registry=reg)
    class Lonely:
        pass

    assert Lonely is reg.by_name("Lonely").cls
    assert default_registry.find(Lonely) is None


def test_duplicate_name_is_refused() -> None:
    """Two classes under one name raise DuplicateMessageType naming both."""
    reg = Registry()

    @event(registry=reg, name="Same")
    class First:
        pass

    with pytest.raises(DuplicateMessageType, match="Same"):

        @event(registry=reg, name="Same")
        class Second:
            pass


def test_unknown_name_and_unregistered_class() -> None:
    """Lookups of unknown names and classes raise errors that name them."""
    with pytest.raises(UnknownMessageType, match="Nope"):
        registry.by_name("Nope")

    class Plain:
        pass

    with pytest.raises(NotAMessage, match="Plain"):
        registry.by_class(Plain)
    assert registry.find(Plain) is None


def test_bad_version_is_refused() -> None:
    """A schema version below 1 is refused."""
    with pytest.raises(ValueError, match="version"):

        @event(registry=Registry(), version=0)
        class Zero:
            pass


def test_ids_are_uuid7_and_increasing() -> None:
    """Ids parse as version-7 RFC 9562 UUIDs and sort in creation order, even across threads."""
    ids: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        mine = [Envelope(OrderPlaced("x")).id for _ in range(2000)]
        assert mine == sorted(mine)
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 8000 == len(set(ids))
    parsed = uuid.UUID(ids[0])
    assert (7, uuid.RFC_4122) == (parsed.version, parsed.variant)


def test_id_carries_the_millisecond() -> None:
    """The first 48 bits of an id are the Unix time in milliseconds."""
    env = Envelope(OrderPlaced("x"))
    ms = int(env.id.replace("-", "")[:12], 16)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert (env.timestamp - epoch) // timedelta(milliseconds=1) == ms
    assert 36 == len(_ids.new_id())


def test_first_message_starts_its_own_flow() -> None:
    """With nothing current, correlation id is the envelope's own id and causation is None."""
    env = Envelope(OrderPlaced("x"))
    assert Metadata(correlation_id=env.id) == env.metadata
    assert env.timestamp.tzinfo is timezone.utc


def test_context_links_children_to_parent() -> None:
    """An envelope made inside a message context is caused by it and shares its flow."""
    root = Envelope(PlaceOrder("o"), metadata=Metadata(correlation_id="flow-1", user_id="ann"))
    with message_context(root):
        assert root is current_envelope()
        child = Envelope(OrderPlaced("o"))
        with message_context(child):
            grandchild = Envelope(OrderPlaced("o"))
    assert current_envelope() is None
    assert ("flow-1", root.id, "ann") == (
        child.correlation_id,
        child.causation_id,
        child.metadata.user_id,
    )
    assert ("flow-1", child.id) == (grandchild.correlation_id, grandchild.causation_id)


def test_envelope_is_read_only_and_replace_copies() -> None:
    """Envelope fields cannot be assigned; replace() makes a changed copy."""
    env = Envelope(OrderPlaced("x"))
    with pytest.raises(AttributeError):
        env.id = "other"  # type: ignore[misc]
    stored = env.replace(stream_id="s", version=1, position=5)
    assert ("s", 1, 5, "s") == (stored.stream_id, stored.version, stored.position, stored.key)
    assert (env.id, env.metadata, env.timestamp) == (stored.id, stored.metadata, stored.timestamp)
    assert env != stored
    with pytest.raises(TypeError, match="nope"):
        env.replace(nope=1)


def test_envelope_validation() -> None:
    """Naive timestamps, versions without a stream and bad headers are refused."""
    with pytest.raises(ValueError, match="timezone"):
        Envelope(OrderPlaced("x"), timestamp=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="stream_id"):
        Envelope(OrderPlaced("x"), version=1)
    with pytest.raises(TypeError, match="headers"):
        Metadata(correlation_id="c", headers={"a": 1})  # type: ignore[dict-item]


def test_explicit_timestamp_is_kept_in_utc() -> None:
    """A given timestamp is stored as the same instant in UTC."""
    when = datetime(2024, 1, 1, 12, tzinfo=timezone.utc)
    env = Envelope(OrderPlaced("x"), timestamp=when)
    assert when == env.timestamp


def test_type_name_comes_from_the_registry_name() -> None:
    """Envelope.type is the registered name, and an undecorated subclass uses its own name."""
    assert "orders.Place" == Envelope(PlaceOrder("o")).type

    @attrs.frozen
    class Special(OrderPlaced):
        pass

    assert "Special" == Envelope(Special("o")).type  # type: ignore[call-arg]


def test_subclass_of_a_message_keeps_its_own_fields() -> None:
    """A decorated subclass of a message class is an attrs class with its added fields."""
    reg = Registry()

    @event(registry=reg)
    class Base:
        a: int

    @event(registry=reg)
    class Sub(Base):
        b: int

    assert ["a", "b"] == [f.name for f in attrs.fields(Sub)]  # type: ignore[arg-type]
    assert (1, 2) == (Sub(1, 2).a, Sub(1, 2).b)


def test_class_from_another_registry_is_named_as_such() -> None:
    """Looking up a class declared in another registry says so, instead of asking for a
    decorator it already has."""
    with pytest.raises(NotAMessage, match="another registry"):
        Registry().by_class(OrderPlaced)
