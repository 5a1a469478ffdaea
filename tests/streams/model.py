"""The batch model the stream engine is checked against: plain Python over a finished list of
events, with no watermarks, buffers or incremental state.

Which events count is the only place arrival order matters: :func:`accepted` replays the
watermark rule (an event is late when its time is more than the allowed lateness behind
the greatest time seen before it, minus the out-of-orderness) and splits the events into
accepted and late ones. Everything else groups, sorts and folds the accepted events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .conftest import Reading

NEVER = float("-inf")


def accepted(
    events: Sequence[Reading], out_of_orderness: int, lateness: int
) -> tuple[list[Reading], list[Reading]]:
    """``(accepted, late)`` for events in arrival order (times in seconds)."""
    seen = NEVER
    ok: list[Reading] = []
    late: list[Reading] = []
    for e in events:
        if e.t < seen - out_of_orderness - lateness:
            late.append(e)
        else:
            ok.append(e)
        seen = max(seen, e.t)
    return ok, late


AGGREGATES: dict[str, Callable[[list[int]], Any]] = {
    "count": len,
    "sum": sum,
    "min": min,
    "max": max,
    "mean": lambda values: float(sum(values) / len(values)),
}
"""Each aggregate, over a window's values."""


def _by_key(events: Iterable[Reading]) -> dict[str, list[Reading]]:
    groups: dict[str, list[Reading]] = defaultdict(list)
    for e in events:
        groups[e.key].append(e)
    return groups


def tumbling(events: Iterable[Reading], size: int, aggregate: str) -> list[tuple[Any, ...]]:
    """``(key, start, end, value)`` of every tumbling window, sorted."""
    return hopping(events, size, size, aggregate)


def hopping(
    events: Iterable[Reading], size: int, step: int, aggregate: str
) -> list[tuple[Any, ...]]:
    """``(key, start, end, value)`` of every hopping window with an event, sorted."""
    windows: dict[tuple[str, int], list[int]] = defaultdict(list)
    for e in events:
        start = e.t - e.t % step
        while start > e.t - size:
            windows[(e.key, start)].append(e.value)
            start -= step
    fold = AGGREGATES[aggregate]
    return sorted((k, s, s + size, fold(vs)) for (k, s), vs in windows.items())


def sessions(events: Iterable[Reading], gap: int, aggregate: str) -> list[tuple[Any, ...]]:
    """``(key, start, end, value)`` of every session: a key's events sorted by time, cut
    where two neighbours are ``gap`` or more apart; a session ends ``gap`` after its last
    event."""
    fold = AGGREGATES[aggregate]
    out = []
    for key, group in _by_key(events).items():
        group = sorted(group, key=lambda e: e.t)
        current = [group[0]]
        for e in group[1:]:
            if e.t - current[-1].t >= gap:
                out.append(
                    (key, current[0].t, current[-1].t + gap, fold([x.value for x in current]))
                )
                current = []
            current.append(e)
        out.append((key, current[0].t, current[-1].t + gap, fold([x.value for x in current])))
    return sorted(out)


def join(
    left: Iterable[Reading], right: Iterable[Reading], before: int, after: int, how: str
) -> list[tuple[Any, ...]]:
    """``(left id, right id)`` of every pair of the same key with ``tl - before <= tr <= tl +
    after``, plus ``(id, None)``/``(None, id)`` for the unmatched of a left/outer join;
    sorted (None first)."""
    left, right = list(left), list(right)
    pairs = [
        (lv.id, rv.id)
        for lv in left
        for rv in right
        if lv.key == rv.key and lv.t - before <= rv.t <= lv.t + after
    ]
    if how in ("left", "outer"):
        matched = {p[0] for p in pairs}
        pairs += [(lv.id, None) for lv in left if lv.id not in matched]  # type: ignore[misc]
    if how == "outer":
        matched = {p[1] for p in pairs}
        pairs += [(None, rv.id) for rv in right if rv.id not in matched]  # type: ignore[misc]
    return sorted(pairs, key=lambda p: (p[0] or -1, p[1] or -1))
