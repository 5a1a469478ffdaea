"""The public surface: ``eventlite.__all__`` is exactly the package's public names."""

from __future__ import annotations

import types

import eventlite


def test_all_matches_public_names() -> None:
    """Every non-underscore name of the package is in __all__, and nothing else is."""
    public = {
        name
        for name, value in vars(eventlite).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert sorted(public) == sorted(eventlite.__all__)


def test_every_public_name_has_a_docstring() -> None:
    """Every exported class and function says what it does."""
    missing = [
        name
        for name in eventlite.__all__
        if callable(getattr(eventlite, name))
        and not (getattr(eventlite, name).__doc__ or "").strip()
    ]
    assert [] == missing
