"""The bridge contract suite on every broker of conftest.py."""

from __future__ import annotations

import pytest

from eventlite.testing.contracts.bridges import BridgeContract

pytestmark = pytest.mark.services


class TestBridges(BridgeContract):
    """Every transport, against its real broker."""
