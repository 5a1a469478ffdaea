"""The docs are part of the product: every Python code block runs, and every public name is
documented somewhere in docs/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import eventlite

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def _expected_output(source: str) -> list[str]:
    """What the page says its prints print: the comment after a one-line ``print(...)``,
    or the comment line right below a ``print(...)`` with none."""
    lines = source.splitlines()
    expected = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("print("):
            continue
        if "  # " in stripped:
            expected.append(stripped.split("  # ", 1)[1])
        elif i + 1 < len(lines) and lines[i + 1].strip().startswith("# "):
            expected.append(lines[i + 1].strip()[2:])
    return expected


def _is_subsequence(wanted: list[str], actual: list[str]) -> bool:
    it = iter(actual)
    return all(any(w == a for a in it) for w in wanted)


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: p.name)
def test_code_blocks_run(page: Path, tmp_path: Path) -> None:
    """A page's Python blocks, run in order in one fresh interpreter, raise nothing and print
    what the page says they print."""
    source = "\n\n".join(_blocks(page))
    result = subprocess.run(
        [sys.executable, "-c", source],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 0 == result.returncode, f"{page.name}:\n{result.stderr[-3000:]}"
    expected = _expected_output(source)
    actual = [line.rstrip() for line in result.stdout.splitlines()]
    assert _is_subsequence(expected, actual), f"{page.name}: expected {expected}, got {actual}"


def test_every_public_name_is_documented() -> None:
    """Each name in eventlite.__all__ appears on at least one concept page (the generated
    API reference does not count: it lists every name by construction)."""
    text = "\n".join(p.read_text() for p in DOCS.glob("*.md") if p.name != "api.md")
    missing = [name for name in eventlite.__all__ if not re.search(rf"\b{name}\b", text)]
    assert [] == missing
