"""The pytest plugin: installed through its entry point, its fixtures give each test a fresh
app on a temporary file or in memory, the app's store and registry, and a fake clock."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from eventlite.app import App
from eventlite.messages import Registry, event
from eventlite.unit_of_work import UnitOfWork

pytest_plugins = ["pytester"]


def test_the_plugin_is_installed_as_a_pytest11_entry_point() -> None:
    """pytest finds the plugin in eventlite's metadata, with no conftest needed."""
    found = {(ep.name, ep.value) for ep in entry_points(group="pytest11")}
    assert ("eventlite", "eventlite.testing.plugin") in found


APP_TESTS = """
from decimal import Decimal

import pytest

import eventlite
from eventlite.clock import FAKE_EPOCH, FakeClock

registry = eventlite.Registry()


@eventlite.event(registry=registry)
class Deposited:
    amount: Decimal


@pytest.fixture
def eventlite_registry():
    return registry


apps = []


def test_default_app_is_on_a_temporary_file(eventlite_app, eventlite_store, tmp_path):
    apps.append(eventlite_app)
    assert eventlite_app.database is not None
    assert str(tmp_path / "eventlite.db") == eventlite_app.database.path
    assert eventlite_store is eventlite_app.store
    assert registry is eventlite_app.registry
    eventlite_store.append("acc-1", [Deposited(Decimal(5))])
    assert 1 == eventlite_store.head_position()


def test_each_test_gets_a_fresh_app_and_the_last_is_closed(eventlite_app):
    assert apps[0].bus.closed
    assert 0 == eventlite_app.store.head_position()


@pytest.mark.eventlite(storage="memory")
def test_the_marker_chooses_memory(eventlite_app):
    assert eventlite_app.database is None


@pytest.mark.parametrize("eventlite_storage", ["sqlite", "memory"])
def test_parametrized_storage(eventlite_app, eventlite_storage):
    assert (eventlite_storage == "sqlite") == (eventlite_app.database is not None)


@pytest.mark.eventlite(storage="postgres")
def test_bad_storage(eventlite_app):
    pass


def test_fake_clock(fake_clock):
    assert isinstance(fake_clock, FakeClock)
    assert FAKE_EPOCH == fake_clock.now()
    fake_clock.advance(60)
    assert FAKE_EPOCH + 60 == fake_clock.now()
"""


def test_fixtures_in_a_project_of_their_own(pytester: pytest.Pytester) -> None:
    """A project's tests use the fixtures without importing anything from the plugin; the
    marker is registered (--strict-markers), and an unknown storage errors its test with a
    message naming where the value came from."""
    pytester.makepyfile(test_app=APP_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=6, errors=1)
    result.stdout.fnmatch_lines(
        ["*@pytest.mark.eventlite(storage=...) must be 'sqlite' or 'memory', got 'postgres'*"]
    )


def test_the_ini_option_chooses_memory(pytester: pytest.Pytester) -> None:
    """eventlite_storage = memory in the ini file makes in-memory apps."""
    pytester.makeini("[pytest]\neventlite_storage = memory\n")
    pytester.makepyfile(
        test_ini="def test_memory(eventlite_app):\n    assert eventlite_app.database is None\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


_factory_registry = Registry()


@event(registry=_factory_registry)
class _Seen:
    name: str


def _durable_app(path: str) -> App:
    """An app that needs a file: a durable subscriber copies each _Seen to an audit."""
    app = App(path, registry=_factory_registry, synchronous="normal")

    @app.subscribes(_Seen, durable=True, name="audit", start="beginning")
    def audit(e: _Seen, uow: UnitOfWork) -> None:
        if not e.name.endswith("-audited"):
            uow.append("Audit", [_Seen(e.name + "-audited")])

    return app


@pytest.mark.eventlite(app=_durable_app)
def test_the_marker_names_an_app_factory_given_the_file(eventlite_app: App, tmp_path: Path) -> None:
    """``@pytest.mark.eventlite(app=build)``: the fixture calls the factory by the one
    convention, so ``build(path)``, whose durable subscriber needs a file, gets the test's
    file (before, the fixture could only make a bare app)."""
    assert (tmp_path / "eventlite.db").exists()
    eventlite_app.start()
    eventlite_app.store.append("Seen-1", [_Seen("ada")])
    eventlite_app.run_until_idle()
    assert [_Seen("ada-audited")] == [e.message for e in eventlite_app.store.read_stream("Audit")]
