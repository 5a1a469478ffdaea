"""Every storage backend keeps projection checkpoints by the one contract."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.projections")

from eventlite.testing.contracts.projections import ProjectionStoreContract  # noqa: E402


class TestProjections(ProjectionStoreContract):
    """Run on every backend of the ``make_storage`` fixture."""
