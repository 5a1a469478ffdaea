"""Kafka through confluent-kafka (``pip install 'eventlite[kafka]'``).

Topology: a publisher's ``destination`` is a topic, created on first use with
``partitions`` partitions when missing; the message ``key`` picks the partition, so a key's
messages stay in one partition, in order. A subscriber's ``source`` is a topic and its
``group`` a Kafka consumer group: the group's members split the partitions between them.

Guarantees: the producer is idempotent with ``acks=all``; a send counts as confirmed when
its delivery report arrives without error; the producer's own retries keep the order of a
partition. Offsets are committed by hand: ``ack`` commits, per partition, the offset after
the longest run of acked messages from the last commit, so nothing unacked is ever skipped.
``nack(requeue=True)`` seeks the partition back to the nacked message, which comes again
with every later message of that partition (their acks before the seek are void);
``requeue=False`` counts as acked. A dead consumer's partitions go to the others after
``session_timeout`` seconds and are read again from the last commit.

Threading: confluent-kafka's producer and consumer are thread-safe; calls are serialized
by the transport anyway. librdkafka's own threads do the I/O and reconnect by themselves.
"""

from __future__ import annotations

import itertools
import logging
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

__all__ = ["Kafka", "KafkaPublisher", "KafkaSubscriber"]

log = logging.getLogger("eventlite.bridges.kafka")


def _ck() -> Any:
    return require_client("confluent_kafka", "kafka")


def _admin() -> Any:
    return require_client("confluent_kafka.admin", "kafka")


class Kafka(Broker):
    """A Kafka cluster (or a Kafka-protocol broker such as tansu), by its bootstrap
    servers (``host:9092,host2:9092``). ``config`` adds librdkafka settings (TLS, SASL)
    to every client; they are never logged."""

    name: ClassVar[str] = "kafka"
    features: Features = Features(header_prefix="ce_", ordered_per_key_shared=True)

    def __init__(
        self,
        bootstrap_servers: str = "127.0.0.1:9092",
        *,
        partitions: int = 3,
        session_timeout: float = 10.0,
        config: Mapping[str, Any] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        """The bootstrap servers."""
        self.partitions = partitions
        """Partitions of the topics this broker object creates."""
        self.session_timeout = session_timeout
        """Seconds after which a silent group member's partitions go to the others."""
        self.config = dict(config or {})
        """Extra librdkafka settings for every client."""
        self.backoff = backoff or Backoff()
        """How reconnects are paced (librdkafka's ``reconnect.backoff`` settings)."""
        self._topics: set[str] = set()
        self._topics_lock = threading.Lock()

    def describe(self) -> str:
        """``kafka`` and the bootstrap servers."""
        return f"kafka {self.bootstrap_servers}"

    def _client_config(self, **more: Any) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "reconnect.backoff.ms": int(self.backoff.initial * 1000),
            "reconnect.backoff.max.ms": int(self.backoff.maximum * 1000),
            "logger": log,
            **self.config,
            **more,
        }

    def admin(self) -> Any:
        """A ``confluent_kafka.admin.AdminClient`` for this cluster."""
        return _admin().AdminClient(self._client_config())

    def ensure_topic(self, topic: str) -> None:
        """Create ``topic`` with :attr:`partitions` partitions unless it exists."""
        with self._topics_lock:
            if topic in self._topics:
                return
        ck = _ck()
        admin = self.admin()
        futures = admin.create_topics(
            [_admin().NewTopic(topic, num_partitions=self.partitions, replication_factor=1)]
        )
        for future in futures.values():
            try:
                future.result(30)
            except ck.KafkaException as exc:
                if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BrokerUnavailable(self.describe(), str(exc)) from exc
        with self._topics_lock:
            self._topics.add(topic)

    def publisher(self) -> KafkaPublisher:
        """An idempotent producer."""
        return KafkaPublisher(self)

    def subscriber(self, source: str, *, group: str, prefetch: int = 100) -> KafkaSubscriber:
        """A member of consumer group ``group`` reading topic ``source`` (created now when
        missing)."""
        return KafkaSubscriber(self, source, group, prefetch)

    def purge(self, prefix: str) -> None:
        """Delete the topics whose names start with ``prefix``."""
        admin = self.admin()
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        if topics:
            for future in admin.delete_topics(topics).values():
                try:
                    future.result(30)
                except Exception as exc:  # already gone
                    log.debug("purge: %s", exc)
        with self._topics_lock:
            self._topics = {t for t in self._topics if not t.startswith(prefix)}


