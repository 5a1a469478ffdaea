"""Values kept in stream state, turned into JSON-ready data and back.

State holds accumulators, buffered join values and keys. They are written as JSON-ready
data (``None``, ``bool``, ``int``, ``float``, ``str``, lists and dicts with string keys);
what JSON cannot say is tagged so that it comes back as the same value:

- a registered message: ``{"$message": name, "version": v, "data": {...}}``, read back
  through the codec (upcasters included, so state survives a schema change);
- a tuple: ``{"$tuple": [...]}`` (keys are often tuples, and must stay hashable);
- a dict whose keys are not all plain strings, or that has a key starting with ``$``:
  ``{"$dict": [[key, value], ...]}``;
- a ``datetime``: ``{"$datetime": "2026-01-01T00:00:00+00:00"}``.

Anything else raises ``TypeError`` naming the type: state never pickles, and never imports a
class named by data (a message's class is looked up in the registry only).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..codec import Codec

_PLAIN = (str, int, float, bool, type(None))


def encode(value: Any, codec: Codec) -> Any:
    """The JSON-ready form of ``value`` (see the module doc)."""
    t = type(value)
    if t in _PLAIN:
        return value
    if t is list:
        return [encode(v, codec) for v in value]
    if t is tuple:
        return {"$tuple": [encode(v, codec) for v in value]}
    if t is dict:
        if all(type(k) is str and not k.startswith("$") for k in value):
            return {k: encode(v, codec) for k, v in value.items()}
        return {"$dict": [[encode(k, codec), encode(v, codec)] for k, v in value.items()]}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    entry = codec.registry.find(t)
    if entry is not None:
        return {"$message": entry.name, "version": entry.version, "data": codec.to_dict(value)}
    raise TypeError(
        f"cannot keep a value of type {t.__name__} in stream state: use a message "
        f"registered in the engine's codec, or JSON-ready data (None, bool, int, float, "
        f"str, list, tuple, dict, datetime)"
    )


def decode(data: Any, codec: Codec) -> Any:
    """The value whose JSON-ready form is ``data``."""
    t = type(data)
    if t is list:
        return [decode(v, codec) for v in data]
    if t is not dict:
        return data
    if len(data) == 1:
        if "$tuple" in data:
            return tuple(decode(v, codec) for v in data["$tuple"])
        if "$dict" in data:
            return {decode(k, codec): decode(v, codec) for k, v in data["$dict"]}
        if "$datetime" in data:
            return datetime.fromisoformat(data["$datetime"])
    if "$message" in data:
        return codec.from_dict(data["$message"], data["data"], version=data.get("version"))
    return {k: decode(v, codec) for k, v in data.items()}


def key_text(key: Any, codec: Codec) -> str:
    """A key as compact JSON text: the key of a state entry."""
    return json.dumps(encode(key, codec), separators=(",", ":"), sort_keys=True)


def key_from_text(text: str, codec: Codec) -> Any:
    """The key whose text :func:`key_text` made."""
    return decode(json.loads(text), codec)
