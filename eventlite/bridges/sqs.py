"""Amazon SQS through boto3 (``pip install 'eventlite[sqs]'``).

Topology: a publisher's ``destination`` and a subscriber's ``source`` are queue names; the
queue is created on first use (a FIFO queue, name ending ``.fifo``, unless ``fifo=False``).
Every subscriber of a queue shares its messages; ``group`` only names the subscriber.

Guarantees: a send counts as confirmed when ``SendMessageBatch`` lists it as successful
(batches of ten); a failed entry is failed alone. In a FIFO queue the message ``key`` is
the ``MessageGroupId`` — SQS hands out a group's messages in order, one consumer at a time —
and the message ``id`` is the ``MessageDeduplicationId`` (a resend within five minutes is
dropped). A standard queue (``fifo=False``) keeps no order and does not dedupe. A received
message is hidden for ``visibility_timeout`` seconds; unless deleted (``ack``) by then it is
delivered again. ``nack(requeue=True)`` makes it visible at once; ``requeue=False`` deletes
it.

The body travels as text when it is valid SQS text, else base64 (marked by the message
attribute ``eventlite-encoding``); headers travel as one JSON message attribute
``eventlite-headers`` (SQS allows only ten attributes a message), the key and id as
``eventlite-key`` and ``eventlite-id``.

Threading: each publisher and subscriber has its own boto3 client (boto3 clients are
thread-safe); botocore retries throttling and connection errors with its own backoff.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from .base import (
    Backoff,
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
    require_client,
)

__all__ = ["SQS", "SQSPublisher", "SQSSubscriber"]

log = logging.getLogger("eventlite.bridges.sqs")

# what SQS accepts in a message body (#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD |
# #x10000 to #x10FFFF)
_INVALID_TEXT = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_BATCH = 10


def _boto3() -> Any:
    return require_client("boto3", "sqs")


def _botocore_errors() -> tuple[type[BaseException], ...]:
    exceptions = require_client("botocore.exceptions", "sqs")
    return (exceptions.BotoCoreError, exceptions.ClientError)


class SQS(Broker):
    """Amazon SQS (or a compatible endpoint such as moto or LocalStack).

    ``client_options`` go to ``boto3.client("sqs", ...)`` (region, credentials,
    ``endpoint_url``); they are never logged.
    """

    name: ClassVar[str] = "sqs"
    features: Features

    def __init__(
        self,
        *,
        fifo: bool = True,
        visibility_timeout: int = 30,
        backoff: Backoff | None = None,
        **client_options: Any,
    ) -> None:
        self.fifo = fifo
        """FIFO queues (order per key, dedupe by id) instead of standard ones."""
        self.visibility_timeout = visibility_timeout
        """Seconds a received message stays hidden from other consumers (queues made here)."""
        self.backoff = backoff or Backoff()
        """How retries after connection errors are paced."""
        self.client_options = client_options
        """Options for ``boto3.client("sqs", ...)``."""
        self.features = Features(
            ordered_per_key=fifo,
            ordered_per_key_shared=fifo,
            dedupe=fifo,
            survives_restart=True,
            max_body=256 * 1024,
        )
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        """``sqs`` and the endpoint, when one is given."""
        endpoint = self.client_options.get("endpoint_url")
        return f"sqs {endpoint}" if endpoint else "sqs"

    def client(self) -> Any:
        """A new boto3 SQS client."""
        return _boto3().client("sqs", **self.client_options)

    def queue_name(self, name: str) -> str:
        """The SQS name of a queue: ``.fifo`` appended for FIFO queues."""
        if self.fifo and not name.endswith(".fifo"):
            return name + ".fifo"
        return name

    def queue_url(self, client: Any, name: str) -> str:
        """The URL of queue ``name``, created when missing."""
        name = self.queue_name(name)
        with self._lock:
            url = self._urls.get(name)
        if url is not None:
            return url
        attributes = {"VisibilityTimeout": str(self.visibility_timeout)}
        if self.fifo:
            attributes["FifoQueue"] = "true"
        url = str(client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
        with self._lock:
            self._urls[name] = url
        return url

    def publisher(self) -> SQSPublisher:
        """A publisher that sends batches of ten."""
        return SQSPublisher(self)

    def subscriber(self, source: str, *, group: str, prefetch: int = 100) -> SQSSubscriber:
        """A consumer of queue ``source`` (created now when missing)."""
        return SQSSubscriber(self, source, group, prefetch)

    def purge(self, prefix: str) -> None:
        """Delete the queues whose names start with ``prefix``."""
        client = self.client()
        for url in client.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
            client.delete_queue(QueueUrl=url)
        with self._lock:
            self._urls = {n: u for n, u in self._urls.items() if not n.startswith(prefix)}


def _entry(broker: SQS, index: int, m: OutgoingMessage) -> dict[str, Any]:
    try:
        text = m.body.decode("utf-8")
        encoded = _INVALID_TEXT.search(text) is not None
    except UnicodeDecodeError:
        encoded = True
    if encoded:
        text = base64.b64encode(m.body).decode()
    attributes: dict[str, Any] = {}
    if encoded:
        attributes["eventlite-encoding"] = {"DataType": "String", "StringValue": "base64"}
    if m.headers:
        value = json.dumps(dict(m.headers), ensure_ascii=False)
        attributes["eventlite-headers"] = {"DataType": "String", "StringValue": value}
    if m.key is not None:
        attributes["eventlite-key"] = {"DataType": "String", "StringValue": m.key}
    if m.id is not None:
        attributes["eventlite-id"] = {"DataType": "String", "StringValue": m.id}
    entry: dict[str, Any] = {"Id": str(index), "MessageBody": text}
    if attributes:
        entry["MessageAttributes"] = attributes
    if broker.fifo:
        entry["MessageGroupId"] = m.key or "default"
        entry["MessageDeduplicationId"] = m.id or hashlib.sha256(m.body).hexdigest()
    return entry


class SQSPublisher(Publisher):
    """Sends with ``SendMessageBatch``; see the module docstring."""

    def __init__(self, broker: SQS) -> None:
        super().__init__()
        self._broker = broker
        self._client = broker.client()

    def __repr__(self) -> str:
        return f"SQSPublisher({self._broker.describe()})"

    def _send(self, messages: list[OutgoingMessage], deadline: float) -> list[SendResult]:
        broker = self._broker
        errors = _botocore_errors()
        outcome: dict[int, BridgeError | dict[str, Any]] = {}
        # one queue at a time, in order: a failed chunk stops the later ones of its queue
        by_queue: dict[str, list[int]] = {}
        for i, m in enumerate(messages):
            by_queue.setdefault(m.destination, []).append(i)
        for destination, indexes in by_queue.items():
            for start in range(0, len(indexes), _BATCH):
                chunk = indexes[start : start + _BATCH]

                def attempt(chunk: list[int] = chunk, destination: str = destination) -> Any:
                    url = broker.queue_url(self._client, destination)
                    return self._client.send_message_batch(
                        QueueUrl=url, Entries=[_entry(broker, i, messages[i]) for i in chunk]
                    )

                try:
                    reply = broker.backoff.retry(
                        attempt, deadline=deadline, retry_on=errors, describe=broker.describe()
                    )
                except BrokerUnavailable as exc:
                    for i in indexes[start:]:
                        outcome[i] = exc
                    break
                for ok in reply.get("Successful", []):
                    outcome[int(ok["Id"])] = {
                        "queue": destination,
                        "message_id": ok.get("MessageId"),
                        "sequence": ok.get("SequenceNumber"),
                    }
                for bad in reply.get("Failed", []):
                    i = int(bad["Id"])
                    cause = f"{bad.get('Code')}: {bad.get('Message')}"
                    outcome[i] = SendFailed(destination, messages[i].id, cause)
        results = []
        for i, m in enumerate(messages):
            got = outcome.get(i)
            if isinstance(got, BridgeError):
                results.append(SendResult(m, got))
            elif got is None:
                results.append(SendResult(m, SendFailed(m.destination, m.id, "no result")))
            else:
                results.append(SendResult(m, None, got))
        return results

    def _close(self, timeout: float) -> None:
        self._client.close()


class SQSSubscriber(Subscriber):
    """Receives with long polling; see the module docstring."""

    def __init__(self, broker: SQS, source: str, group: str, prefetch: int) -> None:
        super().__init__(source, group, prefetch)
        self._broker = broker
        self._client = broker.client()
        self._url = broker.queue_url(self._client, source)

    def _receive(self, max: int, deadline: float) -> list[Delivery]:
        errors = _botocore_errors()
        while True:
            remaining = deadline - time.monotonic()
            try:
                reply = self._client.receive_message(
                    QueueUrl=self._url,
                    MaxNumberOfMessages=min(_BATCH, max),
                    WaitTimeSeconds=int(min(20, max_(0, remaining))),
                    MessageAttributeNames=["All"],
                    AttributeNames=["All"],
                )
            except errors as exc:
                self.last_error = BrokerUnavailable(self._broker.describe(), str(exc))
                log.warning("%s", self.last_error)
                time.sleep(min(0.2, max_(0.0, remaining)))
                return []
            msgs = reply.get("Messages", [])
            if msgs or time.monotonic() >= deadline:
                return [self._delivery(m) for m in msgs]
            time.sleep(min(0.05, max_(0.0, deadline - time.monotonic())))

    def _delivery(self, msg: Mapping[str, Any]) -> Delivery:
        attrs = {k: v.get("StringValue") for k, v in msg.get("MessageAttributes", {}).items()}
        text = msg.get("Body", "")
        body = text.encode("utf-8")
        if attrs.get("eventlite-encoding") == "base64":
            # not base64 after all: delivered as sent, and the decoder judges it
            with contextlib.suppress(ValueError):
                body = base64.b64decode(text, validate=True)
        headers: dict[str, str] = {}
        raw = attrs.get("eventlite-headers")
        if raw:
            try:
                parsed = json.loads(raw)
                if isinstance(parsed, dict):
                    headers = {str(k): str(v) for k, v in parsed.items()}
            except (ValueError, RecursionError):
                headers = {"eventlite-headers": raw[:8192]}
        system = msg.get("Attributes", {})
        count = int(system.get("ApproximateReceiveCount", "1"))
        return Delivery(
            body,
            headers=headers,
            source=self.source,
            key=attrs.get("eventlite-key"),
            message_id=attrs.get("eventlite-id"),
            redelivered=count > 1,
            coordinates={
                "queue": self._broker.queue_name(self.source),
                "message_id": msg.get("MessageId"),
                "sequence": system.get("SequenceNumber"),
                "receive_count": count,
            },
            token=msg["ReceiptHandle"],
        )

    def _ack(self, deliveries: list[Delivery]) -> None:
        for start in range(0, len(deliveries), _BATCH):
            chunk = deliveries[start : start + _BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": d._token} for i, d in enumerate(chunk)]
            try:
                self._client.delete_message_batch(QueueUrl=self._url, Entries=entries)
            except _botocore_errors() as exc:  # not deleted: visible again later
                log.warning("%s: ack failed (%s)", self._broker.describe(), exc)

    def _nack(self, deliveries: list[Delivery], requeue: bool) -> None:
        if not requeue:
            self._ack(deliveries)
            return
        for start in range(0, len(deliveries), _BATCH):
            chunk = deliveries[start : start + _BATCH]
            entries = [
                {"Id": str(i), "ReceiptHandle": d._token, "VisibilityTimeout": 0}
                for i, d in enumerate(chunk)
            ]
            try:
                self._client.change_message_visibility_batch(QueueUrl=self._url, Entries=entries)
            except _botocore_errors() as exc:
                log.warning("%s: nack failed (%s)", self._broker.describe(), exc)

    def _close(self, timeout: float) -> None:
        self._client.close()


max_ = max
