"""The outbound bridge: committed events, in log order, to a broker; the checkpoint moves
only after the broker confirmed them.

An :class:`Outbound` is the batch call of a durable subscriber of the log
(:meth:`Relay.add_batch <eventlite.relay.Relay.add_batch>`); ``app.publish_to`` wires one.
Each page of the log becomes one :meth:`Publisher.send_batch
<eventlite.bridges.Publisher.send_batch>`:

- every message confirmed: the page is done, the checkpoint moves past it;
- the broker unavailable past the send timeout (or any unexpected failure): the call
  raises and the relay sends the page again from the checkpoint after a back-off, so a
  message may reach the broker twice (the receiving inbox drops the copy by its id) and
  none is lost;
- one message refused by the broker (too large, say) or one that cannot be encoded: that
  one is dead-lettered here and the others go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..envelope import Envelope
from ..store.events import LogRecord
from .base import (
    BridgeError,
    Broker,
    Counters,
    OutgoingMessage,
    Publisher,
    SendFailed,
    mask_url,
    report,
)
from .cloudevents import CONTENT_TYPE, CloudEventCodec
from .tracing import send_span, tracer

__all__ = ["PREFIX", "KeyOf", "Outbound", "OutboundStatus"]

PREFIX = "bridge-out:"
"""The start of an outbound bridge's subscriber name (its checkpoint and dead letters)."""

log = logging.getLogger("eventlite.bridges")

_STRUCTURED = {"content-type": CONTENT_TYPE}

KeyOf = Callable[[Envelope], "str | None"]
"""The ordering key of an event (default: its key, or its stream id)."""


class OutboundStatus:
    """What an outbound bridge has done since it started in this process."""

    __slots__ = ("last_error", "last_sent_at", "refused", "sent")

    def __init__(self) -> None:
        self.sent = 0
        """Messages the broker confirmed."""
        self.refused = 0
        """Messages dead-lettered (refused by the broker, or not encodable)."""
        self.last_error: str | None = None
        """The last failure, as text (a password in an address masked); None after a
        confirmed batch."""
        self.last_sent_at: float | None = None
        """When the broker last confirmed a batch (epoch seconds)."""


