"""The work queue itself: :class:`WorkQueue` and the :class:`Received` messages it hands out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from ..clock import Clock, SystemClock
from ..codec import Codec
from ..dlq import DeadLetterQueue, queue_source
from ..envelope import Envelope
from ..exceptions import MessageEncodeError
from ..store.dead_letters import Failure
from ..store.queues import FailedMessage, QueueStats, QueueStore
from ..store.storage import Storage

if TYPE_CHECKING:
    from ._consumer import QueueConsumer

__all__ = ["DEFAULT_DEDUP_WINDOW", "Received", "WorkQueue"]

_log = logging.getLogger("eventlite.queue")

R = TypeVar("R")

DEFAULT_DEDUP_WINDOW: Final = 300.0
"""Seconds a ``dedup_id`` is remembered after the first send that used it."""


@attrs.frozen
class Received:
    """A message handed out by :meth:`WorkQueue.receive`."""

    envelope: Envelope
    """The message's envelope (id, metadata, timestamp)."""
    receipt: str
    """Proof of this receive: pass it to ``ack``, ``nack`` or ``extend``."""
    receive_count: int
    """How many times the message was handed out, this time included (1 the first time)."""
    group: str | None = None
    """The FIFO group the message was sent with, or None."""

    @property
    def message(self) -> Any:
        """The message object."""
        return self.envelope.message

    @property
    def message_id(self) -> str:
        """The message id (the envelope id), the same on every receive."""
        return self.envelope.id


def check_seconds(name: str, value: float, *, positive: bool = False) -> float:
    """``value`` as float seconds; ``ValueError`` naming ``name`` unless it is a number
    ``>= 0`` (``> 0`` when ``positive``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (value > 0 if positive else value >= 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a number of seconds {bound}, got {value!r}")
    return float(value)


def _identifier(name: str, value: object) -> str:
    """A queue name, group or dedup id: a non-empty str of valid text without NUL."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"a queue's {name} must be a non-empty str, got {value!r}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"a queue's {name} must be valid text, got {value!r} (it holds a lone surrogate)"
            ) from None
    if "\x00" in value:
        raise ValueError(f"a queue's {name} must not hold a NUL character, got {value!r}")
    return value


