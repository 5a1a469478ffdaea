"""Every storage backend keeps saga instances by the one contract."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.sagas")

from eventlite.testing.contracts.sagas import SagaStoreContract  # noqa: E402


class TestSagas(SagaStoreContract):
    """Run on every backend of the ``make_storage`` fixture."""
