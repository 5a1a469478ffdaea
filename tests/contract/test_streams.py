"""Every backend's stream state store runs the one contract suite."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.streams")

from eventlite.testing.contracts.streams import StreamStateStoreContract  # noqa: E402


class TestStreams(StreamStateStoreContract):
    """Stream processors' state on every backend of the make_storage fixture."""
