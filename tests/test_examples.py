"""Every example runs as ``python -m examples.<name>`` and prints what the docs promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "bank": """\
last year's app stored 3 events, deposits in cents
today's app reads them upcast: ada has 13.49
after 120 deposits: 133.00
refused: acc-1: balance 133.00 < 1000
loaded from the snapshot at version 100 plus 24 later events: version 124, balance 133.00
stored rows still at schema version 1: 2
""",
    "quickstart": """\
dispatch PlaceOrder o-1
  handling PlaceOrder o-1
  event OrderPlaced #1 in Order-o-1 v1
dispatch PlaceOrder o-2
  handling PlaceOrder o-2
  event OrderPlaced #2 in Order-o-2 v1
dispatch CancelOrder o-1
  handling CancelOrder o-1
  event OrderCancelled #3 in Order-o-1 v2
ask OpenOrders -> ['o-2: kettle']
dispatch CancelOrder o-1 again
  handling CancelOrder o-1
  refused: order o-1 is already cancelled
reopened quickstart.db: 3 events stored
  Order o-1 at version 2, cancelled=True
""",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_output(name: str) -> None:
    """The example exits 0 and prints exactly its expected trace."""
    result = subprocess.run(
        [sys.executable, "-m", f"examples.{name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 0 == result.returncode, result.stderr
    assert EXPECTED[name] == result.stdout


def test_every_example_is_checked() -> None:
    """Each module in examples/ has an expected output here."""
    modules = {p.stem for p in (ROOT / "examples").glob("*.py") if not p.stem.startswith("_")}
    assert modules == set(EXPECTED)
