"""The wire format: CloudEvents 1.0 JSON that stock SDKs read and write, decoded trusting
nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlite import Codec, Envelope, Metadata
from eventlite.bridges import (
    CloudEventCodec,
    CloudEventDecodeError,
    OutgoingMessage,
    UnknownCloudEventType,
)
from eventlite.exceptions import MessageDecodeError, UnknownMessageType
from eventlite.messages import Registry, event
from eventlite.store.events import LogRecord
from eventlite.testing import strategies as el_st
from tests import strategies as gen

registry = Registry()
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@event(registry=registry)
class OrderPlaced:
    order_id: str
    total: Decimal
    lines: tuple[str, ...] = ()


def _envelope(**changes: Any) -> Envelope:
    meta = Metadata(
        correlation_id="corr-1",
        causation_id="cause-1",
        user_id="u-7",
        headers={"traceparent": TRACEPARENT, "tracestate": "k=v", "tenant": "acme"},
    )
    env = Envelope(
        OrderPlaced(order_id="o-1", total=Decimal("9.99"), lines=("a", "b")),
        id="evt-1",
        metadata=meta,
        timestamp=datetime(2026, 12, 4, 10, 0, 0, 123456, tzinfo=timezone.utc),
        stream_id="order-1",
        version=3,
        position=42,
    )
    return env.replace(**changes) if changes else env


wire = CloudEventCodec(Codec(registry), source="/shop/orders")
binary = CloudEventCodec(Codec(registry), source="/shop/orders", binary=True)


# -- read by the cloudevents SDK ---------------------------------------------------------


def test_structured_output_is_read_by_the_cloudevents_sdk() -> None:
    """The SDK reads eventlite's structured JSON: every context attribute, the extensions
    and the data as the codec writes it."""
    body, headers = wire.encode(_envelope())
    assert {"content-type": "application/cloudevents+json"} == headers
    ce = JSONFormat().read(CloudEvent, body)
    attributes = ce.get_attributes()
    assert "1.0" == ce.get_specversion()
    assert _envelope().id == ce.get_id()
    assert "OrderPlaced" == ce.get_type()
    assert "/shop/orders" == ce.get_source()
    assert datetime(2026, 12, 4, 10, 0, 0, 123456, tzinfo=timezone.utc) == ce.get_time()
    assert {
        "correlationid": "corr-1",
        "causationid": "cause-1",
        "userid": "u-7",
        "streamid": "order-1",
        "streamversion": 3,
        "position": 42,
        "schemaversion": 1,
        "traceparent": TRACEPARENT,
        "tracestate": "k=v",
        "eventliteheaders": '{"tenant":"acme"}',
    } == {k: attributes[k] for k in attributes if k not in _CORE}
    assert {"order_id": "o-1", "total": "9.99", "lines": ["a", "b"]} == ce.get_data()


_CORE = {"specversion", "id", "source", "type", "time", "datacontenttype", "data"}


def test_binary_output_is_read_by_the_sdks_http_binding() -> None:
    """Binary mode with the ``ce-`` prefix is the HTTP binding: percent-encoded header
    values, the data alone in the body."""
    body, headers = binary.encode(
        _envelope().replace(metadata=Metadata("c", headers={"t": "a b%"}))
    )
    ce = ce_http.from_binary(ce_http.HTTPMessage(headers=headers, body=body), JSONFormat())
    assert "OrderPlaced" == ce.get_type()
    assert '{"t":"a b%"}' == ce.get_attributes()["eventliteheaders"]
    assert {"order_id": "o-1", "total": "9.99", "lines": ["a", "b"]} == ce.get_data()


def test_kafka_binary_output_is_read_by_the_sdks_kafka_binding() -> None:
    """Binary mode with the ``ce_`` prefix is the Kafka binding."""
    kafka = CloudEventCodec(Codec(registry), binary=True, header_prefix="ce_")
    body, headers = kafka.encode(_envelope())
    message = ce_kafka.KafkaMessage(
        headers={k: v.encode() for k, v in headers.items()}, key=None, value=body
    )
    ce = ce_kafka.from_binary(message, JSONFormat())
    assert (_envelope().id, "OrderPlaced", "order-1") == (
        ce.get_id(),
        ce.get_type(),
        ce.get_attributes()["streamid"],
    )


# -- written by the cloudevents SDK -------------------------------------------------------


def _sdk_event(**extra: Any) -> CloudEvent:
    return CloudEvent(
        attributes={
            "type": "OrderPlaced",
            "source": "/elsewhere",
            "id": "ext-1",
            "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
            "datacontenttype": "application/json",
            **extra,
        },
        data={"order_id": "o-9", "total": "1.50"},
    )


def test_a_structured_event_made_by_the_sdk_is_decoded() -> None:
    """A plain CloudEvent from another service decodes to a first message of a flow
    (correlation id = its id) with the registered class."""
    env = wire.decode(JSONFormat().write(_sdk_event()))
    assert OrderPlaced(order_id="o-9", total=Decimal("1.50")) == env.message
    assert ("ext-1", "ext-1", None) == (env.id, env.correlation_id, env.causation_id)
    assert datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc) == env.timestamp


def test_binary_events_made_by_the_sdk_are_decoded() -> None:
    """The SDK's HTTP and Kafka binary messages decode, extensions included."""
    event = _sdk_event(correlationid="c-5", traceparent=TRACEPARENT)
    http = ce_http.to_binary(event, JSONFormat())
    env = wire.decode(http.body, http.headers)
    assert ("c-5", {"traceparent": TRACEPARENT}) == (env.correlation_id, dict(env.metadata.headers))
    kafka = ce_kafka.to_binary(event, JSONFormat())
    headers = {k: v.decode() for k, v in kafka.headers.items()}
    assert (
        OrderPlaced(order_id="o-9", total=Decimal("1.50"))
        == wire.decode(kafka.value, headers).message
    )


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["ce-", "ce_", "cloudEvents_"])
@pytest.mark.parametrize("is_binary", [False, True])
def test_a_stored_event_round_trips(prefix: str, is_binary: bool) -> None:
    """Every envelope field survives, in both modes and with every binding prefix."""
    codec = CloudEventCodec(Codec(registry), binary=is_binary, header_prefix=prefix)
    env = _envelope()
    assert env == codec.decode(*codec.encode(env))
    assert dict(env.metadata.headers) == dict(codec.decode(*codec.encode(env)).metadata.headers)


