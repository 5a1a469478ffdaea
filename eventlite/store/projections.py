"""Projections' checkpoints and status."""

from __future__ import annotations

import abc

__all__ = ["ProjectionStore"]


class ProjectionStore(abc.ABC):  # noqa: B024 - the contract is being written
    """Projections' checkpoints and status."""
