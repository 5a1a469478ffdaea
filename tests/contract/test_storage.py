"""Every backend's storage says what it holds the same way."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.storage")

from eventlite.testing.contracts.storage import StorageContract  # noqa: E402


class TestStorage(StorageContract):
    """The storage of each backend of ``make_storage``."""
