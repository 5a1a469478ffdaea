"""The service check: skip with a reason where a service is absent, fail under CI's flag."""

from __future__ import annotations

import socket

import pytest

from eventlite.testing.services import REQUIRE_ENV, require_service, tcp_open


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_missing_service_skips_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the CI flag, a service that does not answer skips the test, naming the
    service and the address."""
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    port = _closed_port()
    with pytest.raises(pytest.skip.Exception) as info:
        require_service("Nothing", "127.0.0.1", port)
    assert f"Nothing is not reachable at 127.0.0.1:{port}" in str(info.value)


def test_a_missing_service_fails_under_the_ci_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """With EVENTLITE_REQUIRE_SERVICES=1 the same check fails the test instead."""
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception) as info:
        require_service("Nothing", "127.0.0.1", _closed_port())
    assert REQUIRE_ENV in str(info.value)


def test_a_listening_port_is_open() -> None:
    """tcp_open answers True for a socket that listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert tcp_open("127.0.0.1", s.getsockname()[1])
