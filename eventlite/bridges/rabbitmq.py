"""RabbitMQ through pika (``pip install 'eventlite[rabbitmq]'``).

Topology: a publisher's ``destination`` is a durable *topic exchange* (declared on first
use; ``""`` is the default exchange, which routes by queue name) and the message ``key`` is
the routing key. A subscriber's ``source`` is that exchange and its ``group`` names a
durable queue, ``<source>.<group>`` (:meth:`RabbitMQ.queue_name`), declared and bound to the
exchange with ``binding`` (``#``: every key) when the subscriber is made; subscribers with
one source and group share the queue's messages, and one group of two sources is two
queues (as a consumer group is per topic, stream or subject on the other brokers).
RabbitMQ drops what an exchange routes to no queue, so make the subscriber (or call
:meth:`RabbitMQ.declare`) before publishing.

Guarantees: persistent messages (``delivery_mode=2``) on durable queues; a send counts as
confirmed when the broker's publisher confirm (``Basic.Ack``) arrives, sent in one
pipeline per batch; a ``Basic.Nack`` fails that message only. Deliveries are acked
``multiple`` where the acked tags allow it; ``prefetch`` is the channel's QoS, so the
broker never hands a subscriber more unacked messages than that. A consumer's unacked
messages come back when its connection dies.

Threading: pika's connections are not thread-safe, so each publisher and subscriber runs
its own ``SelectConnection`` on a private I/O thread; the caller's thread only hands it
work through ``add_callback_threadsafe`` and waits for the outcome. A lost connection is
re-opened (bounded backoff) by the next call; a publisher sends its unconfirmed messages
again on the new one.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
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
    mask_url,
    require_client,
)

__all__ = ["RabbitMQ", "RabbitMQPublisher", "RabbitMQSubscriber"]

log = logging.getLogger("eventlite.bridges.rabbitmq")
max_ = builtins.max


def _pika() -> Any:
    return require_client("pika", "rabbitmq")


class _Lost(Exception):
    """The connection or channel closed under us."""


class _Connection:
    """One pika ``SelectConnection`` and channel on a private I/O thread."""

    def __init__(
        self,
        url: str,
        describe: str,
        on_channel: Callable[[Any, Callable[..., None]], None],
        on_closed: Callable[[], None],
    ) -> None:
        self._url = url
        self._describe = describe
        self._on_channel = on_channel
        self._on_closed = on_closed
        self.connection: Any = None
        self.channel: Any = None
        self._ready = threading.Event()
        self._error: str | None = None
        self.alive = False
        self._thread: threading.Thread | None = None

    def open(self, timeout: float) -> None:
        pika = _pika()
        params = pika.URLParameters(self._url)
        params.connection_attempts = 1
        params.socket_timeout = max(0.5, min(timeout, 5.0))
        params.blocked_connection_timeout = 30
        self.connection = pika.SelectConnection(
            params,
            on_open_callback=self._opened,
            on_open_error_callback=self._open_failed,
            on_close_callback=self._closed,
        )
        self._thread = threading.Thread(
            target=self._run, name=f"eventlite-rabbitmq {self._describe}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout) or not self.alive:
            error = self._error or f"no connection within {timeout:.1f}s"
            self.close(1.0)
            raise _Lost(error)

    def _run(self) -> None:
        try:
            self.connection.ioloop.start()
        except Exception:  # the loop must never die silently
            log.exception("%s: I/O loop failed", self._describe)
        finally:
            self.alive = False
            self._ready.set()

    def _opened(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._channel_opened)

    def _channel_opened(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._channel_closed)
        try:
            self._on_channel(channel, self._setup_done)
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            self.connection.close()

    def _setup_done(self, *_: Any) -> None:
        """Called by the setup chain once the broker answered its last step."""
        self.alive = True
        self._ready.set()

    def _open_failed(self, _connection: Any, error: Any) -> None:
        self._error = mask_url(f"{type(error).__name__}: {error}")
        self._ready.set()
        self.connection.ioloop.stop()

    def _channel_closed(self, _channel: Any, reason: Any) -> None:
        self._error = f"channel closed: {reason}"
        self.alive = False
        if self.connection.is_open:
            self.connection.close()
        self._on_closed()

    def _closed(self, _connection: Any, reason: Any) -> None:
        if self._error is None:
            self._error = f"connection closed: {reason}"
        self.alive = False
        self._on_closed()
        self._ready.set()
        self.connection.ioloop.stop()

    @property
    def error(self) -> str:
        return self._error or "connection lost"

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread."""
        if not self.alive:
            raise _Lost(self.error)
        try:
            self.connection.ioloop.add_callback_threadsafe(fn)
        except Exception as exc:
            raise _Lost(f"{type(exc).__name__}: {exc}") from exc

    def close(self, timeout: float) -> None:
        thread = self._thread
        conn = self.connection
        if conn is None:
            return

        def shut() -> None:
            if conn.is_open or conn.is_opening:
                conn.close()
            else:
                conn.ioloop.stop()

        with contextlib.suppress(Exception):  # the loop is gone already
            conn.ioloop.add_callback_threadsafe(shut)
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, timeout))


