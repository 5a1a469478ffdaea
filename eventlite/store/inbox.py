"""The inbox: the message ids each consumer has handled, with their effects."""

from __future__ import annotations

import abc

__all__ = ["InboxStore"]


class InboxStore(abc.ABC):  # noqa: B024 - the contract is being written
    """The inbox: the message ids each consumer has handled, with their effects."""
