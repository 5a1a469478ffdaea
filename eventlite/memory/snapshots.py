"""Snapshots in a dict, beside the in-memory event store."""

from __future__ import annotations

import threading

from ..store.snapshots import Snapshot, SnapshotStore

__all__ = ["InMemorySnapshotStore"]


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
