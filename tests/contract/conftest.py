"""The backends every store contract runs on: a new backend is a new parameter here."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlite.codec import Codec
from eventlite.memory import MemoryStorage
from eventlite.sqlite import SQLiteStorage
from eventlite.store.storage import Storage
from eventlite.testing.contracts import StorageFactory
from tests.postgres._pg import recycled_storage, require_postgres

BACKENDS: dict[str, tuple[str, ...] | None] = {
    "sqlite": None,
    "postgres": (
        "TestCheckpoints",
        "TestClaims",
        "TestDeadLetters",
        "TestIdempotency",
        "TestInbox",
        "TestLeases",
        "TestProcesses",
        "TestProjections",
        "TestQueues",
        "TestRetries",
        "TestSagas",
        "TestStorage",
        "TestStreams",
    ),
    "memory": ("TestClaims", "TestStorage"),
}
"""Each backend, and the contract suites (test classes) it runs: None for every one. A
backend that does not keep some kind of state (the in-memory one keeps no dead letters)
is not run against that suite at all."""


EXAMPLES: dict[str, float] = {"postgres": 1 / 3}
"""The share of each suite's state-machine examples a backend runs (1 when not named):
a PostgreSQL call is a round trip to the server, some ten times a SQLite call, so its
machines run a third of the examples (as TestPostgresStore does); set
EVENTLITE_CONTRACT_EXAMPLES=all to run every one (a soak run)."""


@pytest.fixture(autouse=True)
def _examples_per_backend(request: pytest.FixtureRequest) -> None:
    """Scale ``state_machine_examples`` of the running suite by :data:`EXAMPLES`."""
    callspec = getattr(request.node, "callspec", None)
    backend = callspec.params.get("make_storage") if callspec is not None else None
    share = EXAMPLES.get(backend, 1.0) if isinstance(backend, str) else 1.0
    if share == 1.0 or request.instance is None:
        return
    if os.environ.get("EVENTLITE_CONTRACT_EXAMPLES") == "all":
        return
    examples = getattr(request.instance, "state_machine_examples", None)
    if isinstance(examples, int):
        request.instance.state_machine_examples = max(5, round(examples * share))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each contract suite on every backend that keeps its store."""
    if "make_storage" not in metafunc.fixturenames:
        return
    suite = metafunc.cls.__name__ if metafunc.cls is not None else ""
    params = [
        pytest.param(name, marks=pytest.mark.services) if name == "postgres" else name
        for name, suites in BACKENDS.items()
        if suites is None or suite in suites
    ]
    metafunc.parametrize("make_storage", params, indirect=True)


@pytest.fixture
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageFactory]:
    """A factory of new, empty storages of one backend; everything made is closed after
    the test."""
    made: list[Storage] = []
    numbers = itertools.count()

    def sqlite(codec: Codec) -> Storage:
        storage = SQLiteStorage(tmp_path / f"contract-{next(numbers)}.db", codec=codec)
        made.append(storage)
        return storage

    def postgres(codec: Codec) -> Storage:
        storage = recycled_storage(url, codec)  # its schema is emptied when it is closed
        made.append(storage)
        return storage

    if request.param == "postgres":
        url = require_postgres()

    def memory(codec: Codec) -> Storage:
        storage = MemoryStorage(codec=codec)
        made.append(storage)
        return storage

    factories = {"sqlite": sqlite, "postgres": postgres, "memory": memory}
    yield factories[request.param]
    for storage in made:
        storage.close()
