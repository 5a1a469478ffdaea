"""Every backend's claim store runs the one contract suite."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.claims")

from eventlite.testing.contracts.claims import ClaimStoreContract  # noqa: E402


class TestClaims(ClaimStoreContract):
    """Unique claims on every backend of the make_storage fixture."""
