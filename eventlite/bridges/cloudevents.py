"""The wire format of every bridge: CloudEvents 1.0, JSON.

An :class:`~eventlite.Envelope` becomes one CloudEvent:

==================  ====================================================================
CloudEvents         from the envelope
==================  ====================================================================
``specversion``     ``"1.0"``
``id``              the message id (the receiver's inbox key; the broker's dedupe id)
``source``          the codec's ``source`` (a URI reference naming the sending service)
``type``            the registered type name (the receiver looks it up in *its* registry)
``time``            the timestamp, RFC 3339 in UTC
``datacontenttype`` ``application/json``
``data``            the message's fields, as the :class:`~eventlite.Codec` writes them
``schemaversion``   the type's schema version (the receiver upcasts older ones)
``correlationid``   ``metadata.correlation_id``
``causationid``     ``metadata.causation_id`` (absent for a first message)
``userid``          ``metadata.user_id`` (when set)
``streamid``,       a stored event's stream, version in the stream and global position
``streamversion``,
``position``
``partitionkey``    the ordering key, when it is not the stream id (Partitioning extension)
``traceparent``,    W3C trace context, from ``metadata.headers`` (Distributed Tracing
``tracestate``      extension)
``eventliteheaders`` the other ``metadata.headers``, as a JSON object in a string
==================  ====================================================================

*Structured mode* (the default) sends the whole event as one JSON object in the body
(content type ``application/cloudevents+json``). *Binary mode* sends ``data`` as the body
and each attribute as a header named with the broker binding's prefix: ``ce-`` (HTTP,
NATS, Redis, SQS; values percent-encoded as the HTTP binding says), ``ce_`` (Kafka),
``cloudEvents_`` (AMQP). Decoding recognises both modes and every prefix.

Decoding trusts nothing. The body and the headers are bounded in size and count, every
attribute is checked for its type, the type name is looked up in the application's
registry only (no class named by a message is ever imported), and anything wrong raises
:class:`CloudEventDecodeError` or :class:`UnknownCloudEventType` — subclasses of
:class:`~eventlite.MessageDecodeError` and :class:`~eventlite.UnknownMessageType` — which
keep the raw ``payload`` and ``headers`` for the dead-letter queue. A ``traceparent`` that
is not valid W3C trace context is dropped, as the W3C spec asks, not an error.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, unquote

import attrs

from ..codec import Codec, _lone_surrogate, loads
from ..envelope import Envelope, received
from ..exceptions import MessageDecodeError, MessageEncodeError, UnknownMessageType
from ..store.events import LogRecord
from .base import Delivery, OutgoingMessage

__all__ = [
    "CONTENT_TYPE",
    "CloudEventCodec",
    "CloudEventDecodeError",
    "UnknownCloudEventType",
]

CONTENT_TYPE = "application/cloudevents+json"
"""The content type of a structured-mode CloudEvent in JSON."""

_DATA_CONTENT_TYPE = "application/json"
_PREFIXES = ("ce-", "ce_", "cloudevents_", "cloudevents:")
_CONTENT_TYPE_HEADER = "content-type"
_SPEC_KEYS = tuple((p, p + "specversion") for p in _PREFIXES)
# ASCII digits only and \Z, not $ (which also matches before a final newline)
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z")
_CANONICAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z")
_MICROSECOND = timedelta(microseconds=1)
_from_iso = datetime.fromisoformat
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))\Z"
)
# ``%`` is escaped so percent-decoding gives back exactly what was sent
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '%"')
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_EMPTY: Mapping[str, str] = {}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class CloudEventDecodeError(MessageDecodeError):
    """A received message is not a CloudEvent eventlite can read: bad JSON, a missing or
    mistyped attribute, a body or header over the limits, data that does not fit the
    registered class.

    ``payload`` and ``headers`` are the message exactly as received, for the dead-letter
    queue; ``type_name`` is the CloudEvents type when it could be read, else
    ``"<cloudevent>"``.
    """

    def __init__(
        self,
        type_name: str,
        cause: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(type_name, cause)
        self.payload = payload
        self.headers = dict(headers or _EMPTY)


class UnknownCloudEventType(UnknownMessageType):
    """A received CloudEvent whose ``type`` is not in the application's registry.

    ``payload`` and ``headers`` are the message exactly as received.
    """

    def __init__(
        self, type_name: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(type_name)
        self.payload = payload
        self.headers = dict(headers or _EMPTY)


def _format_time(ts: datetime) -> str:
    text = ts.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@functools.lru_cache(maxsize=64)
def _second_text(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) of an epoch second."""
    return (_EPOCH + timedelta(seconds=second)).isoformat()[:19]


