"""Tools for testing applications and backends built on eventlite.

- ``eventlite.testing.store_contract``: :class:`EventStoreContract`, the pytest suite every
  event store backend passes (needs ``pytest`` and ``hypothesis``, imported only when this
  name is used).
"""

from __future__ import annotations

from typing import Any

__all__ = ["EventStoreContract"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing eventlite.testing does not require pytest.
    if name == "EventStoreContract":
        from .store_contract import EventStoreContract

        return EventStoreContract
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