def test_outgoing_carries_id_key_and_destination() -> None:
    """outgoing() makes the message a publisher sends: the event id (dedupe and inbox key),
    the stream id as the default key, a partitionkey only when the key differs."""
    m = wire.outgoing(_envelope(), "orders")
    assert isinstance(m, OutgoingMessage)
    assert ("orders", "order-1", _envelope().id) == (m.destination, m.key, m.id)
    assert "partitionkey" not in json.loads(m.body)
    keyed = wire.outgoing(_envelope(), "orders", key="customer-3")
    assert "customer-3" == json.loads(keyed.body)["partitionkey"]
    assert "customer-3" == wire.decode(keyed.body).key


@settings(max_examples=150, deadline=None)
@given(st.data(), st.booleans(), st.sampled_from(["ce-", "ce_", "cloudEvents_"]))
def test_generated_envelopes_round_trip(data: st.DataObject, is_binary: bool, prefix: str) -> None:
    """Any message the codec supports, in any envelope, comes back equal."""
    reg, message = data.draw(gen.messages())
    env = data.draw(el_st.envelopes(st.just(message)))
    codec = CloudEventCodec(Codec(reg), binary=is_binary, header_prefix=prefix)
    decoded = codec.decode(*codec.encode(env))
    assert env == decoded
    assert dict(env.metadata.headers) == dict(decoded.metadata.headers)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.just(timezone.utc),
    )
    | st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.replace(microsecond=0))
)
def test_a_stored_record_encodes_as_its_envelope_would(when: datetime) -> None:
    """encode_record (a stored row, sent without decoding it) writes the same attributes as
    encode of the row's envelope, whatever its time (whole seconds included)."""
    env = _envelope(timestamp=when)
    codec = Codec(registry)
    record = LogRecord(
        42, "order-1", 3, env.id, "OrderPlaced", 1, codec.encode(env.message), "corr-1",
        "cause-1", "u-7", json.dumps(dict(env.metadata.headers)),
        (when - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1),
    )  # fmt: skip
    fast = wire.encode_record(record, "order-1")
    assert fast is not None
    assert json.loads(wire.encode(env, "order-1")[0]) == json.loads(fast)


# -- trusting nothing ---------------------------------------------------------------------


