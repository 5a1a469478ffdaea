"""The codec writes only what it can read back: every value is checked against its declared
type before anything is written, and a refusal names the class, the field path and the
value (issue 9, part 1)."""

from __future__ import annotations

import enum
import math
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Optional
from uuid import UUID

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlite.codec import MAX_DEPTH, Codec, dumps
from eventlite.exceptions import MessageEncodeError
from eventlite.memory import InMemoryEventStore
from eventlite.messages import Registry, event
from tests.strategies import lone_surrogates, messages

registry = Registry()


@attrs.frozen
class Line:
    """A nested attrs class, not declared with a decorator: no converters."""

    sku: str
    qty: int
    amount: Decimal


@attrs.frozen
class RushLine(Line):
    pass


class Colour(enum.Enum):
    RED = "red"


@event(registry=registry)
@attrs.frozen
class OrderPlaced:
    """An attrs class declared as it is: the decorator adds no converters to it."""

    order_id: str
    total: Decimal
    lines: list[Line] = attrs.field(factory=list)
    note: Optional[str] = None  # noqa: UP045 - the spelling users write
    weight: float = 0.0
    placed_on: date = date(2024, 1, 1)
    colour: Colour = Colour.RED
    extra: dict[str, Any] = attrs.field(factory=dict)


@event(registry=registry)
class Deposited:
    """A plain class the decorator turns into attrs, with its number converters."""

    account: str
    amount: Decimal
    ratio: float = 1.0
    fee: Optional[Decimal] = None  # noqa: UP045


@event(registry=registry)
@attrs.frozen
class Node:
    label: str
    children: list[Node] = attrs.field(factory=list)


codec = Codec(registry)


def _order(**changes: Any) -> OrderPlaced:
    return attrs.evolve(
        OrderPlaced("o-1", Decimal("9.99"), [Line("a", 1, Decimal("2"))]), **changes
    )


def _refused(message: Any) -> MessageEncodeError:
    with pytest.raises(MessageEncodeError) as info:
        codec.encode(message)
    return info.value


# -- each kind of wrong value, named ----------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "path", "words"),
    [
        ({"total": "abc"}, "total", "expected Decimal, got str 'abc'"),
        ({"total": None}, "total", "got None"),
        ({"total": 1.5}, "total", "not a float"),
        ({"total": Decimal("NaN")}, "total", "finite"),
        ({"lines": [Line("a", 1, Decimal(1)), Line("b", 2, 1.5)]}, "lines[1].amount", "1.5"),  # type: ignore[arg-type]
        ({"lines": [Line("a", 3.7, Decimal(1))]}, "lines[0].qty", "expected int"),  # type: ignore[arg-type]
        ({"lines": [Line("a", True, Decimal(1))]}, "lines[0].qty", "got True"),
        ({"note": "caf\udce9"}, "note", "UTF-8"),
        ({"weight": math.nan}, "weight", "finite float"),
        ({"weight": math.inf}, "weight", "finite float"),
        ({"weight": 3}, "weight", "expected float"),
        ({"placed_on": datetime(2024, 1, 1, tzinfo=timezone.utc)}, "placed_on", "not a date"),
        ({"colour": "red"}, "colour", "expected Colour"),
        ({"lines": (Line("a", 1, Decimal(1)),)}, "lines", "expected list, got tuple"),
        ({"lines": [RushLine("a", 1, Decimal(1))]}, "lines[0]", "subclass"),
        ({"extra": {"k": (1, 2)}}, "extra['k']", "plain JSON"),
        ({"extra": {"k": [1, "\ud800"]}}, "extra['k'][1]", "UTF-8"),
        ({"lines": [Line("a", 10**5000, Decimal(1))]}, "lines[0].qty", "digits"),
    ],
)
def test_a_value_of_the_wrong_kind_is_refused_naming_field_and_value(
    changes: dict[str, Any], path: str, words: str
) -> None:
    """Each value that would not read back as itself is refused with MessageEncodeError
    naming the message type, the field path and the value; today's codec wrote most of
    them (and raised a bare error for the rest)."""
    error = _refused(_order(**changes))
    assert ("OrderPlaced", path) == (error.type_name, error.path)
    assert words in str(error)
    assert f"'OrderPlaced': {path}: " in str(error)


def test_nesting_is_bounded() -> None:
    """A message nested deeper than MAX_DEPTH levels is refused, so whatever is written
    can be read back without running out of stack."""
    deep = Node("leaf")
    for i in range(MAX_DEPTH):
        deep = Node(str(i), [deep])
    error = _refused(deep)
    assert "nested deeper than 64 levels" in str(error)
    shallow = Node("root", [Node("a"), Node("b", [Node("c")])])
    assert shallow == codec.decode("Node", codec.encode(shallow))


