"""Write the API reference, ``docs/api.md``, from the docstrings of ``eventlite.__all__``
and of the ``__all__`` of each public module (MODULES).

    python docs/_api.py            # print the page
    python docs/_api.py --write    # write docs/api.md

Every public name gets a section with its signature and its docstring; a class also lists
its public methods and properties, each with its signature and the first paragraph of its
docstring. A constant or alias takes the docstring written under its assignment in the
source. ``tests/test_api_docs.py`` checks that the committed page is what this script
prints, so run it with ``--write`` after changing a public docstring or signature.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ForwardRef

import eventlite

# The public modules whose names the page documents after the top level's, in this order;
# a name is documented once, under the first module that exports it.
MODULES = [
    "messages",
    "codec",
    "envelope",
    "exceptions",
    "bus",
    "middleware",
    "metrics",
    "clock",
    "store",
    "sqlite",
    "memory",
    "postgres",
    "relay",
    "dlq",
    "inbox",
    "idempotency",
    "queue",
    "projection",
    "saga",
    "process",
    "scheduler",
    "snapshot",
    "aggregate",
    "repository",
    "unit_of_work",
    "retry",
    "app",
    "aio",
    "bridges",
    "bridges.outbound",
    "bridges.inbound",
    "bridges.tracing",
    "streams",
    "testing",
]

PAGE = Path(__file__).resolve().parent / "api.md"

HEADER = """\
# API reference

First every name that `import eventlite` gives (the everyday ones), then, module by
module, the public names that live in the module of their concept (`eventlite.store`,
`eventlite.sqlite`, `eventlite.queue`, …), each in alphabetical order with its signature
and its docstring. This page is generated from the code by `docs/_api.py` (run
`python docs/_api.py --write` after changing a docstring; a test checks the page is up to
date). The command line is described in [the command line](cli.md).
"""


def _annotation(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return ""
    if isinstance(value, ForwardRef):  # attrs classes keep string annotations this way
        return value.__forward_arg__
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _default(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    text = repr(value)
    if " at 0x" in text:  # an object without a stable repr
        return f"<{type(value).__name__}>"
    return text


def _signature(obj: Callable[..., Any], *, skip_first: bool = False, returns: bool = True) -> str:
    """The parameters and return annotation as written in the source (``from __future__
    import annotations`` keeps them as strings), without memory addresses."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    parts: list[str] = []
    params = list(sig.parameters.values())
    if skip_first and params:
        params = params[1:]
    star_done = False
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if p.kind is p.VAR_POSITIONAL:
            star_done = True
            text = f"*{p.name}"
        elif p.kind is p.VAR_KEYWORD:
            text = f"**{p.name}"
        else:
            text = p.name
        annotation = _annotation(p.annotation)
        if annotation:
            text += f": {annotation}"
        if p.default is not p.empty:
            text += f" = {_default(p.default)}" if annotation else f"={_default(p.default)}"
        parts.append(text)
        if p.kind is p.POSITIONAL_ONLY and (
            i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY
        ):
            parts.append("/")
    result = f"({', '.join(parts)})"
    returned = _annotation(sig.return_annotation) if returns else ""
    return f"{result} -> {returned}" if returned else result


def _source_docs() -> dict[str, str]:
    """``NAME -> docstring`` of every module-level assignment in eventlite followed by a
    string (how this code base documents constants and aliases)."""
    docs: dict[str, str] = {}
    root = Path(eventlite.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        body = tree.body
        for node, after in itertools.pairwise(body):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            doc = after.value if isinstance(after, ast.Expr) else None
            if not (isinstance(doc, ast.Constant) and isinstance(doc.value, str)):
                continue
            for target in targets:
                if isinstance(target, ast.Name):
                    docs.setdefault(target.id, inspect.cleandoc(doc.value))
    return docs


def _first_paragraph(doc: str) -> str:
    return doc.split("\n\n", 1)[0].strip()


def _fenced(text: str) -> list[str]:
    return ["```text", *text.splitlines(), "```"]


def _members(cls: type[Any]) -> Iterator[tuple[str, list[str]]]:
    """The public methods and properties a class defines itself (not ``object``'s), by
    name, each as a signature line and the first paragraph of its docstring."""
    for name in sorted(vars(cls)):
        if name.startswith("_"):
            continue
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, property):
            doc = inspect.getdoc(raw) or ""
            yield name, [f"{name}  (property)", *_first_paragraph(doc).splitlines()]
        elif isinstance(raw, (staticmethod, classmethod)) or inspect.isfunction(raw):
            fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
            skip = not isinstance(raw, staticmethod)
            doc = inspect.getdoc(fn) or ""
            prefix = "classmethod " if isinstance(raw, classmethod) else ""
            head = f"{prefix}{name}{_signature(fn, skip_first=skip)}"
            yield name, [head, *_first_paragraph(doc).splitlines()]


def _section(
    name: str, obj: Any, source_docs: dict[str, str], module: str = "eventlite"
) -> list[str]:
    title = name if module == "eventlite" else f"{module}.{name}"
    lines = [f"### `{title}`", ""]
    if inspect.isclass(obj):
        if issubclass(obj, enum.Enum):
            head = f"class {name}(enum.Enum): " + ", ".join(m.name for m in obj)
        elif issubclass(obj, BaseException):
            bases = ", ".join(b.__name__ for b in obj.__bases__)
            head = f"exception {name}({bases})"
            if "__init__" in vars(obj):
                head += f"\n{name}{_signature(obj, returns=False)}"
        else:
            head = f"class {name}{_signature(obj, returns=False)}"
        doc = inspect.getdoc(obj) or ""
        lines += _fenced(head + ("\n\n" + doc if doc else ""))
        members = list(_members(obj))
        if members and not issubclass(obj, (BaseException, enum.Enum)):
            lines += ["", "Members:", ""]
            for _, text in members:
                lines += [f"- `{text[0]}`" + (":" if text[1:] else "")]
                lines += [f"  {line}" if line else "" for line in text[1:]]
    elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
        lines += _fenced(f"{name}{_signature(obj)}\n\n{inspect.getdoc(obj) or ''}".rstrip())
    else:
        what = _default(obj) if isinstance(obj, enum.Enum) else f"<{type(obj).__name__}>"
        if type(obj).__module__ in ("types", "typing"):
            what = str(obj).replace("eventlite.store.", "")
        doc = source_docs.get(name, "")
        lines += _fenced(f"{name} = {what}" + ("\n\n" + doc if doc else ""))
    return [*lines, ""]


def render() -> str:
    """The whole page."""
    source_docs = _source_docs()
    parts: list[tuple[str, list[str]]] = [("eventlite", sorted(eventlite.__all__, key=str.lower))]
    seen = set(eventlite.__all__)
    for short in MODULES:
        module = importlib.import_module(f"eventlite.{short}")
        names = sorted((n for n in module.__all__ if n not in seen), key=str.lower)
        seen.update(names)
        if names:
            parts.append((f"eventlite.{short}", names))
    lines = [HEADER, "## Contents", ""]
    for module_name, _names in parts:
        lines.append(f"- [`{module_name}`](#{module_name.replace('.', '')})")
    lines.append("")
    for module_name, names in parts:
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", ""]
        summary = _first_paragraph(inspect.getdoc(module) or "")
        if summary:
            lines += [summary, ""]
        for name in names:
            lines += _section(name, getattr(module, name), source_docs, module_name)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    """Print the page, or write it with ``--write``."""
    page = render()
    if argv == ["--write"]:
        PAGE.write_text(page)
    elif argv:
        print("usage: python docs/_api.py [--write]", file=sys.stderr)
        return 2
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
