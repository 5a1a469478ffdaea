"""The transport seam without a broker: public surface, values, backoff, unreachable
brokers, missing client libraries."""

from __future__ import annotations

import sys
import time
import types

import pytest

import eventlite.bridges as bridges
from eventlite.bridges import (
    Backoff,
    BridgeClosed,
    BrokerUnavailable,
    MemoryBroker,
    OutgoingMessage,
    SendFailed,
    mask_url,
)
from eventlite.testing.brokers import free_port


def test_all_matches_public_names() -> None:
    """eventlite.bridges.__all__ lists exactly its public names, each importable and
    documented (the broker classes load lazily)."""
    public = {
        name
        for name, value in vars(bridges).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    lazy = set(bridges._LAZY)
    assert sorted(public | lazy) == sorted(bridges.__all__)
    undocumented = [n for n in bridges.__all__ if not (getattr(bridges, n).__doc__ or "").strip()]
    assert [] == undocumented


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://guest:secret@host:5672/vh", "amqp://guest:***@host:5672/vh"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("see amqp://a:b@h/ and nats://c:d@h", "see amqp://a:***@h/ and nats://c:***@h"),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    """Passwords in URLs never reach logs or errors."""
    assert masked == mask_url(url)


def test_outgoing_headers_must_be_text() -> None:
    """Headers map str to str; anything else is refused when the message is made."""
    with pytest.raises(TypeError, match="str to str"):
        OutgoingMessage("d", b"", headers={"a": b"x"})  # type: ignore[dict-item]


def test_backoff_is_bounded_and_gives_up_at_the_deadline() -> None:
    """Waits grow to the maximum and no further; retry raises BrokerUnavailable naming the
    broker and the last error once the deadline passes; other errors propagate at once."""
    backoff = Backoff(initial=0.01, maximum=0.04, jitter=0.0)
    delays = [d for _, d in zip(range(6), backoff.delays(), strict=False)]
    assert [0.01, 0.02, 0.04, 0.04, 0.04, 0.04] == delays
    calls = []

    def refuse() -> None:
        calls.append(1)
        raise ConnectionError("refused by amqp://u:secret@h/")

    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        backoff.retry(
            refuse, deadline=time.monotonic() + 0.2, retry_on=(ConnectionError,), describe="b"
        )
    assert time.monotonic() - t0 < 1
    assert len(calls) >= 3
    assert "secret" not in str(info.value)
    assert "ConnectionError" in str(info.value)
    empty: dict[str, int] = {}
    with pytest.raises(KeyError):
        backoff.retry(
            lambda: empty["x"], deadline=time.monotonic() + 1, retry_on=(OSError,), describe="b"
        )
    with pytest.raises(ValueError):
        Backoff(initial=0)


def test_memory_broker_fail_next_fails_only_those() -> None:
    """A refused message fails alone with SendFailed; the others are confirmed."""
    broker = MemoryBroker()
    pub = broker.publisher()
    broker.fail_next(1)
    results = pub.send_batch([OutgoingMessage("d", b"1"), OutgoingMessage("d", b"2")])
    assert [False, True] == [r.confirmed for r in results]
    assert isinstance(results[0].error, SendFailed)
    assert [b"2"] == [m.body for m in broker.messages("d")]
    pub.close()
    with pytest.raises(BridgeClosed):
        pub.send_batch([OutgoingMessage("d", b"3")])


def test_subscriber_arguments_are_checked() -> None:
    """prefetch and max must be at least 1."""
    broker = MemoryBroker()
    with pytest.raises(ValueError, match="prefetch"):
        broker.subscriber("d", group="g", prefetch=0)
    sub = broker.subscriber("d", group="g")
    with pytest.raises(ValueError, match="max"):
        sub.receive(max=0)


def test_a_missing_client_library_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Using a broker whose client is not installed raises ImportError naming the extra;
    importing eventlite.bridges needs no client."""
    from eventlite.bridges.rabbitmq import RabbitMQ

    monkeypatch.setitem(sys.modules, "pika", None)
    with pytest.raises(ImportError, match=r"eventlite\[rabbitmq\]"):
        RabbitMQ("amqp://guest:guest@127.0.0.1:1/").publisher().send_batch(
            [OutgoingMessage("d", b"")], timeout=0.1
        )


def test_unreachable_brokers_fail_within_the_timeout() -> None:
    """Against a closed port, each transport gives up within its timeout with
    BrokerUnavailable naming the broker, password masked."""
    from eventlite.bridges.nats import JetStream
    from eventlite.bridges.rabbitmq import RabbitMQ
    from eventlite.bridges.redis import RedisStreams

    port = free_port()
    quick = Backoff(initial=0.05, maximum=0.2)
    t0 = time.monotonic()
    rabbit = RabbitMQ(f"amqp://guest:pw@127.0.0.1:{port}/", backoff=quick, connect_timeout=1)
    [result] = rabbit.publisher().send_batch([OutgoingMessage("d", b"x")], timeout=1)
    assert isinstance(result.error, BrokerUnavailable)
    assert "pw" not in str(result.error) and "***" in str(result.error)
    redis = RedisStreams(f"redis://:pw@127.0.0.1:{port}/0", backoff=quick)
    [result] = redis.publisher().send_batch([OutgoingMessage("d", b"x")], timeout=1)
    assert isinstance(result.error, BrokerUnavailable)
    with pytest.raises(BrokerUnavailable, match="nats"):
        JetStream(f"nats://127.0.0.1:{port}", backoff=quick, connect_timeout=0.5).publisher()
    assert time.monotonic() - t0 < 10


def test_transports_read_hostile_metadata_without_raising() -> None:
    """A Redis entry's ``meta`` or an SQS message's attributes that are not what eventlite
    writes (deeply nested JSON, text that is not base64) are delivered as they are, never
    raised from ``receive`` (which would hand the same message back for ever)."""
    from eventlite.bridges.redis import _read_meta
    from eventlite.bridges.sqs import SQSSubscriber

    deep = b"[" * 200_000 + b"]" * 200_000
    key, mid, headers = _read_meta(deep)
    assert (None, None) == (key, mid) and len(headers["meta"]) <= 8192
    hostile = {
        "Body": "not base64 !!",
        "MessageAttributes": {
            "eventlite-encoding": {"StringValue": "base64"},
            "eventlite-headers": {"StringValue": deep.decode()},
        },
        "ReceiptHandle": "r",
        "MessageId": "m",
    }
    import types

    sub = object.__new__(SQSSubscriber)  # only what _delivery reads: no AWS needed
    sub.source = "queue"
    sub._broker = types.SimpleNamespace(queue_name=lambda source: source)  # type: ignore[assignment]
    delivery = sub._delivery(hostile)
    assert b"not base64 !!" == delivery.body
    assert len(delivery.headers["eventlite-headers"]) <= 8192