def test_a_refused_message_writes_nothing() -> None:
    """An append whose event cannot be encoded raises MessageEncodeError and leaves the
    store as it was."""
    store = InMemoryEventStore(codec=codec)
    store.append("order-1", [_order()], expected_version=0)
    with pytest.raises(MessageEncodeError, match=r"note: .*UTF-8"):
        store.append("order-1", [_order(), _order(note="\ud800")], expected_version=1)
    assert (1, 1) == (store.stream_version("order-1"), store.head_position())


def test_the_check_is_also_available_on_its_own() -> None:
    """Codec.check raises what encode would raise, without encoding."""
    codec.check(_order())
    with pytest.raises(MessageEncodeError, match="total: expected Decimal"):
        codec.check(_order(total="1"))


def test_envelope_metadata_must_be_valid_utf8() -> None:
    """encode_envelope refuses a header that is not valid UTF-8, naming it."""
    from eventlite.envelope import Envelope, Metadata

    env = Envelope(_order(), metadata=Metadata("corr", headers={"user": "x\udcff"}))
    with pytest.raises(MessageEncodeError, match=r"headers.user: .*UTF-8"):
        codec.encode_envelope(env)


# -- the decorators' number converters --------------------------------------------------------


def test_decimal_fields_take_ints_and_numeric_strings() -> None:
    """In a class the decorator makes, a Decimal field turns an int or a numeric string into
    a Decimal, so the message reads back equal and of the same types."""
    message = Deposited("acc", 5, ratio=2, fee="0.25")  # type: ignore[arg-type]
    assert (Decimal(5), 2.0, Decimal("0.25")) == (message.amount, message.ratio, message.fee)
    assert (Decimal, float) == (type(message.amount), type(message.ratio))
    assert message == codec.decode("Deposited", codec.encode(message))


def test_decimal_fields_refuse_floats_and_non_numbers_when_built() -> None:
    """A float in a Decimal field is refused when the message is built (it would carry its
    binary rounding), and so is a string that is not a finite number."""
    with pytest.raises(TypeError, match=r"Deposited.amount: a float cannot be a Decimal"):
        Deposited("acc", 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Deposited.amount: 'abc' is not a decimal number"):
        Deposited("acc", "abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a finite"):
        Deposited("acc", "NaN")  # type: ignore[arg-type]


# -- the property -----------------------------------------------------------------------------


def _typed(value: Any) -> Any:
    """``value`` with the class of every part beside it, to compare types as well as values."""
    if attrs.has(type(value)):
        return (
            type(value),
            tuple(_typed(getattr(value, f.name)) for f in attrs.fields(type(value))),
        )
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_typed(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return (type(value), frozenset(_typed(v) for v in value))
    if isinstance(value, dict):
        return (type(value), frozenset((_typed(k), _typed(v)) for k, v in value.items()))
    return (type(value), value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(wrong=True))
def test_encode_refuses_or_the_message_reads_back_with_the_same_types(
    generated: tuple[Registry, Any],
) -> None:
    """For every generated message class and value, right or wrong-typed at any depth,
    either encode raises MessageEncodeError, or decoding gives back an equal message whose
    every value has the same class as before."""
    registry, message = generated
    codec = Codec(registry)
    try:
        text = codec.encode(message)
    except MessageEncodeError as exc:
        assert exc.type_name == type(message).__name__
        return
    back = codec.decode(type(message).__name__, text)
    assert message == back
    assert _typed(message) == _typed(back)


@settings(max_examples=200, deadline=None)
@given(messages())
def test_every_well_typed_message_is_written(generated: tuple[Registry, Any]) -> None:
    """Messages whose values all have their declared types are never refused."""
    registry, message = generated
    codec = Codec(registry)
    assert _typed(message) == _typed(codec.decode(type(message).__name__, codec.encode(message)))


# -- the one JSON writer ----------------------------------------------------------------------


@given(lone_surrogates)
def test_dumps_refuses_strings_that_are_not_utf8(text: str) -> None:
    """codec.dumps, the JSON writer every module shares, refuses a lone surrogate anywhere
    (a ValueError), where json.dumps would write text no file can store."""
    with pytest.raises(ValueError):
        dumps({"k": [text]})


def test_dumps_is_compact_and_refuses_nan() -> None:
    """dumps writes no spaces, keeps non-ASCII characters, and refuses NaN."""
    assert '{"a":[1,"é",null]}' == dumps({"a": [1, "é", None]})
    with pytest.raises(ValueError):
        dumps({"a": math.nan})
    assert '"x"' == dumps("x")
    assert '"00000000-0000-0000-0000-000000000000"' == dumps(str(UUID(int=0)))


@given(st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c, max_size=3)))
def test_dumps_writes_what_json_dumps_writes(value: Any) -> None:
    """dumps gives the same text as json.dumps with compact separators."""
    import json

    assert json.dumps(value, separators=(",", ":"), ensure_ascii=False) == dumps(value)
