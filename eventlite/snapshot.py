"""Snapshots: an aggregate's state at a version, so loading need not replay its whole stream.

A snapshot holds the aggregate's state fields as JSON, the version they reflect, and a
fingerprint of the class's state shape. Loading trusts a snapshot only when the fingerprint
still matches and the state still decodes; otherwise it replays the full stream, so
changing an aggregate class never serves stale or mis-shaped state.

Snapshots are written by the unit of work in the same transaction as the events that
crossed the aggregate's ``snapshot_every`` boundary.
"""

from __future__ import annotations

import abc
import json
import logging
import threading
import typing
from typing import TypeVar

import attrs
import cattrs

from ._db import Database
from .aggregate import Aggregate

__all__ = ["InMemorySnapshotStore", "SQLiteSnapshotStore", "Snapshot", "SnapshotStore"]

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)


@attrs.frozen
class Snapshot:
    """An aggregate's state fields at ``version``, as JSON text."""

    stream_id: str
    """The aggregate's stream."""
    version: int
    """The stream version the state reflects."""
    fingerprint: str
    """``Aggregate.state_fingerprint()`` of the class that took it."""
    state: str
    """The state fields as a JSON object."""


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


class SnapshotStore(abc.ABC):
    """Where snapshots are kept: the newest one per stream."""

    @abc.abstractmethod
    def save(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` unless a newer one of its stream is already kept."""

    @abc.abstractmethod
    def load(self, stream_id: str) -> Snapshot | None:
        """The newest snapshot of ``stream_id``, or None."""


class InMemorySnapshotStore(SnapshotStore):
    """Snapshots in a dict, beside the in-memory event store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}

    def save(self, snapshot: Snapshot) -> None:
        """See :meth:`SnapshotStore.save`."""
        with self._lock:
            kept = self._snapshots.get(snapshot.stream_id)
            if kept is None or kept.version < snapshot.version:
                self._snapshots[snapshot.stream_id] = snapshot

    def load(self, stream_id: str) -> Snapshot | None:
        """See :meth:`SnapshotStore.load`."""
        return self._snapshots.get(stream_id)


class SQLiteSnapshotStore(SnapshotStore):
    """Snapshots in the ``snapshots`` table of the eventlite file; a save inside an open
    transaction of the same thread joins it."""

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    def save(self, snapshot: Snapshot) -> None:
        """See :meth:`SnapshotStore.save`."""
        with self.database.transaction() as tx:
            tx.execute(
                "INSERT INTO snapshots (stream_id, version, fingerprint, state) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET "
                "version = excluded.version, fingerprint = excluded.fingerprint, "
                "state = excluded.state WHERE excluded.version > snapshots.version",
                (snapshot.stream_id, snapshot.version, snapshot.fingerprint, snapshot.state),
            )

    def load(self, stream_id: str) -> Snapshot | None:
        """See :meth:`SnapshotStore.load`."""
        with self.database.read() as conn:
            row = conn.execute(
                "SELECT version, fingerprint, state FROM snapshots WHERE stream_id = ?",
                (stream_id,),
            ).fetchone()
        if row is None:
            return None
        return Snapshot(stream_id, row[0], row[1], row[2])
