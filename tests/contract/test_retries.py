"""Every backend's retries store passes one contract; a new backend is a new ``make_storage``
parameter in conftest.py."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.retries")

from eventlite.testing.contracts.retries import RetryStoreContract  # noqa: E402


class TestRetries(RetryStoreContract):
    """The retries store of each backend."""
