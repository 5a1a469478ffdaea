"""Tests that need a running service (PostgreSQL, a broker): skip clearly, or fail in CI.

::

    from eventlite.testing.services import require_service

    @pytest.fixture(scope="session")
    def rabbitmq() -> str:
        require_service("RabbitMQ", "127.0.0.1", 5672)
        return "amqp://guest:guest@127.0.0.1:5672/"

On a machine without the service the test is skipped, naming the service and the address
it looked at. With ``EVENTLITE_REQUIRE_SERVICES=1`` in the environment (CI sets it) the
same check fails the test instead, so a missing service can never pass as a skip.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest

__all__ = ["REQUIRE_ENV", "require", "require_service", "tcp_open"]

REQUIRE_ENV = "EVENTLITE_REQUIRE_SERVICES"
"""The environment variable that turns a missing service into a failure (value ``1``)."""


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(name: str, check: Callable[[], bool], where: str) -> None:
    """Skip the test (or fail it, under ``EVENTLITE_REQUIRE_SERVICES=1``) unless
    ``check()`` is true; ``where`` says where the service was looked for."""
    try:
        ok = check()
    except Exception as exc:  # a check that cannot even run counts as absent
        ok = False
        where = f"{where} ({type(exc).__name__}: {exc})"
    if ok:
        return
    message = f"{name} is not reachable at {where}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message}, and {REQUIRE_ENV}=1 requires it", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


def require_service(name: str, host: str, port: int) -> None:
    """:func:`require` with a TCP connect to ``host:port`` as the check."""
    require(name, lambda: tcp_open(host, port), f"{host}:{port}")
