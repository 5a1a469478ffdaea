"""Repositories: load aggregates from their streams, and hand new ones to be saved."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import cattrs

from . import snapshot as _snapshot
from .aggregate import Aggregate
from .exceptions import AggregateNotFound
from .store.events import EventStore

if TYPE_CHECKING:
    from .store.snapshots import SnapshotStore
    from .unit_of_work import UnitOfWork

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)


class Repository(Generic[A]):
    """Loads and adds aggregates of one type.

    Inside a unit of work (``uow.repository(Order)``) loaded aggregates are tracked, the
    same id gives the same object, and ``add`` defers saving to the commit. Outside one
    (``app.repository(Order)``) ``add`` saves at once in a unit of work of its own.

    ``get`` reads the newest snapshot (when the type takes them and the snapshot still fits
    the class) and then only the events after it; otherwise it replays the whole stream.
    """

    def __init__(
        self,
        aggregate_type: type[A],
        store: EventStore,
        *,
        snapshots: SnapshotStore | None = None,
        converter: cattrs.Converter | None = None,
        unit_of_work: UnitOfWork | None = None,
        save: Callable[[Aggregate], None] | None = None,
    ) -> None:
        self.aggregate_type = aggregate_type
        """The aggregate class this repository loads."""
        self.store = store
        """The event store it reads."""
        self.snapshots = snapshots
        """Where snapshots are read from, or None."""
        self._converter = converter
        self._uow = unit_of_work
        self._save = save

    def find(self, aggregate_id: str) -> A | None:
        """The aggregate with this id as of its last event, or None when it has none."""
        if self._uow is not None:
            tracked = self._uow.tracked(self.aggregate_type, aggregate_id)
            if tracked is not None:
                return tracked  # type: ignore[return-value]
        agg = self._load(aggregate_id)
        if agg is not None and self._uow is not None:
            self._uow.track(agg)
        return agg

    def get(self, aggregate_id: str) -> A:
        """The aggregate with this id; raises :class:`AggregateNotFound` when it has no
        events (and no snapshot)."""
        agg = self.find(aggregate_id)
        if agg is None:
            raise AggregateNotFound(self.aggregate_type, aggregate_id)
        return agg

    def add(self, aggregate: A) -> None:
        """Save a new (or changed) aggregate's pending events: at the unit of work's commit,
        or at once when this repository belongs to no unit of work."""
        if not isinstance(aggregate, self.aggregate_type):
            raise TypeError(
                f"{type(self).__name__} of {self.aggregate_type.__qualname__} cannot add a "
                f"{type(aggregate).__qualname__}"
            )
        if self._uow is not None:
            self._uow.track(aggregate)
        elif self._save is not None:
            self._save(aggregate)
        else:
            raise TypeError(
                "this repository belongs to no unit of work and cannot save; use "
                "app.repository(...), whose add() saves in a unit of work of its own"
            )

    def _load(self, aggregate_id: str) -> A | None:
        cls = self.aggregate_type
        stream_id = cls.stream_id_for(aggregate_id)
        agg: A | None = None
        if self.snapshots is not None and self._converter is not None:
            snap = self.snapshots.load(stream_id)
            if snap is not None:
                agg = _snapshot.restore(cls, aggregate_id, snap, self._converter)
        if agg is not None:
            for env in self.store.read_stream(stream_id, agg.version + 1):
                agg._apply(env.message)
            agg._loaded_version = agg.version
            return agg
        envelopes = self.store.read_stream(stream_id)
        if not envelopes:
            return None
        return cls._rehydrate(aggregate_id, [e.message for e in envelopes])
