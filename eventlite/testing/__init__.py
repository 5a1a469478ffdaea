"""Tools for testing applications and backends built on eventlite.

- ``eventlite.testing.scenario``: given/when/then for aggregates
  (:class:`AggregateScenario`) and for command handlers run through an App
  (:class:`AppScenario`); failures raise :class:`ScenarioFailed`, with a side-by-side diff.
- ``eventlite.testing.strategies``: hypothesis strategies for registered message classes
  (needs ``hypothesis``).
- ``eventlite.testing.plugin``: the pytest plugin, loaded by pytest on its own; fixtures
  ``eventlite_app``, ``eventlite_store``, ``eventlite_registry``, ``eventlite_storage``,
  ``fake_clock``.
- ``eventlite.testing.store_contract``: :class:`EventStoreContract`, the pytest suite every
  event store backend passes (needs ``pytest`` and ``hypothesis``).

Every name here is imported only when used, so importing ``eventlite.testing`` requires
neither pytest nor hypothesis.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ANYTHING",
    "AggregateScenario",
    "AppOutcome",
    "AppScenario",
    "EventStoreContract",
    "ScenarioFailed",
]

_LAZY = {
    "ANYTHING": ".scenario",
    "AggregateScenario": ".scenario",
    "AppOutcome": ".scenario",
    "AppScenario": ".scenario",
    "ScenarioFailed": ".scenario",
    "EventStoreContract": ".store_contract",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing eventlite.testing does not require pytest.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
