"""Every backend's idempotency-key store runs the one contract suite."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.idempotency")

from eventlite.testing.contracts.idempotency import IdempotencyStoreContract  # noqa: E402


class TestIdempotency(IdempotencyStoreContract):
    """The idempotency-key store of each backend of ``make_storage``."""
