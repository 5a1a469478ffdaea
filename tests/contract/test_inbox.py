"""Every backend's inbox store passes one contract; a new backend is a new ``make_storage``
parameter in conftest.py."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.inbox")

from eventlite.testing.contracts.inbox import InboxStoreContract  # noqa: E402


class TestInbox(InboxStoreContract):
    """The inbox store of each backend."""
