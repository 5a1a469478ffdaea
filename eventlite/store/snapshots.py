"""Snapshots: an aggregate's state at a version, kept so loading need not replay it all.

:class:`SnapshotStore` keeps the newest :class:`Snapshot` per stream; taking and trusting
one is the aggregate layer's business (:mod:`eventlite.snapshot`).
"""

from __future__ import annotations

import abc

import attrs

__all__ = ["Snapshot", "SnapshotStore"]


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


class SnapshotStore(abc.ABC):
    """Where snapshots are kept: the newest one per stream.

    A save made inside an open transaction of the same storage and thread joins it.
    """

    @abc.abstractmethod
    def save(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` unless a newer one of its stream is already kept."""

    @abc.abstractmethod
    def load(self, stream_id: str) -> Snapshot | None:
        """The newest snapshot of ``stream_id``, or None."""
