"""The inbound bridge: messages from a broker into this app's store, each handled once,
acknowledged only after the commit.

An :class:`Inbound` runs one thread (``app.consume_from`` wires it). For each batch of up
to ``batch`` deliveries it

1. decodes each message with the app's registry (:class:`CloudEventCodec`: the type must be
   registered; no class named by a message is ever imported);
2. drops the ones this bridge already handled (the inbox holds the sender's event id);
3. in **one** unit of work: marks each in the inbox, appends it to the local log (so durable
   subscribers, process managers, sagas, projections and streams of this app see it; the
   event keeps its id, time and metadata) and runs the bridge's ``handler`` for it;
4. commits, and only then acknowledges the deliveries to the broker.

A crash between the commit and the acknowledgement means the broker delivers again; the
inbox drops the copy. A message that cannot be decoded (not a CloudEvent, a type the
registry lacks, too large) and one whose handling keeps failing go to the dead-letter
queue under the bridge's name, raw body, headers and broker coordinates kept, and the flow
goes on; ``python -m eventlite dlq retry`` hands such an entry back to the bridge, which
decodes and handles it again. When a batch fails as a whole, its messages are handled one
at a time, so one bad message costs only itself.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from ..clock import Clock
from ..dlq import DeadLetter, DeadLetterNotFound, DeadLetterQueue
from ..envelope import Envelope, message_context
from ..exceptions import MessageDecodeError, MessageError, StorageError
from ..retry import RetryPolicy
from ..store.storage import Storage, Transaction
from ..unit_of_work import UnitOfWork
from .base import (
    Backoff,
    BridgeClosed,
    BridgeError,
    Broker,
    Counters,
    Delivery,
    Subscriber,
    mask_url,
    report,
)
from .cloudevents import CloudEventCodec
from .tracing import process_span, tracer

__all__ = ["PREFIX", "Inbound", "InboundHandler", "InboundStatus", "raw_delivery"]

PREFIX = "bridge-in:"
"""The start of an inbound bridge's name (its inbox consumer and dead-letter source)."""

log = logging.getLogger("eventlite.bridges")

InboundHandler = Callable[[Any, UnitOfWork], object]
"""``handler(event, uow)``: runs for each received event inside the unit of work that
marks it in the inbox; what it writes through ``uow`` commits with the mark, or not at
all."""


class _Duplicate(Exception):
    """The inbox already held a message of the batch (another consumer of the group won)."""


def raw_delivery(delivery: Delivery) -> str:
    """A delivery as JSON text for the dead-letter queue: body (UTF-8 text, or base64 with
    ``"body_base64"``), headers, source, key, message id and broker coordinates."""
    out: dict[str, Any] = {"source": delivery.source}
    try:
        out["body"] = delivery.body.decode("utf-8")
    except UnicodeDecodeError:
        out["body_base64"] = base64.b64encode(delivery.body).decode("ascii")
    out["headers"] = dict(delivery.headers)
    out["key"] = delivery.key
    out["message_id"] = delivery.message_id
    out["coordinates"] = dict(delivery.coordinates)
    return json.dumps(out, default=str, ensure_ascii=False)