class Outbound:
    """The batch call of an outbound bridge (see the module doc).

    :param broker: where to send.
    :param wire: encodes envelopes as CloudEvents.
    :param destination: one destination for all, or a function of the envelope.
    :param decode: the store's ``decode``, for records that cannot be sent as stored.
    :param key: the ordering key of an event (default: its key, or its stream id).
    :param send_timeout: seconds one batch may wait for a lost connection to come back
        before the page is given up and tried again after the relay's back-off.
    :param counters: called with (counter name, count) for ``sent``, ``refused`` and
        ``failed`` (a batch given up); metrics hooks.
    """

    def __init__(
        self,
        broker: Broker,
        wire: CloudEventCodec,
        *,
        name: str,
        destination: str | Callable[[Envelope], str],
        decode: Callable[[LogRecord], Envelope],
        key: KeyOf | None = None,
        send_timeout: float = 10.0,
        counters: Counters | None = None,
    ) -> None:
        if not (isinstance(destination, str) and destination) and not callable(destination):
            raise ValueError(
                f"destination must be a non-empty name or a function of the envelope, got "
                f"{destination!r}"
            )
        self.broker = broker
        self.wire = wire
        self.name = name
        self.destination = destination
        self.decode = decode
        """Decodes a stored record (the store's ``decode``) when it takes the long way."""
        self.key = key
        self.send_timeout = send_timeout
        self.status = OutboundStatus()
        """What it has done in this process."""
        self._counters = counters
        self._publisher: Publisher | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _count(self, counter: str, n: int) -> None:
        report(self._counters, self.name, counter, n)

    def __call__(self, items: Sequence[LogRecord | Envelope]) -> list[Exception | None]:
        """Send ``items`` (stored records of a page of the log, or one released dead
        letter's envelope) in one batch; one entry per item: None once confirmed, or why it
        was refused. Raises when the broker could not be reached (the relay then repeats
        the page)."""
        results: list[Exception | None] = [None] * len(items)
        messages: list[OutgoingMessage] = []
        index: list[int] = []
        destination = self.destination
        key_of = self.key
        wire = self.wire
        # the short way: the stored row becomes the CloudEvent without being decoded
        fast = isinstance(destination, str) and key_of is None and not wire.binary
        for i, item in enumerate(items):
            try:
                if type(item) is not Envelope:
                    assert isinstance(item, LogRecord)
                    if fast:
                        body = wire.encode_record(item, item.stream_id)
                        if body is not None:
                            messages.append(
                                OutgoingMessage(
                                    destination,  # type: ignore[arg-type]  # a str when fast
                                    body,
                                    key=item.stream_id,
                                    headers=_STRUCTURED,
                                    id=item.id,
                                )
                            )
                            index.append(i)
                            continue
                    env = self.decode(item)
                else:
                    env = item
                where = destination if isinstance(destination, str) else destination(env)
                key = key_of(env) if key_of is not None else None
                if key is None:
                    key = str(env.key) if env.key is not None else env.stream_id
                messages.append(wire.outgoing(env, where, key=key))
            except Exception as exc:
                results[i] = exc
                continue
            index.append(i)
        if messages:
            try:
                publisher = self._publisher_now()
            except BridgeError as exc:  # the broker cannot be reached yet: the relay retries
                self.status.last_error = mask_url(f"{type(exc).__name__}: {exc}")
                self._count("failed", 1)
                raise
            where = destination if isinstance(destination, str) else "(by event)"
            try:
                with send_span(tracer(), self.broker.name, where, len(messages)):
                    sent = publisher.send_batch(messages, timeout=self.send_timeout)
            except BridgeError as exc:
                self._failed(exc, publisher)
                raise
            for i, result in zip(index, sent, strict=True):
                error = result.error
                if error is None:
                    continue
                if not isinstance(error, SendFailed):
                    # not refused: the broker went away; the page is tried again
                    self._failed(error, publisher)
                    raise error
                results[i] = error
        refused = sum(1 for r in results if r is not None)
        status = self.status
        status.sent += len(items) - refused
        status.refused += refused
        status.last_error = None if not refused else str(next(r for r in results if r))
        status.last_sent_at = time.time()
        self._count("sent", len(items) - refused)
        self._count("refused", refused)
        return results

    def _failed(self, error: BaseException, publisher: Publisher) -> None:
        """A batch was given up: say why, and start the next try on a new publisher (this
        one may be closed, or stuck on a connection the broker dropped)."""
        self.status.last_error = mask_url(f"{type(error).__name__}: {error}")
        self._count("failed", 1)
        with self._lock:
            if self._publisher is publisher:
                self._publisher = None
        try:
            publisher.close(timeout=1.0)
        except Exception:
            log.debug("closing a failed publisher of %s failed", self.name, exc_info=True)

    def _publisher_now(self) -> Publisher:
        with self._lock:
            if self._closed:
                raise BridgeError(f"the outbound bridge {self.name!r} is closed")
            publisher = self._publisher
            if publisher is None:
                publisher = self._publisher = self.broker.publisher()
            return publisher

    def close(self, timeout: float = 5.0) -> None:
        """Release the broker connection (after the relay stopped calling it)."""
        with self._lock:
            self._closed = True
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close(timeout)

    def describe(self) -> dict[str, Any]:
        """Direction, broker, destination and counters, for ``python -m eventlite bridges``
        and ``app.bridges()``."""
        where = self.destination if isinstance(self.destination, str) else "(by event)"
        return {
            "name": self.name,
            "direction": "out",
            "broker": self.broker.describe(),
            "where": where,
            "sent": self.status.sent,
            "refused": self.status.refused,
            "last_error": self.status.last_error,
        }