def _structured(**changes: Any) -> bytes:
    doc = json.loads(wire.encode(_envelope())[0])
    for k, v in changes.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "invalid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "a JSON object"),
        (b'{"specversion": NaN}', "NaN is not a JSON number"),
        (_structured(specversion="0.3"), "'specversion' must be '1.0'"),
        (_structured(id=None), "'id' is missing"),
        (_structured(id=""), "'id' must not be empty"),
        (_structured(id=7), "'id' must be a string"),
        (_structured(source=None), "'source' is missing"),
        (_structured(data=None), "has no 'data'"),
        (_structured(data=[1]), "'data' must be a JSON object"),
        (_structured(data=None, data_base64="AAEC"), "data_base64"),
        (_structured(datacontenttype="text/plain"), "is not JSON"),
        (_structured(time="yesterday"), "not an RFC 3339"),
        (_structured(streamid=None), "without a 'streamid'"),
        (_structured(streamversion=None), "without a 'streamversion'"),
        (_structured(position=True), "'position' must be an integer"),
        (_structured(schemaversion="x"), "'schemaversion' must be an integer"),
        (_structured(schemaversion=5), "newer than the registered version"),
        (_structured(eventliteheaders='{"a": 1}'), "'eventliteheaders'"),
        (_structured(data={"order_id": "o", "total": 1.5}), "total"),
        (_structured(id="x" * 300), "over the limit"),
    ],
)
def test_malformed_messages_raise_a_named_error_keeping_the_payload(body: bytes, why: str) -> None:
    """Each malformed message raises CloudEventDecodeError (a MessageDecodeError) whose
    text says what is wrong, with the raw payload and headers kept for the DLQ."""
    with pytest.raises(CloudEventDecodeError) as info:
        wire.decode(body, {"x-h": "1"})
    assert isinstance(info.value, MessageDecodeError)
    assert why in str(info.value)
    assert (body, {"x-h": "1"}) == (info.value.payload, info.value.headers)


@pytest.mark.parametrize(
    "body",
    [
        _structured(id="o-\ud800"),
        _structured(source="/shop/\udc00"),
        _structured(data={"order_id": "o-\udbff", "total": 1}),
        _structured(data={"order_id": "o", "total": 1, "\ud800": 1}),
        _structured(correlationid="c-\udfff"),
        _structured(causationid="\ud800c"),
        _structured(userid="u\ud800"),
        _structured(partitionkey="k\ud800"),
        _structured(streamid="s\ud800", streamversion=1),
        _structured(eventliteheaders=json.dumps({"h": "v\ud800"})),
        _structured(tracestate="a=\ud800"),
        _structured(id="o-\ude00\ud83d"),  # the two halves, in the wrong order
    ],
)
def test_a_lone_surrogate_anywhere_is_refused_at_decode(body: bytes) -> None:
    """JSON can spell half of a UTF-16 pair (``\\ud800``), which is no character: no
    store can keep it and no other language reads it. A message holding one anywhere is
    refused by name at decode (dead-lettered at once) rather than failing later in the
    store, message by message, through every retry."""
    assert b"\\u" in body
    with pytest.raises(CloudEventDecodeError, match="surrogate") as info:
        wire.decode(body)
    assert body == info.value.payload


def test_a_whole_surrogate_pair_and_an_escaped_backslash_are_text() -> None:
    """A character outside the BMP spelled as a pair of escapes is that character, and
    the six characters ``\\ud800`` after an escaped backslash are just text."""
    env = wire.decode(_structured(id="o-\U0001f600", correlationid="\\ud800"))
    assert ("o-\U0001f600", "\\ud800") == (env.id, env.metadata.correlation_id)


def test_a_lone_surrogate_in_a_header_is_refused_at_decode() -> None:
    """A transport that hands over a header holding a lone surrogate gets the same named
    refusal, in binary mode and in structured mode."""
    body, headers = binary.encode(_envelope())
    with pytest.raises(CloudEventDecodeError, match="surrogate"):
        binary.decode(body, {**headers, "ce-id": "o-\ud800"})
    body, headers = wire.encode(_envelope())
    with pytest.raises(CloudEventDecodeError, match="surrogate"):
        wire.decode(body, {**headers, "x-trace\udc80": "1"})


