"""docs/postgres.md's examples run against the test server (``py`` blocks: the docs test
of the whole suite runs without a server)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_docs import _expected_output, _is_subsequence

pytestmark = pytest.mark.services

DOCS = Path(__file__).resolve().parent.parent.parent / "docs"
BLOCK = re.compile(r"^```py\n(.*?)^```", re.S | re.M)
DOC_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.parametrize("page", ["postgres.md"])
def test_postgres_examples_run(page: str, pg_url: str, schema: str, tmp_path: Path) -> None:
    """The page's py blocks, run in order in one fresh interpreter on a schema of the
    test's own, raise nothing and print what the page says they print."""
    source = "\n\n".join(BLOCK.findall((DOCS / page).read_text()))
    assert source

    def local(text: str) -> str:
        return text.replace(DOC_URL, pg_url).replace("docs_demo", schema)

    result = subprocess.run(
        [sys.executable, "-c", local(source)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 0 == result.returncode, result.stderr[-3000:]
    expected = [local(line) for line in _expected_output(source)]
    actual = [line.rstrip() for line in result.stdout.splitlines()]
    assert _is_subsequence(expected, actual), (expected, actual)
