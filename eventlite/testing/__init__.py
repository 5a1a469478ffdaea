"""Tools for testing applications and backends built on eventlite.

- ``eventlite.testing.scenario``: given/when/then for aggregates
  (:class:`AggregateScenario`), for command handlers run through an App
  (:class:`AppScenario`), for orchestrated sagas (:class:`SagaScenario`) and for process
  managers (:class:`ProcessScenario`); failures raise :class:`ScenarioFailed`, with a
  side-by-side diff.
- ``eventlite.testing.stream_scenario``: :class:`StreamScenario`, given events with times,
  then these rows, events, late counts and dead letters, for a stream run by the durable
  runner on a test app.
- ``eventlite.testing.app``: :class:`TestApp`, the application's composition root on a
  fake clock (in memory or on a temporary file) that records what was dispatched,
  published, dead-lettered and scheduled; ``run_until_idle()`` and ``advance()`` drive it
  without sleeping.
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
    "UNCHECKED",
    "AggregateScenario",
    "AppOutcome",
    "AppScenario",
    "EventStoreContract",
    "ProcessOutcome",
    "ProcessScenario",
    "Record",
    "RecordingBus",
    "SagaOutcome",
    "SagaScenario",
    "ScenarioFailed",
    "StreamOutcome",
    "StreamScenario",
    "TestApp",
]

_LAZY = {
    "ANYTHING": ".scenario",
    "UNCHECKED": ".scenario",
    "AggregateScenario": ".scenario",
    "AppOutcome": ".scenario",
    "AppScenario": ".scenario",
    "ProcessOutcome": ".scenario",
    "ProcessScenario": ".scenario",
    "SagaOutcome": ".scenario",
    "SagaScenario": ".scenario",
    "ScenarioFailed": ".scenario",
    "StreamOutcome": ".stream_scenario",
    "StreamScenario": ".stream_scenario",
    "Record": ".app",
    "RecordingBus": ".app",
    "TestApp": ".app",
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
