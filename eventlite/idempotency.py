"""Idempotency keys: run an operation once per key, and give every repeat its result.

::

    keys = Idempotency(database)
    charge = keys.run(f"charge:{request_id}", lambda: gateway.charge(card, amount), ttl=86400)

The first call with a key claims it (a row in the SQLite file), runs ``fn``, and stores its
result as JSON; every later call with the key, from any thread or any process sharing the
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
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from .clock import Clock, SystemClock, to_datetime
from .exceptions import EventliteError
from .sqlite._database import Database, storage_error

__all__ = ["Idempotency", "IdempotencyTimeout"]

log = logging.getLogger(__name__)

_SELECT = "SELECT state, result, owner, lease_until, expires_at FROM idempotency_keys WHERE key = ?"
_PURGE_EVERY = 60.0


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


class Idempotency:
    """Idempotency keys in the ``idempotency_keys`` table of ``database``.

    :param clock: decides leases and expiry (default: the system clock).
    :param wait: default seconds a duplicate call waits for the first one's result.
    :param lease: seconds a claim holds before another caller may take the key over.
    :param poll: seconds between checks while waiting on a call in another process (calls
        in this process wake their waiters at once).
    """

    def __init__(
        self,
        database: Database,
        *,
        clock: Clock | None = None,
        wait: float = 30.0,
        lease: float = 300.0,
        poll: float = 0.01,
    ) -> None:
        for name, value in (("wait", wait), ("lease", lease), ("poll", poll)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        self.database = database
        """The SQLite file holding the keys."""
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
        JSON value (the key is then released), ``RuntimeError`` inside a transaction of the
        database (the claim must commit before ``fn`` runs), and whatever ``fn`` raises.
        """
        if not isinstance(key, str) or not key:
            raise ValueError(f"an idempotency key must be a non-empty str, got {key!r}")
        if not (isinstance(ttl, (int, float)) and ttl > 0):
            raise ValueError(f"ttl must be a number of seconds > 0, got {ttl!r}")
        if self.database.in_transaction():
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
            text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            self._release(key, owner)
            raise TypeError(
                f"the result of the call for idempotency key {key!r} cannot be stored as "
                f"JSON ({exc}); return a JSON value (dict, list, str, number, bool, None)"
            ) from exc
        now = self.clock.now()
        with self.database.transaction() as tx:
            cursor = tx.execute(
                "UPDATE idempotency_keys SET state = 'done', result = ?, expires_at = ? "
                "WHERE key = ? AND owner = ?",
                (text, now + ttl, key, owner),
            )
        if cursor.rowcount != 1:
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
        try:
            row = self.database.read_connection().execute(_SELECT, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading an idempotency key", self.database.path) from exc
        now = self.clock.now()
        if row is not None:
            state, result, _, lease_until, expires_at = row
            if state == "done" and expires_at > now:
                return True, json.loads(result), None
            if state == "running" and lease_until > now:
                return False, None, self._started(key)
        with self.database.transaction() as tx:
            if now >= self._next_purge:
                self._next_purge = now + _PURGE_EVERY
                tx.execute(
                    "DELETE FROM idempotency_keys WHERE state = 'done' AND expires_at <= ?",
                    (now,),
                )
            row = tx.execute(_SELECT, (key,)).fetchone()
            if row is not None:
                state, result, holder, lease_until, expires_at = row
                if state == "done" and expires_at > now:
                    return True, json.loads(result), None
                if state == "running" and lease_until > now:
                    return False, None, self._started(key, tx.conn)
                if state == "running":
                    log.warning(
                        "idempotency key %r: taking over a claim whose lease ran out (its "
                        "holder %s probably died)",
                        key,
                        holder,
                    )
                tx.execute("DELETE FROM idempotency_keys WHERE key = ?", (key,))
            tx.execute(
                "INSERT INTO idempotency_keys (key, state, owner, started_at, lease_until) "
                "VALUES (?, 'running', ?, ?, ?)",
                (key, owner, now, now + self.lease),
            )
        return False, None, None

    def _started(self, key: str, conn: sqlite3.Connection | None = None) -> float:
        conn = conn if conn is not None else self.database.read_connection()
        row = conn.execute("SELECT started_at FROM idempotency_keys WHERE key = ?", (key,))
        found = row.fetchone()
        return float(found[0]) if found is not None else self.clock.now()

    def _release(self, key: str, owner: str) -> None:
        try:
            with self.database.transaction() as tx:
                tx.execute(
                    "DELETE FROM idempotency_keys WHERE key = ? AND owner = ? "
                    "AND state = 'running'",
                    (key, owner),
                )
        finally:
            self._notify()

    def _notify(self) -> None:
        with self._finished:
            self._finished.notify_all()

    def forget(self, key: str) -> bool:
        """Delete ``key`` (done or running) so the next call runs ``fn`` again; True if it
        was there."""
        with self.database.transaction() as tx:
            cursor = tx.execute("DELETE FROM idempotency_keys WHERE key = ?", (key,))
        self._notify()
        return cursor.rowcount == 1

    def purge_expired(self) -> int:
        """Delete every stored result whose ``ttl`` has run out; returns how many."""
        now = self.clock.now()
        with self.database.transaction() as tx:
            cursor = tx.execute(
                "DELETE FROM idempotency_keys WHERE state = 'done' AND expires_at <= ?", (now,)
            )
        return cursor.rowcount

    def __repr__(self) -> str:
        return f"<Idempotency {self.database.path!r}>"
