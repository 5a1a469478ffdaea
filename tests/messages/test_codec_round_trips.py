"""The JSON codec: round trips, upcasting and named errors."""

from __future__ import annotations

import enum
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest
from hypothesis import given, settings

from eventlite.codec import Codec
from eventlite.envelope import Envelope, Metadata, message_context
from eventlite.exceptions import (
    MessageDecodeError,
    MessageEncodeError,
    NotAMessage,
    UnknownMessageType,
)
from eventlite.messages import Registry, event
from tests.strategies import messages

registry = Registry()
codec = Codec(registry)


class Status(enum.Enum):
    OPEN = "open"
    SHIPPED = "shipped"


@event(registry=registry)
class Line:
    sku: str
    qty: int


@event(registry=registry, name="orders.OrderPlaced", version=3)
class OrderPlaced:
    order_id: UUID
    total: Decimal
    placed_at: datetime
    due: date
    status: Status
    lines: tuple[Line, ...]
    tags: frozenset[str]
    note: str | None = None


def _order() -> OrderPlaced:
    return OrderPlaced(
        order_id=UUID("12345678-1234-5678-1234-567812345678"),
        total=Decimal("10.10"),
        placed_at=datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        due=date(2024, 5, 3),
        status=Status.OPEN,
        lines=(Line("a", 1), Line("b", 2)),
        tags=frozenset({"gift"}),
    )


@settings(max_examples=300, deadline=None)
@given(messages())
def test_round_trip_property(generated: tuple[Registry, object]) -> None:
    """Any generated message class and value survive encode then decode unchanged."""
    reg, message = generated
    c = Codec(reg)
    name = reg.by_class(type(message)).name
    assert message == c.decode(name, c.encode(message))


@settings(max_examples=100, deadline=None)
@given(messages())
def test_envelope_round_trip_property(generated: tuple[Registry, object]) -> None:
    """A whole envelope, metadata included, survives the wire form."""
    reg, message = generated
    c = Codec(reg)
    env = Envelope(
        message,
        metadata=Metadata(
            correlation_id="c-1", causation_id="p-1", user_id="u", headers={"a": "b"}
        ),
    )
    assert env == c.decode_envelope(c.encode_envelope(env))


def test_encoded_form_is_plain_json() -> None:
    """Decimals are exact strings, datetimes ISO 8601 in UTC, sets and tuples lists."""
    data = json.loads(codec.encode(_order()))
    assert "10.10" == data["total"]
    assert "2024-05-01T10:00:00+00:00" == data["placed_at"]
    assert "2024-05-03" == data["due"]
    assert "open" == data["status"]
    assert [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}] == data["lines"]
    assert ["gift"] == data["tags"]
    assert "12345678-1234-5678-1234-567812345678" == data["order_id"]


def test_decoded_datetime_is_utc() -> None:
    """A datetime comes back as the same instant, in UTC."""
    back = codec.decode("orders.OrderPlaced", codec.encode(_order()))
    assert timezone.utc == back.placed_at.tzinfo
    assert _order().placed_at == back.placed_at


def test_unknown_type_names_the_type_and_position() -> None:
    """An unregistered name raises UnknownMessageType naming it and the stored position."""
    with pytest.raises(UnknownMessageType) as info:
        codec.decode("OrderShredded", "{}", position=42)
    assert ("OrderShredded", 42) == (info.value.type_name, info.value.position)
    assert "OrderShredded" in str(info.value) and "42" in str(info.value)


def test_corrupt_json_names_the_type_and_position() -> None:
    """Text that is not JSON raises MessageDecodeError naming the type and position."""
    with pytest.raises(MessageDecodeError) as info:
        codec.decode("Line", '{"sku": "a", ', position=7)
    assert ("Line", 7) == (info.value.type_name, info.value.position)
    assert "invalid JSON" in str(info.value)


def test_wrong_field_type_names_the_field() -> None:
    """Data of the wrong shape names the field path in the error."""
    with pytest.raises(MessageDecodeError) as info:
        codec.decode("Line", '{"sku": "a", "qty": "many"}')
    assert "$.qty" in str(info.value)


def test_missing_field_names_the_field() -> None:
    """A missing required field names it."""
    with pytest.raises(MessageDecodeError) as info:
        codec.decode("Line", '{"sku": "a"}')
    assert "$.qty" in str(info.value)