class RabbitMQ(Broker):
    """A RabbitMQ server, by its AMQP URL (``amqp://user:password@host:5672/vhost``).

    ``backoff`` paces reconnects; ``binding`` is the routing-key pattern a subscriber's
    queue is bound with.
    """

    name: ClassVar[str] = "rabbitmq"
    features: Features = Features(header_prefix="cloudEvents_")

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/%2F",
        *,
        backoff: Backoff | None = None,
        binding: str = "#",
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = url
        """The AMQP URL (shown with its password masked)."""
        self.backoff = backoff or Backoff()
        """How reconnects are paced."""
        self.binding = binding
        """The routing-key pattern subscribers bind their queue with."""
        self.connect_timeout = connect_timeout
        """Seconds to wait for a first connection before giving up."""
        self._declared: set[tuple[str, str]] = set()
        self._declared_lock = threading.Lock()

    def describe(self) -> str:
        """``rabbitmq`` and the URL, password masked."""
        return f"rabbitmq {mask_url(self.url)}"

    def publisher(self) -> RabbitMQPublisher:
        """A publisher with publisher confirms."""
        return RabbitMQPublisher(self)

    def subscriber(self, source: str, *, group: str, prefetch: int = 100) -> RabbitMQSubscriber:
        """A subscriber of exchange ``source`` through the durable queue of ``group``
        (:meth:`queue_name`; declared and bound now)."""
        return RabbitMQSubscriber(self, source, group, prefetch)

    @staticmethod
    def queue_name(source: str, group: str) -> str:
        """The durable queue of consumer ``group`` on exchange ``source``:
        ``"<source>.<group>"`` (``group`` alone for the default exchange ``""``)."""
        return f"{source}.{group}" if source else group

    def declare(self, source: str, group: str) -> None:
        """Declare exchange ``source``, the queue of ``group`` and the binding between
        them, so that messages published before any subscriber runs are kept."""
        self.subscriber(source, group=group, prefetch=1).close()

    def _remember(self, kind: str, name: str) -> None:
        with self._declared_lock:
            self._declared.add((kind, name))

    def purge(self, prefix: str) -> None:
        """Delete the queues and exchanges this object declared whose names start with
        ``prefix``."""
        pika = _pika()
        with self._declared_lock:
            doomed = sorted(d for d in self._declared if d[1].startswith(prefix))
        if not doomed:
            return
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            for kind, name in doomed:
                ch = conn.channel()
                try:
                    if kind == "queue":
                        ch.queue_delete(name)
                    elif name:
                        ch.exchange_delete(name)
                except Exception as exc:  # already gone
                    log.debug("purge %s %s: %s", kind, name, exc)
                finally:
                    if ch.is_open:
                        ch.close()
        finally:
            conn.close()
        with self._declared_lock:
            self._declared.difference_update(doomed)


