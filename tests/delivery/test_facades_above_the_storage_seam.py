"""The dead-letter queue, work queue and idempotency facades talk to store protocols only:
no ``sqlite3``, no import of a backend package, no SQL string (DESIGN §10a)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import eventlite

PACKAGE = Path(eventlite.__file__).parent
FACADES = [
    PACKAGE / "dlq.py",
    PACKAGE / "idempotency.py",
    *sorted((PACKAGE / "queue").glob("*.py")),
]
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE)\b")


def _imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append("." * node.level + (node.module or ""))
    return found


@pytest.mark.parametrize("path", FACADES, ids=lambda p: p.name)
def test_a_facade_imports_no_backend_and_holds_no_sql(path: Path) -> None:
    """The module imports neither sqlite3 nor eventlite.sqlite, and no string in it is SQL."""
    tree = ast.parse(path.read_text())
    backends = [
        name
        for name in _imports(tree)
        if name == "sqlite3" or re.fullmatch(r"(eventlite|\.+)\.?sqlite(\..*)?", name)
    ]
    sql = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)
    ]
    assert ([], []) == (backends, sql)
