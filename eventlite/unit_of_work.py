"""The unit of work: one transaction for everything a command changed, then publication.

::

    with app.unit_of_work() as uow:
        order = uow.repository(Order).get("o-1")
        order.ship()
    # committed: every new event of every aggregate touched, appended in one transaction
    # (each stream expecting the version it was loaded at), snapshots and other writes in
    # the same transaction; only then are the events published on the bus.

Leaving the block with an exception rolls everything back and publishes nothing, except
:class:`~eventlite.exceptions.CommandRejected`: its unit commits what was recorded (the
event that says why), then the exception goes on to the caller.

The unit of work knows nothing above it: it is given a :class:`~eventlite.store.Storage`
(transactions, the event store, snapshots, claims), a ``publish`` callable for the events
once committed, and hooks to run in every commit that records events (the app's inline
projections). ``UnitOfWork(storage)`` alone works, for tests and scripts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import cattrs

from . import snapshot as _snapshot
from .aggregate import Aggregate
from .clock import Clock
from .envelope import Envelope
from .exceptions import CommandRejected
from .repository import Repository
from .sqlite import Transaction as SQLiteTransaction
from .store.claims import AlreadyClaimed, validate_claim
from .store.events import ANY, NO_STREAM, ExpectedVersion, StreamAppend
from .store.storage import Storage, Transaction

__all__ = ["UnitOfWork"]

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)

WriteHook = Callable[[Transaction, Sequence[Envelope]], None]
"""Called inside the commit's transaction with the recorded events."""


