"""Decoding never raises anything but MessageDecodeError or UnknownMessageType, whatever
the text: random text and bytes, deep nesting, huge numbers, values of the wrong type,
lone surrogates, envelopes with any field missing or wrong."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from decimal import Decimal
from typing import Any, Optional

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlite.codec import Codec, loads
from eventlite.envelope import Envelope
from eventlite.exceptions import MessageDecodeError, UnknownMessageType
from eventlite.messages import Registry, event
from tests.strategies import lone_surrogates

registry = Registry()


@event(registry=registry)
class Line:
    sku: str
    qty: int


@event(registry=registry, version=2)
class OrderPlaced:
    order_id: str
    total: Decimal
    placed_at: datetime
    lines: list[Line] = attrs.field(factory=list)
    note: Optional[str] = None  # noqa: UP045 - the spelling users write
    tree: Optional[OrderPlaced] = None  # noqa: UP045


@registry.upcaster("OrderPlaced", from_version=1)
def _add_lines(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "lines": data.get("items", [])}


codec = Codec(registry)
NAMES = st.sampled_from(["OrderPlaced", "Line", "Nope"]) | st.text(max_size=5)
VERSIONS = st.none() | st.integers(-2, 4) | st.text(max_size=2) | st.floats() | st.booleans()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(["o-1", "2024-01-01T00:00:00+00:00", "1.5", "0001-01-01T00:00:00+14:00"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["order_id", "total", "placed_at", "lines", "sku", "qty", "tree", "x"]),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)

texts = st.one_of(
    st.text(),
    st.binary(),
    lone_surrogates,
    json_values.map(lambda v: json.dumps(v)),
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(300, 6000).map(lambda n: '{"qty": ' + "9" * n + ', "sku": "a"}'),
    st.sampled_from(
        [
            '{"qty": 1e999, "sku": "a"}',
            '{"qty": NaN, "sku": "a"}',
            '{"sku": "\\ud800", "qty": 1}',
            '{"sku": "\\udc00\\ud800", "qty": 1}',
            ' {"sku": "a", "qty": 1} ',
            '{"sku": "a", "qty": 1} x',
            '{"order_id": "o", "total": "1e999999999", "placed_at": "2024-01-01T00:00:00+00:00"}',
            '{"order_id": "o", "total": "NaN", "placed_at": "0001-01-01T00:00:00+14:00"}',
        ]
    ),
)


def _decodes_or_refuses(fn: Any, *args: Any) -> None:
    with contextlib.suppress(MessageDecodeError, UnknownMessageType):
        fn(*args)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NAMES, VERSIONS, texts, st.none() | st.integers(1, 10**20))
def test_a_decoder_raises_only_decode_errors(
    name: str, version: Any, text: str | bytes, position: int | None
) -> None:
    """Codec.decoder(name, version)(text, position) gives a message or raises
    MessageDecodeError or UnknownMessageType, for any name, version and text."""
    _decodes_or_refuses(lambda: codec.decoder(name, version)(text, position))
    _decodes_or_refuses(lambda: codec.decode(name, text, version=version, position=position))


envelope_fields = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=4) | st.integers(),
        "type": NAMES | st.integers(),
        "schema_version": VERSIONS,
        "data": json_values,
        "correlation_id": st.text(max_size=4) | st.none() | st.integers(),
        "causation_id": st.text(max_size=4) | st.none() | st.booleans(),
        "user_id": st.text(max_size=4) | st.none() | st.floats(allow_nan=False),
        "headers": st.dictionaries(st.text(max_size=3), json_values, max_size=2) | json_values,
        "timestamp": st.sampled_from(
            ["2024-01-01T00:00:00+00:00", "2024-01-01T00:00:00", "0001-01-01T00:00:00+14:00", ""]
        )
        | json_values,
        "stream_id": st.text(max_size=3) | st.integers() | st.none(),
        "version": st.integers() | st.none() | st.text(max_size=2),
        "position": st.integers() | st.none() | st.booleans(),
    },
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts | envelope_fields.map(json.dumps))
def test_decode_envelope_raises_only_decode_errors(text: str | bytes) -> None:
    """Codec.decode_envelope gives an Envelope or raises MessageDecodeError or
    UnknownMessageType, whatever the text: random, deep, huge, or an envelope with any
    field missing or of the wrong type."""
    with contextlib.suppress(MessageDecodeError, UnknownMessageType):
        assert isinstance(codec.decode_envelope(text), Envelope)


def test_deep_nesting_is_a_decode_error_naming_the_type() -> None:
    """JSON nested past what Python can parse is a MessageDecodeError naming the type and
    the position, not a RecursionError."""
    with pytest.raises(MessageDecodeError, match=r"'Line' \(stored event at position 7\)"):
        codec.decoder("Line")("[" * 100_000 + "]" * 100_000, 7)
    with pytest.raises(MessageDecodeError, match="nested too deeply"):
        codec.decode_envelope('{"a":' * 100_000 + "1" + "}" * 100_000)


def test_a_lone_surrogate_is_refused_when_read() -> None:
    """A string that is not valid UTF-8, raw or escaped, is refused on reading: a message
    read could otherwise never be written again (to a dead letter, for instance)."""
    with pytest.raises(MessageDecodeError, match="surrogate"):
        codec.decode("Line", '{"sku": "a\\udc80", "qty": 1}')
    with pytest.raises(MessageDecodeError, match="invalid JSON"):
        codec.decode("Line", '{"sku": "a\udc80", "qty": 1}')
    assert Line("a\U0001f600", 1) == codec.decode("Line", '{"sku": "a\\ud83d\\ude00", "qty": 1}')


def test_loads_refuses_what_eventlite_never_writes() -> None:
    """loads, the one JSON reader, refuses NaN and Infinity, bytes that are not UTF-8, and
    anything but str or bytes, each as ValueError or TypeError."""
    for bad in ("NaN", "[Infinity]", b"\xff", '"\\ud800"'):
        with pytest.raises(ValueError):
            loads(bad)
    with pytest.raises(TypeError):
        loads(None)  # type: ignore[arg-type]
    assert {"a": [1, 2.5, None, "é"]} == loads(' {"a": [1, 2.5, null, "é"]} '.encode())
