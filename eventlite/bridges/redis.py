"""Redis Streams through redis-py (``pip install 'eventlite[redis]'``).

Topology: a publisher's ``destination`` is a stream key; each message is one entry
(``XADD``) with the field ``body`` and, when the message has a key, an id or headers, the
field ``meta``: a JSON object ``{"key": ..., "id": ..., "headers": {...}}`` (one field, not
one per header: redis-py's cost grows with every argument of a command).
A subscriber's ``source`` is the stream key and its ``group`` a consumer group, created
(with the stream) when the subscriber is made, reading from the start of the stream
(``start="0"``) or only what comes after (``start="$"``); every subscriber is a consumer
of its own name in the group, and the group shares the entries among them.

Guarantees: a send is confirmed when ``XADD`` returned the entry id, in pipelines of a
whole batch; a confirmed entry survives a restart only when the server persists
(``appendonly yes``; ``appendfsync always`` for every confirmed entry). One stream keeps
the order of what was added to it. Received entries stay in the group's pending list until
``XACK``; an entry pending longer than ``claim_after`` seconds (its consumer died) is taken
over with ``XAUTOCLAIM`` by the next ``receive`` of any consumer of the group, before new
entries. ``nack(requeue=True)`` marks the entry idle so that the next claim takes it at
once; ``requeue=False`` acks it.

Threading: redis-py clients are thread-safe; each subscriber has its own connection
because ``XREADGROUP ... BLOCK`` holds it while it waits.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
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

__all__ = ["RedisStreams", "RedisStreamsPublisher", "RedisStreamsSubscriber"]

log = logging.getLogger("eventlite.bridges.redis")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _meta(m: OutgoingMessage) -> bytes | None:
    meta: dict[str, Any] = {}
    if m.key is not None:
        meta["key"] = m.key
    if m.id is not None:
        meta["id"] = m.id
    if m.headers:
        meta["headers"] = m.headers
    return _dumps(meta).encode() if meta else None


def _read_meta(raw: bytes | None) -> tuple[str | None, str | None, dict[str, str]]:
    """Key, id and headers from an entry's ``meta`` field; anything malformed reads as
    absent (the body is still delivered, and the decoder judges it)."""
    if raw is None:
        return None, None, {}
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json goes
        return None, None, {"meta": raw.decode("utf-8", "replace")[:8192]}
    if not isinstance(meta, dict):
        return None, None, {}
    key, mid, headers = meta.get("key"), meta.get("id"), meta.get("headers")
    if not isinstance(headers, dict):
        headers = {}
    return (
        key if isinstance(key, str) else None,
        mid if isinstance(mid, str) else None,
        {str(k): str(v) for k, v in headers.items()},
    )


def _redis() -> Any:
    return require_client("redis", "redis")


def _retryable() -> tuple[type[BaseException], ...]:
    r = _redis()
    return (r.ConnectionError, r.TimeoutError, OSError)


class RedisStreams(Broker):
    """A Redis server, by URL (``redis://[:password@]host:6379/0``).

    ``claim_after`` is how long an entry stays pending with a consumer before another may
    take it over; ``maxlen`` trims streams approximately to that many entries when set.
    """

    name: ClassVar[str] = "redis"
    features: Features = Features()

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        claim_after: float = 30.0,
        maxlen: int | None = None,
        start: str = "0",
        backoff: Backoff | None = None,
    ) -> None:
        self.url = url
        """The server's URL (shown with its password masked)."""
        self.claim_after = claim_after
        """Seconds an entry stays with a consumer, unacked, before another may claim it."""
        self.maxlen = maxlen
        """Approximate length streams are trimmed to on ``XADD``; None keeps everything."""
        self.start = start
        """Where a new consumer group starts: ``"0"`` the whole stream, ``"$"`` new entries."""
        self.backoff = backoff or Backoff()
        """How reconnects are paced."""

    def describe(self) -> str:
        """``redis`` and the URL, password masked."""
        return f"redis {mask_url(self.url)}"

    def client(self, **options: Any) -> Any:
        """A new ``redis.Redis`` for this server (bytes responses)."""
        return _redis().Redis.from_url(self.url, **options)

    def publisher(self) -> RedisStreamsPublisher:
        """A publisher that pipelines ``XADD``."""
        return RedisStreamsPublisher(self)

    def subscriber(self, source: str, *, group: str, prefetch: int = 100) -> RedisStreamsSubscriber:
        """A consumer of stream ``source`` in consumer group ``group`` (created now)."""
        return RedisStreamsSubscriber(self, source, group, prefetch)

    def purge(self, prefix: str) -> None:
        """Delete every key whose name starts with ``prefix``."""
        client = self.client()
        try:
            pattern = prefix.replace("*", r"\*").replace("?", r"\?") + "*"
            keys = list(client.scan_iter(match=pattern, count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


class RedisStreamsPublisher(Publisher):
    """Adds each batch to its streams in one pipeline; see the module docstring."""

    def __init__(self, broker: RedisStreams) -> None:
        super().__init__()
        self._broker = broker
        self._client = broker.client(socket_timeout=10, socket_connect_timeout=5)

    def __repr__(self) -> str:
        return f"RedisStreamsPublisher({self._broker.describe()})"

    def _send(self, messages: list[OutgoingMessage], deadline: float) -> list[SendResult]:
        broker = self._broker
        pending = list(range(len(messages)))
        outcome: dict[int, Any] = {}
        last: BaseException | None = None
        retryable = _retryable()
        for delay in broker.backoff.delays():
            try:
                pipe = self._client.pipeline(transaction=False)
                for i in pending:
                    m = messages[i]
                    fields: dict[bytes, bytes] = {b"body": m.body}
                    meta = _meta(m)
                    if meta is not None:
                        fields[b"meta"] = meta
                    pipe.xadd(m.destination, fields, maxlen=broker.maxlen, approximate=True)
                replies = pipe.execute(raise_on_error=False)
            except retryable as exc:
                last = exc
                log.debug("%s: %s, retrying", broker.describe(), exc)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(delay, remaining))
                continue
            for i, reply in zip(pending, replies, strict=True):
                outcome[i] = reply
            pending = []
            break
        describe = broker.describe()
        results = []
        for i, m in enumerate(messages):
            reply = outcome.get(i)
            if i in pending:
                err: BridgeError | None = BrokerUnavailable(
                    describe, f"{type(last).__name__}: {last}"
                )
                results.append(SendResult(m, err))
            elif isinstance(reply, Exception):
                results.append(SendResult(m, SendFailed(m.destination, m.id, str(reply))))
            else:
                entry = reply.decode() if isinstance(reply, bytes) else str(reply)
                results.append(SendResult(m, None, {"stream": m.destination, "entry_id": entry}))
        return results

    def _close(self, timeout: float) -> None:
        self._client.close()


class RedisStreamsSubscriber(Subscriber):
    """One consumer in a consumer group; see the module docstring."""

    def __init__(self, broker: RedisStreams, source: str, group: str, prefetch: int) -> None:
        super().__init__(source, group, prefetch)
        self._broker = broker
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        """This subscriber's consumer name in the group."""
        self._client = broker.client(socket_timeout=None, socket_connect_timeout=5)
        self._claim_cursor = b"0-0"
        self._next_claim = 0.0
        self._create_group(time.monotonic() + 10)

    def _create_group(self, deadline: float) -> None:
        r = _redis()

        def create() -> None:
            try:
                self._client.xgroup_create(
                    self.source, self.group, id=self._broker.start, mkstream=True
                )
            except r.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

        self._broker.backoff.retry(
            create, deadline=deadline, retry_on=_retryable(), describe=self._broker.describe()
        )

    def _receive(self, max: int, deadline: float) -> list[Delivery]:
        r = _redis()
        try:
            out = self._claim(max)
            if out:
                return out
            block = int(max_(0.0, deadline - time.monotonic()) * 1000)
            reply = self._client.xreadgroup(
                self.group, self.consumer, {self.source: ">"}, count=max, block=block or None
            )
        except r.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream or group was deleted: make them again
                self._create_group(deadline)
                return []
            raise
        except _retryable() as exc:
            self.last_error = BrokerUnavailable(self._broker.describe(), str(exc))
            log.warning("%s", self.last_error)
            time.sleep(min(0.2, max_(0.0, deadline - time.monotonic())))
            return []
        out = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(self._delivery(entry_id, fields, redelivered=False))
        return out

    def _claim(self, max: int) -> list[Delivery]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        min_idle = int(self._broker.claim_after * 1000)
        cursor, entries, *_ = self._client.xautoclaim(
            self.source, self.group, self.consumer, min_idle, self._claim_cursor, count=max
        )
        self._claim_cursor = cursor
        if not entries and cursor in (b"0-0", "0-0"):
            self._next_claim = now + min_(1.0, self._broker.claim_after / 4)
        return [
            self._delivery(entry_id, fields, redelivered=True)
            for entry_id, fields in entries
            if fields is not None
        ]

    def _delivery(self, entry_id: bytes, fields: dict[bytes, bytes], redelivered: bool) -> Delivery:
        key, message_id, headers = _read_meta(fields.get(b"meta"))
        entry = entry_id.decode()
        return Delivery(
            fields.get(b"body", b""),
            headers=headers,
            source=self.source,
            key=key,
            message_id=message_id,
            redelivered=redelivered,
            coordinates={
                "stream": self.source,
                "group": self.group,
                "consumer": self.consumer,
                "entry_id": entry,
            },
            token=entry,
        )

    def _ack(self, deliveries: list[Delivery]) -> None:
        try:
            self._client.xack(self.source, self.group, *[d._token for d in deliveries])
        except _retryable() as exc:  # still pending: claimed and delivered again later
            log.warning("%s: ack failed (%s)", self._broker.describe(), exc)

    def _nack(self, deliveries: list[Delivery], requeue: bool) -> None:
        if not requeue:
            self._ack(deliveries)
            return
        idle = int(self._broker.claim_after * 1000) + 1
        try:
            self._client.xclaim(
                self.source,
                self.group,
                self.consumer,
                0,
                [d._token for d in deliveries],
                idle=idle,
                justid=True,
            )
        except _retryable() as exc:
            log.warning("%s: nack failed (%s)", self._broker.describe(), exc)
        self._next_claim = 0.0

    def _close(self, timeout: float) -> None:
        self._client.close()


max_ = max
min_ = min
