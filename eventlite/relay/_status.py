"""Where durable subscribers stand, read from the storage alone (so the CLI can too)."""

from __future__ import annotations

import attrs

from ..clock import to_datetime
from ..dlq import DeadLetterQueue
from ..store.storage import Storage
from ._segments import parse_segment, segment_name
from ._tenure import lease_name

__all__ = ["SubscriberStatus", "subscriber_status"]


@attrs.frozen
class SubscriberStatus:
    """Where one durable subscriber stands, from :func:`subscriber_status`."""

    name: str
    """The subscriber's stable name."""
    checkpoint: int
    """The log position up to which every event's fate is settled (0: none yet)."""
    head: int
    """The position of the last committed event."""
    lag: int
    """``head - checkpoint``: events not yet looked at."""
    blocked_keys: tuple[str, ...]
    """Streams held back behind a delayed retry or a dead letter, sorted."""
    retrying: int
    """Messages waiting for a delayed retry."""
    parked: int
    """Messages held behind a delayed retry of their stream."""
    dead_letters: int
    """Entries of this subscriber in the dead-letter queue (dead, parked or retrying)."""
    updated_at: float
    """When the checkpoint last moved (epoch seconds)."""
    segment: int | None = None
    """Which segment this is (from 0) of a subscriber split into :attr:`segments`; None
    when it is not split."""
    segments: int = 1
    """Into how many segments the subscriber is split (1: not split)."""
    owner: str | None = None
    """Who holds its lease (``host:pid:tag``), expired or not; None when nobody does, or
    without leases."""
    lease_expires_at: float | None = None
    """When that lease expires unless renewed (epoch seconds, the store's clock)."""

    @property
    def key(self) -> str:
        """The name its checkpoint, inbox marks, retries and dead letters are kept under:
        :attr:`name`, or ``name#segment/segments`` for a segment."""
        if self.segment is None:
            return self.name
        return segment_name(self.name, self.segment, self.segments)

    def __str__(self) -> str:
        keys = ", ".join(self.blocked_keys) if self.blocked_keys else "-"
        lease = ""
        if self.owner is not None and self.lease_expires_at is not None:
            until = to_datetime(self.lease_expires_at).isoformat(timespec="seconds")
            lease = f", held by {self.owner} until {until}"
        return (
            f"{self.key}: checkpoint {self.checkpoint}/{self.head} (lag {self.lag}){lease}, "
            f"retrying {self.retrying}, parked {self.parked}, dead letters "
            f"{self.dead_letters}, blocked keys: {keys}; moved "
            f"{to_datetime(self.updated_at).isoformat(timespec='seconds')}"
        )


def subscriber_status(
    storage: Storage, dlq: DeadLetterQueue, name: str | None = None
) -> list[SubscriberStatus]:
    """The status of every durable subscriber known to ``storage`` (or of one, by
    ``name``), sorted by name, a subscriber split into segments as one status per segment
    (by segment); read from the storage alone, so it works in any process (the CLI).
    ``dlq`` adds each subscriber's dead letters and the keys they block; the lease store,
    when the storage keeps one, who holds each lease and until when.
    """
    checkpoints = [
        c
        for c in storage.checkpoints.list()
        if name is None or c.name == name or _base(c.name) == name
    ]
    if not checkpoints:
        return []
    head = storage.events.head_position()
    leases = storage.leases if storage.keeps("leases") else None
    retries: dict[str, tuple[int, int, set[str]]] = {}
    only = name if name is not None and [c.name for c in checkpoints] == [name] else None
    for entry in storage.retries.entries(only):
        waiting, parked, keys = retries.get(entry.subscriber, (0, 0, set()))
        keys.add(entry.key)
        if entry.is_head:
            retries[entry.subscriber] = (waiting + 1, parked, keys)
        else:
            retries[entry.subscriber] = (waiting, parked + 1, keys)
    out = []
    for checkpoint in checkpoints:
        waiting, parked, keys = retries.get(checkpoint.name, (0, 0, set()))
        letters = dlq.list(checkpoint.name, limit=None)
        keys = keys | {d.key for d in letters if d.key is not None}
        parsed = parse_segment(checkpoint.name)
        lease = None if leases is None else leases.holder(lease_name(checkpoint.name))
        out.append(
            SubscriberStatus(
                name=checkpoint.name if parsed is None else parsed[0],
                checkpoint=checkpoint.position,
                head=head,
                lag=max(0, head - checkpoint.position),
                blocked_keys=tuple(sorted(keys)),
                retrying=waiting,
                parked=parked,
                dead_letters=len(letters),
                updated_at=checkpoint.updated_at,
                segment=None if parsed is None else parsed[1],
                segments=1 if parsed is None else parsed[2],
                owner=None if lease is None else lease.owner,
                lease_expires_at=None if lease is None else lease.expires_at,
            )
        )
    out.sort(key=lambda s: (s.name, -1 if s.segment is None else s.segment))
    return out


def _base(stored: str) -> str | None:
    parsed = parse_segment(stored)
    return None if parsed is None else parsed[0]
