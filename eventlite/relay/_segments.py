"""Segments: one durable subscriber split by a hash of the stream id into ``N`` parts, each
with its own checkpoint, inbox marks, retries, dead letters and lease (see
``docs/scaling.md``).

Segment ``i`` of ``N`` of the subscriber ``name`` is kept under the name ``name#i/N``
(:func:`segment_name`): the key of its checkpoint in the storage, and of its lease
(``subscriber:name#i/N``). An event belongs to segment :func:`segment_of` of its stream
id: ``zlib.crc32`` of the id's UTF-8 bytes modulo ``N``, the same on every machine and in
every Python; events without a stream id belong to segment 0. A stream is always in one
segment, so it keeps its order.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

__all__ = [
    "changed_segments",
    "parse_segment",
    "segment_name",
    "segment_of",
    "stored_segments",
]

_SEGMENT = re.compile(r"(.+)#([0-9]+)/([0-9]+)\Z", re.DOTALL)


def segment_name(name: str, index: int, segments: int) -> str:
    """The name segment ``index`` (from 0) of ``segments`` of subscriber ``name`` is kept
    under: ``"name#index/segments"``."""
    return f"{name}#{index}/{segments}"


def parse_segment(stored: str) -> tuple[str, int, int] | None:
    """``(subscriber name, index, segments)`` of a segment's stored name, or None when
    ``stored`` is not one (a subscriber that is not split)."""
    match = _SEGMENT.match(stored)
    if match is None:
        return None
    index, segments = int(match[2]), int(match[3])
    if segments < 2 or index >= segments:
        return None
    return match[1], index, segments


def segment_of(stream_id: object, segments: int) -> int:
    """The segment of ``stream_id`` among ``segments``: ``crc32(utf-8 bytes) % segments``;
    0 for an event without a stream id (None, or not a string)."""
    if type(stream_id) is not str:
        return 0
    return zlib.crc32(stream_id.encode("utf-8", "surrogatepass")) % segments


def stored_segments(name: str, stored: Iterable[str]) -> set[int]:
    """How many segments subscriber ``name`` has in the storage, by the names of the
    stored checkpoints: 1 for a checkpoint named ``name`` itself, ``N`` for one named
    ``name#i/N``. Empty when the subscriber is new."""
    found = set()
    for each in stored:
        if each == name:
            found.add(1)
            continue
        parsed = parse_segment(each)
        if parsed is not None and parsed[0] == name:
            found.add(parsed[2])
    return found


def changed_segments(name: str, stored: set[int], segments: int) -> ValueError | None:
    """The error for a subscriber added with ``segments`` whose stored checkpoints have
    another number of them; None when they agree (or there are none)."""
    others = sorted(stored - {segments})
    if not others:
        return None
    return ValueError(
        f"durable subscriber {name!r} is stored with segments={others[0]} and is added "
        f"with segments={segments}: the number of segments cannot change while its "
        "checkpoints exist (a stream would move to another segment, out of order and past "
        "its inbox marks); keep segments={others[0]}, or drain it and remove its old "
        "checkpoints first (see docs/scaling.md, 'Changing the number of segments')"
    )
