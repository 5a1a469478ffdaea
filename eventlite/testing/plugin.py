"""The eventlite pytest plugin: fixtures for testing applications built on eventlite.

Installed with eventlite and loaded by pytest through the ``pytest11`` entry point, so the
fixtures are there in every test without an import:

- ``eventlite_app``: a fresh :class:`~eventlite.App`, closed after the test; on a SQLite
  file in the test's temporary directory, or in memory (see ``eventlite_storage``).
- ``eventlite_store``: that app's event store.
- ``eventlite_registry``: the registry the app is built with; ``eventlite.default_registry``
  unless a ``conftest.py`` overrides the fixture to return the application's own.
- ``eventlite_storage``: ``"sqlite"`` or ``"memory"``, from the test's
  ``@pytest.mark.eventlite(storage=...)`` marker, else the ``eventlite_storage`` ini option
  (default ``"sqlite"``). Parametrize it to run a test on both:
  ``@pytest.mark.parametrize("eventlite_storage", ["sqlite", "memory"])``.
- ``fake_clock``: a :class:`~eventlite.clock.FakeClock` standing at its fixed start.
- ``eventlite_test_app``: a :class:`~eventlite.testing.TestApp` (a bare app with a
  recording bus) on ``fake_clock``, with the ``eventlite_registry`` and storage, closed
  after the test.

eventlite itself is imported only when a fixture is used, so the plugin costs nothing in a
test run that does not use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..app import App
    from ..clock import FakeClock
    from ..messages import Registry
    from ..store.events import EventStore
    from .app import TestApp

__all__ = [
    "eventlite_app",
    "eventlite_registry",
    "eventlite_storage",
    "eventlite_store",
    "eventlite_test_app",
    "fake_clock",
    "pytest_addoption",
    "pytest_configure",
]

STORAGES = ("sqlite", "memory")
"""What ``eventlite_storage`` may be."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the ``eventlite_storage`` ini option."""
    parser.addini(
        "eventlite_storage",
        help="where the eventlite_app fixture keeps its events: sqlite (a temporary file, "
        "the default) or memory",
        default="sqlite",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``eventlite`` marker."""
    config.addinivalue_line(
        "markers",
        "eventlite(storage, app): storage='sqlite' or 'memory' for this test's eventlite_app; "
        "app=factory makes it, called by eventlite.app.call_app_factory",
    )


@pytest.fixture
def eventlite_registry() -> Registry:
    """The registry ``eventlite_app`` is built with: override this fixture in a
    ``conftest.py`` to return the application's own registry."""
    from ..messages import default_registry

    return default_registry


@pytest.fixture
def eventlite_storage(request: pytest.FixtureRequest) -> str:
    """``"sqlite"`` or ``"memory"``: the ``eventlite`` marker's ``storage``, else the
    ``eventlite_storage`` ini option."""
    marker = request.node.get_closest_marker("eventlite")
    storage = marker.kwargs.get("storage") if marker is not None else None
    where = "@pytest.mark.eventlite(storage=...)"
    if storage is None:
        storage = request.config.getini("eventlite_storage")
        where = "the eventlite_storage ini option"
    if storage not in STORAGES:
        raise pytest.UsageError(f"{where} must be 'sqlite' or 'memory', got {storage!r}")
    return str(storage)


@pytest.fixture
def eventlite_app(
    request: pytest.FixtureRequest, eventlite_registry: Registry, eventlite_storage: str
) -> Iterator[App]:
    """A fresh :class:`~eventlite.App` with the ``eventlite_registry``, closed after the
    test; on ``eventlite.db`` in the test's ``tmp_path`` (``synchronous="normal"``: a test
    needs no protection from power loss) or in memory.

    ``@pytest.mark.eventlite(app=build)`` makes it with the application's factory instead,
    by the one convention of :func:`~eventlite.app.call_app_factory`: a factory that
    takes a store is given that file (``None`` in memory), and the registry when it names
    ``registry``."""
    from ..app import App, call_app_factory

    marker = request.node.get_closest_marker("eventlite")
    factory = marker.kwargs.get("app") if marker is not None else None
    if factory is not None:
        db = None
        if eventlite_storage != "memory":
            db = request.getfixturevalue("tmp_path") / "eventlite.db"
        app = call_app_factory(factory, db, registry=eventlite_registry)
        if not isinstance(app, App):
            raise pytest.UsageError(f"the eventlite marker's app= made {app!r}, not an App")
    elif eventlite_storage == "memory":
        app = App(registry=eventlite_registry)
    else:
        tmp_path = request.getfixturevalue("tmp_path")
        app = App(tmp_path / "eventlite.db", registry=eventlite_registry, synchronous="normal")
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def eventlite_store(eventlite_app: App) -> EventStore:
    """The event store of ``eventlite_app``."""
    return eventlite_app.store


@pytest.fixture
def fake_clock() -> FakeClock:
    """A :class:`~eventlite.clock.FakeClock` at ``eventlite.clock.FAKE_EPOCH``; move it
    with ``advance(seconds)``."""
    from ..clock import FakeClock

    return FakeClock()


@pytest.fixture
def eventlite_test_app(
    eventlite_registry: Registry, eventlite_storage: str, fake_clock: FakeClock
) -> Iterator[TestApp]:
    """A :class:`~eventlite.testing.TestApp` with a bare app to wire through ``.app``, on
    ``fake_clock``, in ``eventlite_storage``; closed (and its temporary file removed) after
    the test."""
    from .app import TestApp

    with TestApp(registry=eventlite_registry, storage=eventlite_storage, clock=fake_clock) as t:
        yield t
