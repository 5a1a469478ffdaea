"""Every backend's work-queue store runs the one contract suite."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.queues")

from eventlite.testing.contracts.queues import QueueStoreContract  # noqa: E402


class TestQueues(QueueStoreContract):
    """The work-queue store of each backend of ``make_storage``."""