def test_non_object_json_is_refused() -> None:
    """A JSON list where an object is expected raises MessageDecodeError."""
    with pytest.raises(MessageDecodeError, match="expected a JSON object"):
        codec.decode("Line", "[1, 2]")


def test_float_for_decimal_is_refused() -> None:
    """A JSON float for a Decimal field is refused rather than rounded."""
    bad = json.loads(codec.encode(_order()))
    bad["total"] = 10.1
    with pytest.raises(MessageDecodeError, match="total"):
        codec.decode("orders.OrderPlaced", json.dumps(bad))


def test_naive_datetime_is_refused_on_encode() -> None:
    """Encoding a naive datetime fails clearly instead of guessing its zone."""
    order = _order()
    naive = OrderPlaced(**{**_as_kwargs(order), "placed_at": datetime(2024, 1, 1)})  # type: ignore[arg-type]
    with pytest.raises(MessageEncodeError, match="naive datetime"):
        codec.encode(naive)


def test_unregistered_class_is_refused_on_encode() -> None:
    """Encoding an instance of an unregistered class raises NotAMessage."""

    class Plain:
        pass

    with pytest.raises(NotAMessage):
        codec.encode(Plain())


def test_newer_schema_version_is_refused() -> None:
    """Data written by a newer schema version than the registered one is refused."""
    with pytest.raises(MessageDecodeError, match="newer"):
        codec.decode("orders.OrderPlaced", codec.encode(_order()), version=4)


def test_upcasters_chain_from_v1_to_v3() -> None:
    """A v1 dict passes through the v1→v2 and v2→v3 upcasters, in order, before structuring."""
    reg = Registry()
    calls: list[int] = []

    @event(registry=reg, name="Moved", version=3)
    class Moved:
        street: str
        city: str
        country: str

    @reg.upcaster("Moved", from_version=1)
    def v1_to_v2(data: dict[str, object]) -> dict[str, object]:
        calls.append(1)
        street, city = str(data.pop("address")).split(", ")
        return {**data, "street": street, "city": city}

    @reg.upcaster("Moved", from_version=2)
    def v2_to_v3(data: dict[str, object]) -> dict[str, object]:
        calls.append(2)
        return {**data, "country": "NL"}

    c = Codec(reg)
    moved = c.decode("Moved", '{"address": "Dam 1, Amsterdam"}', version=1)
    assert Moved("Dam 1", "Amsterdam", "NL") == moved
    assert [1, 2] == calls
    assert Moved("Dam 1", "Amsterdam", "NL") == c.decode(
        "Moved", '{"street": "Dam 1", "city": "Amsterdam", "country": "NL"}', version=3
    )


def test_missing_upcaster_is_a_decode_error() -> None:
    """A gap in the upcaster chain names the missing step."""
    reg = Registry()

    @event(registry=reg, version=2)
    class Renamed:
        name: str

    with pytest.raises(MessageDecodeError, match="no upcaster for 'Renamed' from version 1"):
        Codec(reg).decode("Renamed", '{"name": "x"}', version=1, position=3)


def test_failing_upcaster_is_a_decode_error_naming_the_position() -> None:
    """An upcaster that raises gives a MessageDecodeError with the stored position."""
    reg = Registry()

    @event(registry=reg, version=2)
    class Broken:
        name: str

    @reg.upcaster("Broken", from_version=1)
    def fail(data: dict[str, object]) -> dict[str, object]:
        raise KeyError("old_name")

    with pytest.raises(MessageDecodeError) as info:
        Codec(reg).decode("Broken", "{}", version=1, position=9)
    assert 9 == info.value.position


def test_envelope_wire_form_keeps_stream_fields() -> None:
    """A stored event's stream id, version and position travel on the wire."""
    env = Envelope(Line("a", 1), stream_id="order-1", version=2, position=10)
    back = codec.decode_envelope(codec.encode_envelope(env))
    assert ("order-1", 2, 10) == (back.stream_id, back.version, back.position)
    assert env == back


