"""The package's shape, checked: layers import only downwards, no module imports itself back
through others, and SQL lives only in the backend packages (DESIGN §10a).

The layers, bottom up (a module may import from its own layer and those below):

0. messages, exceptions, the clock, ids
1. envelope, codec
2. the bus, its middleware, retry policies
3. the store protocols and the backends that implement them (sqlite, memory, postgres)
4. the domain: aggregates, snapshots, repositories, the unit of work
5. delivery: inbox, idempotency, dead letters, the relay, work queues, the scheduler,
   metrics, bridges
6. the read side and processes: projections, sagas, process managers, streams
7. the app (the composition root) and its asyncio facade
8. the CLI, the testing toolkit, the package's own ``__init__`` and ``__main__``
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "eventlite"

LAYERS: dict[str, int] = {
    "eventlite._ids": 0,
    "eventlite._types": 0,
    "eventlite.exceptions": 0,
    "eventlite.clock": 0,
    "eventlite.messages": 0,
    "eventlite.envelope": 1,
    "eventlite.codec": 1,
    "eventlite._checks": 1,
    "eventlite.bus": 2,
    "eventlite.middleware": 2,
    "eventlite.retry": 2,
    "eventlite.store": 3,
    "eventlite.sqlite": 3,
    "eventlite.memory": 3,
    "eventlite.postgres": 3,
    "eventlite.aggregate": 4,
    "eventlite.snapshot": 4,
    "eventlite.repository": 4,
    "eventlite.unit_of_work": 4,
    "eventlite.inbox": 5,
    "eventlite.idempotency": 5,
    "eventlite.dlq": 5,
    "eventlite.relay": 5,
    "eventlite.queue": 5,
    "eventlite.scheduler": 5,
    "eventlite.metrics": 5,
    "eventlite.bridges": 5,
    "eventlite.projection": 6,
    "eventlite.saga": 6,
    "eventlite.process": 6,
    "eventlite.streams": 6,
    "eventlite.app": 7,
    "eventlite.aio": 7,
    "eventlite.cli": 8,
    "eventlite.testing": 8,
    "eventlite.__main__": 8,
    "eventlite": 8,
}

BACKENDS = ("eventlite/sqlite/", "eventlite/postgres/")
"""The only places where SQL may be written."""

_SQL = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|REPLACE|PRAGMA|BEGIN|COMMIT|"
    r"ROLLBACK|SAVEPOINT|RELEASE|WITH|VACUUM|LISTEN|NOTIFY)\b"
)


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, *, top_level_only: bool) -> set[str]:
    """The eventlite modules ``module`` imports (outside ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(nodes: list[ast.stmt], top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("eventlite"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    if not is_package:
                        base = base[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if target.startswith("eventlite"):
                    if node.module is not None or node.level == 0:
                        found.add(target)
                    for alias in node.names:  # `from . import x` may name a submodule
                        found.add(f"{target}.{alias.name}")
            if top_level_only and isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            ):
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    visit([c for c in children if isinstance(c, ast.stmt)], top)
                    for handler in children:
                        if isinstance(handler, ast.ExceptHandler):
                            visit(handler.body, top)

    visit(tree.body, True)
    known = {name for name, _ in _modules()}
    return {name for name in found if name in known and name != module}


def _layer(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:i]))
        if layer is not None:
            return layer
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in this test")


def test_every_module_has_a_layer() -> None:
    """Each module of the package is placed in one of the layers."""
    for module, _ in _modules():
        _layer(module)


def test_no_module_imports_a_higher_layer() -> None:
    """Dependencies point down: no module imports from a layer above its own (imports
    under ``if TYPE_CHECKING:`` excepted, since they never run)."""
    upward = []
    for module, path in _modules():
        own = _layer(module)
        for target in sorted(_imports(module, path, top_level_only=False)):
            if _layer(target) > own:
                upward.append(f"{module} (layer {own}) imports {target} (layer {_layer(target)})")
    assert [] == upward


def test_no_import_cycles() -> None:
    """No module imports itself back through others at import time (a package's
    ``__init__`` importing a submodule that imports names from the package is such a loop)."""
    graph = {module: _imports(module, path, top_level_only=True) for module, path in _modules()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)
    assert [] == cycles


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value
                for v in node.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
            yield node.lineno, text


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_exist(backend: str) -> None:
    """The backend directories this test exempts are real (a rename must update it)."""
    if backend == "eventlite/postgres/" and not (PACKAGE.parent / backend).exists():
        pytest.skip("no PostgreSQL backend in this tree")
    assert (PACKAGE.parent / backend).is_dir()


def test_sql_only_in_backend_packages() -> None:
    """No string that starts like a SQL statement appears outside eventlite/sqlite/ and
    eventlite/postgres/ (docstrings aside)."""
    found = []
    for _, path in _modules():
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if rel.startswith(BACKENDS):
            continue
        for line, text in _strings(ast.parse(path.read_text())):
            if _SQL.match(text):
                found.append(f"{rel}:{line}: {text.strip()[:60]!r}")
    assert [] == found
