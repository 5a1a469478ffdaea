"""The sequenced dead-letter queue's entries."""

from __future__ import annotations

import abc

__all__ = ["DeadLetterStore"]


class DeadLetterStore(abc.ABC):  # noqa: B024 - the contract is being written
    """The sequenced dead-letter queue's entries."""
