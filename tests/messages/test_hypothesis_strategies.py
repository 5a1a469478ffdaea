"""Hypothesis strategies for registered messages: every value they make survives a round
trip through the Codec, over every field type the codec supports."""

from __future__ import annotations

import enum
from collections.abc import MutableSequence, Sequence
from collections.abc import Set as AbstractSet
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, Optional
from uuid import UUID

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlite.codec import Codec
from eventlite.messages import MessageKind, Registry, command, event
from eventlite.testing import strategies
from tests.strategies import field_types

registry = Registry()


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Address:
    street: str
    zip_code: Optional[str]  # noqa: UP045 - the old spelling must work too


@event(registry=registry)
class CustomerRegistered:
    customer_id: UUID
    name: str
    born: date
    registered_at: datetime
    address: Address
    vip: bool


@event(registry=registry)
class OrderPlaced:
    order_id: str
    total: Decimal
    weight: float
    lines: tuple[tuple[str, int], ...]
    tags: frozenset[str]
    colours: frozenset[Colour]
    priority: Priority
    note: str | None
    shipped_at: datetime | None
    extras: dict[str, Decimal]
    history: list[Address]
    channel: Literal["web", "phone"]
    pair: tuple[int, str]


@command(registry=registry)
class PlaceOrder:
    order_id: str
    total: Decimal


@attrs.frozen
class Node:
    name: str
    parent: Node | None


CODEC = Codec(registry)


def round_trip(codec: Codec, message: Any) -> Any:
    """The message encoded and decoded again by its registered name."""
    name = codec.message_type(message).name
    return codec.decode(name, codec.encode(message))


@given(strategies.messages(registry))
def test_every_registered_message_round_trips(message: Any) -> None:
    """Whatever messages() draws, the codec writes and reads back unchanged."""
    assert message == round_trip(CODEC, message)


@given(strategies.from_type(OrderPlaced))
def test_datetimes_are_timezone_aware(message: OrderPlaced) -> None:
    """Drawn datetimes carry a UTC offset, as the codec requires."""
    if message.shipped_at is not None:
        assert message.shipped_at.utcoffset() is not None


@given(strategies.from_type(CustomerRegistered))
def test_nested_attrs_fields_are_built(message: CustomerRegistered) -> None:
    """A field whose type is an attrs class gets an instance of it."""
    assert (Address, datetime) == (type(message.address), type(message.registered_at))
    assert message.registered_at.utcoffset() is not None


def test_messages_draws_every_class() -> None:
    """Across many draws, each registered class shows up."""
    seen: set[type[Any]] = set()

    @settings(max_examples=200, derandomize=True, database=None)
    @given(strategies.messages(registry))
    def collect(message: Any) -> None:
        seen.add(type(message))

    collect()
    assert {CustomerRegistered, OrderPlaced, PlaceOrder} == seen


@settings(max_examples=30)
@given(strategies.messages(registry, kinds=[MessageKind.COMMAND]))
def test_kinds_restricts_the_classes(message: Any) -> None:
    """kinds= keeps only the classes of those kinds."""
    assert PlaceOrder is type(message)


def test_kinds_with_no_class_is_refused() -> None:
    """A registry with nothing of the wanted kind raises ValueError at once."""
    with pytest.raises(ValueError, match="no message class of kind query"):
        strategies.messages(registry, kinds=[MessageKind.QUERY])


@given(strategies.from_type(PlaceOrder, order_id=st.just("o-1")))
def test_keywords_replace_a_fields_strategy(message: PlaceOrder) -> None:
    """A keyword strategy is used for its field."""
    assert "o-1" == message.order_id


def test_a_keyword_that_names_no_field_is_refused() -> None:
    """A typo in a field name is a TypeError, not silently ignored."""
    with pytest.raises(TypeError, match=r"PlaceOrder has no field\(s\) order"):
        strategies.from_type(PlaceOrder, order=st.just("x"))


@attrs.frozen
class Unsupported:
    blob: bytes


@attrs.frozen
class Untyped:
    anything: Any


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (Unsupported, "Unsupported.blob: cannot generate values of bytes"),
        (Untyped, "Untyped.anything: cannot generate values of"),
    ],
)
def test_a_field_type_it_cannot_generate_names_the_field(cls: type[Any], message: str) -> None:
    """The error names the class and field, and says how to supply a strategy."""
    with pytest.raises(TypeError) as info:
        strategies.from_type(cls)
    assert str(info.value).startswith(message)
    assert f"from_type({cls.__name__}, " in str(info.value)


def test_a_class_that_is_not_attrs_is_refused() -> None:
    """from_type() takes attrs classes only."""
    with pytest.raises(TypeError, match="takes an attrs class"):
        strategies.from_type(dict)


@settings(max_examples=50)
@given(strategies.from_type(Node))
def test_a_class_may_refer_to_itself(node: Node) -> None:
    """An Optional field of the class's own type makes finite chains."""
    depth = 0
    current: Node | None = node
    while current is not None:
        depth += 1
        current = current.parent
    assert depth >= 1


@given(strategies.envelopes(strategies.messages(registry)))
def test_envelopes_round_trip_through_the_wire_form(envelope: Any) -> None:
    """A drawn envelope survives encode_envelope and decode_envelope unchanged."""
    assert envelope == CODEC.decode_envelope(CODEC.encode_envelope(envelope))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_generated_classes_round_trip(data: st.DataObject) -> None:
    """For message classes made up on the fly over every supported field type, nested,
    from_type() values survive the codec."""
    fields = data.draw(st.lists(field_types, max_size=4))
    cls = attrs.make_class(
        "Made", {f"f{i}": attrs.field(type=t) for i, (t, _) in enumerate(fields)}, frozen=True
    )
    made = Registry()
    made.register(cls, MessageKind.EVENT)
    message = data.draw(strategies.from_type(cls))
    assert message == round_trip(Codec(made), message)


@attrs.frozen
class Collections:
    ordered: Sequence[int]
    growing: MutableSequence[str]
    members: AbstractSet[int]


@given(strategies.from_type(Collections))
def test_abstract_collection_fields_get_the_type_the_codec_reads_back(
    value: Collections,
) -> None:
    """A Sequence field is drawn as a tuple (what the codec reads it back as), a
    MutableSequence as a list, a Set as a frozenset: values the codec writes."""
    made = Registry()
    made.register(Collections, MessageKind.EVENT)
    assert (tuple, list, frozenset) == tuple(type(v) for v in attrs.astuple(value, recurse=False))
    assert value == round_trip(Codec(made), value)