def _time_text(us: int) -> str:
    """:func:`_format_time` of an epoch time in microseconds (a stored event's), with the
    second's text cached: a page of the log is mostly one second."""
    second, fraction = divmod(us, 1_000_000)
    if fraction:
        return f"{_second_text(second)}.{fraction:06d}Z"
    return _second_text(second) + "Z"


def _put_headers(out: dict[str, Any], headers: Mapping[str, Any]) -> None:
    """Metadata headers as attributes: W3C trace context as its own extensions, the rest
    as one JSON object in ``eventliteheaders``."""
    rest = dict(headers)
    for name in ("traceparent", "tracestate"):
        value = rest.pop(name, None)
        if value is not None:
            out[name] = value
    if rest:
        out["eventliteheaders"] = _dumps(rest)


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"'time' must be an RFC 3339 string, got {type(value).__name__}")
    m = _RFC3339.match(value)
    if m is None:
        raise ValueError(f"'time' {value!r} is not an RFC 3339 timestamp")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = (m.group(7) or "")[:6].ljust(6, "0")
    if m.group(8):
        tz = timezone.utc
    else:
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        tz = timezone(-offset if m.group(9) == "-" else offset)
    second = min(second, 59)  # a leap second reads as the second before it
    return datetime(year, month, day, hour, minute, second, int(fraction), tz).astimezone(
        timezone.utc
    )


@functools.lru_cache(maxsize=256)
def _second_us(prefix: str) -> int | None:
    """Epoch microseconds of ``YYYY-MM-DDTHH:MM:SS`` read as UTC; None when that is no real
    time (a leap second, a day the month lacks, year 0)."""
    try:
        when = _from_iso(prefix)
    except ValueError:
        return None
    return (when.replace(tzinfo=timezone.utc) - _EPOCH) // _MICROSECOND


def _time_us(value: Any) -> int:
    """Epoch microseconds of a CloudEvent's ``time`` (RFC 3339; see :func:`_parse_time`)."""
    if type(value) is str and _CANONICAL_TIME.match(value) is not None:
        # the form every eventlite sender writes, and nearly always the same second as
        # the message before it: the second is read once and cached
        base = _second_us(value[:19])
        if base is not None:
            return base + int(value[20:26])
    return (_parse_time(value) - _EPOCH) // _MICROSECOND


def _int_attr(attrs_: Mapping[str, Any], name: str) -> int | None:
    value = attrs_.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name!r} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.lstrip("-").isdigit():
        if len(value) > 20:
            raise ValueError(f"{name!r} is too long an integer")
        return int(value)
    raise ValueError(f"{name!r} must be an integer, got {value!r}")


def _str_attr(attrs_: Mapping[str, Any], name: str, *, required: bool, limit: int) -> str | None:
    value = attrs_.get(name)
    if value is None:
        if required:
            raise ValueError(f"required attribute {name!r} is missing")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name!r} must be a string, got {type(value).__name__}")
    if required and not value:
        raise ValueError(f"{name!r} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{name!r} is {len(value)} characters long, over the limit of {limit}")
    return value


