"""The application bridge contract suite on every broker of ``conftest.BROKERS``."""

from __future__ import annotations

from eventlite.testing.contracts.app_bridges import AppBridgeContract


class TestAppBridges(AppBridgeContract):
    """publish_to and consume_from, on the broker of the ``bridge`` fixture."""