class WorkQueue:
    """A named queue in a storage (see :mod:`eventlite.queue` for its rules).

    ``storage`` keeps the messages (``app.storage``, or ``SQLiteStorage("app.db")``);
    ``name`` names the queue (several queues share a storage); ``codec`` turns messages
    into wire JSON and back (default: a :class:`Codec` over the default registry).
    ``visibility_timeout`` is how many seconds a received message stays hidden unless
    acked; ``max_receives`` how many times it may be handed out; ``ttl`` how many seconds
    it may wait (None: forever); ``dlq`` where messages that exhaust their receives,
    expire or cannot be decoded go (None: they are dropped, with a log record; it must
    live in the same storage); ``dedup_window`` how long a ``dedup_id`` is remembered;
    ``clock`` the time. ``app.queue(name)`` makes one with the app's storage, codec, DLQ
    and clock.

    Safe to share between threads, and between processes sharing the storage.
    """

    def __init__(
        self,
        storage: Storage,
        name: str,
        codec: Codec | None = None,
        *,
        visibility_timeout: float = 30.0,
        max_receives: int = 5,
        ttl: float | None = None,
        dlq: DeadLetterQueue | None = None,
        dedup_window: float = DEFAULT_DEDUP_WINDOW,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(storage, Storage):
            raise TypeError(
                "WorkQueue needs a Storage (app.storage, or SQLiteStorage('app.db')), got "
                f"{type(storage).__name__}"
            )
        name = _identifier("name", name)
        if isinstance(max_receives, bool) or not isinstance(max_receives, int) or max_receives < 1:
            raise ValueError(f"max_receives must be an int >= 1, got {max_receives!r}")
        if dlq is not None and dlq.storage is not storage:
            raise ValueError(
                "the DLQ must live in the same storage as the queue, so that a message "
                "moves between them in one transaction"
            )
        self._storage = storage
        self._store: QueueStore = storage.queues
        self.codec = codec if codec is not None else Codec()
        """The codec that encodes sent messages and decodes received ones."""
        self.name = name
        """The queue's name."""
        self.source = queue_source(name)
        """The DLQ source of this queue's dead letters: ``queue:<name>``."""
        self.visibility_timeout = check_seconds(
            "visibility_timeout", visibility_timeout, positive=True
        )
        """Default seconds a received message stays hidden."""
        self.max_receives = max_receives
        """How many times a message may be handed out before it is dead-lettered."""
        self.ttl = None if ttl is None else check_seconds("ttl", ttl, positive=True)
        """Seconds a sent message may wait before it expires; None for no limit."""
        self.dlq = dlq
        """Where failed, expired and undecodable messages go; None to drop them."""
        self.dedup_window = check_seconds("dedup_window", dedup_window)
        """Seconds a ``dedup_id`` is remembered after its first send."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """The clock every delay, timeout and TTL is measured with."""
        self._wakeup = threading.Condition()

    @property
    def storage(self) -> Storage:
        """Where the queue's messages live."""
        return self._storage

    # -- sending ------------------------------------------------------------------------

    def _encode(self, message: Any) -> tuple[str, str]:
        env = message if isinstance(message, Envelope) else Envelope(message)
        body = self.codec.encode_envelope(env)
        if not body.isascii():
            try:
                body.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise MessageEncodeError(
                    env.type, f"a string holds a lone surrogate, which UTF-8 cannot hold ({exc})"
                ) from None
        if "\x00" in env.id:
            raise MessageEncodeError(env.type, f"its id {env.id!r} holds a NUL character")
        return env.id, body

    def _notify(self) -> None:
        with self._wakeup:
            self._wakeup.notify_all()

    def _sent(self, send: Callable[[], R]) -> R:
        """Run a store send, waking this process's receivers once it is committed."""
        storage = self._storage
        if not storage.in_transaction():
            result = send()
            self._notify()
            return result
        with storage.transaction() as tx:
            result = send()
            tx.on_commit(self._notify)
        return result

    def send(
        self,
        message: Any,
        *,
        delay: float = 0,
        dedup_id: str | None = None,
        group: str | None = None,
    ) -> str:
        """Put a message (or an :class:`Envelope`) in the queue; returns its id.

        ``delay``: seconds before it can be received. ``dedup_id``: if a message was sent
        with the same one less than ``dedup_window`` seconds ago, nothing is added and that
        message's id is returned. ``group``: messages of one group are handed out one at a
        time, in send order. Joins the calling thread's open transaction, if any; raises
        :class:`~eventlite.exceptions.MessageEncodeError` for a message the codec cannot
        encode (or whose text UTF-8 cannot hold), and ``ValueError`` for a ``group`` or
        ``dedup_id`` that is not a non-empty str of valid text; nothing is sent then.
        """
        delay = check_seconds("delay", delay)
        if group is not None:
            _identifier("group", group)
        message_id, body = self._encode(message)
        now = self.clock.now()
        store, name, ttl = self._store, self.name, self.ttl
        if dedup_id is None:
            self._sent(
                lambda: store.send(
                    name, [(message_id, body)], now=now, delay=delay, ttl=ttl, group=group
                )
            )
            return message_id
        _identifier("dedup_id", dedup_id)
        return self._sent(
            lambda: store.send_deduplicated(
                name,
                (message_id, body),
                dedup_id=dedup_id,
                window=self.dedup_window,
                now=now,
                delay=delay,
                ttl=ttl,
                group=group,
            )
        )

    def send_many(
        self, messages: Iterable[Any], *, delay: float = 0, group: str | None = None
    ) -> list[str]:
        """Put several messages in the queue in one transaction; returns their ids in order.

        The same as :meth:`send` for each, with one commit (one fsync) for all.
        """
        delay = check_seconds("delay", delay)
        if group is not None:
            _identifier("group", group)
        rows = [self._encode(message) for message in messages]
        if not rows:
            return []
        now = self.clock.now()
        store, name, ttl = self._store, self.name, self.ttl
        self._sent(lambda: store.send(name, rows, now=now, delay=delay, ttl=ttl, group=group))
        return [message_id for message_id, _ in rows]

    # -- failures -----------------------------------------------------------------------

    def _failing(self, call: Callable[[], tuple[R, list[FailedMessage]]]) -> R:
        """Run a store call that may fail messages: alert the DLQ of the dead letters it
        added (in its transaction), log the messages it dropped."""
        dlq = self.dlq
        if dlq is None or dlq.alert_threshold is None:
            result, failed = call()
        else:
            with self._storage.transaction() as tx:
                result, failed = call()
                for message in failed:
                    if message.dead_letter is not None:
                        dlq._after_add(tx, message.dead_letter)
        for message in failed:
            if message.dead_letter is None:
                _log.error(
                    "queue %r: dropped message %s (no dead-letter queue configured): %s: %s",
                    self.name,
                    message.message_id,
                    message.failure.error_type.rpartition(".")[2],
                    message.failure.error_message,
                )
        return result

    # -- receiving ----------------------------------------------------------------------

    def receive(self, max: int = 1, visibility_timeout: float | None = None) -> list[Received]:
        """Hand out up to ``max`` visible messages, oldest due first; [] when none is.

        Each stays hidden from other receivers for ``visibility_timeout`` seconds (default:
        the queue's) unless acked, nacked or extended. On the way, this receive puts back
        the queue's dead letters released by ``dlq.retry``, expires messages past their
        TTL, and dead-letters messages that used up ``max_receives`` or cannot be decoded.
        """
        if isinstance(max, bool) or not isinstance(max, int) or max < 1:
            raise ValueError(f"max must be an int >= 1, got {max!r}")
        timeout = (
            self.visibility_timeout
            if visibility_timeout is None
            else check_seconds("visibility_timeout", visibility_timeout, positive=True)
        )
        store, name, now = self._store, self.name, self.clock.now()
        handed = self._failing(
            lambda: store.receive(
                name,
                self.codec.decode_envelope,
                max=max,
                now=now,
                visibility_timeout=timeout,
                max_receives=self.max_receives,
                ttl=self.ttl,
                dead_letters=self.dlq is not None,
            )
        )
        return [Received(env, receipt, count, group) for env, receipt, count, group in handed]

    def requeue_retries(self) -> int:
        """Put back into the queue the dead letters that ``dlq.retry`` released; returns how
        many. :meth:`receive` does this by itself; call it to see them in :meth:`stats`
        before the next receive."""
        if self.dlq is None:
            return 0
        return self._store.requeue_retries(self.name, now=self.clock.now(), ttl=self.ttl)

    # -- settling -----------------------------------------------------------------------

    def ack(self, receipt: str) -> None:
        """The message was handled: delete it. Raises :class:`StaleReceipt` when the
        receipt no longer holds the message. An ack after the visibility timeout ran out
        still succeeds as long as nobody received the message again."""
        self._store.ack(self.name, receipt)

    def ack_many(self, receipts: Iterable[str]) -> None:
        """Ack several messages in one transaction. Every receipt that still holds its
        message is acked; then, if some were stale, :class:`StaleReceipt` is raised for the
        first of them (``reason`` counts them)."""
        self._store.ack_many(self.name, receipts)

    def nack(self, receipt: str, delay: float = 0, *, error: BaseException | None = None) -> None:
        """The message was not handled: hand it out again after ``delay`` seconds.

        ``error`` is the handler's exception, kept for the dead letter (whatever its text:
        escaped and bounded as the DLQ keeps it). When the message has used up
        ``max_receives`` it goes to the DLQ now instead. Raises :class:`StaleReceipt`.
        """
        delay = check_seconds("delay", delay)
        failure = Failure.of(error) if error is not None else None
        store, name, now = self._store, self.name, self.clock.now()

        def nack() -> tuple[None, list[FailedMessage]]:
            failed = store.nack(
                name,
                receipt,
                now=now,
                delay=delay,
                failure=failure,
                max_receives=self.max_receives,
                dead_letters=self.dlq is not None,
            )
            return None, [] if failed is None else [failed]

        self._failing(nack)
        if delay == 0:
            self._notify()

    def extend(self, receipt: str, seconds: float) -> None:
        """Keep the message hidden for ``seconds`` from now (as SQS's
        ChangeMessageVisibility). Raises :class:`StaleReceipt`."""
        until = self.clock.now() + check_seconds("seconds", seconds)
        self._store.extend(self.name, receipt, until=until)

    def _extend_many(self, receipts: Iterable[str], seconds: float) -> set[str]:
        """:meth:`extend` several messages in one transaction; returns the receipts that
        no longer held their message (those are left alone)."""
        return self._store.extend_many(self.name, receipts, until=self.clock.now() + seconds)

    def _release(self, receipts: Iterable[str]) -> None:
        """Give back messages that were received but not handled (a consumer stopping):
        visible at once, and this receive not counted."""
        self._store.release(self.name, receipts, now=self.clock.now())
        self._notify()

    # -- looking ------------------------------------------------------------------------

    def stats(self) -> QueueStats:
        """How many messages wait, are in flight, are delayed; the age of the oldest."""
        return self._store.stats(self.name, now=self.clock.now())

    def __len__(self) -> int:
        """Every message in the queue, whatever its state."""
        return self._store.count(self.name)

    def purge(self) -> int:
        """Delete every message of the queue (in flight too); returns how many."""
        return self._store.purge(self.name)

    # -- consuming ----------------------------------------------------------------------

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` real seconds, or until a message is sent (or nacked) in
        this process; for a polling loop. Sends from other processes are seen at the end of
        the timeout."""
        with self._wakeup:
            self._wakeup.wait(timeout)

    def consume(
        self,
        handler: Callable[[Any], object],
        *,
        threads: int = 2,
        prefetch: int = 10,
        backoff: Callable[[int], float] | None = None,
        poll_interval: float = 0.5,
        visibility_timeout: float | None = None,
    ) -> QueueConsumer:
        """Start ``threads`` competing consumer threads running ``handler(message)``; see
        :class:`~eventlite.queue.QueueConsumer`. Stop them with ``consumer.stop()`` or a
        ``with`` block."""
        from ._consumer import QueueConsumer

        consumer = QueueConsumer(
            self,
            handler,
            threads=threads,
            prefetch=prefetch,
            backoff=backoff,
            poll_interval=poll_interval,
            visibility_timeout=visibility_timeout,
        )
        consumer.start()
        return consumer

    def __repr__(self) -> str:
        return f"<WorkQueue {self.name!r} in {self._storage.description!r}>"
