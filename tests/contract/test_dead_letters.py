"""Every backend's dead-letter store runs the one contract suite."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.dead_letters")

from eventlite.testing.contracts.dead_letters import DeadLetterStoreContract  # noqa: E402


class TestDeadLetters(DeadLetterStoreContract):
    """The dead-letter store of each backend of ``make_storage``."""