class RabbitMQPublisher(Publisher):
    """Publishes with publisher confirms on a private I/O thread; see the module docstring."""

    def __init__(self, broker: RabbitMQ) -> None:
        super().__init__()
        self._broker = broker
        self._conn: _Connection | None = None
        self._cond = threading.Condition()
        # per connection, touched on the I/O thread and read under _cond
        self._next_tag = 0
        self._tags: dict[int, int] = {}
        self._outcome: dict[int, str | None] = {}
        self._lost = False
        self._exchanges: set[str] = set()

    def __repr__(self) -> str:
        return f"RabbitMQPublisher({self._broker.describe()})"

    def _connect(self, deadline: float) -> _Connection:
        conn = self._conn
        if conn is not None and conn.alive:
            return conn
        if conn is not None:
            conn.close(1.0)
            self._conn = None

        def attempt() -> _Connection:
            c = _Connection(
                self._broker.url,
                self._broker.describe(),
                lambda ch, done: ch.confirm_delivery(self._on_confirm, callback=done),
                self._on_lost,
            )
            with self._cond:
                self._next_tag = 0
                self._tags = {}
                self._lost = False
                self._exchanges = set()
            c.open(max(0.1, min(self._broker.connect_timeout, deadline - time.monotonic())))
            return c

        self._conn = self._broker.backoff.retry(
            attempt, deadline=deadline, retry_on=(_Lost,), describe=self._broker.describe()
        )
        return self._conn

    def _on_lost(self) -> None:
        with self._cond:
            self._lost = True
            self._cond.notify_all()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = type(method).__name__ == "Ack"
        tag = method.delivery_tag
        with self._cond:
            tags = [t for t in self._tags if t <= tag] if method.multiple else [tag]
            for t in tags:
                index = self._tags.pop(t, None)
                if index is not None:
                    self._outcome[index] = None if ok else "the broker nacked it"
            self._cond.notify_all()

    def _publish_all(self, messages: list[OutgoingMessage], indexes: list[int]) -> None:
        """On the I/O thread: publish ``messages[i]`` for each index, in order."""
        pika = _pika()
        conn = self._conn
        if conn is None or conn.channel is None:
            return
        channel = conn.channel
        try:
            for i in indexes:
                m = messages[i]
                if m.destination and m.destination not in self._exchanges:
                    channel.exchange_declare(m.destination, "topic", durable=True)
                    self._exchanges.add(m.destination)
                    self._broker._remember("exchange", m.destination)
                headers = dict(m.headers)
                content_type = headers.pop("content-type", None)
                props = pika.BasicProperties(
                    delivery_mode=2,
                    headers=headers or None,
                    content_type=content_type,
                    message_id=m.id,
                )
                self._next_tag += 1
                with self._cond:
                    self._tags[self._next_tag] = i
                channel.basic_publish(m.destination, m.key or "", m.body, props)
        except Exception as exc:  # a closed channel: the close callback reports it
            log.debug("publish failed: %s", exc)
            with self._cond:
                self._lost = True
                self._cond.notify_all()

    def _send(self, messages: list[OutgoingMessage], deadline: float) -> list[SendResult]:
        self._outcome = {}
        pending = list(range(len(messages)))
        last_error = "no attempt was made"
        while pending:
            try:
                conn = self._connect(deadline)
            except BrokerUnavailable as exc:
                last_error = exc.cause
                break
            with self._cond:
                self._tags = {}
            try:
                conn.call(functools.partial(self._publish_all, messages, list(pending)))
            except _Lost as exc:
                last_error = str(exc)
                continue
            with self._cond:
                while not self._lost and not all(i in self._outcome for i in pending):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(min(remaining, 0.5))
                lost = self._lost
            pending = [i for i in pending if i not in self._outcome]
            if not pending or time.monotonic() >= deadline:
                last_error = "no confirm before the timeout"
                break
            if lost:
                last_error = conn.error
                log.warning(
                    "%s: %s; sending %d again", self._broker.describe(), conn.error, len(pending)
                )
        results = []
        describe = self._broker.describe()
        for i, m in enumerate(messages):
            if i in pending:
                err: BridgeError | None = BrokerUnavailable(describe, last_error)
            else:
                why = self._outcome.get(i)
                err = None if why is None else SendFailed(m.destination, m.id, why)
            results.append(SendResult(m, err))
        return results

    def _close(self, timeout: float) -> None:
        if self._conn is not None:
            self._conn.close(timeout)
            self._conn = None


