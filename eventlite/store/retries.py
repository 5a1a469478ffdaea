"""Deliveries waiting for a delayed retry, and the messages of the same key held behind them."""

from __future__ import annotations

import abc

__all__ = ["RetryStore"]


class RetryStore(abc.ABC):  # noqa: B024 - the contract is being written
    """Deliveries waiting for a delayed retry, and the messages of the same key held behind them."""
