"""The generated API reference is current, and every page of docs/ can be reached from its
index."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import eventlite

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_api", DOCS / "_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_api_reference_is_what_the_script_writes() -> None:
    """docs/api.md is the output of docs/_api.py; after changing a public docstring or
    signature, run ``python docs/_api.py --write``."""
    assert _generator().render() == (DOCS / "api.md").read_text()


def test_the_api_reference_has_a_section_for_every_public_name() -> None:
    """Each name of eventlite.__all__ heads one section of docs/api.md, in alphabetical
    order, and so does every public name of the modules the page covers (under the
    first module that exports it)."""
    page = (DOCS / "api.md").read_text()
    headings = re.findall(r"^### `([^`]+)`$", page, re.M)
    top = [h for h in headings if "." not in h]
    assert sorted(eventlite.__all__, key=str.lower) == top
    documented = set(top) | {h.rsplit(".", 1)[1] for h in headings if "." in h}
    generator = _generator()
    for short in generator.MODULES:
        module = importlib.import_module(f"eventlite.{short}")
        assert set(module.__all__) <= documented, short


def test_no_page_is_orphaned() -> None:
    """docs/index.md links every other page in docs/, and every link it holds leads to a
    page that exists."""
    index = (DOCS / "index.md").read_text()
    linked = set(re.findall(r"\]\(([a-z0-9-]+\.md)(?:#[^)]*)?\)", index))
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    assert (pages, set()) == (linked & pages, linked - pages)
