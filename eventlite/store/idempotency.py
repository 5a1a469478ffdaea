"""Idempotency keys: claimed, running or done, with their results."""

from __future__ import annotations

import abc

__all__ = ["IdempotencyStore"]


class IdempotencyStore(abc.ABC):  # noqa: B024 - the contract is being written
    """Idempotency keys: claimed, running or done, with their results."""