class KafkaPublisher(Publisher):
    """An idempotent producer (``acks=all``); see the module docstring."""

    def __init__(self, broker: Kafka) -> None:
        super().__init__()
        self._broker = broker
        self._producer = _ck().Producer(
            broker._client_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 2,
                    "message.timeout.ms": int(self.default_timeout * 1000),
                }
            )
        )

    def __repr__(self) -> str:
        return f"KafkaPublisher({self._broker.describe()})"

    def _send(self, messages: list[OutgoingMessage], deadline: float) -> list[SendResult]:
        outcome: dict[int, Any] = {}

        def report(i: int) -> Any:
            def on_delivery(err: Any, msg: Any) -> None:
                outcome[i] = err if err is not None else (msg.partition(), msg.offset())

            return on_delivery

        producer = self._producer
        for topic in {m.destination for m in messages}:
            self._broker.ensure_topic(topic)
        for i, m in enumerate(messages):
            headers = [(k, v.encode()) for k, v in m.headers.items()]
            if m.id is not None:
                headers.append(("eventlite-id", m.id.encode()))
            while True:
                try:
                    producer.produce(
                        m.destination, m.body, key=m.key, headers=headers, on_delivery=report(i)
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    producer.poll(0.05)
        while len(outcome) < len(messages):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            producer.flush(min(remaining, 1.0))
        describe = self._broker.describe()
        results = []
        for i, m in enumerate(messages):
            got = outcome.get(i)
            err: BridgeError | None
            if got is None:
                err = BrokerUnavailable(describe, "no delivery report before the timeout")
                results.append(SendResult(m, err))
            elif isinstance(got, tuple):
                coords = {"topic": m.destination, "partition": got[0], "offset": got[1]}
                results.append(SendResult(m, None, coords))
            else:
                results.append(SendResult(m, SendFailed(m.destination, m.id, str(got))))
        return results

    def _close(self, timeout: float) -> None:
        self._producer.flush(max(0.0, timeout))


class _Partition:
    """What a subscriber tracks of one assigned partition."""

    __slots__ = ("epoch", "delivered", "acked")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch  # which assignment of the partition this is
        self.delivered: list[int] = []  # offsets handed out, ascending
        self.acked: set[int] = set()


class KafkaSubscriber(Subscriber):
    """A consumer group member with manual offset commits; see the module docstring."""

    def __init__(self, broker: Kafka, source: str, group: str, prefetch: int) -> None:
        super().__init__(source, group, prefetch)
        self._broker = broker
        broker.ensure_topic(source)
        self._parts: dict[int, _Partition] = {}
        self._epochs = itertools.count(1)
        self._consumer = _ck().Consumer(
            broker._client_config(
                **{
                    "group.id": group,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": int(broker.session_timeout * 1000),
                    "heartbeat.interval.ms": max(100, int(broker.session_timeout * 250)),
                    # bounded memory ahead of the handler; once that much is queued the
                    # client stops fetching, and looks again after 20 ms (its default
                    # second-long pause stalled a backlog each time the queue filled)
                    "queued.max.messages.kbytes": 4096,
                    "fetch.queue.backoff.ms": 20,
                }
            )
        )
        self._consumer.subscribe([source], on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._parts[tp.partition] = _Partition(next(self._epochs))

    def _revoked(self, _consumer: Any, partitions: list[Any]) -> None:
        # acks of deliveries from a lost partition are void: its new owner reads them again
        for tp in partitions:
            self._parts.pop(tp.partition, None)

    def _receive(self, max: int, deadline: float) -> list[Delivery]:
        out: list[Delivery] = []
        consumer = self._consumer
        # consume() blocks until it has ``max`` messages or the timeout passed: take what
        # the client holds already, else wait for one message and take what came with it
        msgs = consumer.consume(num_messages=max, timeout=0)
        if not msgs:
            first = consumer.poll(max_(0.0, deadline - time.monotonic()))
            if first is None:
                return out
            msgs = [first]
            if max > 1:
                msgs.extend(consumer.consume(num_messages=max - 1, timeout=0))
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != _ck().KafkaError._PARTITION_EOF:
                    self.last_error = BrokerUnavailable(self._broker.describe(), str(err))
                    log.warning("%s", self.last_error)
                continue
            part = self._parts.get(msg.partition())
            if part is None:  # a partition no longer ours
                continue
            offset = msg.offset()
            part.delivered.append(offset)
            headers: dict[str, str] = {}
            for k, v in msg.headers() or []:
                headers[k] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            message_id = headers.pop("eventlite-id", None)
            key = msg.key()
            out.append(
                Delivery(
                    msg.value() or b"",
                    headers=headers,
                    source=self.source,
                    key=key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
                    message_id=message_id,
                    redelivered=None,
                    coordinates={
                        "topic": msg.topic(),
                        "partition": msg.partition(),
                        "offset": offset,
                        "group": self.group,
                    },
                    token=(part.epoch, msg.partition(), offset),
                )
            )
        return out

    def _ack(self, deliveries: list[Delivery]) -> None:
        touched = set()
        for d in deliveries:
            epoch, partition, offset = d._token
            part = self._parts.get(partition)
            if part is None or epoch != part.epoch:
                continue
            part.acked.add(offset)
            touched.add(partition)
        self._commit(touched)

    def _commit(self, partitions: set[int]) -> None:
        ck = _ck()
        commits = []
        for p in partitions:
            part = self._parts[p]
            advanced = None
            while part.delivered and part.delivered[0] in part.acked:
                offset = part.delivered.pop(0)
                part.acked.discard(offset)
                advanced = offset + 1
            if advanced is not None:
                commits.append(ck.TopicPartition(self.source, p, advanced))
        if commits:
            try:
                self._consumer.commit(offsets=commits, asynchronous=True)
            except ck.KafkaException as exc:  # not committed: read again later
                log.warning("%s: commit failed (%s)", self._broker.describe(), exc)

    def _nack(self, deliveries: list[Delivery], requeue: bool) -> None:
        if not requeue:
            self._ack(deliveries)
            return
        ck = _ck()
        earliest: dict[int, int] = {}
        for d in deliveries:
            epoch, partition, offset = d._token
            part = self._parts.get(partition)
            if part is not None and epoch == part.epoch:
                earliest[partition] = min(offset, earliest.get(partition, offset))
        for partition, offset in earliest.items():
            # everything from the nacked offset on is read again; acks of those that were
            # handled meanwhile still count (they were handled), the copies come anyway
            part = self._parts[partition]
            part.delivered = [o for o in part.delivered if o < offset]
            part.acked = {o for o in part.acked if o < offset}
            try:
                self._consumer.seek(ck.TopicPartition(self.source, partition, offset))
            except ck.KafkaException as exc:
                log.warning("%s: seek failed (%s)", self._broker.describe(), exc)

    def _close(self, timeout: float) -> None:
        try:
            self._consumer.close()
        except Exception as exc:  # closing must not raise
            log.debug("close: %s", exc)


max_ = max
