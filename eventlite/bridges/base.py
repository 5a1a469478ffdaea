"""The transport seam between eventlite and a message broker.

A broker is reached through one :class:`Broker` object (its address and options), which
makes :class:`Publisher` s and :class:`Subscriber` s. Both are small on purpose, in the
spirit of httpx's transports and watermill's ``Publisher``/``Subscriber``: they move bytes
and headers, confirm and acknowledge; encoding (:mod:`eventlite.bridges.cloudevents`),
checkpoints, the inbox and the dead-letter queue live above them.

Contract of a publisher
    ``send_batch(messages, timeout=None)`` returns one :class:`SendResult` per message, in
    the order given, and returns only when every message is either *confirmed* by the
    broker (RabbitMQ publisher confirm, Kafka ``acks=all`` delivery report of the
    idempotent producer, JetStream PubAck, the id ``XADD`` returned, the SQS batch result)
    or has *failed*. A confirmed message survives what the broker promises to survive (see
    :attr:`Features.survives_restart`). A lost connection is retried with bounded backoff
    (:class:`Backoff`) and the unconfirmed messages are sent again, in their order, until
    ``timeout``; what is still unconfirmed then is reported failed with
    :class:`BrokerUnavailable`. A message the broker refuses is failed with
    :class:`SendFailed`; the others are not held up by it. Messages of one key are sent
    in the order given. After a failure the caller sends the failed message and every later
    one of its key again: the broker may already hold some of those, so a consumer can see a
    message twice (at-least-once; the receiving inbox drops the copy by its ``id``).

Contract of a subscriber
    ``receive(max, timeout)`` returns up to ``max`` :class:`Delivery` objects, waiting at most
    ``timeout`` seconds for the first; ``[]`` when none came. A subscriber never holds more
    than ``prefetch`` deliveries that were neither acked nor nacked: at that bound,
    ``receive`` returns ``[]`` until some are settled (back-pressure, bounded memory).
    ``ack(deliveries)`` removes them from the broker for this group; ``nack(deliveries,
    requeue=True)`` gives them back for redelivery (to this or another consumer of the
    group), ``requeue=False`` drops them from the broker (the caller has dead-lettered them
    locally). A delivery that is never settled — its consumer died — is delivered again
    after the broker's redelivery delay (connection loss, ``ack_wait``, the pending-entry
    claim time, the visibility timeout, a group rebalance). Subscribers of one ``group``
    share the messages of their source; each delivery carries its broker coordinates (topic,
    partition, offset, sequence, entry id ...) for the dead-letter queue. A lost connection
    is re-established with bounded backoff inside ``receive``; deliveries received before it
    can no longer be settled (their ack is ignored) and come again.

Threading
    A publisher or subscriber may be called from several threads; calls are serialized by
    the transport. Client objects that are not thread-safe never leave the transport's own
    thread (see each broker module).

``close(timeout)`` stops the transport within ``timeout`` seconds: a publisher waits for
the confirms of sends in progress, a subscriber stops taking messages and releases the
unsettled ones to the broker (they will be redelivered).
"""

from __future__ import annotations

import abc
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import attrs

from ..exceptions import EventliteError

__all__ = [
    "Backoff",
    "BridgeClosed",
    "BridgeError",
    "Broker",
    "BrokerUnavailable",
    "Counters",
    "Delivery",
    "Features",
    "OutgoingMessage",
    "Publisher",
    "SendFailed",
    "SendResult",
    "Subscriber",
    "mask_url",
    "report",
]

log = logging.getLogger("eventlite.bridges")

T = TypeVar("T")

# -- errors -----------------------------------------------------------------------------------


class BridgeError(EventliteError):
    """A broker bridge failed; the broker client's error is the ``__cause__``.

    ::

        BridgeError
        ├── BrokerUnavailable   the broker cannot be reached (within the timeout)
        ├── SendFailed          the broker refused one message (a nack, an error result)
        └── BridgeClosed        the publisher or subscriber was closed
    """


class BrokerUnavailable(BridgeError):
    """The broker could not be reached, or the connection was lost and not re-established
    within the timeout. ``broker`` names it with its address (password masked)."""

    def __init__(self, broker: str, cause: str) -> None:
        self.broker = broker
        self.cause = cause
        super().__init__(f"{broker} is unavailable: {cause}")


