"""The brokers the bridge contract suite runs on: a new broker is a new parameter here.

RabbitMQ, Redis and NATS are the machine's services (skipped with a reason where absent,
failed under EVENTLITE_REQUIRE_SERVICES=1); Kafka (tansu) and SQS (moto) are started for
the session. The restart tests get private Redis and NATS servers, and RabbitMQ's own
``rabbitmqctl stop_app``/``start_app``, always started again.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from eventlite.testing import brokers
from eventlite.testing.brokers import BridgeTarget
from eventlite.testing.services import require, require_service, tcp_open

BROKERS = ["memory", "rabbitmq", "redis", "nats", "kafka", "sqs"]


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """An AMQP URL on a vhost of this test session (deleted afterwards) when rabbitmqctl
    is at hand, else on the default vhost."""
    require_service("RabbitMQ", "127.0.0.1", 5672)
    vhost = f"eventlite-test-{uuid.uuid4().hex[:8]}"
    made = False
    if shutil.which("rabbitmqctl"):
        try:
            brokers.rabbitmqctl("add_vhost", vhost)
            brokers.rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
            made = True
        except (subprocess.SubprocessError, OSError):
            made = False
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost if made else '%2F'}"
    if made:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            brokers.rabbitmqctl("delete_vhost", vhost)


def _rabbitmq(url: str) -> BridgeTarget:
    from eventlite.bridges.rabbitmq import RabbitMQ

    return BridgeTarget(
        broker=RabbitMQ(url),
        prefix=brokers.unique_prefix(),
        recipe=f"from eventlite.bridges.rabbitmq import RabbitMQ\nbroker = RabbitMQ({url!r})",
        redelivery_wait=5.0,
    )


def _redis(url: str) -> BridgeTarget:
    from eventlite.bridges.redis import RedisStreams

    return BridgeTarget(
        broker=RedisStreams(url, claim_after=1.0),
        prefix=brokers.unique_prefix(),
        recipe=(
            "from eventlite.bridges.redis import RedisStreams\n"
            f"broker = RedisStreams({url!r}, claim_after=1.0)"
        ),
        redelivery_wait=3.0,
    )


def _nats(url: str) -> BridgeTarget:
    from eventlite.bridges.nats import JetStream

    options = "ack_wait=1.0, ack_timeout=2.0"
    return BridgeTarget(
        broker=JetStream(url, ack_wait=1.0, ack_timeout=2.0),
        prefix=brokers.unique_prefix(),
        recipe=(
            f"from eventlite.bridges.nats import JetStream\nbroker = JetStream({url!r}, {options})"
        ),
        redelivery_wait=3.0,
    )


def _kafka(bootstrap: str) -> BridgeTarget:
    from eventlite.bridges.kafka import Kafka

    options = "partitions=3, session_timeout=6.0"
    return BridgeTarget(
        broker=Kafka(bootstrap, partitions=3, session_timeout=6.0),
        prefix=brokers.unique_prefix(),
        recipe=(
            f"from eventlite.bridges.kafka import Kafka\nbroker = Kafka({bootstrap!r}, {options})"
        ),
        redelivery_wait=15.0,
    )


@pytest.fixture(scope="session")
def tansu() -> Iterator[brokers.ServerProcess]:
    """A tansu broker (Kafka protocol) for the session, on memory storage."""
    try:
        server = brokers.start_tansu()
    except FileNotFoundError as exc:
        require("Kafka (tansu)", lambda: False, str(exc))
        raise
    yield server
    server.stop(remove=True)


def _sqs(endpoint: str) -> BridgeTarget:
    from eventlite.bridges.sqs import SQS

    options = (
        f"endpoint_url={endpoint!r}, region_name='us-east-1', aws_access_key_id='test', "
        "aws_secret_access_key='test', visibility_timeout=2"
    )
    broker = SQS(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        visibility_timeout=2,
    )
    return BridgeTarget(
        broker=broker,
        prefix=brokers.unique_prefix(),
        recipe=f"from eventlite.bridges.sqs import SQS\nbroker = SQS({options})",
        redelivery_wait=4.0,
        page=50,  # moto answers a FIFO queue's receive in time that grows with its depth
    )


@pytest.fixture(scope="session")
def moto() -> Iterator[brokers.ServerProcess]:
    """A moto server (SQS and SNS) for the session."""
    try:
        server = brokers.start_moto()
    except FileNotFoundError as exc:
        require("SQS (moto_server)", lambda: False, str(exc))
        raise
    yield server
    server.stop(remove=True)


def _redis_up() -> bool:
    import redis

    return bool(redis.Redis(socket_connect_timeout=1).ping())


@pytest.fixture(params=BROKERS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    """The broker a contract test runs on."""
    return str(request.param)


@pytest.fixture
def bridge(broker_kind: str, request: pytest.FixtureRequest) -> Iterator[BridgeTarget]:
    """The machine's broker of this kind, under a prefix of this test, purged afterwards."""
    if broker_kind == "memory":
        from eventlite.bridges.memory import MemoryBroker

        target = BridgeTarget(broker=MemoryBroker(), prefix=brokers.unique_prefix(), recipe="")
    elif broker_kind == "rabbitmq":
        target = _rabbitmq(request.getfixturevalue("rabbitmq_url"))
    elif broker_kind == "redis":
        require("Redis", _redis_up, "127.0.0.1:6379")
        target = _redis("redis://127.0.0.1:6379/0")
    elif broker_kind == "nats":
        require_service("NATS", "127.0.0.1", 4222)
        target = _nats("nats://127.0.0.1:4222")
    elif broker_kind == "kafka":
        server = request.getfixturevalue("tansu")
        target = _kafka(f"127.0.0.1:{server.port}")
    elif broker_kind == "sqs":
        server = request.getfixturevalue("moto")
        target = _sqs(f"http://127.0.0.1:{server.port}")
    else:
        raise AssertionError(broker_kind)
    yield target
    target.cleanup()


