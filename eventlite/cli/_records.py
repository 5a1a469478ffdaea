"""A stored event as the CLI shows it, whatever its row holds.

A row written by eventlite reads back in the wire form of
:meth:`~eventlite.codec.Codec.envelope_to_dict` (with ``data`` as stored). A row that is
not what eventlite writes (a date out of range, JSON nested too deeply to parse, a BLOB,
text that is not UTF-8, a number where text belongs) is shown as far as it can be, each
value that could not be read as stored and named under ``undecodable`` with the reason:
printing it never fails.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..store.events import LogRecord
from ._format import time_of

__all__ = ["describe", "record_dict", "record_json", "record_line"]


def _text(value: object, field: str, problems: dict[str, str]) -> Any:
    """A text column: text as it is, bytes decoded (escaped where not UTF-8), other
    values as JSON can show them; marked when not text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
            problems[field] = "stored as bytes, not text"
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "backslashreplace")
            problems[field] = "not valid UTF-8 (shown with \\x escapes)"
        return text
    problems[field] = f"a {type(value).__name__}, not text"
    return _plain(value)


def _number(value: object, field: str, problems: dict[str, str]) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    problems[field] = f"not a whole number: {describe(value)}"
    return _plain(value) if not isinstance(value, (bytes, bytearray)) else describe(value)


def _plain(value: object) -> Any:
    """``value`` if JSON holds it as it is, else its repr."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return repr(value)


def describe(value: object) -> str:
    """A stored value in a few words, for a mark."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(bytes(value))} bytes"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json(text: Any, field: str, problems: dict[str, str]) -> Any:
    """A JSON column parsed, or its text as it is (marked) when it cannot be."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except RecursionError:
        problems[field] = "JSON nested too deeply to parse (shown as stored)"
    except ValueError as exc:
        problems[field] = f"not JSON: {str(exc)[:80]} (shown as stored)"
    return text


def record_dict(record: LogRecord) -> tuple[dict[str, Any], dict[str, str]]:
    """The record in the wire form of ``Codec.envelope_to_dict`` (``data`` as stored, not
    upcast), and what could not be read, by field."""
    problems: dict[str, str] = {}
    data = _json(_text(record.data, "data", problems), "data", problems)
    headers: Any = {}
    if record.headers is not None:
        headers = _json(_text(record.headers, "headers", problems), "headers", problems)
        if not isinstance(headers, Mapping) and "headers" not in problems:
            problems["headers"] = "not a JSON object"
    moment = time_of(record.timestamp_us)
    if moment is None:
        problems["timestamp"] = f"not a date: {describe(record.timestamp_us)}"
        timestamp: Any = _plain(record.timestamp_us)
    else:
        timestamp = moment.isoformat()
    out: dict[str, Any] = {
        "id": _text(record.id, "id", problems),
        "type": _text(record.type, "type", problems),
        "schema_version": _number(record.schema_version, "schema_version", problems),
        "data": data,
        "correlation_id": _text(record.correlation_id, "correlation_id", problems),
        "causation_id": _text(record.causation_id, "causation_id", problems),
        "user_id": _text(record.user_id, "user_id", problems),
        "headers": headers,
        "timestamp": timestamp,
        "stream_id": _text(record.stream_id, "stream_id", problems),
        "version": _number(record.version, "version", problems),
        "position": record.position,
    }
    return out, problems


def _dumps(value: Any, **options: Any) -> str | None:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, **options)
    except (ValueError, TypeError, RecursionError):
        return None


def record_json(d: Mapping[str, Any], problems: Mapping[str, str], raw: LogRecord) -> str:
    """One JSON line for a record (``undecodable`` naming what was shown as stored)."""
    out = dict(d)
    if problems:
        out["undecodable"] = dict(problems)
    text = _dumps(out)
    if text is None:  # a value parsed but too deep to write back: show the data as stored
        out["data"] = raw.data if isinstance(raw.data, str) else describe(raw.data)
        out.setdefault("undecodable", {})["data"] = "JSON nested too deeply to write"
        text = _dumps(out) or json.dumps({"position": raw.position, "undecodable": "row"})
    return text


def record_line(d: Mapping[str, Any], problems: Mapping[str, str], stored: str | None) -> str:
    """One line for a record: position, time, stream and version, type, ids, headers and
    the data (``stored``: as stored; None: as ``d`` holds it), then what was undecodable."""
    moment = time_of_iso(d["timestamp"]) if "timestamp" not in problems else None
    parts = [
        f"#{d['position']}",
        moment if moment is not None else f"<time {d['timestamp']!r}>",
        f"{d['stream_id']} v{d['version']}",
        str(d["type"]),
        f"id={d['id']}",
        f"correlation={d['correlation_id']}",
        f"causation={d['causation_id'] or '-'}",
    ]
    if d.get("user_id"):
        parts.append(f"user={d['user_id']}")
    if d.get("headers"):
        headers = d["headers"]
        parts.append(f"headers={headers if isinstance(headers, str) else _dumps(headers)}")
    if stored is None:
        data = d["data"]
        stored = _dumps(data, separators=(",", ":")) if not isinstance(data, str) else data
        if stored is None:
            stored = "<data nested too deeply to write>"
    parts.append(stored)
    if problems:
        parts.append("[undecodable: " + "; ".join(f"{k}: {v}" for k, v in problems.items()) + "]")
    return "  ".join(parts)


def time_of_iso(text: str) -> str | None:
    """An ISO time of the wire form, to the microsecond."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).isoformat(timespec="microseconds")
    except (TypeError, ValueError):
        return None