class UnitOfWork:
    """Tracks the aggregates of one business operation and commits them together.

    Use it as a context manager (``with app.unit_of_work() as uow``): leaving the block
    normally commits, an exception rolls back. ``commit()`` may also be called inside the
    block (the unit of work can then be used again). A :class:`ConcurrencyError` from the
    commit means another writer changed one of the streams first: nothing was written.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        publish: Callable[..., object] | None = None,
        converter: cattrs.Converter | None = None,
        event_hooks: Sequence[WriteHook] = (),
        clock: Clock | None = None,
    ) -> None:
        self.storage = storage
        """Where it writes: its transactions, event store, snapshots and claims."""
        self._publish = publish
        self._converter = converter
        self._event_hooks = tuple(event_hooks)
        self._clock = clock
        self._aggregates: dict[tuple[type[Any], str], Aggregate] = {}
        self._appends: list[StreamAppend] = []
        self._hooks: list[WriteHook] = []
        self._claims: list[Callable[[], None]] = []
        self._active = False
        self.committed: list[Envelope] = []
        """The events recorded by the last commit, with stream, version and position."""
        self.wrote = False
        """Whether a commit of this unit wrote anything (a handler that committed part of
        its work is not re-run on a later conflict: that part would be written twice)."""

    def __enter__(self) -> UnitOfWork:
        self._active = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            if exc_type is None or issubclass(exc_type, CommandRejected):
                self.commit()
        finally:
            self.rollback()
            self._active = False

    # -- aggregates ---------------------------------------------------------------------

    def repository(self, aggregate_type: type[A]) -> Repository[A]:
        """A repository of ``aggregate_type`` whose loads and adds this unit tracks."""
        storage = self.storage
        return Repository(
            aggregate_type,
            storage.events,
            snapshots=storage.snapshots if self._converter is not None else None,
            converter=self._converter,
            unit_of_work=self,
        )

    def get(self, aggregate_type: type[A], aggregate_id: str) -> A:
        """Shortcut for ``uow.repository(aggregate_type).get(aggregate_id)``."""
        return self.repository(aggregate_type).get(aggregate_id)

    def find(self, aggregate_type: type[A], aggregate_id: str) -> A | None:
        """Shortcut for ``uow.repository(aggregate_type).find(aggregate_id)``."""
        return self.repository(aggregate_type).find(aggregate_id)

    def add(self, aggregate: Aggregate) -> None:
        """Track a new aggregate; its pending events are appended at commit."""
        self.track(aggregate)

    def track(self, aggregate: Aggregate) -> None:
        """Track ``aggregate`` (loaded or new): its pending events are appended at commit,
        expecting its stream at the version it was loaded at. The seam repositories use;
        raises ``ValueError`` when another object with the same type and id is tracked."""
        key = (type(aggregate), aggregate.id)
        known = self._aggregates.get(key)
        if known is not None and known is not aggregate:
            raise ValueError(
                f"{type(aggregate).__qualname__} {aggregate.id!r} is already tracked by this "
                "unit of work as another object"
            )
        self._aggregates[key] = aggregate

    def tracked(self, aggregate_type: type[Any], aggregate_id: str) -> Aggregate | None:
        """The tracked aggregate of this type and id, or None."""
        return self._aggregates.get((aggregate_type, aggregate_id))

    # -- other writes -------------------------------------------------------------------

    def append(
        self, stream_id: str, events: Sequence[Any], *, expected_version: ExpectedVersion = ANY
    ) -> None:
        """Append events to a stream that no aggregate owns, at commit."""
        self._appends.append(StreamAppend(stream_id, list(events), expected_version))

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> None:
        """Run one SQL statement in the commit's transaction, after the events are appended
        (in the order of the other writes): a read model row, a record of an email to
        send. It is not run now, and not at all if the unit rolls back.

        Raises ``RuntimeError`` on an app without a SQLite file.
        """
        if not hasattr(self.storage, "database"):
            raise RuntimeError(
                f"uow.execute() runs SQL on a SQLite file; this unit writes to "
                f"{self.storage.description}"
            )
        params = parameters if isinstance(parameters, dict) else tuple(parameters)

        def run(tx: Transaction, events: Sequence[Envelope]) -> None:
            assert isinstance(tx, SQLiteTransaction)
            tx.execute(sql, params)

        self._hooks.append(run)

    def claim(self, scope: str, value: str, owner: str) -> None:
        """Claim ``value`` of ``scope`` for ``owner`` in the commit's transaction: the
        rule that a value is unique across aggregates (a batch reference across every
        product, an e-mail address across accounts).

        Raises :class:`~eventlite.store.claims.AlreadyClaimed` (naming scope, value and
        holder) at once when another owner already holds it, and from :meth:`commit`
        when another owner's claim committed first; then nothing of the unit is
        written. Claiming a value the owner holds already is a no-op. Needs a backend
        that keeps claims (every one does; the in-memory one undoes a claim when its
        unit of work rolls back).
        """
        claims = self.storage.claims
        validate_claim(scope, value, owner)
        holder = claims.holder(scope, value)
        if holder is not None and holder != owner:
            raise AlreadyClaimed(scope, value, holder)
        self._claims.append(lambda: claims.claim(scope, value, owner))

    def release_claim(self, scope: str, value: str, owner: str) -> None:
        """Free ``value`` of ``scope`` at commit, if ``owner`` holds it then."""
        claims = self.storage.claims
        validate_claim(scope, value, owner)

        def release() -> None:
            claims.release(scope, value, owner)

        self._claims.append(release)

    def on_commit_write(self, hook: WriteHook) -> None:
        """Run ``hook(tx, events)`` inside the commit's transaction, after the events are
        appended: inbox marks, inline projections and outbox rows use it. With an in-memory
        store ``tx`` is None."""
        self._hooks.append(hook)

    # -- commit -------------------------------------------------------------------------

    def commit(self) -> list[Envelope]:
        """Append every pending event in one transaction, then publish them on the bus.

        Returns the recorded events. Raises :class:`ConcurrencyError` (nothing written)
        when a stream moved since it was loaded.
        """
        dirty = [agg for agg in self._aggregates.values() if agg.pending_events]
        stamp = self._stamper()
        parts = [
            StreamAppend(
                agg.stream_id,
                [stamp(e) for e in agg.pending_events],
                agg.loaded_version if agg.loaded_version else NO_STREAM,
            )
            for agg in dirty
        ]
        parts.extend(
            StreamAppend(p.stream_id, [stamp(e) for e in p.events], p.expected_version)
            for p in self._appends
        )
        if not parts and not self._hooks and not self._claims:
            return []
        # Inside a transaction the caller opened, nothing is durable until the caller
        # commits, so nothing is marked saved or published before then.
        storage = self.storage
        nested = storage.in_transaction()
        with storage.transaction() as tx:
            # claims first: a refused one stops the commit before any event is written
            # (the in-memory store cannot take an append back)
            for claim in self._claims:
                claim()
            results = storage.events.append_many(parts) if parts else []
            recorded = [env for result in results for env in result]
            if self._converter is not None:
                for agg in dirty:
                    every = type(agg).snapshot_every
                    if every and agg.version // every > agg.loaded_version // every:
                        self._snapshot(agg, self._converter)
            for hook in self._hooks:
                hook(tx, recorded)
            if recorded:
                for hook in self._event_hooks:
                    hook(tx, recorded)
            self.wrote = True
            if nested:
                tx.on_commit(lambda: self._after_commit(dirty, recorded))
        self._appends = []
        self._hooks = []
        self._claims = []
        if not nested:
            self._after_commit(dirty, recorded)
        return recorded

    def _stamper(self) -> Callable[[Any], Any]:
        """Wraps each message in an envelope dated by the unit's clock (envelopes given
        by the caller keep theirs); without a clock the envelope dates itself."""
        clock = self._clock
        if clock is None:
            return _same
        at = datetime.fromtimestamp(clock.now(), tz=timezone.utc)

        def stamp(event: Any) -> Any:
            return event if isinstance(event, Envelope) else Envelope(event, timestamp=at)

        return stamp

    def _snapshot(self, agg: Aggregate, converter: cattrs.Converter) -> None:
        # A snapshot only speeds loading up: one that cannot be taken must not stop the
        # aggregate's events from being saved.
        try:
            self.storage.snapshots.save(_snapshot.take(agg, converter))
        except Exception:
            log.warning(
                "could not snapshot %s at version %d; loading will replay its events",
                agg.stream_id,
                agg.version,
                exc_info=True,
            )

    def _after_commit(self, dirty: list[Aggregate], recorded: list[Envelope]) -> None:
        for agg in dirty:
            agg._mark_saved()
        self.committed = recorded
        if recorded and self._publish is not None:
            # durable subscribers were woken by the storage's commit listener already
            self._publish(*recorded)

    def rollback(self) -> None:
        """Forget everything tracked and not committed."""
        self._aggregates.clear()
        self._appends = []
        self._hooks = []
        self._claims = []


def _same(event: Any) -> Any:
    return event