def _strict_loads(body: bytes) -> Any:
    """The JSON value of a received body or attribute: the codec's strict reader, which
    refuses NaN, text nested too deeply and a lone surrogate (``\\ud800``) anywhere."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8: {exc}") from None
    try:
        return loads(text)
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None


def _no_lone_surrogate(value: str, where: str) -> None:
    """Raise ValueError naming ``where`` when ``value`` holds a lone UTF-16 surrogate,
    which no store keeps and no other language reads."""
    if _lone_surrogate(value) is not None:
        raise ValueError(f"{where} holds a lone surrogate, half of a UTF-16 pair")


@attrs.frozen
class CloudEventCodec:
    """Envelopes to CloudEvents 1.0 JSON and back, through the application's registry.

    ::

        wire = CloudEventCodec(Codec(registry), source="/shop/orders")
        body, headers = wire.encode(envelope)             # structured mode
        envelope = wire.decode(body, headers)             # either mode
    """

    codec: Codec = attrs.field(factory=Codec)
    """The codec (and so the registry) that writes and reads the ``data``."""
    source: str = "/eventlite"
    """The CloudEvents ``source`` of what this application sends: a URI reference."""
    binary: bool = False
    """Binary mode (attributes in headers) instead of structured mode (one JSON body)."""
    header_prefix: str = attrs.field(default="ce-")
    """The binary-mode header prefix of the broker's binding (``ce-``, ``ce_``,
    ``cloudEvents_``); see :attr:`~eventlite.bridges.Features.header_prefix`."""
    max_size: int = attrs.field(default=1024 * 1024, validator=attrs.validators.gt(0))
    """The largest body :meth:`decode` reads, in bytes."""
    max_headers: int = attrs.field(default=64, validator=attrs.validators.ge(0))
    """The most headers :meth:`decode` accepts on one message."""
    max_header_size: int = attrs.field(default=8192, validator=attrs.validators.gt(0))
    """The longest header name or value :meth:`decode` accepts, in characters."""

    @header_prefix.validator
    def _check_prefix(self, _: Any, value: str) -> None:
        if value.lower() not in _PREFIXES:
            raise ValueError(f"header_prefix must be one of {_PREFIXES}, got {value!r}")

    # -- encoding ----------------------------------------------------------------------------

    def attributes(self, envelope: Envelope, key: str | None = None) -> dict[str, Any]:
        """The CloudEvents context attributes of ``envelope`` (everything but ``data``)."""
        entry = self.codec.message_type(envelope.message)
        meta = envelope.metadata
        out: dict[str, Any] = {
            "specversion": "1.0",
            "id": envelope.id,
            "source": self.source,
            "type": entry.name,
            "time": _format_time(envelope.timestamp),
            "datacontenttype": _DATA_CONTENT_TYPE,
            "schemaversion": entry.version,
            "correlationid": meta.correlation_id,
        }
        if meta.causation_id is not None:
            out["causationid"] = meta.causation_id
        if meta.user_id is not None:
            out["userid"] = meta.user_id
        stream_id = envelope.stream_id
        if stream_id is not None:
            out["streamid"] = stream_id
            out["streamversion"] = envelope.version
            if envelope.position is not None:
                out["position"] = envelope.position
        if key is not None and key != stream_id:
            out["partitionkey"] = key
        if meta.headers:
            _put_headers(out, meta.headers)
        return out

    def encode(self, envelope: Envelope, key: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers of ``envelope`` as a CloudEvent; raises
        :class:`~eventlite.MessageEncodeError` or :class:`~eventlite.NotAMessage`."""
        attributes = self.attributes(envelope, key)
        data = self.codec.to_dict(envelope.message)
        if not self.binary:
            attributes["data"] = data
            try:
                return _dumps(attributes).encode(), {_CONTENT_TYPE_HEADER: CONTENT_TYPE}
            except (TypeError, ValueError) as exc:
                raise MessageEncodeError(attributes["type"], str(exc)) from exc
        try:
            body = _dumps(data).encode()
        except (TypeError, ValueError) as exc:
            raise MessageEncodeError(attributes["type"], str(exc)) from exc
        prefix = self.header_prefix
        percent = prefix == "ce-"
        headers = {_CONTENT_TYPE_HEADER: attributes.pop("datacontenttype")}
        for name, value in attributes.items():
            text = str(value)
            headers[prefix + name] = quote(text, safe=_HEADER_SAFE) if percent else text
        return body, headers

    def encode_record(self, record: LogRecord, key: str | None = None) -> bytes | None:
        """The structured-mode body of a stored event, straight from its row: the stored
        ``data`` JSON is put in as it is, checked but not decoded and encoded again, so a
        relay sends the log without building its messages. The same bytes as
        :meth:`encode` of the record's envelope would give, but for the order of nothing
        and the spelling of the data's JSON.

        Returns None when the record must take the long way (binary mode, a type the
        registry lacks, data stored at another schema version than the registry's, a
        column of an unexpected type, data that is not a JSON object): decode it and call
        :meth:`encode`.
        """
        if self.binary:
            return None
        pos, sid, ver, eid, typ, sv, data, corr, caus, user, hdrs, ts = record
        if not (
            type(typ) is str
            and type(sv) is int
            and type(data) is str
            and type(sid) is str
            and type(eid) is str
            and type(corr) is str
            and type(ver) is int
            and type(ts) is int
            and (caus is None or type(caus) is str)
            and (user is None or type(user) is str)
            and (hdrs is None or type(hdrs) is str)
        ):
            return None
        try:
            entry = self.codec.registry.by_name(typ)
        except UnknownMessageType:
            return None
        if entry.version != sv:
            return None
        try:
            if type(json.loads(data)) is not dict:
                return None
            headers = None if hdrs is None else json.loads(hdrs)
            when = _time_text(ts)
        except (ValueError, OverflowError):
            return None
        if headers is not None and not isinstance(headers, dict):
            return None
        out: dict[str, Any] = {
            "specversion": "1.0",
            "id": eid,
            "source": self.source,
            "type": entry.name,
            "time": when,
            "datacontenttype": _DATA_CONTENT_TYPE,
            "schemaversion": sv,
            "correlationid": corr,
        }
        if caus is not None:
            out["causationid"] = caus
        if user is not None:
            out["userid"] = user
        out["streamid"] = sid
        out["streamversion"] = ver
        out["position"] = pos
        if key is not None and key != sid:
            out["partitionkey"] = key
        if headers:
            _put_headers(out, headers)
        try:
            head = _dumps(out)
        except (TypeError, ValueError):
            return None
        return (head[:-1] + ',"data":' + data + "}").encode()

    def outgoing(
        self, envelope: Envelope, destination: str, *, key: str | None = None
    ) -> OutgoingMessage:
        """An :class:`~eventlite.bridges.OutgoingMessage` carrying ``envelope`` to
        ``destination``, ordered by ``key`` (default: the envelope's own key, e.g. its
        stream id)."""
        if key is None and envelope.key is not None:
            key = str(envelope.key)
        body, headers = self.encode(envelope, key)
        return OutgoingMessage(
            destination=destination, body=body, key=key, headers=headers, id=envelope.id
        )

    # -- decoding ----------------------------------------------------------------------------

    def decode(self, body: bytes, headers: Mapping[str, str] | None = None) -> Envelope:
        """The envelope of a received CloudEvent, in either mode.

        Raises :class:`UnknownCloudEventType` when its type is not registered and
        :class:`CloudEventDecodeError` for anything else wrong; both keep the raw message.
        """
        headers = headers if headers is not None else _EMPTY
        type_name = "<cloudevent>"
        try:
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise ValueError(f"the body must be bytes, got {type(body).__name__}")
            body = bytes(body)
            if len(body) > self.max_size:
                raise ValueError(
                    f"the body is {len(body)} bytes, over the limit of {self.max_size}"
                )
            lowered = self._check_headers(headers)
            binary_prefix = None
            if len(lowered) > 1 or _CONTENT_TYPE_HEADER not in lowered:
                binary_prefix = next((p for p, k in _SPEC_KEYS if k in lowered), None)
            if binary_prefix is not None:
                attributes = self._binary_attributes(lowered, binary_prefix)
                data_text: Any = body
            else:
                attributes = _strict_loads(body)
                if not isinstance(attributes, dict):
                    raise ValueError(
                        f"a structured CloudEvent is a JSON object, got {type(attributes).__name__}"
                    )
                data_text = None
            v = attributes.get("type")
            type_name = (
                v
                if type(v) is str and 0 < len(v) <= 256
                else _str_attr(attributes, "type", required=True, limit=256) or type_name
            )
            return self._envelope(type_name, attributes, data_text)
        except UnknownMessageType as exc:
            raise UnknownCloudEventType(exc.type_name, body, headers) from None
        except MessageDecodeError as exc:
            raise CloudEventDecodeError(type_name, exc.cause, body, headers) from exc
        except (ValueError, TypeError, RecursionError, OverflowError) as exc:
            # RecursionError: JSON nested deeper than the parser goes; OverflowError: a
            # time whose offset moves it out of the years a datetime holds
            raise CloudEventDecodeError(
                type_name, str(exc) or type(exc).__name__, body, headers
            ) from None

    def decode_delivery(self, delivery: Delivery) -> Envelope:
        """:meth:`decode` of a :class:`~eventlite.bridges.Delivery`'s body and headers."""
        return self.decode(delivery.body, delivery.headers)

    def _check_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        if type(headers) is not dict and not isinstance(headers, Mapping):
            raise TypeError(f"headers must be a mapping, got {type(headers).__name__}")
        if len(headers) > self.max_headers:
            raise ValueError(f"{len(headers)} headers, over the limit of {self.max_headers}")
        limit = self.max_header_size
        lowered: dict[str, str] = {}
        for name, value in headers.items():
            if not (type(name) is str and type(value) is str) and not (
                isinstance(name, str) and isinstance(value, str)
            ):
                raise TypeError(f"header {name!r} must be a string with a string value")
            if len(name) > limit or len(value) > limit:
                raise ValueError(f"header {name[:64]!r} is over the size limit of {limit}")
            if not (name.isascii() and value.isascii()):
                _no_lone_surrogate(name, f"header name {name[:64]!r}")
                _no_lone_surrogate(value, f"header {name[:64]!r}")
            lowered[name.lower()] = value
        return lowered

    def _binary_attributes(self, headers: dict[str, str], prefix: str) -> dict[str, Any]:
        percent = prefix == "ce-"
        attributes: dict[str, Any] = {}
        for name, value in headers.items():
            if name.startswith(prefix):
                attributes[name[len(prefix) :]] = unquote(value) if percent else value
        content_type = headers.get(_CONTENT_TYPE_HEADER)
        if content_type is not None:
            attributes["datacontenttype"] = content_type
        return attributes

    def _envelope(self, type_name: str, attributes: Mapping[str, Any], body: Any) -> Envelope:
        # Each attribute is checked inline where it is a plain value within its limit (the
        # common case, and the cost of every message a bridge receives); anything else
        # takes _str_attr/_int_attr, which accept it or say what is wrong with it.
        get = attributes.get
        specversion = get("specversion")
        if specversion != "1.0":
            raise ValueError(f"'specversion' must be '1.0', got {specversion!r}")
        v = get("id")
        event_id = (
            v
            if type(v) is str and 0 < len(v) <= 256
            else _str_attr(attributes, "id", required=True, limit=256)
        )
        v = get("source")
        if not (type(v) is str and 0 < len(v) <= 4096):
            _str_attr(attributes, "source", required=True, limit=4096)
        v = get("datacontenttype")
        if v != _DATA_CONTENT_TYPE:
            content_type = _str_attr(attributes, "datacontenttype", required=False, limit=256)
            if content_type is not None:
                media = content_type.split(";", 1)[0].strip().lower()
                if media != _DATA_CONTENT_TYPE and not media.endswith("+json"):
                    raise ValueError(f"'datacontenttype' {content_type!r} is not JSON")
        if body is None:
            if "data_base64" in attributes:
                raise ValueError("binary data ('data_base64') is not an eventlite message")
            if "data" not in attributes:
                raise ValueError("the event has no 'data'")
            data = attributes["data"]
        else:
            data = _strict_loads(body)
        if not isinstance(data, dict):
            raise ValueError(f"'data' must be a JSON object, got {type(data).__name__}")
        v = get("schemaversion")
        schema_version = (
            v if v is None or type(v) is int else _int_attr(attributes, "schemaversion")
        )
        v = get("streamid")
        stream_id = (
            v
            if v is None or (type(v) is str and len(v) <= 1024)
            else _str_attr(attributes, "streamid", required=False, limit=1024)
        )
        v = get("streamversion")
        stream_version = (
            v if v is None or type(v) is int else _int_attr(attributes, "streamversion")
        )
        v = get("position")
        position = v if v is None or type(v) is int else _int_attr(attributes, "position")
        if stream_id is None and (stream_version is not None or position is not None):
            raise ValueError("'streamversion' or 'position' without a 'streamid'")
        if stream_id is not None and stream_version is None:
            raise ValueError("'streamid' without a 'streamversion'")
        headers: dict[str, str] = {}
        if "eventliteheaders" in attributes:
            extra = _str_attr(attributes, "eventliteheaders", required=False, limit=65536)
            if extra is not None:
                parsed = _strict_loads(extra.encode())
                if not isinstance(parsed, dict) or not all(
                    isinstance(v, str) for v in parsed.values()
                ):
                    raise ValueError("'eventliteheaders' must be a JSON object of strings")
                headers.update(parsed)
        if "traceparent" in attributes:
            traceparent = _str_attr(attributes, "traceparent", required=False, limit=256)
            if traceparent is not None and _TRACEPARENT.match(traceparent) is not None:
                headers["traceparent"] = traceparent
                tracestate = _str_attr(attributes, "tracestate", required=False, limit=512)
                if tracestate is not None:
                    headers["tracestate"] = tracestate
        time_value = get("time")
        timestamp = _time_us(time_value) if time_value is not None else None
        message = self.codec.from_dict(type_name, data, version=schema_version)
        assert event_id is not None
        v = get("correlationid")
        correlation = (
            v
            if v is None or (type(v) is str and len(v) <= 256)
            else _str_attr(attributes, "correlationid", required=False, limit=256)
        )
        causation = user = key = None
        if "causationid" in attributes:
            causation = _str_attr(attributes, "causationid", required=False, limit=256)
        if "userid" in attributes:
            user = _str_attr(attributes, "userid", required=False, limit=256)
        if "partitionkey" in attributes:
            key = _str_attr(attributes, "partitionkey", required=False, limit=1024)
        return received(
            message,
            event_id,
            timestamp,
            correlation or event_id,
            causation,
            user,
            headers,
            stream_id,
            stream_version,
            position,
            key,
        )
