"""Messages to JSON text and back, through the application's registry only.

A :class:`Codec` wraps a ``cattrs`` converter configured for the types messages use:
timezone-aware ``datetime`` (ISO 8601, written in UTC), ``date``, ``UUID``, ``Decimal``
(written as a string, so no digit is lost), ``Enum`` (by value), ``tuple``, ``frozenset``,
``set``, ``list``, ``dict``, ``Optional`` and nested attrs classes.

Encoding checks every value against its declared type first (see :mod:`eventlite._checks`
for the rules: ints are ints, floats finite, Decimals finite and never floats, ``None``
only where Optional, strings valid UTF-8, datetimes aware, nesting at most
:data:`MAX_DEPTH` levels) and raises :class:`MessageEncodeError` naming the field path and
the value, so what the codec writes it can always read back as an equal value of the same
type. Building a message does not check its values: the check is made where a message
leaves the process or reaches the store.

Decoding finds the class by its registered name and nowhere else. Data written at an older
schema version passes through the registry's upcasters (v1 → v2 → …) as a raw dict before
it is structured; the stored text itself is never rewritten. Whatever the text, decoding
raises only :class:`MessageDecodeError` or :class:`UnknownMessageType`.

:func:`dumps` and :func:`loads` are the one compact JSON writer and reader eventlite uses
everywhere.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from json.scanner import make_scanner
from typing import Any, Final, Protocol
from uuid import UUID

import cattrs
from cattrs.preconf.json import make_converter

from ._checks import MAX_DEPTH as _MAX_DEPTH
from ._checks import Checks, Invalid, describe
from .envelope import Envelope, Metadata
from .exceptions import MessageDecodeError, MessageEncodeError
from .messages import MessageType, Registry, default_registry

__all__ = ["MAX_DEPTH", "Codec", "Decoder", "dumps", "loads", "make_message_converter"]

MAX_DEPTH: Final = _MAX_DEPTH
"""How deeply lists, dicts, tuples, sets and attrs instances may nest inside a message the
codec writes (64)."""


class Decoder(Protocol):
    """A decoding function for one type and schema version; see :meth:`Codec.decoder`."""

    def __call__(self, text: str | bytes, position: int | None = None, /) -> Any: ...


def _unstructure_datetime(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} (attach a timezone, e.g. UTC)")
    return value.astimezone(timezone.utc).isoformat()


def _structure_datetime(value: Any, _: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 string, got {type(value).__name__}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"datetime {value!r} has no timezone")
    return parsed.astimezone(timezone.utc)


def _structure_date(value: Any, _: Any) -> date:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 date string, got {type(value).__name__}")
    return date.fromisoformat(value)


def _unstructure_decimal(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value!r} is not a finite number, which JSON cannot carry")
    return str(value)


def _structure_decimal(value: Any, _: Any) -> Decimal:
    if not isinstance(value, (str, int)):
        # floats are refused: they would bring binary rounding into an exact type
        raise ValueError(f"expected a decimal string, got {type(value).__name__}")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None


def _structure_uuid(value: Any, _: Any) -> UUID:
    if not isinstance(value, str):
        raise ValueError(f"expected a UUID string, got {type(value).__name__}")
    return UUID(value)


def make_message_converter(*, detailed_validation: bool = False) -> cattrs.Converter:
    """A fresh ``cattrs`` converter with eventlite's hooks, for applications that want to
    add their own hooks before handing it to :class:`Codec`.

    Without ``detailed_validation`` (the default) structuring is about three times faster;
    the codec explains a failure by structuring the same data again with a detailed copy.
    """
    conv = make_converter(detailed_validation=detailed_validation)
    conv.register_unstructure_hook(datetime, _unstructure_datetime)
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_unstructure_hook(date, date.isoformat)
    conv.register_structure_hook(date, _structure_date)
    conv.register_unstructure_hook(Decimal, _unstructure_decimal)
    conv.register_structure_hook(Decimal, _structure_decimal)
    conv.register_unstructure_hook(UUID, str)
    conv.register_structure_hook(UUID, _structure_uuid)
    return conv


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__qualname__} is not JSON serializable")


if c_make_encoder is not None:
    # json.JSONEncoder.encode builds this C encoder anew on every call; made once, it
    # writes a small message in half the time. No circular-reference markers: what is
    # written is checked first, and anything else deep or circular ends in RecursionError.
    _chunks = c_make_encoder(
        None, _not_json, encode_basestring, None, ":", ",", False, False, False
    )

    def _encode(value: Any) -> str:
        return "".join(_chunks(value, 0))

else:  # pragma: no cover - Pythons without the C accelerator
    _encode = json.JSONEncoder(  # type: ignore[assignment]
        ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (eventlite never writes it)")


_scan = make_scanner(json.JSONDecoder(parse_constant=_no_constant))  # type: ignore[arg-type]  # typeshed names the class, not its argument


def dumps(value: Any) -> str:
    """Compact JSON text (no spaces, non-ASCII characters kept): the one JSON writer of
    eventlite, for message data, headers and stored state alike.

    Raises ``ValueError`` for NaN or Infinity (JSON has neither) and for a string that is
    not valid UTF-8 (a lone surrogate, which no file or broker could store), ``TypeError``
    for a value JSON cannot hold.
    """
    try:
        text = _encode(value)
    except RecursionError:
        raise ValueError("value nested too deeply (or circular) to write as JSON") from None
    if not text.isascii():
        text.encode("utf-8")  # raises UnicodeEncodeError, a ValueError
    return text


def loads(text: str | bytes) -> Any:
    """The value of JSON text: the one JSON reader of eventlite, three times faster than
    ``json.loads`` on the text eventlite writes.

    Bytes must be UTF-8. Raises ``ValueError`` for anything that is not JSON (``NaN`` and
    ``Infinity`` included), for text nested too deeply to read, and for a string that is
    not valid UTF-8 (a lone surrogate, raw or escaped as ``\\ud800``), so nothing read can
    fail to be written again; ``TypeError`` for an argument that is neither ``str`` nor
    ``bytes``.
    """
    if type(text) is not str:
        if not isinstance(text, (bytes, bytearray)):
            raise TypeError(f"JSON text must be str or bytes, not {type(text).__name__}")
        text = bytes(text).decode("utf-8")  # UnicodeDecodeError is a ValueError
    if not text.isascii():
        text.encode("utf-8")
    try:
        obj, end = _scan(text, 0)
        if end != len(text):
            # surrounding whitespace, or its error for trailing data
            obj = json.loads(text, parse_constant=_no_constant)
    except StopIteration:
        obj = json.loads(text, parse_constant=_no_constant)  # its error, or leading space
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    # eventlite writes \\u only for control characters, so this is rarely true
    if "\\u" in text:
        where = _lone_surrogate(obj)
        if where is not None:
            raise ValueError(f"JSON string at {where or 'the top'} holds a lone surrogate")
    return obj


# The names other modules of eventlite imported before dumps and loads were public.
_dumps = _encode
_loads = loads


def _lone_surrogate(value: Any) -> str | None:
    """The path (``data.lines[2]``) of a string in a JSON value that is not valid UTF-8
    (``""`` for the value itself), or None when every string is."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # not recursive: what json read may be nested deeper than Python recurses
        path, item = stack.pop()
        if type(item) is str:
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return path
        elif type(item) is dict:
            for k, v in item.items():
                step = f".{k}" if k.isidentifier() else f"[{k!r}]"
                stack.append((f"{path}{step}".lstrip("."), v))
                stack.append((f"{path}{step} (a key)".lstrip("."), k))
        elif type(item) is list:
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
    return None


