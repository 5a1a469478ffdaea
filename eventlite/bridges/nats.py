"""NATS JetStream through nats-py (``pip install 'eventlite[nats]'``).

Topology: a publisher's ``destination`` is a subject; a subscriber's ``source`` is a subject
(wildcards allowed) and its ``group`` a durable pull consumer filtered on it, shared by every
subscriber of that group. The stream that stores a subject is created on first use, named
after the subject (``orders.placed`` → ``orders_placed``), with file storage and the
broker's ``duplicate_window``; pass ``stream=`` to use one stream of your own instead.

Guarantees: a send is confirmed by its JetStream ``PubAck``; a batch is published at once and
its PubAcks gathered. Every message carries ``Nats-Msg-Id`` (its id), so a message sent
again after a lost PubAck is dropped by the server as a duplicate within the window, and a
resend never reorders a key. The consumer acks explicitly; ``max_ack_pending`` is the
subscriber's ``prefetch``; a message not acked within ``ack_wait`` seconds (its consumer
died) is delivered again. ``nack(requeue=True)`` is ``NAK`` (redelivered at once),
``requeue=False`` is ``TERM``.

Threading: nats-py is asyncio only; each publisher and subscriber runs its client on a
private event loop in a thread of its own, so it works from plain threads and never
touches an event loop of the caller. The client reconnects by itself; publishes waiting for
a PubAck then are sent again (same id) until the timeout.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, ClassVar

from ._loop import LoopThread
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

__all__ = ["JetStream", "JetStreamPublisher", "JetStreamSubscriber"]

log = logging.getLogger("eventlite.bridges.nats")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_BAD_HEADER = re.compile(r"[\r\n]")


def _nats() -> Any:
    return require_client("nats", "nats")


def stream_name(subject: str) -> str:
    """The name of the stream made for ``subject`` when none is given."""
    return _UNSAFE.sub("_", subject)


class JetStream(Broker):
    """A NATS server with JetStream, by URL (``nats://[user:password@]host:4222``)."""

    name: ClassVar[str] = "nats"
    features: Features = Features(dedupe=True)

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        stream: str | None = None,
        ack_wait: float = 30.0,
        duplicate_window: float = 120.0,
        ack_timeout: float = 5.0,
        backoff: Backoff | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        """The server's URL (shown with its password masked)."""
        self.stream = stream
        """The stream to use for every subject; None makes one per subject."""
        self.ack_wait = ack_wait
        """Seconds a delivered message waits for its ack before it is delivered again."""
        self.duplicate_window = duplicate_window
        """Seconds the server remembers message ids to drop duplicates (streams it makes)."""
        self.ack_timeout = ack_timeout
        """Seconds to wait for a PubAck before sending the message again."""
        self.backoff = backoff or Backoff()
        """How reconnects are paced."""
        self.connect_timeout = connect_timeout
        """Seconds to wait for a connection."""

    def describe(self) -> str:
        """``nats`` and the URL, password masked."""
        return f"nats {mask_url(self.url)}"

    def publisher(self) -> JetStreamPublisher:
        """A publisher that gathers PubAcks."""
        return JetStreamPublisher(self)

    def subscriber(self, source: str, *, group: str, prefetch: int = 100) -> JetStreamSubscriber:
        """A pull consumer named ``group`` on subject ``source`` (stream and consumer made
        now)."""
        return JetStreamSubscriber(self, source, group, prefetch)

    async def _connect(self) -> Any:
        nats = _nats()

        async def error_cb(exc: Exception) -> None:
            log.debug("%s: %s", self.describe(), exc)

        return await nats.connect(
            self.url,
            connect_timeout=self.connect_timeout,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self.backoff.initial,
            error_cb=error_cb,
        )

    async def _ensure_stream(self, js: Any, subject: str) -> str:
        if self.stream is not None:
            return self.stream
        nats = _nats()
        name = stream_name(subject)
        config = nats.js.api.StreamConfig(
            name=name,
            subjects=[subject],
            storage=nats.js.api.StorageType.FILE,
            duplicate_window=self.duplicate_window,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if "already in use" not in str(exc):
                raise
        return name

    def purge(self, prefix: str) -> None:
        """Delete the streams whose names start with :func:`stream_name` of ``prefix``."""
        loop = LoopThread("eventlite-nats purge")

        async def purge() -> None:
            nc = await self._connect()
            try:
                js = nc.jetstream()
                for name in await js.streams_info():
                    if name.config.name.startswith(stream_name(prefix)):
                        await js.delete_stream(name.config.name)
            finally:
                await nc.close()

        try:
            loop.run(purge(), 30)
        finally:
            loop.stop(5)


class _Client:
    """A nats-py connection on a private event loop thread."""

    def __init__(self, broker: JetStream, what: str) -> None:
        self.broker = broker
        self.loop = LoopThread(f"eventlite-nats {what} {broker.describe()}")
        self.nc: Any = None
        self.js: Any = None

    def connect(self, deadline: float) -> None:
        async def connect() -> None:
            self.nc = await self.broker._connect()
            self.js = self.nc.jetstream()

        def attempt() -> None:
            self.loop.run(connect(), max(0.1, self.broker.connect_timeout + 1))

        self.broker.backoff.retry(
            attempt,
            deadline=deadline,
            retry_on=(OSError, TimeoutError, _nats().errors.Error),
            describe=self.broker.describe(),
        )

    def close(self, timeout: float) -> None:
        nc = self.nc
        try:
            if nc is not None and not nc.is_closed:
                self.loop.run(nc.close(), timeout)
        except Exception as exc:  # closing must not raise
            log.debug("%s: close: %s", self.broker.describe(), exc)
        finally:
            self.loop.stop(timeout)


class JetStreamPublisher(Publisher):
    """Publishes a batch at once and gathers the PubAcks; see the module docstring."""

    def __init__(self, broker: JetStream) -> None:
        super().__init__()
        self._broker = broker
        self._client = _Client(broker, "publisher")
        self._streams: set[str] = set()
        self._client.connect(time.monotonic() + broker.connect_timeout * 2)

    def __repr__(self) -> str:
        return f"JetStreamPublisher({self._broker.describe()})"

    def _send(self, messages: list[OutgoingMessage], deadline: float) -> list[SendResult]:
        outcome: dict[int, Any] = {}
        refused: dict[int, str] = {}
        nc = self._client.nc
        limit = nc.max_payload if nc is not None and nc.max_payload else None
        for i, m in enumerate(messages):
            bad = [n for n, v in m.headers.items() if _BAD_HEADER.search(n + v) or not n]
            if bad:
                refused[i] = f"header {bad[0]!r} is empty or holds a line break"
            elif limit is not None and len(m.body) > limit:
                refused[i] = f"the body is {len(m.body)} bytes, over the server's {limit}"
        pending = [i for i in range(len(messages)) if i not in refused]
        last = "no PubAck before the timeout"
        for delay in self._broker.backoff.delays():
            if not pending:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                acks = self._client.loop.run(
                    self._publish(messages, pending, min(remaining, self._broker.ack_timeout)),
                    remaining + 5,
                )
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                continue
            still = []
            for i, ack in zip(pending, acks, strict=True):
                if ack is None:
                    still.append(i)
                elif isinstance(ack, BaseException):
                    if _is_fatal(ack):
                        refused[i] = f"{type(ack).__name__}: {ack}"
                    else:
                        last = f"{type(ack).__name__}: {ack}"
                        still.append(i)
                else:
                    outcome[i] = ack
            if still and len(still) == len(pending):
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            pending = still
        describe = self._broker.describe()
        results = []
        for i, m in enumerate(messages):
            if i in refused:
                err: BridgeError | None = SendFailed(m.destination, m.id, refused[i])
                results.append(SendResult(m, err))
            elif i in outcome:
                ack = outcome[i]
                coords = {
                    "stream": ack.stream,
                    "sequence": ack.seq,
                    "duplicate": bool(ack.duplicate),
                }
                results.append(SendResult(m, None, coords))
            else:
                results.append(SendResult(m, BrokerUnavailable(describe, last)))
        return results

    async def _publish(
        self, messages: list[OutgoingMessage], indexes: list[int], wait: float
    ) -> list[Any]:
        """Publish and gather; per index a PubAck, an error, or None (no answer in time)."""
        js = self._client.js
        for i in indexes:
            dest = messages[i].destination
            if dest not in self._streams:
                await self._broker._ensure_stream(js, dest)
                self._streams.add(dest)
        futures: list[Any] = []
        for i in indexes:
            m = messages[i]
            headers = dict(m.headers)
            if m.id is not None:
                headers["Nats-Msg-Id"] = m.id
            if m.key is not None:
                headers["Eventlite-Key"] = m.key
            futures.append(await js.publish_async(m.destination, m.body, headers=headers or None))
        if futures:
            await asyncio.wait(futures, timeout=wait)
        out: list[Any] = []
        for f in futures:
            if not f.done():
                f.cancel()
                out.append(None)
            elif f.cancelled():
                out.append(None)
            else:
                exc = f.exception()
                out.append(exc if exc is not None else f.result())
        return out

    def _close(self, timeout: float) -> None:
        self._client.close(timeout)


def _is_fatal(exc: BaseException) -> bool:
    """Whether the server refused the message for good (not a lost answer)."""
    nats = _nats()
    return isinstance(exc, nats.js.errors.APIError) and not isinstance(
        exc, nats.js.errors.ServiceUnavailableError
    )


class JetStreamSubscriber(Subscriber):
    """A durable pull consumer; see the module docstring."""

    def __init__(self, broker: JetStream, source: str, group: str, prefetch: int) -> None:
        super().__init__(source, group, prefetch)
        self._broker = broker
        self._client = _Client(broker, f"subscriber {group}")
        self._sub: Any = None
        self.durable = _UNSAFE.sub("_", group)
        """The durable consumer's name (``group`` with characters NATS refuses replaced)."""
        self._client.connect(time.monotonic() + broker.connect_timeout * 2)
        self._client.loop.run(self._subscribe(), broker.connect_timeout * 2)

    async def _subscribe(self) -> None:
        nats = _nats()
        js = self._client.js
        stream = await self._broker._ensure_stream(js, self.source)
        config = nats.js.api.ConsumerConfig(
            durable_name=self.durable,
            ack_policy=nats.js.api.AckPolicy.EXPLICIT,
            ack_wait=self._broker.ack_wait,
            max_ack_pending=self.prefetch,
            filter_subject=self.source,
            deliver_policy=nats.js.api.DeliverPolicy.ALL,
        )
        # add_consumer creates the durable consumer or updates it (a group made earlier
        # with another prefetch or ack_wait gets this subscriber's), then we bind to it
        await js.add_consumer(stream, config)
        self._sub = await js.pull_subscribe_bind(durable=self.durable, stream=stream)

    def _receive(self, max: int, deadline: float) -> list[Delivery]:
        wait = max_(0.05, deadline - time.monotonic())
        try:
            msgs = self._client.loop.run(self._fetch(max, wait), wait + 5)
        except Exception as exc:
            self.last_error = BrokerUnavailable(
                self._broker.describe(), f"{type(exc).__name__}: {exc}"
            )
            log.warning("%s", self.last_error)
            time.sleep(min(0.2, max_(0.0, deadline - time.monotonic())))
            return []
        return [self._delivery(m) for m in msgs]

    async def _fetch(self, batch: int, timeout: float) -> list[Any]:
        nats = _nats()
        try:
            msgs: list[Any] = await self._sub.fetch(batch, timeout=timeout)
            return msgs
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []

    def _delivery(self, msg: Any) -> Delivery:
        headers = dict(msg.headers or {})
        message_id = headers.pop("Nats-Msg-Id", None)
        key = headers.pop("Eventlite-Key", None)
        meta = msg.metadata
        return Delivery(
            msg.data,
            headers=headers,
            source=self.source,
            key=key,
            message_id=message_id,
            redelivered=meta.num_delivered > 1,
            coordinates={
                "subject": msg.subject,
                "stream": meta.stream,
                "consumer": meta.consumer,
                "stream_sequence": meta.sequence.stream,
                "deliveries": meta.num_delivered,
            },
            token=msg,
        )

    def _ack(self, deliveries: list[Delivery]) -> None:
        self._finish(deliveries, "ack")

    def _nack(self, deliveries: list[Delivery], requeue: bool) -> None:
        self._finish(deliveries, "nak" if requeue else "term")

    def _finish(self, deliveries: list[Delivery], how: str) -> None:
        async def settle() -> None:
            # acks are published like any message and flushed by the client's flusher;
            # one lost with the connection means a redelivery, which the inbox drops
            for d in deliveries:
                await getattr(d._token, how)()

        try:
            self._client.loop.run(settle(), 10)
        except Exception as exc:  # not settled: delivered again after ack_wait
            log.warning("%s: %s failed (%s)", self._broker.describe(), how, exc)

    def _close(self, timeout: float) -> None:
        self._client.close(timeout)


max_ = max
