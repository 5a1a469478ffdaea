"""Every backend's lease store runs the one contract suite."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.leases")

from eventlite.testing.contracts.leases import LeaseStoreContract  # noqa: E402


class TestLeases(LeaseStoreContract):
    """Leases on every backend of the make_storage fixture."""