def _describe(exc: BaseException) -> str:
    try:
        if isinstance(exc, cattrs.BaseValidationError):
            return "; ".join(cattrs.transform_error(exc))
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__


def _explain(converter: cattrs.Converter, data: Any, cls: type[Any], exc: Exception) -> str:
    """Why ``data`` does not structure as ``cls``, in the words of a detailed converter."""
    try:
        converter.copy(detailed_validation=True).structure(data, cls)
    except Exception as detailed:
        return _describe(detailed)
    return _describe(exc)


def _forget_interrupted_generation() -> bool:
    """Drop the mark a hook generation of ``cattrs`` left behind when an interrupt (Ctrl-C,
    a signal handler's exception) stopped it; True if there was one.

    ``cattrs`` generates a class's hooks on first use and marks the class meanwhile, in a
    thread-local set, to detect recursive class graphs; an interrupt in the middle leaves
    the mark, and every later use of the class then fails with ``RecursionError``. Called
    only at the codec's own top level, where no generation can be in progress, so a mark
    found there is stale.
    """
    consts = sys.modules.get("cattrs.gen._consts")
    local = getattr(consts, "already_generating", None)
    if local is None or not getattr(local, "working_set", None):
        return False
    del local.working_set
    return True


class Codec:
    """Turns registered messages into JSON text and back.

    ``encode`` checks every value against its declared type and raises
    :class:`MessageEncodeError` naming the field path and the value; ``decode`` raises
    :class:`UnknownMessageType` for a name the registry does not know and
    :class:`MessageDecodeError` for anything else wrong with the data, each naming the type
    and, for a stored event, its position.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        converter: cattrs.Converter | None = None,
    ) -> None:
        self.registry = registry if registry is not None else default_registry
        """The registry that names every type this codec reads and writes."""
        self.converter = converter if converter is not None else make_message_converter()
        """The ``cattrs`` converter; register hooks on it for custom field types."""
        self._decoders: dict[tuple[str, int | None], tuple[tuple[object, object], Decoder]] = {}
        self._checks = Checks(self.converter)
        self._fast: dict[type[Any], Callable[[Any, int], bool]] = {}

    def message_type(self, message: Any) -> MessageType:
        """The registry entry of a message's class; raises ``NotAMessage``."""
        return self.registry.by_class(type(message))

    def check(self, message: Any) -> None:
        """Raise :class:`MessageEncodeError` (naming the field path and the value) unless
        every value of ``message`` matches its declared type, so that it reads back as an
        equal message with values of the same types; ``NotAMessage`` for an unregistered
        class. :meth:`encode` makes this check itself."""
        name = self.message_type(message).name
        try:
            self._checks.check(message)
        except Invalid as exc:
            raise MessageEncodeError(name, exc.describe(), exc.where() or None) from None

    def to_dict(self, message: Any) -> dict[str, Any]:
        """The JSON-ready dict of a message, after :meth:`check`."""
        # an unregistered class is refused before anything else, as NotAMessage
        self.check(message)
        try:
            data: dict[str, Any] = self.converter.unstructure(message)
        except Exception as exc:
            if isinstance(exc, RecursionError) and _forget_interrupted_generation():
                return self.to_dict(message)
            raise MessageEncodeError(self.message_type(message).name, _describe(exc)) from exc
        return data

    def encode(self, message: Any) -> str:
        """The JSON text of a message (its fields only; the type travels beside it).

        Raises :class:`MessageEncodeError` for a value that does not match its declared
        type (see :meth:`check`), ``NotAMessage`` for an unregistered class.
        """
        entry = self.message_type(message)
        # The fast check tests types; what it leaves out (NaN, huge ints, naive datetimes,
        # strings that are not UTF-8) makes the writing fail, and then the full check says
        # where and why.
        fast = self._fast.get(type(message))
        if fast is None:
            fast = self._fast[type(message)] = self._checks.compile(type(message)).fast
        if not fast(message, 1):
            self.check(message)
        try:
            text: str = _encode(self.converter.unstructure(message))
        except Exception as exc:
            if isinstance(exc, RecursionError) and _forget_interrupted_generation():
                return self.encode(message)
            self.check(message)
            raise MessageEncodeError(entry.name, _describe(exc)) from exc
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                self.check(message)
                # the check saw every string: only a converter hook of the application's
                # own can have written this one
                raise MessageEncodeError(
                    entry.name,
                    "a converter hook wrote a string that is not valid UTF-8",
                    _lone_surrogate(self.converter.unstructure(message)) or None,
                ) from None
        return text

    def from_dict(
        self,
        type_name: str,
        data: Mapping[str, Any],
        *,
        version: int | None = None,
        position: int | None = None,
    ) -> Any:
        """Structure a raw dict written at schema ``version`` (the current one when None)."""
        entry = self.registry.by_name(type_name, position=position)
        if not isinstance(data, Mapping):
            raise MessageDecodeError(
                type_name, f"expected a JSON object, got {type(data).__name__}", position
            )
        if version is not None and version != entry.version:
            if type(version) is not int:
                raise MessageDecodeError(
                    type_name, f"schema version {describe(version)} is not an integer", position
                )
            if version > entry.version:
                raise MessageDecodeError(
                    type_name,
                    f"written at schema version {version}, newer than the registered "
                    f"version {entry.version}",
                    position,
                )
            try:
                data = self.registry.upcast(type_name, dict(data), version, entry.version)
            except Exception as exc:
                raise MessageDecodeError(
                    type_name, f"upcasting from version {version}: {_describe(exc)}", position
                ) from exc
        try:
            return self.converter.structure(data, entry.cls)
        except RecursionError:
            if _forget_interrupted_generation():
                return self.from_dict(type_name, data, version=version, position=position)
            raise MessageDecodeError(type_name, "nested too deeply to read", position) from None
        except Exception as exc:
            why = _explain(self.converter, data, entry.cls, exc)
            raise MessageDecodeError(type_name, why, position) from exc

    def decoder(self, type_name: str, version: int | None = None) -> Decoder:
        """A function ``decode(text, position)`` for many rows of one type and version.

        It gives the same results and errors as :meth:`decode` but skips the per-call
        lookups: the registry entry, upcaster chain and ``cattrs`` hook are found once.
        Decoders are cached; registering a class or an upcaster later is still seen.
        """
        registry = self.registry
        generation = (registry._by_name, registry._upcasters)
        key = (type_name, version)
        cached = self._decoders.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        fn = self._make_decoder(type_name, version)
        self._decoders[key] = (generation, fn)
        return fn

    def _direct(self, type_name: str, version: int) -> tuple[Any, type[Any]] | None:
        """``(hook, cls)`` such that ``hook(json_value, cls)`` structures a row of this type
        written at this version, when no upcasting is needed; else None.

        For a backend's read loop, which inlines the call and falls back to
        :meth:`decoder` when it raises (the decoder names the error)."""
        entry = self.registry._by_name.get(type_name)
        if entry is None or entry.version != version:
            return None
        return self._structure_hook(entry.cls), entry.cls

    def _structure_hook(self, cls: type[Any]) -> Any:
        """The converter's structuring hook for ``cls`` (see
        :func:`_forget_interrupted_generation`)."""
        try:
            return self.converter.get_structure_hook(cls)
        except RecursionError:
            if not _forget_interrupted_generation():
                raise
            return self.converter.get_structure_hook(cls)

    def _make_decoder(self, type_name: str, version: int | None) -> Decoder:
        entry = self.registry._by_name.get(type_name)
        decode = self.decode
        if entry is None or (
            version is not None and (type(version) is not int or version > entry.version)
        ):

            def refuse(text: str | bytes, position: int | None = None) -> Any:
                return decode(type_name, text, version=version, position=position)

            return refuse
        cls = entry.cls
        hook = self._structure_hook(cls)
        if version is None or version == entry.version:

            def fast(text: str | bytes, position: int | None = None) -> Any:
                try:
                    return hook(_loads(text), cls)
                except Exception:
                    # the careful path raises the error that names type, cause, position
                    return decode(type_name, text, version=version, position=position)

            return fast
        upcast = self.registry.upcast
        current = entry.version

        def upcasting(text: str | bytes, position: int | None = None) -> Any:
            try:
                return hook(upcast(type_name, _loads(text), version, current), cls)
            except Exception:
                return decode(type_name, text, version=version, position=position)

        return upcasting

    def decode(
        self,
        type_name: str,
        text: str | bytes,
        *,
        version: int | None = None,
        position: int | None = None,
    ) -> Any:
        """The message of a registered ``type_name`` from its JSON text."""
        try:
            data = _loads(text)
        except (ValueError, TypeError) as exc:
            self.registry.by_name(type_name, position=position)
            raise MessageDecodeError(type_name, f"invalid JSON: {exc}", position) from exc
        return self.from_dict(type_name, data, version=version, position=position)

    def envelope_to_dict(self, envelope: Envelope) -> dict[str, Any]:
        """The wire form of a whole envelope, the same on every broker (the message
        checked as :meth:`check` does)."""
        entry = self.message_type(envelope.message)
        meta = envelope.metadata
        out: dict[str, Any] = {
            "id": envelope.id,
            "type": entry.name,
            "schema_version": entry.version,
            "data": self.to_dict(envelope.message),
            "correlation_id": meta.correlation_id,
            "causation_id": meta.causation_id,
            "user_id": meta.user_id,
            "headers": dict(meta.headers),
            "timestamp": envelope.timestamp.isoformat(),
        }
        if envelope.stream_id is not None:
            out["stream_id"] = envelope.stream_id
            out["version"] = envelope.version
            out["position"] = envelope.position
        return out

    def encode_envelope(self, envelope: Envelope) -> str:
        """:meth:`envelope_to_dict` as JSON text; raises :class:`MessageEncodeError` (for
        the message, or for an id, user id or header that is not valid UTF-8)."""
        data = self.envelope_to_dict(envelope)
        try:
            text: str = _encode(data)
        except (TypeError, ValueError) as exc:
            raise MessageEncodeError(data["type"], str(exc)) from exc
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                where = _lone_surrogate(data)
                raise MessageEncodeError(
                    data["type"], "a string of the envelope is not valid UTF-8", where or None
                ) from None
        return text

    def decode_envelope(self, text: str | bytes) -> Envelope:
        """An envelope from its wire form; raises :class:`MessageDecodeError` or
        :class:`UnknownMessageType` for anything malformed, whatever the text."""
        try:
            raw = _loads(text)
        except (ValueError, TypeError) as exc:
            raise MessageDecodeError("<envelope>", f"invalid JSON: {exc}") from exc
        return self.envelope_from_dict(raw)

    def envelope_from_dict(self, raw: Any) -> Envelope:
        """The inverse of :meth:`envelope_to_dict`, checking every field."""
        if not isinstance(raw, dict):
            raise MessageDecodeError("<envelope>", "expected a JSON object")
        type_name = raw.get("type")
        if not isinstance(type_name, str):
            raise MessageDecodeError("<envelope>", "missing or non-string 'type'")
        try:
            schema_version = _optional_int(raw, "schema_version")
            version = _optional_int(raw, "version")
            position = _optional_int(raw, "position")
            headers = raw.get("headers")
            if headers is not None and not isinstance(headers, dict):
                raise TypeError(f"'headers' must be an object, got {headers!r}")
        except (TypeError, ValueError) as exc:
            raise MessageDecodeError(type_name, f"bad envelope: {exc}") from exc
        message = self.from_dict(
            type_name,
            raw.get("data"),  # type: ignore[arg-type]
            version=schema_version,
            position=position,
        )
        try:
            metadata = Metadata(
                correlation_id=_require_str(raw, "correlation_id"),
                causation_id=_optional_str(raw, "causation_id"),
                user_id=_optional_str(raw, "user_id"),
                headers=headers or {},
            )
            return Envelope(
                message,
                id=_require_str(raw, "id"),
                metadata=metadata,
                timestamp=_structure_datetime(raw.get("timestamp"), datetime),
                stream_id=_optional_str(raw, "stream_id"),
                version=version,
                position=position,
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise MessageDecodeError(type_name, f"bad envelope: {exc}") from exc


def _optional_int(raw: dict[str, Any], name: str) -> int | None:
    value = raw.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{name!r} must be an integer or null, got {value!r}")
    return value


def _require_str(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name!r} must be a string, got {value!r}")
    return value


def _optional_str(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name!r} must be a string or null, got {value!r}")
    return value