def _rabbitmq_restart() -> None:
    try:
        brokers.rabbitmqctl("stop_app")
    finally:
        brokers.rabbitmqctl("start_app")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not tcp_open("127.0.0.1", 5672):
            time.sleep(0.1)
        brokers.rabbitmqctl("await_startup")


@pytest.fixture
def restartable_bridge(broker_kind: str, request: pytest.FixtureRequest) -> Iterator[BridgeTarget]:
    """A broker of this kind that the test may restart: RabbitMQ through rabbitmqctl,
    private Redis and NATS servers with persistence."""
    if broker_kind == "rabbitmq":
        target = _rabbitmq(request.getfixturevalue("rabbitmq_url"))
        if shutil.which("rabbitmqctl") is None:
            pytest.skip("rabbitmqctl is not installed: cannot restart RabbitMQ")
        target.restart = _rabbitmq_restart
        yield target
        target.cleanup()
        return
    if broker_kind == "memory":
        pytest.skip("memory: nothing to restart")
    if broker_kind in ("kafka", "sqs"):
        pytest.skip(
            f"{broker_kind}: its test server (tansu, moto) keeps everything in memory, so a "
            "restart loses it all; the restart test needs a broker with durable storage"
        )
    starters = {"redis": brokers.start_redis, "nats": brokers.start_nats}
    try:
        server = starters[broker_kind]()
    except FileNotFoundError as exc:
        require(broker_kind, lambda: False, str(exc))
        raise
    try:
        if broker_kind == "redis":
            target = _redis(f"redis://127.0.0.1:{server.port}/0")
        else:
            target = _nats(f"nats://127.0.0.1:{server.port}")
        target.restart = lambda: server.restart(down_for=0.5)
        yield target
    finally:
        server.stop(remove=True)


# Contract tests that take several seconds on a broker (Kafka's group join waits 3 s in
# tansu, session timeouts; moto's FIFO polling) run in the slow step for that broker only.
SLOW_ON = {
    "kafka": {
        "test_cloudevents_round_trip_in_both_modes",
        "test_nack_with_requeue_delivers_again",
        "test_nack_without_requeue_drops_it",
        "test_settling_twice_is_ignored",
        "test_bounded_in_flight_with_a_slow_consumer",
        "test_two_consumers_of_one_group_share_the_work",
        "test_unsettled_deliveries_of_a_killed_consumer_come_back",
    },
    "sqs": {
        "test_order_per_key_with_several_keys_in_flight",
        "test_two_consumers_of_one_group_share_the_work",
    },
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of SLOW_ON slow for their broker, before ``-m`` selects."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("broker_kind") if callspec is not None else None
        if kind in SLOW_ON and getattr(item, "originalname", "") in SLOW_ON[kind]:
            item.add_marker(pytest.mark.slow)