class SendFailed(BridgeError):
    """The broker refused one message. ``destination`` and ``message_id`` name it."""

    def __init__(self, destination: str, message_id: str | None, cause: str) -> None:
        self.destination = destination
        self.message_id = message_id
        self.cause = cause
        super().__init__(f"sending message {message_id!r} to {destination!r} failed: {cause}")


class BridgeClosed(BridgeError):
    """The publisher or subscriber was closed; it takes no more calls."""


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/]*):[^@/]*@")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages::

    mask_url("amqp://guest:secret@host:5672/")  ->  "amqp://guest:***@host:5672/"
    """
    return _USERINFO.sub(r"\g<scheme>\g<user>:***@", url)


# -- values -----------------------------------------------------------------------------------


def _headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    if not value:
        return {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"message headers must map str to str, got {k!r}: {v!r}")
    return dict(value)


@attrs.frozen
class OutgoingMessage:
    """One message for :meth:`Publisher.send_batch`."""

    destination: str
    """Where it goes: an exchange, topic, subject, stream key or queue/topic name, as the
    broker module documents."""
    body: bytes
    """The payload, sent unchanged."""
    key: str | None = None
    """The ordering key (routing key, partition key, FIFO group); messages of one key
    keep their order."""
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers)
    """String headers, carried where the broker has headers (see :attr:`Features.headers`)."""
    id: str | None = None
    """The message id (the event id): the broker's dedupe id where it has one
    (``Nats-Msg-Id``, SQS FIFO ``MessageDeduplicationId``) and the receiver's inbox key."""


@attrs.frozen
class SendResult:
    """What became of one message of a batch."""

    message: OutgoingMessage
    """The message, as given."""
    error: BridgeError | None = None
    """None when the broker confirmed it; else why it is not confirmed."""
    coordinates: Mapping[str, Any] = attrs.field(factory=dict)
    """Where the broker put it, when it says (a sequence, an offset, an entry id)."""

    @property
    def confirmed(self) -> bool:
        """Whether the broker confirmed the message."""
        return self.error is None


class Delivery:
    """One received message, to be settled with :meth:`Subscriber.ack` or
    :meth:`Subscriber.nack`.

    Nothing in it is trusted: ``body`` and ``headers`` are exactly what the broker handed
    over. ``coordinates`` locate it on the broker for the dead-letter queue.
    """

    __slots__ = (
        "body",
        "headers",
        "key",
        "source",
        "message_id",
        "redelivered",
        "coordinates",
        "_token",
        "_settled",
    )

    body: bytes
    """The payload as received."""
    headers: Mapping[str, str]
    """The headers as received (values decoded as UTF-8 text where they were bytes)."""
    key: str | None
    """The ordering key it was sent with, where the broker keeps it."""
    source: str
    """The queue, topic, stream or subject it came from."""
    message_id: str | None
    """The sender's message id, where the broker keeps it."""
    redelivered: bool | None
    """Whether the broker says it delivered this message before (None: it does not say)."""
    coordinates: Mapping[str, Any]
    """Broker coordinates for the dead-letter queue (exchange and routing key; topic,
    partition and offset; stream and sequence; entry id; queue and message id)."""

    def __init__(
        self,
        body: bytes,
        *,
        headers: Mapping[str, str],
        source: str,
        key: str | None = None,
        message_id: str | None = None,
        redelivered: bool | None = None,
        coordinates: Mapping[str, Any] | None = None,
        token: Any = None,
    ) -> None:
        self.body = body
        self.headers = headers
        self.key = key
        self.source = source
        self.message_id = message_id
        self.redelivered = redelivered
        self.coordinates = coordinates if coordinates is not None else {}
        self._token = token
        self._settled = False

    def __repr__(self) -> str:
        return (
            f"Delivery(source={self.source!r}, key={self.key!r}, "
            f"message_id={self.message_id!r}, size={len(self.body)}, "
            f"coordinates={dict(self.coordinates)!r})"
        )


@attrs.frozen
class Features:
    """What a broker can and cannot do; the bridge contract suite skips, by these names,
    exactly the tests a broker cannot pass."""

    headers: bool = True
    """Message headers travel with the body (so CloudEvents binary mode works)."""
    header_prefix: str = "ce-"
    """The CloudEvents binary-mode header prefix of this broker's protocol binding."""
    ordered_per_key: bool = True
    """One consumer of a group receives the messages of a key in the order they were sent."""
    ordered_per_key_shared: bool = False
    """That order also holds when several consumers share a group (Kafka partitions, SQS
    FIFO message groups)."""
    consumer_groups: bool = True
    """Several subscribers of one group share the messages between them."""
    requeue: bool = True
    """``nack(requeue=True)`` delivers the message again."""
    redelivery_after_crash: bool = True
    """A message received but never settled (its consumer died) is delivered again."""
    dedupe: bool = False
    """The broker drops a message sent again with the same ``id`` (within its window)."""
    survives_restart: bool = True
    """Confirmed messages survive a broker restart (in the configuration tests use)."""
    max_body: int | None = None
    """The largest body the broker takes, in bytes, when it has a limit."""


