"""Every backend's checkpoints store passes one contract; a new backend is a new ``make_storage``
parameter in conftest.py."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.checkpoints")

from eventlite.testing.contracts.checkpoints import CheckpointStoreContract  # noqa: E402


class TestCheckpoints(CheckpointStoreContract):
    """The checkpoints store of each backend."""
