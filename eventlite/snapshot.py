"""Snapshots: an aggregate's state at a version, so loading need not replay its whole stream.

A snapshot holds the aggregate's state fields as JSON, the version they reflect, and a
fingerprint of the class's state shape. Loading trusts a snapshot only when the fingerprint
still matches and the state still decodes; otherwise it replays the full stream, so
changing an aggregate class never serves stale or mis-shaped state.

Snapshots are written by the unit of work in the same transaction as the events that
crossed the aggregate's ``snapshot_every`` boundary.
"""

from __future__ import annotations

import json
import logging
import typing
from typing import TypeVar

import cattrs

from .aggregate import Aggregate
from .store.snapshots import Snapshot

__all__ = ["restore", "take"]

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)


def take(aggregate: Aggregate, converter: cattrs.Converter) -> Snapshot:
    """A snapshot of ``aggregate``'s state fields at its current version."""
    cls = type(aggregate)
    hints = typing.get_type_hints(cls)
    state = {
        name: converter.unstructure(getattr(aggregate, name), unstructure_as=hints[name])
        for name in cls.state_fields()
    }
    return Snapshot(
        stream_id=aggregate.stream_id,
        version=aggregate.version,
        fingerprint=cls.state_fingerprint(),
        state=json.dumps(state, separators=(",", ":"), ensure_ascii=False, allow_nan=False),
    )


def restore(
    cls: type[A], aggregate_id: str, snapshot: Snapshot, converter: cattrs.Converter
) -> A | None:
    """The aggregate rebuilt from ``snapshot``, or None when the snapshot is not to be
    trusted: taken under another state shape, or no longer decodable."""
    if snapshot.fingerprint != cls.state_fingerprint():
        log.info(
            "ignoring snapshot of %s at version %d: the aggregate's state shape changed",
            snapshot.stream_id,
            snapshot.version,
        )
        return None
    try:
        hints = typing.get_type_hints(cls)
        data = json.loads(snapshot.state)
        agg = cls(aggregate_id)
        for name in cls.state_fields():
            setattr(agg, name, converter.structure(data[name], hints[name]))
    except Exception:
        log.warning(
            "ignoring snapshot of %s at version %d: it does not decode",
            snapshot.stream_id,
            snapshot.version,
            exc_info=True,
        )
        return None
    agg.version = snapshot.version
    return agg