@attrs.frozen
class Backoff:
    """Bounded exponential backoff with jitter between reconnect attempts."""

    initial: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    """Seconds before the first retry."""
    maximum: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    """The longest wait between two attempts, in seconds."""
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    """Each wait is this many times the one before, up to ``maximum``."""
    jitter: float = attrs.field(
        default=0.2, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    """Each wait is shortened by a random fraction up to this, so clients do not retry in
    lockstep."""

    def delays(self) -> Iterable[float]:
        """The endless sequence of waits."""
        delay = self.initial
        while True:
            yield delay * (1 - random.random() * self.jitter)
            delay = min(self.maximum, delay * self.multiplier)

    def retry(
        self,
        attempt: Callable[[], T],
        *,
        deadline: float,
        retry_on: tuple[type[BaseException], ...],
        describe: str,
        closed: Callable[[], bool] = lambda: False,
    ) -> T:
        """``attempt()`` until it returns, waiting between failures, until ``deadline`` (a
        ``time.monotonic()`` value); then raises :class:`BrokerUnavailable` naming
        ``describe`` and the last error. Errors outside ``retry_on`` propagate at once."""
        last: BaseException | None = None
        for delay in self.delays():
            if closed():
                raise BridgeClosed(f"{describe} is closed")
            try:
                return attempt()
            except retry_on as exc:
                last = exc
                log.debug("%s: attempt failed (%s), retrying", describe, exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(delay, remaining))
        raise BrokerUnavailable(describe, _describe(last)) from last


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no attempt was made"
    text = str(exc) or repr(exc)
    return mask_url(f"{type(exc).__name__}: {text}")


# -- the seam ---------------------------------------------------------------------------------


class Publisher(abc.ABC):
    """Sends batches of messages and reports each one confirmed or failed (see the module
    docstring for the contract)."""

    default_timeout: float = 30.0
    """Seconds :meth:`send_batch` keeps retrying a lost connection when no timeout is given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False

    def send_batch(
        self, messages: Sequence[OutgoingMessage], timeout: float | None = None
    ) -> list[SendResult]:
        """Send ``messages`` and return one result per message, in order, once each is
        confirmed or failed; waits at most ``timeout`` seconds (``default_timeout`` when
        None) for a lost connection to come back. Raises :class:`BridgeClosed` after
        :meth:`close`."""
        if not messages:
            return []
        with self._lock:
            if self._closed:
                raise BridgeClosed(f"{self!r} is closed")
            deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
            return self._send(list(messages), deadline)

    @abc.abstractmethod
    def _send(self, messages: list[OutgoingMessage], deadline: float) -> list[SendResult]:
        """Send and wait for confirms; called with the lock held."""

    def close(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` seconds for sends in progress, then release the connection.
        Closing twice is harmless."""
        got = self._lock.acquire(timeout=max(0.0, timeout))
        try:
            if self._closed:
                return
            self._closed = True
            self._close(timeout)
        finally:
            if got:
                self._lock.release()

    @abc.abstractmethod
    def _close(self, timeout: float) -> None:
        """Release the connection."""

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscriber(abc.ABC):
    """Receives deliveries from one source for one group, never more than ``prefetch``
    unsettled at a time (see the module docstring for the contract)."""

    def __init__(self, source: str, group: str, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.source = source
        """The queue, topic, stream or subject this subscriber reads."""
        self.group = group
        """The consumer group: subscribers of one group share the messages."""
        self.prefetch = prefetch
        """The most deliveries held unsettled at once."""
        self.last_error: BridgeError | None = None
        """The last connection error ``receive`` recovered from or gave up on, if any."""
        self._lock = threading.RLock()
        self._closed = False
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Deliveries received and not yet settled."""
        return self._in_flight

    def receive(self, max: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Up to ``max`` deliveries, waiting up to ``timeout`` seconds for the first; ``[]``
        when none came, or when ``prefetch`` deliveries are already unsettled."""
        if max < 1:
            raise ValueError(f"max must be at least 1, got {max}")
        with self._lock:
            if self._closed:
                raise BridgeClosed(f"{self!r} is closed")
            room = min(max, self.prefetch - self._in_flight)
            if room <= 0:
                return []
            got = self._receive(room, time.monotonic() + timeout)
            self._in_flight += len(got)
            return got

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge ``deliveries``: the broker will not deliver them to this group again.
        Settling a delivery twice, or one from before a reconnect, is ignored."""
        self._settle(deliveries, lambda ds: self._ack(ds))

    def nack(self, deliveries: Sequence[Delivery], *, requeue: bool = True) -> None:
        """Give ``deliveries`` back: redelivered later with ``requeue=True``, dropped from
        the broker with ``requeue=False`` (dead-letter them locally first)."""
        self._settle(deliveries, lambda ds: self._nack(ds, requeue))

    def _settle(
        self, deliveries: Sequence[Delivery], how: Callable[[list[Delivery]], None]
    ) -> None:
        with self._lock:
            if self._closed:
                raise BridgeClosed(f"{self!r} is closed")
            todo = [d for d in deliveries if not d._settled]
            if not todo:
                return
            for d in todo:
                d._settled = True
            self._in_flight -= len(todo)
            how(todo)

    def close(self, timeout: float = 5.0) -> None:
        """Stop receiving and release the connection within ``timeout`` seconds; unsettled
        deliveries go back to the broker. Closing twice is harmless."""
        got = self._lock.acquire(timeout=max(0.0, timeout))
        try:
            if self._closed:
                return
            self._closed = True
            self._close(timeout)
        finally:
            if got:
                self._lock.release()

    @abc.abstractmethod
    def _receive(self, max: int, deadline: float) -> list[Delivery]:
        """Up to ``max`` deliveries by ``deadline``; called with the lock held."""

    @abc.abstractmethod
    def _ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge; each delivery is settled once."""

    @abc.abstractmethod
    def _nack(self, deliveries: list[Delivery], requeue: bool) -> None:
        """Requeue or drop; each delivery is settled once."""

    @abc.abstractmethod
    def _close(self, timeout: float) -> None:
        """Release the connection."""

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={self.source!r}, group={self.group!r})"


class Broker(abc.ABC):
    """A broker's address and options; makes publishers and subscribers.

    ``app.publish_to(broker, ...)`` and ``app.consume_from(broker, ...)`` take one of
    these. Subclasses: :class:`~eventlite.bridges.rabbitmq.RabbitMQ`,
    :class:`~eventlite.bridges.redis.RedisStreams`,
    :class:`~eventlite.bridges.nats.JetStream`, :class:`~eventlite.bridges.kafka.Kafka`,
    :class:`~eventlite.bridges.sqs.SQS`.
    """

    name: ClassVar[str]
    """The broker's short name (``"rabbitmq"``, ``"kafka"``...)."""
    features: Features
    """What this broker can do."""

    @abc.abstractmethod
    def publisher(self) -> Publisher:
        """A new publisher; close it when done."""

    @abc.abstractmethod
    def subscriber(self, source: str, *, group: str, prefetch: int = 100) -> Subscriber:
        """A new subscriber of ``source`` in consumer ``group``; close it when done."""

    def purge(self, prefix: str) -> None:  # noqa: B027 (optional)
        """Delete what this broker holds under names starting with ``prefix`` (queues,
        exchanges, topics, streams); for tests that clean up after themselves."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The broker's kind and address, password masked, for logs and errors."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


Counters = Callable[[str, str, int], None]
"""``counters(bridge, counter, n)``: where a bridge reports its counts (the app passes
:meth:`DeliveryMetrics.bridged <eventlite.metrics.DeliveryMetrics.bridged>`)."""


def report(counters: Counters | None, bridge: str, counter: str, n: int) -> None:
    """Add ``n`` to a bridge's ``counter`` through ``counters``; a hook that raises is
    logged, never raised (a metrics failure must not stop a bridge)."""
    if counters is not None and n:
        try:
            counters(bridge, counter, n)
        except Exception:
            log.exception("bridge metrics hook failed")


def require_client(module: str, extra: str) -> Any:
    """Import a broker's client library, or raise ``ImportError`` naming the extra that
    installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this bridge needs {module!r}: pip install 'eventlite[{extra}]'"
        ) from exc