def _body_of(raw: str | bytes) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a dead letter written by :func:`raw_delivery`."""
    data = json.loads(raw)
    if "body_base64" in data:
        body = base64.b64decode(data["body_base64"])
    else:
        body = str(data["body"]).encode("utf-8")
    headers = {str(k): str(v) for k, v in dict(data.get("headers") or {}).items()}
    return body, headers


class InboundStatus:
    """What an inbound bridge has done since it started in this process."""

    __slots__ = ("dead_lettered", "duplicates", "handled", "last_error", "last_received_at")

    def __init__(self) -> None:
        self.handled = 0
        """Messages handled and committed."""
        self.duplicates = 0
        """Messages the inbox dropped (handled before)."""
        self.dead_lettered = 0
        """Messages put in the dead-letter queue."""
        self.last_error: str | None = None
        """The last broker or handling failure, as text (passwords masked)."""
        self.last_received_at: float | None = None
        """When the last message arrived (epoch seconds)."""


class Inbound:
    """An inbound bridge's thread (see the module doc).

    :param broker: where to receive from.
    :param wire: decodes CloudEvents with the app's registry.
    :param name: the bridge's name: its inbox consumer and dead-letter source.
    :param source: the queue, topic, stream or subject.
    :param group: the consumer group (processes of one group share the messages).
    :param storage: the app's storage.
    :param dlq: the app's dead-letter queue.
    :param unit_of_work: makes the app's units of work.
    :param handler: runs for each event in its unit of work (optional).
    :param record: append each event to the local log (default True).
    :param stream: the local stream of a recorded event (default
        ``"<name>:<its stream id or key>"``).
    :param retry: attempts at handling one message before it is dead-lettered.
    :param batch: deliveries taken and committed together.
    :param prefetch: the most deliveries held unsettled (the broker's window too).
    :param counters: ``counters(name, counter, n)`` for ``handled``, ``duplicates``,
        ``dead_lettered`` and ``failed``; metrics hooks.
    """

    def __init__(
        self,
        broker: Broker,
        wire: CloudEventCodec,
        *,
        name: str,
        source: str,
        group: str,
        storage: Storage,
        dlq: DeadLetterQueue,
        unit_of_work: Callable[[], UnitOfWork],
        clock: Clock,
        handler: InboundHandler | None = None,
        record: bool = True,
        stream: Callable[[Envelope], str] | None = None,
        retry: RetryPolicy | None = None,
        batch: int = 100,
        prefetch: int = 200,
        poll_interval: float = 0.5,
        backoff: Backoff | None = None,
        counters: Counters | None = None,
    ) -> None:
        if batch < 1 or prefetch < batch:
            raise ValueError(
                f"an inbound bridge needs 1 <= batch <= prefetch, got batch={batch}, "
                f"prefetch={prefetch}"
            )
        self.broker = broker
        self.wire = wire
        self.name = name
        self.source = source
        self.group = group
        self.storage = storage
        self.dlq = dlq
        self.unit_of_work = unit_of_work
        self.clock = clock
        self.handler = handler
        self.record = record
        self.stream = stream if stream is not None else self._default_stream
        self.retry = retry if retry is not None else RetryPolicy(max_attempts=3)
        self.batch = batch
        self.prefetch = prefetch
        self.poll_interval = poll_interval
        self.backoff = backoff if backoff is not None else Backoff()
        self.status = InboundStatus()
        """What it has done in this process."""
        self._counters = counters
        self._inbox = storage.inbox
        self._subscriber: Subscriber | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"eventlite-inbound-{name}", daemon=True
        )

    # -- life -------------------------------------------------------------------------------

    def connect(self) -> bool:
        """Make the broker subscriber now (declaring the queue, group or consumer), so that
        what is sent from now on is kept for this group; True when it worked. When the
        broker cannot be reached the thread keeps trying (a warning says so)."""
        if self._subscriber is not None:
            return True
        try:
            self._subscriber = self.broker.subscriber(
                self.source, group=self.group, prefetch=self.prefetch
            )
        except BridgeError as exc:
            self._failed(exc)
            log.warning(
                "inbound bridge %s: cannot subscribe to %s yet (%s); trying in the background",
                self.name,
                self.source,
                mask_url(str(exc)),
            )
            return False
        return True

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the batch being handled."""
        self._stopping.set()

    def close(self, timeout: float = 5.0) -> bool:
        """Stop, wait up to ``timeout`` seconds for the batch in hand, and release the
        connection (unacknowledged deliveries go back to the broker). True when the thread
        ended in time."""
        deadline = time.monotonic() + timeout
        self.stop()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        done = not self._thread.is_alive()
        sub = self._subscriber
        if sub is not None and done:
            with suppress(Exception):
                sub.close(max(0.1, deadline - time.monotonic()))
        return done

    @property
    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread.is_alive()

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        delays = iter(self.backoff.delays())
        next_retries = 0.0
        while not self._stopping.is_set():
            try:
                sub = self._subscriber
                if sub is None:
                    sub = self._subscriber = self.broker.subscriber(
                        self.source, group=self.group, prefetch=self.prefetch
                    )
                if time.monotonic() >= next_retries:
                    next_retries = time.monotonic() + self.poll_interval
                    self._redeliver_released()
                deliveries = sub.receive(max=self.batch, timeout=min(0.25, self.poll_interval))
                if deliveries:
                    self.status.last_received_at = time.time()
                    try:
                        self._handle(sub, deliveries)
                    except BaseException:
                        # not handled (the storage failed, say): back to the broker, so
                        # they come again and the prefetch window does not fill up
                        with suppress(Exception):
                            sub.nack(deliveries, requeue=True)
                        raise
                delays = iter(self.backoff.delays())
            except Exception as exc:
                self._failed(exc)
                if isinstance(exc, BridgeClosed):
                    # this subscriber is done for: the next try makes a new one
                    broken, self._subscriber = self._subscriber, None
                    if broken is not None:
                        with suppress(Exception):
                            broken.close(1.0)
                delay = next(delays)
                if isinstance(exc, BridgeError):
                    log.warning(
                        "inbound bridge %s: %s; trying again in %.3g s",
                        self.name,
                        mask_url(str(exc)),
                        delay,
                    )
                else:
                    log.exception(
                        "inbound bridge %s: receiving failed; trying again in %.3g s",
                        self.name,
                        delay,
                    )
                self._stopping.wait(delay)

    def _failed(self, exc: BaseException) -> None:
        self.status.last_error = mask_url(f"{type(exc).__name__}: {exc}")
        self._count("failed", 1)

    def _count(self, counter: str, n: int) -> None:
        report(self._counters, self.name, counter, n)

    # -- one batch --------------------------------------------------------------------------

    def _handle(self, sub: Subscriber, deliveries: list[Delivery]) -> None:
        """Decode, drop duplicates, handle the rest in one unit of work, then ack all."""
        decoded: list[tuple[Delivery, Envelope]] = []
        bad: list[tuple[Delivery, MessageError]] = []
        for delivery in deliveries:
            try:
                env = self.wire.decode_delivery(delivery)
            except MessageError as exc:
                bad.append((delivery, exc))
                continue
            except Exception as exc:
                # whatever else a hostile body makes the decoder raise: undecodable too,
                # never a reason to take the message back and stall on it
                why = MessageDecodeError("<cloudevent>", f"{type(exc).__name__}: {exc}")
                bad.append((delivery, why))
                continue
            decoded.append((delivery, env))
        # the ones handled before (one question for the batch), and copies within it
        seen = self._inbox.handled(self.name, [env.id for _, env in decoded]) if decoded else set()
        good: list[tuple[Delivery, Envelope]] = []
        for delivery, env in decoded:
            if env.id not in seen:
                seen.add(env.id)
                good.append((delivery, env))
        duplicates = len(decoded) - len(good)
        try:
            self._commit(good, bad)
        except StorageError:
            raise  # the thread backs off; the deliveries go back to the broker
        except Exception as exc:
            # one of them failed (or another consumer handled one meanwhile): one by one
            if not isinstance(exc, _Duplicate):
                log.warning(
                    "inbound bridge %s: a batch of %d failed (%s: %s); handling its "
                    "messages one at a time",
                    self.name,
                    len(good),
                    type(exc).__name__,
                    exc,
                )
            self._dead_letter_bad(bad)
            for i, (delivery, env) in enumerate(good):
                if self._stopping.is_set():
                    # stopping: what is not handled goes back to the broker
                    rest = {id(d) for d, _ in good[i:]}
                    sub.ack([d for d in deliveries if id(d) not in rest])
                    sub.nack([d for d, _ in good[i:]], requeue=True)
                    return
                duplicates += self._one(delivery, env)
        else:
            self.status.handled += len(good)
            self.status.dead_lettered += len(bad)
            self._count("handled", len(good))
            self._count("dead_lettered", len(bad))
            for delivery, error in bad:
                self._log_dead_letter(delivery, error)
        self.status.duplicates += duplicates
        self._count("duplicates", duplicates)
        sub.ack(deliveries)

    def _commit(
        self,
        good: Sequence[tuple[Delivery, Envelope]],
        bad: Sequence[tuple[Delivery, MessageError]],
    ) -> None:
        """One transaction: the dead letters of ``bad``, and for each of ``good`` its
        inbox mark, its append to the log and its handler."""
        if not good and not bad:
            return
        storage = self.storage
        spans = tracer()
        name = self.name
        inbox = self._inbox
        ids = [env.id for _, env in good]
        now = self.clock.now()

        def mark(tx: Transaction, _events: object) -> None:
            # one statement for the batch; a mark that is not new means another consumer
            # of the group handled one of them meanwhile: the batch rolls back
            if inbox.mark_many(name, ids, now) != len(ids):
                raise _Duplicate(name)

        with storage.transaction(), self.unit_of_work() as uow:
            for delivery, error in bad:
                self._add_dead_letter(delivery, error, 1)
            if ids:
                uow.on_commit_write(mark)
            for _, env in good:
                self._handle_in(uow, env, spans, mark=False)

    def _handle_in(
        self, uow: UnitOfWork, env: Envelope, spans: Any | None = None, *, mark: bool = True
    ) -> None:
        """Add ``env``'s append and handler to ``uow``, and its inbox mark unless ``mark``
        is False (the caller marks a batch); in a span of ``spans``, an OpenTelemetry
        tracer, when there is one."""
        if mark:
            name = self.name
            inbox = self._inbox
            now = self.clock.now()

            def marked(tx: Transaction, _events: object) -> None:
                if not inbox.mark(name, env.id, now):
                    raise _Duplicate(env.id)

            uow.on_commit_write(marked)
        with process_span(spans, env, self.broker.name, self.source):
            if self.record:
                uow.append(self.stream(env), [env])
            if self.handler is not None:
                with message_context(env):
                    self.handler(env.message, uow)

    def _one(self, delivery: Delivery, env: Envelope) -> int:
        """Handle one message in its own unit of work, up to the retry policy's attempts,
        then dead-letter it. Returns 1 when the inbox had it (a duplicate), else 0."""
        attempts = self.retry.max_attempts
        error: Exception | None = None
        first_failed: float | None = None
        for attempt in range(1, attempts + 1):
            try:
                with self.storage.transaction(), self.unit_of_work() as uow:
                    self._handle_in(uow, env, tracer())
            except _Duplicate:
                return 1
            except StorageError:
                raise
            except Exception as exc:
                error = exc
                first_failed = first_failed or self.clock.now()
                log.warning(
                    "inbound bridge %s failed attempt %d of %d on %s %s (%s: %s)",
                    self.name,
                    attempt,
                    attempts,
                    env.type,
                    env.id,
                    type(exc).__name__,
                    exc,
                )
                continue
            self.status.handled += 1
            self._count("handled", 1)
            return 0
        assert error is not None
        with self.storage.transaction():
            self._add_dead_letter(delivery, error, attempts, env)
        self.status.dead_lettered += 1
        self._count("dead_lettered", 1)
        self._log_dead_letter(delivery, error)
        return 0

    # -- dead letters -----------------------------------------------------------------------

    def _add_dead_letter(
        self,
        delivery: Delivery,
        error: Exception,
        attempts: int,
        env: Envelope | None = None,
    ) -> None:
        self.dlq.add(
            self.name,
            raw_delivery(delivery),
            key=None,
            error=error,
            attempts=attempts,
            type_name=env.type if env is not None else _type_name(error),
            message_id=env.id if env is not None else delivery.message_id,
        )

    def _dead_letter_bad(self, bad: Sequence[tuple[Delivery, MessageError]]) -> None:
        if not bad:
            return
        with self.storage.transaction():
            for delivery, error in bad:
                self._add_dead_letter(delivery, error, 1)
        self.status.dead_lettered += len(bad)
        self._count("dead_lettered", len(bad))
        for delivery, error in bad:
            self._log_dead_letter(delivery, error)

    def _log_dead_letter(self, delivery: Delivery, error: Exception) -> None:
        log.error(
            "inbound bridge %s: message %r from %s (%s) dead-lettered: %s: %s",
            self.name,
            delivery.message_id,
            delivery.source,
            dict(delivery.coordinates),
            type(error).__name__,
            error,
        )

    def _redeliver_released(self) -> None:
        """Handle again the dead letters an operator released (``dlq retry``)."""
        for entry in self.dlq.claim_retries(self.name):
            if self._stopping.is_set():
                return
            self._redeliver(entry)

    def _redeliver(self, entry: DeadLetter) -> None:
        try:
            body, headers = _body_of(entry.message)
            env = self.wire.decode(body, headers)
        except (MessageError, ValueError, KeyError, TypeError) as exc:
            with suppress(DeadLetterNotFound):
                self.dlq.fail_again(entry.id, exc)
            return
        if self._inbox.contains(self.name, env.id):
            with suppress(DeadLetterNotFound):
                self.dlq.resolve(entry.id)
            return
        try:
            with self.storage.transaction(), self.unit_of_work() as uow:
                self._handle_in(uow, env)

                def resolve(tx: Transaction, _events: object) -> None:
                    self.dlq.resolve(entry.id)

                uow.on_commit_write(resolve)
        except (_Duplicate, DeadLetterNotFound):
            with suppress(DeadLetterNotFound):
                self.dlq.resolve(entry.id)
        except StorageError:
            raise
        except Exception as exc:
            with suppress(DeadLetterNotFound):
                self.dlq.fail_again(entry.id, exc)
            return
        self.status.handled += 1
        self._count("handled", 1)
        log.info("inbound bridge %s: dead letter #%d handled", self.name, entry.id)

    def _default_stream(self, env: Envelope) -> str:
        own = env.stream_id if env.stream_id is not None else env.key
        label = self.name.removeprefix(PREFIX)
        return f"{label}:{own}" if own is not None else label

    def describe(self) -> dict[str, Any]:
        """Direction, broker, source and counters, for ``app.bridges()``."""
        return {
            "name": self.name,
            "direction": "in",
            "broker": self.broker.describe(),
            "where": f"{self.source} (group {self.group})",
            "handled": self.status.handled,
            "duplicates": self.status.duplicates,
            "dead_lettered": self.status.dead_lettered,
            "last_error": self.status.last_error,
        }


def _type_name(error: Exception) -> str | None:
    name = getattr(error, "type_name", None)
    return name if isinstance(name, str) else None
