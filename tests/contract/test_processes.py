"""Every storage backend keeps process-manager instances and timeouts by the one contract."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("eventlite.testing.contracts.processes")

from eventlite.testing.contracts.processes import ProcessStoreContract  # noqa: E402


class TestProcesses(ProcessStoreContract):
    """Run on every backend of the ``make_storage`` fixture."""
