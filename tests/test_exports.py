"""The public surface: ``eventlite.__all__`` holds the everyday names and is exactly the
package's public names; every other public name lives in the ``__all__`` of the module of
its concept, resolves there, and says what it does."""

from __future__ import annotations

import importlib
import types

import pytest

import eventlite

# The modules whose names are public (besides the top level), as in docs/_api.py.
MODULES = [
    "aggregate",
    "aio",
    "app",
    "bridges",
    "bus",
    "clock",
    "codec",
    "dlq",
    "envelope",
    "exceptions",
    "idempotency",
    "inbox",
    "memory",
    "messages",
    "metrics",
    "middleware",
    "postgres",
    "process",
    "projection",
    "queue",
    "relay",
    "repository",
    "retry",
    "saga",
    "scheduler",
    "snapshot",
    "sqlite",
    "store",
    "streams",
    "testing",
    "unit_of_work",
]


def test_all_matches_public_names() -> None:
    """Every non-underscore name of the package is in __all__, and nothing else is."""
    public = {
        name
        for name, value in vars(eventlite).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert sorted(public) == sorted(eventlite.__all__)


def test_the_top_level_keeps_the_everyday_names_only() -> None:
    """At most 60 names: messages, the app, aggregates, the errors users catch."""
    assert len(eventlite.__all__) <= 60


@pytest.mark.parametrize("short", MODULES)
def test_every_module_name_resolves_and_is_documented(short: str) -> None:
    """Each name in a public module's ``__all__`` exists there, and what is callable has
    a docstring."""
    module = importlib.import_module(f"eventlite.{short}")
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"eventlite.{short} has no __all__"
    missing = [name for name in exported if not hasattr(module, name)]
    assert [] == missing
    undocumented = [
        name
        for name in exported
        if callable(getattr(module, name))
        # aliases (Literal, unions) are documented by the string under their assignment
        and type(getattr(module, name)).__module__
        not in ("typing", "types", "collections.abc", "_collections_abc")
        and not (getattr(module, name).__doc__ or "").strip()
    ]
    assert [] == undocumented


def test_the_store_package_exports_every_store_protocol() -> None:
    """``eventlite.store`` re-exports every protocol its modules define."""
    import eventlite.store as store

    protocols = {
        name
        for name in dir(store)
        if name.endswith("Store") and isinstance(getattr(store, name), type)
    }
    assert protocols <= set(store.__all__)


def test_every_public_name_has_a_docstring() -> None:
    """Every exported class and function says what it does."""
    missing = [
        name
        for name in eventlite.__all__
        if callable(getattr(eventlite, name))
        and not (getattr(eventlite, name).__doc__ or "").strip()
    ]
    assert [] == missing