_OFFSETS = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=_OFFSETS
    ),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
    st.sampled_from(["+00:00", "Z", "z"]),
    st.booleans(),
)
def test_every_rfc3339_spelling_of_a_time_reads_as_that_instant(
    when: datetime, spec: str, utc_as: str, lower_t: bool
) -> None:
    """Whatever offset, precision and spelling a sender picks for ``time``, the envelope
    holds that instant in UTC (the canonical form eventlite writes takes a faster way,
    which must agree with the careful one)."""
    text = when.isoformat(timespec=spec)
    if text.endswith("+00:00"):
        text = text[:-6] + utc_as
    if lower_t:
        text = text.replace("T", "t")
    kept = {"seconds": 0, "milliseconds": when.microsecond // 1000 * 1000}
    expected = when.replace(microsecond=kept.get(spec, when.microsecond))
    assert expected.astimezone(timezone.utc) == wire.decode(_structured(time=text)).timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-12-31T23:59:60.500000Z", datetime(2016, 12, 31, 23, 59, 59, 500000)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59)),
        ("0001-01-01T00:00:00.000000Z", datetime(1, 1, 1)),
    ],
)
def test_a_leap_second_and_the_first_year_are_read(text: str, expected: datetime) -> None:
    """A leap second reads as the second before it; the smallest time a datetime holds is
    read too."""
    assert expected.replace(tzinfo=timezone.utc) == wire.decode(_structured(time=text)).timestamp


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-30T00:00:00.000000Z",  # no such day
        "0000-01-01T00:00:00.000000Z",  # no year 0
        "9999-12-31T23:59:59.999999-01:00",  # past the last year a datetime holds
        "2026-12-05T12:07:06.\u0661\u0662\u0663\u0664\u0665\u0666Z",  # digits, not ASCII
        "\u0662\u0660\u0662\u0666-12-05T12:07:06Z",
        "2026-12-05T12:07:06.650740Z\n",  # a line break after it
    ],
)
def test_a_time_that_is_no_instant_is_refused_by_name(text: str) -> None:
    """A time no calendar holds raises CloudEventDecodeError, not anything else."""
    with pytest.raises(CloudEventDecodeError):
        wire.decode(_structured(time=text))


def test_an_unknown_type_is_refused_by_name_and_never_imported() -> None:
    """A type the registry does not know (even one naming an importable callable) raises
    UnknownCloudEventType, with the payload kept."""
    body = _structured(type="os.system")
    with pytest.raises(UnknownCloudEventType) as info:
        wire.decode(body)
    assert isinstance(info.value, UnknownMessageType)
    assert ("os.system", body) == (info.value.type_name, info.value.payload)


def test_size_and_header_limits() -> None:
    """Bodies over max_size, too many headers, oversized or non-string headers are refused
    before any parsing."""
    small = CloudEventCodec(Codec(registry), max_size=100, max_headers=2, max_header_size=10)
    with pytest.raises(CloudEventDecodeError, match="over the limit of 100"):
        small.decode(b"{" + b" " * 200 + b"}")
    with pytest.raises(CloudEventDecodeError, match="3 headers"):
        small.decode(b"{}", {"a": "1", "b": "2", "c": "3"})
    with pytest.raises(CloudEventDecodeError, match="size limit"):
        small.decode(b"{}", {"a": "x" * 11})
    with pytest.raises(CloudEventDecodeError, match="string"):
        small.decode(b"{}", {"a": b"bytes"})  # type: ignore[dict-item]


def test_an_invalid_traceparent_is_dropped_not_an_error() -> None:
    """As W3C trace context asks, a malformed traceparent is ignored (a new trace starts)."""
    env = wire.decode(_structured(traceparent="garbage", tracestate="k=v"))
    assert {"tenant": "acme"} == dict(env.metadata.headers)
    env = wire.decode(_structured(traceparent=TRACEPARENT + "\n", tracestate="k=v"))
    assert {"tenant": "acme"} == dict(env.metadata.headers)


_ATTRIBUTE_NAMES = st.sampled_from(
    ["specversion", "id", "source", "type", "data", "time", "streamid", "streamversion",
     "position", "schemaversion", "correlationid"]
)  # fmt: skip
_ATTRIBUTE_VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.just("1.0")
    | st.just("OrderPlaced")
    | st.dictionaries(st.text(max_size=3), st.text(max_size=3))
)
_JSON_OBJECTS = st.dictionaries(_ATTRIBUTE_NAMES, _ATTRIBUTE_VALUES).map(
    lambda d: json.dumps(d).encode()
)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200) | _JSON_OBJECTS,
    st.dictionaries(st.text(max_size=15), st.text(max_size=15), max_size=4),
)
def test_any_input_decodes_or_raises_one_of_the_named_errors(
    body: bytes, headers: dict[str, str]
) -> None:
    """Whatever arrives, decode returns an envelope or raises CloudEventDecodeError or
    UnknownCloudEventType — never anything else."""
    try:
        wire.decode(body, headers)
    except (CloudEventDecodeError, UnknownCloudEventType) as exc:
        assert body == exc.payload
