"""Orchestrated saga instances, rewritten after every step."""

from __future__ import annotations

import abc

__all__ = ["SagaStore"]


class SagaStore(abc.ABC):  # noqa: B024 - the contract is being written
    """Orchestrated saga instances, rewritten after every step."""