class RabbitMQSubscriber(Subscriber):
    """Consumes one durable queue on a private I/O thread; see the module docstring."""

    def __init__(self, broker: RabbitMQ, source: str, group: str, prefetch: int) -> None:
        super().__init__(source, group, prefetch)
        self._broker = broker
        self.queue = broker.queue_name(source, group)
        """The durable queue this subscriber consumes."""
        self._conn: _Connection | None = None
        self._generation = 0
        # filled by the I/O thread (deque appends are atomic); _arrived wakes a waiting
        # receive once per burst rather than once per message
        self._inbox: deque[tuple[int, Any, Any, bytes]] = deque()
        self._arrived = threading.Event()
        self._outstanding: set[int] = set()  # I/O thread only
        self._connect(time.monotonic() + broker.connect_timeout)

    def _setup(self, channel: Any, generation: int, done: Callable[..., None]) -> None:
        """On the I/O thread: QoS, queue, exchange, binding, then consume, each step after
        the broker answered the one before (so the binding exists before ``done``)."""
        broker, q = self._broker, self.queue

        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            self._outstanding.add(method.delivery_tag)
            inbox = self._inbox
            inbox.append((generation, method, props, body))
            if len(inbox) == 1:
                self._arrived.set()

        def consume(*_: Any) -> None:
            channel.basic_consume(q, on_message, auto_ack=False, callback=done)

        def bind(*_: Any) -> None:
            broker._remember("exchange", self.source)
            channel.queue_bind(q, self.source, routing_key=broker.binding, callback=consume)

        def exchange(*_: Any) -> None:
            broker._remember("queue", q)
            if self.source:
                channel.exchange_declare(self.source, "topic", durable=True, callback=bind)
            else:
                consume()

        def declare(*_: Any) -> None:
            channel.queue_declare(q, durable=True, callback=exchange)

        channel.basic_qos(prefetch_count=self.prefetch, callback=declare)

    def _connect(self, deadline: float) -> None:
        def attempt() -> _Connection:
            self._generation += 1
            generation = self._generation
            self._outstanding = set()
            c = _Connection(
                self._broker.url,
                self._broker.describe(),
                lambda ch, done: self._setup(ch, generation, done),
                lambda: None,
            )
            c.open(max(0.1, min(self._broker.connect_timeout, deadline - time.monotonic())))
            return c

        self._conn = self._broker.backoff.retry(
            attempt, deadline=deadline, retry_on=(_Lost,), describe=self._broker.describe()
        )

    def _receive(self, max: int, deadline: float) -> list[Delivery]:
        conn = self._conn
        if conn is None or not conn.alive:
            if conn is not None:
                conn.close(1.0)
            try:
                self._connect(deadline)
            except BrokerUnavailable as exc:
                self.last_error = exc
                log.warning("%s", exc)
                return []
        out: list[Delivery] = []
        inbox, arrived = self._inbox, self._arrived
        while True:
            while inbox and len(out) < max:
                generation, method, props, body = inbox.popleft()
                if generation == self._generation:  # else from a dead connection: it comes again
                    out.append(self._delivery(generation, method, props, body))
            remaining = deadline - time.monotonic()
            if out or remaining <= 0 or self._conn is None or not self._conn.alive:
                return out
            arrived.clear()
            if not inbox:
                arrived.wait(min(remaining, 0.2))

    def _delivery(self, generation: int, method: Any, props: Any, body: bytes) -> Delivery:
        headers: dict[str, str] = {}
        for k, v in (props.headers or {}).items():
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            headers[str(k)] = v if isinstance(v, str) else str(v)
        if props.content_type and "content-type" not in headers:
            headers["content-type"] = props.content_type
        return Delivery(
            body,
            headers=headers,
            source=self.queue,
            key=method.routing_key or None,
            message_id=props.message_id,
            redelivered=bool(method.redelivered),
            coordinates={
                "exchange": method.exchange,
                "routing_key": method.routing_key,
                "queue": self.queue,
                "delivery_tag": method.delivery_tag,
            },
            token=(generation, method.delivery_tag),
        )

    def _tags(self, deliveries: list[Delivery]) -> list[int]:
        return [d._token[1] for d in deliveries if d._token[0] == self._generation]

    def _ack(self, deliveries: list[Delivery]) -> None:
        tags = self._tags(deliveries)
        if not tags or self._conn is None:
            return
        generation = self._generation

        def ack() -> None:
            conn = self._conn
            if conn is None or conn.channel is None or generation != self._generation:
                return
            ch, outstanding = conn.channel, self._outstanding
            top = max(tags)
            acked = set(tags)
            if all(t in acked for t in outstanding if t <= top):
                ch.basic_ack(top, multiple=True)
                self._outstanding = {t for t in outstanding if t > top}
            else:
                for t in sorted(acked):
                    ch.basic_ack(t)
                outstanding.difference_update(acked)

        self._call(ack)

    def _nack(self, deliveries: list[Delivery], requeue: bool) -> None:
        tags = self._tags(deliveries)
        if not tags or self._conn is None:
            return
        generation = self._generation

        def nack() -> None:
            conn = self._conn
            if conn is None or conn.channel is None or generation != self._generation:
                return
            for t in sorted(tags):
                conn.channel.basic_nack(t, requeue=requeue)
                self._outstanding.discard(t)

        self._call(nack)

    def _call(self, fn: Callable[[], None]) -> None:
        conn = self._conn
        if conn is None:
            return
        with contextlib.suppress(_Lost):  # unsettled on a dead connection: delivered again
            conn.call(fn)

    def _close(self, timeout: float) -> None:
        if self._conn is not None:
            self._conn.close(timeout)
            self._conn = None
