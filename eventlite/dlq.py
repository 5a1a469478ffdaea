"""The sequenced dead-letter queue: messages that exhausted their retries, kept in order.

A dead letter is a message some consumer (a durable subscriber, a bridge, a work queue)
could not handle: its envelope as wire JSON (or the raw text, when it could not even be
decoded), who failed (the *source*: a subscriber name, or ``queue:<name>`` for a work
queue), the error with its traceback, how many attempts were made and when.

**Sequenced.** Messages with the same ordering *key* must reach a consumer in order. While
a message of key ``K`` is dead for source ``S``, later messages of ``K`` for ``S`` are
*parked* behind it (stored, in order, with status ``parked``) instead of overtaking it;
other keys flow on. The entries of one source and key form a *line*, ordered by id, and
after every change the line is kept in this shape:

- every entry before the first ``dead`` one is ``retrying`` (due for redelivery, in order);
- every entry after it is ``parked``, except other ``dead`` ones, which stay dead.

So :meth:`DeadLetterQueue.retry` of the first dead letter releases it and the parked
entries behind it, up to the next dead one; :meth:`~DeadLetterQueue.discard` of it releases
them too; :meth:`~DeadLetterQueue.fail_again` puts the line back to sleep. Messages without
a key (``key=None``) have no order to keep: each is a line of its own, and never parks
anything.

**Work queues are not sequenced.** A work queue records its dead letters with
``key=None``, a FIFO group only in :attr:`DeadLetter.group`. So the DLQ does not hold a
group behind its dead message: the queue hands out the group's next message at once, and
a retried one goes back to the end of its group, after the messages of the group that
overtook it (see :mod:`eventlite.queue`).

**Who redelivers.** The DLQ only keeps state; the consumer that owns a source redelivers
its ``retrying`` entries (:meth:`~DeadLetterQueue.claim_retries`, then
:meth:`~DeadLetterQueue.resolve` or :meth:`~DeadLetterQueue.fail_again`, or all of that
through :meth:`~DeadLetterQueue.redeliver`). Because the state is in the file, the CLI in
another process can ask for a retry and the consumer picks it up. A work queue puts its own
retried dead letters back into the queue (see :mod:`eventlite.queue`).

**Any text.** A dead letter is recorded whatever the failure or the message holds: error
texts and tracebacks with lone surrogates or NUL characters are kept escaped, and bounded
(:data:`~eventlite.store.dead_letters.MAX_ERROR_MESSAGE` and
:data:`~eventlite.store.dead_letters.MAX_TRACEBACK` characters, with a note saying how much
was cut); an exception whose ``str()`` raises is named by its class; raw text that is not
valid Unicode is kept as its bytes. So no message can stall its consumer by failing in a
way the DLQ cannot store.

**Storage.** The entries live in a :class:`~eventlite.store.Storage`'s
:class:`~eventlite.store.dead_letters.DeadLetterStore` (``storage.dead_letters``); this
facade adds validation, encoding, the clock and alerts. Every write joins the calling
thread's open ``storage.transaction()`` when there is one, so a relay can dead-letter a
message and move its checkpoint atomically.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Final

from .clock import Clock, SystemClock
from .codec import Codec
from .envelope import Envelope
from .store.dead_letters import (
    DeadLetter,
    DeadLetterNotFound,
    DeadLetterStatus,
    DeadLetterStore,
    Failure,
    describe_raw,
    safe_text,
)
from .store.storage import Storage, Transaction

__all__ = [
    "AlertHook",
    "DeadLetter",
    "DeadLetterNotFound",
    "DeadLetterQueue",
    "DeadLetterStatus",
    "queue_source",
]

_log = logging.getLogger("eventlite.dlq")

AlertHook = Callable[[int, "DeadLetter"], object]
"""``on_alert(count, dead_letter)``: told that the DLQ holds ``count`` entries (at least the
threshold) right after ``dead_letter`` was added."""

QUEUE_SOURCE_PREFIX: Final = "queue:"
"""Sources of dead letters from work queues start with this (``queue:<name>``)."""

_REPR_LIMIT = 65_536  # characters of an envelope's repr kept when it cannot be encoded


def queue_source(name: str) -> str:
    """The DLQ source of the work queue called ``name``: ``"queue:" + name``."""
    return QUEUE_SOURCE_PREFIX + name


def _check_key(key: object) -> str | None:
    if key is not None and not isinstance(key, str):
        raise TypeError(f"a dead letter's key must be a str or None, got {key!r}")
    return key


def _check_source(source: object) -> str:
    if not isinstance(source, str) or not source:
        raise ValueError(f"a dead letter's source must be a non-empty str, got {source!r}")
    return source


def _seconds(value: datetime | None, default: float) -> float:
    if value is None:
        return default
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} (attach a timezone, e.g. UTC)")
    return value.timestamp()


def _status(status: DeadLetterStatus | str | None) -> DeadLetterStatus | None:
    return None if status is None else DeadLetterStatus(status)


class DeadLetterQueue:
    """The dead letters of every consumer, in a storage (see the module doc).

    ``storage`` keeps them (``app.storage``, or ``SQLiteStorage("app.db")``; shared with the
    events and queues, so a consumer writes both in one transaction); ``codec`` encodes the
    envelopes it is given (default: a :class:`Codec` over the default registry); ``clock``
    dates every entry (default: the system clock). Raises ``TypeError`` for something that
    is not a :class:`~eventlite.store.Storage`, and
    :class:`~eventlite.exceptions.StorageError` for one that keeps no dead letters (in
    memory).

    ``alert_threshold`` and ``on_alert``: after each committed :meth:`add` that leaves the
    DLQ holding ``alert_threshold`` entries or more (every status, every source, the new one
    included), ``on_alert(count, dead_letter)`` is called in the thread that committed,
    after the commit. It is called again on every further add while the count stays at or
    above the threshold; parking, retries and removals never call it. An exception from the
    hook is logged, not raised. With a threshold and no hook, the alert is a warning on the
    ``eventlite.dlq`` logger.

    Safe to use from many threads: every operation is one transaction of ``storage``.
    """

    def __init__(
        self,
        storage: Storage,
        codec: Codec | None = None,
        *,
        clock: Clock | None = None,
        alert_threshold: int | None = None,
        on_alert: AlertHook | None = None,
    ) -> None:
        if not isinstance(storage, Storage):
            raise TypeError(
                "DeadLetterQueue needs a Storage (app.storage, or SQLiteStorage('app.db')), "
                f"got {type(storage).__name__}"
            )
        if alert_threshold is not None and (
            isinstance(alert_threshold, bool)
            or not isinstance(alert_threshold, int)
            or alert_threshold < 1
        ):
            raise ValueError(f"alert_threshold must be an int >= 1, got {alert_threshold!r}")
        if on_alert is not None and alert_threshold is None:
            raise ValueError("on_alert needs an alert_threshold to know when to call it")
        self._storage = storage
        self._store: DeadLetterStore = storage.dead_letters
        self.codec = codec if codec is not None else Codec()
        """The codec that encodes envelopes given to :meth:`add` and :meth:`park`."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """The clock that dates entries and ages them for :meth:`purge`."""
        self.alert_threshold = alert_threshold
        """The entry count at which :attr:`on_alert` is called, or None for no alert."""
        self.on_alert = on_alert
        """The alert hook (see the class doc)."""

    @property
    def storage(self) -> Storage:
        """Where the dead letters live."""
        return self._storage

    # -- recording ----------------------------------------------------------------------

    def _message_fields(
        self,
        envelope_or_raw: Envelope | str | bytes,
        type_name: str | None,
        message_id: str | None,
        position: int | None,
    ) -> tuple[str | bytes, str | None, str | None, int | None]:
        if isinstance(envelope_or_raw, Envelope):
            env = envelope_or_raw
            try:
                text: str | bytes = self.codec.encode_envelope(env)
            except Exception as exc:
                # Keep what can be kept: the message's repr is readable, though it cannot
                # be redelivered.
                _log.warning(
                    "dead letter %s: cannot encode the envelope (%s)", env.id, safe_text(exc)
                )
                try:
                    text = safe_text(repr(env), _REPR_LIMIT)
                except Exception:
                    text = f"<unrepresentable {type(env.message).__qualname__} envelope {env.id}>"
            return (
                text,
                type_name if type_name is not None else env.type,
                message_id if message_id is not None else env.id,
                position if position is not None else env.position,
            )
        if not isinstance(envelope_or_raw, (str, bytes)):
            raise TypeError(
                "a dead letter holds an Envelope, or the raw str or bytes that could not be "
                f"decoded; got {type(envelope_or_raw).__name__}"
            )
        if type_name is None or message_id is None or position is None:
            # Raw text that is JSON at least: show what it says about itself.
            found_type, found_id, found_position = describe_raw(envelope_or_raw)
            type_name = type_name if type_name is not None else found_type
            message_id = message_id if message_id is not None else found_id
            position = position if position is not None else found_position
        return envelope_or_raw, type_name, message_id, position

    def _after_add(self, tx: Transaction, dead_letter: DeadLetter) -> None:
        """Call the alert hook after ``tx`` commits, when ``dead_letter`` (added in it)
        leaves the DLQ at or above the threshold."""
        threshold = self.alert_threshold
        if threshold is None:
            return
        count = self._store.count()
        if count >= threshold:
            tx.on_commit(lambda: self._alert(count, dead_letter))

    def _alert(self, count: int, dead_letter: DeadLetter) -> None:
        hook = self.on_alert
        if hook is None:
            _log.warning(
                "the dead-letter queue holds %d entries (alert threshold %s); latest: #%d "
                "from %s, %s: %s",
                count,
                self.alert_threshold,
                dead_letter.id,
                dead_letter.source,
                dead_letter.error_type,
                dead_letter.error_message,
            )
            return
        try:
            hook(count, dead_letter)
        except Exception:
            _log.exception("the dead-letter alert hook %r failed", hook)

    def add(
        self,
        source: str,
        envelope_or_raw: Envelope | str | bytes,
        *,
        key: str | None,
        error: BaseException,
        attempts: int,
        first_failed_at: datetime | None = None,
        position: int | None = None,
        type_name: str | None = None,
        message_id: str | None = None,
    ) -> DeadLetter:
        """Record a message that failed ``attempts`` times, ``error`` being the last failure.

        ``envelope_or_raw`` is the envelope (stored as wire JSON; type name, id and position
        are taken from it unless given) or the raw ``str``/``bytes`` that could not be
        decoded. ``key`` is its ordering key: while this entry is dead, later messages of
        the same source and key should be :meth:`park`\\ ed. ``first_failed_at`` defaults
        to now; the last failure is now. Returns the stored entry (status ``dead``). Any
        error text is stored (see the module doc).
        """
        source = _check_source(source)
        key = _check_key(key)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
            raise ValueError(f"attempts must be an int >= 0, got {attempts!r}")
        if not isinstance(error, BaseException):
            raise TypeError(f"error must be the exception that failed, got {error!r}")
        message, type_name, message_id, position = self._message_fields(
            envelope_or_raw, type_name, message_id, position
        )
        failure = Failure.of(error)
        now = self.clock.now()
        first = _seconds(first_failed_at, now)

        def add() -> DeadLetter:
            return self._store.add(
                source,
                message,
                key=key,
                failure=failure,
                attempts=attempts,
                first_failed_at=first,
                now=now,
                type_name=type_name,
                message_id=message_id,
                position=position,
            )

        if self.alert_threshold is None:
            return add()
        with self._storage.transaction() as tx:
            dead_letter = add()
            self._after_add(tx, dead_letter)
        return dead_letter

    def park(
        self,
        source: str,
        envelope_or_raw: Envelope | str | bytes,
        *,
        key: str,
        position: int | None = None,
        type_name: str | None = None,
        message_id: str | None = None,
    ) -> DeadLetter:
        """Store a message of ``key`` behind the dead letter that blocks its key, undelivered.

        Call it instead of delivering when :meth:`is_blocked` says so. The entry is
        ``parked`` while a dead letter of its line is ahead of it. When the line ahead is
        only being retried (or is empty: the block was lifted meanwhile), it joins the
        retries at once and comes back ``retrying``, so the consumer still sees it after
        the others, in order.
        """
        if not isinstance(key, str):
            raise TypeError(
                f"only a message with a key can be parked (a str), got {key!r}; a message "
                "without a key has no order to keep, so deliver it"
            )
        source = _check_source(source)
        message, type_name, message_id, position = self._message_fields(
            envelope_or_raw, type_name, message_id, position
        )
        return self._store.park(
            source,
            message,
            key=key,
            now=self.clock.now(),
            type_name=type_name,
            message_id=message_id,
            position=position,
        )

    def is_blocked(self, source: str, key: str | None) -> bool:
        """Whether a message of ``key`` for ``source`` must be parked rather than delivered.

        True while any entry (dead, parked or retrying) of that source and key is in the
        DLQ; always False for ``key=None``. One indexed lookup, so it sees what other
        processes (the CLI) did.
        """
        return self._store.is_blocked(source, key)

    # -- reading ------------------------------------------------------------------------

    def get(self, id: int) -> DeadLetter:
        """The entry with this id; raises :class:`DeadLetterNotFound`."""
        return self._store.get(id)

    def list(
        self,
        source: str | None = None,
        *,
        status: DeadLetterStatus | str | None = None,
        limit: int | None = 100,
    ) -> builtins.list[DeadLetter]:
        """Entries in the order they were added, optionally of one source and one status,
        at most ``limit`` of them (None for all)."""
        return self._store.list(source, status=_status(status), limit=limit)

    def count(
        self, source: str | None = None, *, status: DeadLetterStatus | str | None = None
    ) -> int:
        """How many entries the DLQ holds, optionally of one source and one status."""
        return self._store.count(source, status=_status(status))

    def sources(self) -> dict[str, int]:
        """Every source with entries, and how many it has."""
        return self._store.sources()

    # -- redelivery -----------------------------------------------------------------------

    def retry(self, id: int) -> builtins.list[DeadLetter]:
        """Release an entry for redelivery by its consumer, with the entries parked behind it.

        Returns the entries this call made ``retrying``, in order: the entry and the parked
        ones behind it up to the next dead entry of its line. An entry behind an earlier
        dead letter of its key cannot overtake it: it becomes ``parked`` and is released
        with that one. Raises :class:`DeadLetterNotFound`.
        """
        return self._store.retry(id)

    def retry_all(self, source: str) -> int:
        """Release every entry of ``source`` for redelivery; returns how many changed."""
        return self._store.retry_all(source)

    def claim_retries(self, source: str, *, limit: int = 100) -> builtins.list[DeadLetter]:
        """The ``retrying`` entries of ``source``, oldest first: what its consumer must
        redeliver now, in this order.

        It changes nothing: an entry stays ``retrying`` until :meth:`resolve` or
        :meth:`fail_again`, so a consumer that crashes mid-way redelivers it on restart
        (at least once). Expects one consumer per source. After a failure, skip the rest of
        that key in the list: :meth:`fail_again` parked them again.
        """
        return self._store.claim_retries(source, limit=limit)

    def resolve(self, id: int) -> None:
        """The entry was delivered: remove it. Raises :class:`DeadLetterNotFound` (an
        operator may have discarded it meanwhile)."""
        self._store.resolve(id)

    def fail_again(self, id: int, error: BaseException) -> DeadLetter:
        """A redelivery failed: the entry is ``dead`` again with one more attempt and this
        error, and the entries behind it that were retrying are parked again. Raises
        :class:`DeadLetterNotFound`."""
        if not isinstance(error, BaseException):
            raise TypeError(f"error must be the exception that failed, got {error!r}")
        return self._store.fail_again(id, Failure.of(error), now=self.clock.now())

    def redeliver(
        self, source: str, deliver: Callable[[DeadLetter], object], *, limit: int = 100
    ) -> int:
        """Redeliver the ``retrying`` entries of ``source`` in order; returns how many were
        delivered.

        ``deliver(dead_letter)`` delivers one (decode it with :meth:`DeadLetter.envelope`).
        On success the entry is resolved; on an exception it is dead again
        (:meth:`fail_again`) and the rest of its key waits. Entries removed meanwhile by an
        operator are skipped.
        """
        failed: set[str] = set()
        delivered = 0
        for entry in self.claim_retries(source, limit=limit):
            if entry.key is not None and entry.key in failed:
                continue
            try:
                deliver(entry)
            except Exception as exc:
                if entry.key is not None:
                    failed.add(entry.key)
                with suppress(DeadLetterNotFound):
                    self.fail_again(entry.id, exc)
                continue
            with suppress(DeadLetterNotFound):
                self.resolve(entry.id)
            delivered += 1
        return delivered

    # -- removing -----------------------------------------------------------------------

    def discard(self, id: int) -> DeadLetter:
        """Drop an entry for good and return it. The entries parked behind it are released
        for redelivery, in order (up to the next dead one). Raises
        :class:`DeadLetterNotFound`."""
        return self._store.discard(id)

    def purge(self, source: str | None = None, *, older_than: timedelta | None = None) -> int:
        """Drop entries (of one source, or all) and return how many.

        With ``older_than``, only ``dead`` and ``retrying`` entries whose last failure is
        at least that old by the clock. A ``parked`` entry is never purged by its own age:
        it waits behind the dead letter of its line and goes (released for redelivery, as
        with :meth:`discard`) only when that one is purged or discarded, so a purge never
        leaves a dead head without the messages queued behind it. Without ``older_than``
        every entry of the source (or of all sources) goes, parked ones included.
        """
        failed_before: float | None = None
        if older_than is not None:
            if not isinstance(older_than, timedelta):
                raise TypeError(f"older_than must be a timedelta, got {older_than!r}")
            failed_before = self.clock.now() - older_than.total_seconds()
        return self._store.purge(source, failed_before=failed_before)

    def __repr__(self) -> str:
        return f"<DeadLetterQueue {self._storage.description!r}>"
