"""Process-manager instances and their scheduled timeouts."""

from __future__ import annotations

import abc

__all__ = ["ProcessStore"]


class ProcessStore(abc.ABC):  # noqa: B024 - the contract is being written
    """Process-manager instances and their scheduled timeouts."""
