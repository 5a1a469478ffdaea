"""Idempotency keys: run an operation once per key, and give every repeat its result.

::

    keys = app.idempotency                  # or Idempotency(storage)
    charge = keys.run(f"charge:{request_id}", lambda: gateway.charge(card, amount), ttl=86400)

The first call with a key claims it (a record in the storage's
:class:`~eventlite.store.idempotency.IdempotencyStore`), runs ``fn``, and stores its result
as JSON; every later call with the key, from any thread or any process sharing the
file, gets that stored result without running ``fn``. A call that arrives while the first
one is still running waits for its result, or raises :class:`IdempotencyTimeout` when
``wait`` seconds pass first.

- A result is kept for ``ttl`` seconds; after that the key is free again, and expired keys
  are deleted as calls go by (and by :meth:`Idempotency.purge_expired`).
- A failure is not stored: when ``fn`` raises, the key is released, the exception
  propagates, and the next call (or a waiting one) runs ``fn`` afresh.
- A claim is a lease of ``lease`` seconds: if the process that claimed the key dies before
  finishing, another caller takes the key over once the lease has run out. Give ``fn``
  less time than the lease, or a second run may start while the first still works.
- Results must be JSON values (dicts, lists, strings, numbers, booleans, None); every
  caller, the first included, gets the decoded JSON, so all of them see the same value.
  Any string is kept, lone surrogates and NUL characters included.
- A key is a non-empty str of valid text without NUL characters (``ValueError`` otherwise,
  before anything is claimed).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from .clock import Clock, SystemClock, to_datetime
from .codec import _dumps
from .exceptions import EventliteError
from .store.idempotency import IdempotencyStore
from .store.storage import Storage

__all__ = ["Idempotency", "IdempotencyTimeout"]

log = logging.getLogger(__name__)

_PURGE_EVERY = 60.0
_dumps_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class IdempotencyTimeout(EventliteError, TimeoutError):
    """A call waited ``waited`` seconds for another call with the same ``key`` to finish.

    ``started_at`` is when that other call claimed the key (epoch seconds).
    """

    def __init__(self, key: str, waited: float, started_at: float | None) -> None:
        self.key = key
        self.waited = waited
        self.started_at = started_at
        since = (
            f" since {to_datetime(started_at).isoformat(timespec='seconds')}"
            if started_at is not None
            else ""
        )
        super().__init__(
            f"idempotency key {key!r} is still being run by another call{since}; gave up "
            f"waiting for its result after {waited:.3g} s"
        )


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"an idempotency key must be a non-empty str, got {key!r}")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"an idempotency key must be valid text, got {key!r} (it holds a lone surrogate)"
            ) from None
    if "\x00" in key:
        raise ValueError(f"an idempotency key must not hold a NUL character, got {key!r}")
    return key


def _encode(result: Any) -> str:
    """The result as JSON text any store keeps: lone surrogates, which UTF-8 cannot hold,
    are written as ``\\u`` escapes (JSON reads them back as the same string)."""
    text = _dumps(result)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _dumps_ascii(result)
    return text


class Idempotency:
    """Idempotency keys in a storage (``app.storage``, or ``SQLiteStorage("app.db")``).

    :param clock: decides leases and expiry (default: the system clock).
    :param wait: default seconds a duplicate call waits for the first one's result.
    :param lease: seconds a claim holds before another caller may take the key over.
    :param poll: seconds between checks while waiting on a call in another process (calls
        in this process wake their waiters at once).

    Raises ``TypeError`` for something that is not a :class:`~eventlite.store.Storage`, and
    :class:`~eventlite.exceptions.StorageError` for one that keeps no idempotency keys.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Clock | None = None,
        wait: float = 30.0,
        lease: float = 300.0,
        poll: float = 0.01,
    ) -> None:
        if not isinstance(storage, Storage):
            raise TypeError(
                "Idempotency needs a Storage (app.storage, or SQLiteStorage('app.db')), got "
                f"{type(storage).__name__}"
            )
        for name, value in (("wait", wait), ("lease", lease), ("poll", poll)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        self.storage = storage
        """Where the keys are kept."""
        self._store: IdempotencyStore = storage.idempotency
        self.clock: Clock = clock if clock is not None else SystemClock()
        """Where leases and expiry read the time."""
        self.wait = float(wait)
        """Default seconds a duplicate waits before :class:`IdempotencyTimeout`."""
        self.lease = float(lease)
        """Seconds a claim holds before it can be taken over."""
        self.poll = float(poll)
        """Seconds between checks on a call running in another process."""
        self._finished = threading.Condition()
        self._next_purge = 0.0

    def run(
        self,
        key: str,
        fn: Callable[[], Any],
        *,
        ttl: float = 86400.0,
        wait: float | None = None,
    ) -> Any:
        """Run ``fn()`` once for ``key`` and return its (JSON-decoded) result; on later
        calls within ``ttl`` seconds return the stored result without running it.

        Raises :class:`IdempotencyTimeout` when another call holds the key for longer than
        ``wait`` seconds (default: :attr:`wait`), ``TypeError`` when the result is not a
        JSON value (the key is then released), ``ValueError`` for a key that is not a
        non-empty str of valid text without NUL, ``RuntimeError`` inside a transaction of
        the storage (the claim must commit before ``fn`` runs), and whatever ``fn`` raises.
        """
        key = _check_key(key)
        if not (isinstance(ttl, (int, float)) and ttl > 0):
            raise ValueError(f"ttl must be a number of seconds > 0, got {ttl!r}")
        if self.storage.in_transaction():
            raise RuntimeError(
                "Idempotency.run() cannot be called inside a transaction: its claim on the "
                "key must be committed (and seen by other callers) before fn runs"
            )
        patience = self.wait if wait is None else wait
        owner = uuid.uuid4().hex
        started = time.monotonic()
        delay = self.poll / 4
        while True:
            found, value, holder_since = self._claim(key, owner)
            if found:
                return value
            if holder_since is None:
                break  # claimed: this call runs fn
            remaining = patience - (time.monotonic() - started)
            if remaining <= 0:
                raise IdempotencyTimeout(key, time.monotonic() - started, holder_since)
            with self._finished:
                self._finished.wait(min(delay, remaining))
            delay = min(delay * 2, self.poll)
        try:
            result = fn()
        except BaseException:
            self._release(key, owner)
            raise
        try:
            text = _encode(result)
        except (TypeError, ValueError) as exc:
            self._release(key, owner)
            raise TypeError(
                f"the result of the call for idempotency key {key!r} cannot be stored as "
                f"JSON ({exc}); return a JSON value (dict, list, str, number, bool, None)"
            ) from exc
        try:
            stored = self._store.complete(key, owner, text, expires_at=self.clock.now() + ttl)
        except BaseException:
            self._release(key, owner)
            raise
        if not stored:
            log.warning(
                "idempotency key %r: the claim ran out (lease %s s) before the call "
                "finished, and was taken over; its result was not stored",
                key,
                self.lease,
            )
        self._notify()
        return json.loads(text)

    def _claim(self, key: str, owner: str) -> tuple[bool, Any, float | None]:
        """(True, result, None) for a stored result; (False, None, None) when this call
        now holds the key; (False, None, started_at) while another call holds it."""
        now = self.clock.now()
        record = self._store.find(key)
        if record is not None and record.live(now):
            if record.result is not None:
                return True, json.loads(record.result), None
            return False, None, record.started_at
        if now >= self._next_purge:
            self._next_purge = now + _PURGE_EVERY
            self._store.purge_expired(now)
        claimed, record = self._store.claim(key, owner, now=now, lease_until=now + self.lease)
        if not claimed:
            assert record is not None
            if record.result is not None:
                return True, json.loads(record.result), None
            return False, None, record.started_at
        if record is not None and record.result is None:
            log.warning(
                "idempotency key %r: taking over a claim whose lease ran out (its holder %s "
                "probably died)",
                key,
                record.owner,
            )
        return False, None, None

    def _release(self, key: str, owner: str) -> None:
        try:
            self._store.release(key, owner)
        finally:
            self._notify()

    def _notify(self) -> None:
        with self._finished:
            self._finished.notify_all()

    def forget(self, key: str) -> bool:
        """Delete ``key`` (done or running) so the next call runs ``fn`` again; True if it
        was there. ``ValueError`` for a key :meth:`run` would refuse."""
        key = _check_key(key)
        try:
            return self._store.forget(key)
        finally:
            self._notify()

    def purge_expired(self) -> int:
        """Delete every stored result whose ``ttl`` has run out; returns how many."""
        return self._store.purge_expired(self.clock.now())

    def __repr__(self) -> str:
        return f"<Idempotency {self.storage.description!r}>"
