"""Work queues' messages: visibility, receipts, FIFO groups, dedupe ids."""

from __future__ import annotations

import abc

__all__ = ["QueueStore"]


class QueueStore(abc.ABC):  # noqa: B024 - the contract is being written
    """Work queues' messages: visibility, receipts, FIFO groups, dedupe ids."""
