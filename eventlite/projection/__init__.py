"""Projections: read models kept up to date from the event log, in the same storage.

A projection is a class whose methods, marked ``@projects(EventType)``, turn events into
rows of its own tables (its *read model*), written with the storage's read-model helper
(on SQLite, ``sqlite-utils``)::

    class OrderSummaries(Projection):
        tables = ("order_summaries",)

        def setup(self, db: sqlite_utils.Database) -> None:
            db["order_summaries"].create({"id": str, "total": int}, pk="id", if_not_exists=True)

        @projects(OrderPlaced)
        def _placed(self, event: OrderPlaced, db: sqlite_utils.Database) -> None:
            db["order_summaries"].insert({"id": event.order_id, "total": event.total})

A :class:`Projector` runs projections over a :class:`~eventlite.store.Storage`. Each has a
*checkpoint* (a :class:`~eventlite.store.projections.ProjectionStore` row): the log
position its read model reflects. The checkpoint only moves in the transaction that writes
the read model, so after any crash the two agree, and no event is applied twice or skipped.

- **inline**: updated inside the unit of work that records the events (through
  :meth:`Projector.hook`); a failed commit rolls the read model back with the events.
- **tracking**: updated by a background thread, in batches, each batch committed with its
  checkpoint; it wakes on :meth:`Projector.notify` and polls for other processes' commits.

:meth:`Projector.rebuild` empties a read model and replays the log from position 1 while
new events keep arriving, then hands over to live updates.

The projector reads the log only through the event store's readers
(:meth:`~eventlite.store.EventStore.read_messages` when no handler of a projection takes
the envelope, :meth:`~eventlite.store.EventStore.read_all` otherwise), so events are
decoded by the backend's one decoder.
"""

from __future__ import annotations

from ._projection import Progress, Projection, ProjectionError, ProjectionMode, projects
from ._projector import ProjectionStatus, Projector

__all__ = [
    "Progress",
    "Projection",
    "ProjectionError",
    "ProjectionMode",
    "ProjectionStatus",
    "Projector",
    "projects",
]

# Errors are recorded by class path (a saga's failure, a dead letter's error type): name them
# by the public module they are imported from, not the private one they are defined in.
for _error in (ProjectionError,):
    _error.__module__ = __name__
del _error
