"""One convention for calling an application's factory, shared by ``graph``, ``events
--app``, ``projections rebuild --app`` and the testing toolkit (issue 9, §5): a factory
that takes the store is given one, a factory that takes nothing is called with nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from eventlite.app import App, call_app_factory, factory_takes_db

from ._run import run
from .test_graph import FLOW


def _db(db: str) -> str:
    return f"db={db}"


def _positional(path: str, registry: Any = None) -> str:
    return f"path={path} registry={registry}"


def _keyword(*, db: str | None = None, clock: Any = None) -> str:
    return f"db={db} clock={clock}"


def _options(db: str | None = None, **options: Any) -> str:
    return f"db={db} {sorted(options)}"


def _nothing() -> str:
    return "nothing"


def _defaults_only(registry: Any = None) -> str:
    return f"registry={registry}"


@pytest.mark.parametrize(
    ("factory", "takes", "made"),
    [
        (_db, True, "db=shop.db"),
        (_positional, True, "path=shop.db registry=R"),
        (_keyword, True, "db=shop.db clock=None"),
        (_options, True, "db=shop.db ['bus', 'registry']"),
        (_nothing, False, "nothing"),
        (_defaults_only, False, "registry=R"),
    ],
)
def test_the_convention(factory: Any, takes: bool, made: str) -> None:
    """A parameter named ``db``, a ``**options``, or a first positional parameter
    without a default takes the store; options go to the parameters named after them;
    a factory that takes no store is called without one."""
    assert takes == factory_takes_db(factory)
    assert made == call_app_factory(factory, "shop.db", registry="R", bus="B")


def test_a_path_like_store_is_given_as_text(tmp_path: Path) -> None:
    """The store is handed over as ``os.fspath`` of what was given."""
    assert f"db={tmp_path}" == call_app_factory(_db, tmp_path)


def test_graph_gives_a_factory_that_takes_a_store_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``graph`` calls ``build(db)`` with a temporary file, so the durable parts (which
    need one) are drawn; the file is removed afterwards and the working directory left
    alone."""
    monkeypatch.chdir(tmp_path)
    made: list[str] = []
    import tests.cli.test_graph as module

    real = module.build

    def spy(db: str) -> App:
        made.append(db)
        return real(db)

    monkeypatch.setattr(module, "build", spy)
    result = run("graph", "tests.cli.test_graph:build")
    edges = [line for line in result.lines if "==>" in line or "records" in line]
    assert (0, "", FLOW[-9:]) == (result.code, result.err, edges)
    assert [False, []] == [os.path.exists(made[0]), os.listdir(tmp_path)]


def test_graph_calls_a_factory_without_parameters_with_nothing() -> None:
    """A factory that takes nothing makes its own app (here, in memory)."""
    result = run("graph", "tests.cli.test_log_commands:make_graph_app")
    assert (0, "flowchart LR") == (result.code, result.lines[0])


def test_a_factory_that_fails_is_one_line() -> None:
    """A factory that raises (or exits) is reported in one line, exit code 2."""
    result = run("graph", "tests.cli.test_app_factory:broken")
    assert (2, "eventlite: calling tests.cli.test_app_factory:broken failed: SystemExit: 3\n") == (
        result.code,
        result.err,
    )


def broken(db: str) -> App:
    """A factory that exits."""
    raise SystemExit(3)


def durable_shop(db: str) -> App:
    """A factory whose app needs a file: it has a durable subscriber."""
    from .conftest import Placed, registry

    app = App(db, registry=registry, synchronous="normal")

    @app.subscribes(Placed, durable=True, name="audit", start="beginning")
    def audit(e: Placed, uow: Any) -> None:
        if e.order_id.endswith("-seen"):
            return
        uow.append(f"Audit-{e.order_id}", [Placed(e.order_id + "-seen")])

    return app


def test_app_scenario_gives_a_factory_that_takes_a_store_a_temporary_file() -> None:
    """AppScenario follows the same convention: ``durable_shop(db)``, whose durable
    subscriber needs a file, runs on a temporary one, removed afterwards."""
    from eventlite.testing import AppScenario

    from .conftest import Placed

    made: list[str] = []

    def factory(db: str) -> App:
        made.append(db)
        return durable_shop(db)

    def place(app: App) -> None:
        app.store.append("Order-1", [Placed("o-1")])

    AppScenario(factory).when(place).then_streams(
        {"Order-1": [Placed("o-1")], "Audit-o-1": [Placed("o-1-seen")]}
    )
    assert (1, False) == (len(made), os.path.exists(made[0]))


def _options_first(bus: Any, clock: Any) -> str:
    return f"bus={bus} clock={clock}"


def test_a_factory_whose_first_parameter_is_an_option_takes_no_store() -> None:
    """``build(bus, clock)`` names App options, not a store: it is given the options and
    no store (an option's name is never read as the store's parameter)."""
    assert not factory_takes_db(_options_first)
    assert "bus=B clock=C" == call_app_factory(_options_first, "shop.db", bus="B", clock="C")


def test_test_app_gives_a_positional_store_parameter_its_file() -> None:
    """TestApp follows the same convention: ``build(path, *, bus, clock)``, whose durable
    subscriber needs a file, is given the test's temporary file (before, only a parameter
    named ``db`` got it, and ``path`` was left without one)."""
    from eventlite.testing import TestApp

    from .conftest import Placed, registry

    made: list[str] = []

    def build(path: str, *, bus: Any, clock: Any) -> App:
        made.append(path)
        app = App(path, registry=registry, bus=bus, clock=clock, synchronous="normal")

        @app.subscribes(Placed, durable=True, name="audit", start="beginning")
        def audit(e: Placed, uow: Any) -> None:
            if not e.order_id.endswith("-seen"):
                uow.append(f"Audit-{e.order_id}", [Placed(e.order_id + "-seen")])

        return app

    with TestApp(build, registry=registry) as t:
        t.app.store.append("Order-1", [Placed("o-1")])
        t.run_until_idle()
        audited = [e.message for e in t.app.store.read_stream("Audit-o-1")]
    assert [Placed("o-1-seen")] == audited
    assert 1 == len(made) and made[0].endswith("app.db")
