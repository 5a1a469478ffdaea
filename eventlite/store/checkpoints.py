"""Durable subscribers' checkpoints: up to where each one's events are settled."""

from __future__ import annotations

import abc

__all__ = ["CheckpointStore"]


class CheckpointStore(abc.ABC):  # noqa: B024 - the contract is being written
    """Durable subscribers' checkpoints: up to where each one's events are settled."""