def test_envelope_wire_form_keeps_correlation() -> None:
    """Correlation and causation ids made by the context survive the wire."""
    parent = Envelope(Line("p", 1))
    with message_context(parent):
        child = Envelope(Line("c", 2))
    back = codec.decode_envelope(codec.encode_envelope(child))
    assert (parent.id, parent.id) == (back.correlation_id, back.causation_id)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"type": 3}',
        '{"type": "Line", "data": {"sku": "a", "qty": 1}}',
        '{"type": "Line", "data": {"sku": "a", "qty": 1}, "id": "x", "correlation_id": "c",'
        ' "timestamp": "yesterday"}',
        '{"type": "Line", "schema_version": "1x", "data": {"sku": "a", "qty": 1}}',
        '{"type": "Line", "data": {"sku": "a", "qty": 1}, "headers": ["a"], "id": "x",'
        ' "correlation_id": "c", "timestamp": "2024-01-01T00:00:00+00:00"}',
        '{"type": "Line", "data": {"sku": "a", "qty": 1}, "id": "x", "correlation_id": "c",'
        ' "timestamp": "2024-01-01T00:00:00+00:00", "stream_id": "s", "version": "7"}',
        '{"type": "Line", "data": {"sku": "a", "qty": 1}, "id": "x", "correlation_id": "c",'
        ' "timestamp": "2024-01-01T00:00:00+00:00", "stream_id": "s", "version": 1,'
        ' "position": true}',
    ],
)
def test_malformed_envelopes_are_decode_errors(text: str) -> None:
    """Malformed wire envelopes raise MessageDecodeError, never anything else."""
    with pytest.raises(MessageDecodeError):
        codec.decode_envelope(text)


def _as_kwargs(order: OrderPlaced) -> dict[str, object]:
    import attrs

    return attrs.asdict(order, recurse=False)  # type: ignore[arg-type]


def test_decoder_matches_decode_for_values_and_errors() -> None:
    """A cached decoder returns what decode returns and raises the same named errors."""
    text = codec.encode(_order())
    fast = codec.decoder("orders.OrderPlaced", 3)
    assert codec.decode("orders.OrderPlaced", text, version=3) == fast(text, 5)
    with pytest.raises(MessageDecodeError) as info:
        codec.decoder("Line")('{"sku": 1', 11)
    assert 11 == info.value.position
    with pytest.raises(UnknownMessageType) as unknown:
        codec.decoder("Nope", 1)("{}", 12)
    assert 12 == unknown.value.position
    with pytest.raises(MessageDecodeError, match="newer"):
        codec.decoder("Line", 2)('{"sku": "a", "qty": 1}', 13)


def test_decoder_sees_upcasters_registered_later() -> None:
    """A decoder made before an upcaster is registered is replaced once it exists."""
    reg = Registry()

    @event(registry=reg, version=2)
    class Grown:
        size: int

    c = Codec(reg)
    with pytest.raises(MessageDecodeError, match="no upcaster"):
        c.decoder("Grown", 1)("{}", 1)

    @reg.upcaster("Grown", from_version=1)
    def add_size(data: dict[str, object]) -> dict[str, object]:
        return {"size": 0}

    assert Grown(0) == c.decoder("Grown", 1)("{}", 1)


def test_envelope_with_unencodable_data_is_an_encode_error() -> None:
    """An envelope whose data cannot become JSON raises MessageEncodeError, not TypeError."""
    reg = Registry()

    @event(registry=reg)
    class Carries:
        value: float

    with pytest.raises(MessageEncodeError, match="Carries"):
        Codec(reg).encode_envelope(Envelope(Carries(float("nan"))))


@pytest.mark.parametrize("text", ['{"sku": "a", "qty": 1}', ' {"sku": "a", "qty": 1}\n'])
def test_fast_json_path_accepts_what_json_accepts(text: str) -> None:
    """Leading and trailing whitespace decode as json.loads would."""
    assert Line("a", 1) == codec.decode("Line", text)


@pytest.mark.parametrize("text", ['{"sku": "a", "qty": 1}x', "", "{", '{"sku": "a"} {}'])
def test_fast_json_path_refuses_what_json_refuses(text: str) -> None:
    """Trailing garbage, empty and truncated text are invalid JSON, named as such."""
    with pytest.raises(MessageDecodeError, match="invalid JSON"):
        codec.decode("Line", text)


def test_unregistered_class_is_refused_before_it_is_unstructured() -> None:
    """An unregistered class whose fields would not encode is still reported as not a
    message (the first thing wrong with it), naming the class."""
    import attrs

    @attrs.frozen
    class Loose:
        when: datetime

    with pytest.raises(NotAMessage, match="Loose"):
        codec.to_dict(Loose(datetime(2024, 1, 1)))
