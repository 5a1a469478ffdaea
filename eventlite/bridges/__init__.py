"""Bridges to message brokers: one small transport seam, one wire format, one module per
broker.

- :mod:`eventlite.bridges.base`: the seam. :class:`Broker` (address and options) makes
  :class:`Publisher` s (``send_batch`` returns once the broker confirmed) and
  :class:`Subscriber` s (``receive``, ``ack``, ``nack``, bounded in flight); each broker
  declares its :class:`Features`.
- :mod:`eventlite.bridges.cloudevents`: :class:`CloudEventCodec`, envelopes to CloudEvents
  1.0 JSON (structured or binary mode) and back, trusting nothing it receives.
- One module per broker, each importing its client library only when used, each installed
  with its own extra: :mod:`~eventlite.bridges.rabbitmq` (``eventlite[rabbitmq]``, pika),
  :mod:`~eventlite.bridges.redis` (``eventlite[redis]``, redis-py),
  :mod:`~eventlite.bridges.nats` (``eventlite[nats]``, nats-py),
  :mod:`~eventlite.bridges.kafka` (``eventlite[kafka]``, confluent-kafka),
  :mod:`~eventlite.bridges.sqs` (``eventlite[sqs]``, boto3).
- :mod:`eventlite.bridges.memory`: :class:`MemoryBroker`, a broker in this process's
  memory for tests of code built on the bridges (it passes the same contract suite).

The broker classes are imported from here on first use, so ``import eventlite.bridges``
needs no client library.
"""

import importlib as _importlib
from typing import Any as _Any

from .base import (
    Backoff,
    BridgeClosed,
    BridgeError,
    Broker,
    BrokerUnavailable,
    Delivery,
    Features,
    OutgoingMessage,
    Publisher,
    SendFailed,
    SendResult,
    Subscriber,
    mask_url,
)
from .cloudevents import CloudEventCodec, CloudEventDecodeError, UnknownCloudEventType

__all__ = [
    "Backoff",
    "BridgeClosed",
    "BridgeError",
    "Broker",
    "BrokerUnavailable",
    "CloudEventCodec",
    "CloudEventDecodeError",
    "Delivery",
    "Features",
    "JetStream",
    "Kafka",
    "MemoryBroker",
    "OutgoingMessage",
    "Publisher",
    "RabbitMQ",
    "RedisStreams",
    "SQS",
    "SendFailed",
    "SendResult",
    "Subscriber",
    "UnknownCloudEventType",
    "mask_url",
]

_LAZY = {
    "RabbitMQ": ".rabbitmq",
    "RedisStreams": ".redis",
    "JetStream": ".nats",
    "Kafka": ".kafka",
    "MemoryBroker": ".memory",
    "SQS": ".sqs",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(_importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
