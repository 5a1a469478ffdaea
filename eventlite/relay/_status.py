"""Where durable subscribers stand, read from the storage alone (so the CLI can too)."""

from __future__ import annotations

import attrs

from ..clock import to_datetime
from ..dlq import DeadLetterQueue
from ..store.storage import Storage

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

    def __str__(self) -> str:
        keys = ", ".join(self.blocked_keys) if self.blocked_keys else "-"
        return (
            f"{self.name}: checkpoint {self.checkpoint}/{self.head} (lag {self.lag}), "
            f"retrying {self.retrying}, parked {self.parked}, dead letters "
            f"{self.dead_letters}, blocked keys: {keys}; moved "
            f"{to_datetime(self.updated_at).isoformat(timespec='seconds')}"
        )


def subscriber_status(
    storage: Storage, dlq: DeadLetterQueue, name: str | None = None
) -> list[SubscriberStatus]:
    """The status of every durable subscriber known to ``storage`` (or of one, by
    ``name``), sorted by name; read from the storage alone, so it works in any process
    (the CLI). ``dlq`` adds each subscriber's dead letters and the keys they block.
    """
    if name is None:
        checkpoints = storage.checkpoints.list()
    else:
        found = storage.checkpoints.get(name)
        checkpoints = [] if found is None else [found]
    if not checkpoints:
        return []
    head = storage.events.head_position()
    retries: dict[str, tuple[int, int, set[str]]] = {}
    for entry in storage.retries.entries(name):
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
        out.append(
            SubscriberStatus(
                name=checkpoint.name,
                checkpoint=checkpoint.position,
                head=head,
                lag=max(0, head - checkpoint.position),
                blocked_keys=tuple(sorted(keys)),
                retrying=waiting,
                parked=parked,
                dead_letters=len(letters),
                updated_at=checkpoint.updated_at,
            )
        )
    return out
