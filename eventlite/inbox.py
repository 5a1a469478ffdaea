"""The inbox: which messages a consumer has already handled, kept beside its effects.

A consumer that writes its effects to the SQLite file marks the message id in the *same*
transaction. A redelivery of that message (after a crash, an operator's retry, a broker
that delivers twice) finds the mark and is skipped, so its effects happen once::

    with database.transaction() as tx:
        if inbox.mark(tx, "billing", envelope.id):   # False: handled before
            tx.execute("INSERT INTO invoices ...", (...))

Durable subscribers whose handler takes a ``uow`` parameter get this for free (see
``docs/delivery.md``). Marks are kept per consumer name; :meth:`Inbox.purge` forgets old
ones so the table does not grow without bound.
"""

from __future__ import annotations

import sqlite3

from .clock import Clock, SystemClock
from .sqlite._database import Database, Transaction, storage_error

__all__ = ["Inbox"]


class Inbox:
    """Handled message ids per consumer, in the ``inbox`` table of ``database``.

    ``clock`` dates each mark (default: the system clock), for :meth:`purge`.
    Every method may be called from any thread.
    """

    def __init__(self, database: Database, *, clock: Clock | None = None) -> None:
        self.database = database
        """The SQLite file holding the ``inbox`` table."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """Where mark times come from."""

    def contains(self, consumer: str, message_id: str) -> bool:
        """Whether ``consumer`` has marked ``message_id`` as handled (last commit seen)."""
        try:
            row = (
                self.database.read_connection()
                .execute(
                    "SELECT 1 FROM inbox WHERE subscriber = ? AND message_id = ?",
                    (consumer, message_id),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading the inbox", self.database.path) from exc
        return row is not None

    def mark(self, tx: Transaction, consumer: str, message_id: str) -> bool:
        """Mark ``message_id`` handled by ``consumer`` inside ``tx``.

        Returns False, writing nothing, when it was marked already: the caller should then
        roll its effects back (raise) or not write them.
        """
        cursor = tx.execute(
            "INSERT OR IGNORE INTO inbox (subscriber, message_id, handled_at) VALUES (?, ?, ?)",
            (consumer, message_id, self.clock.now()),
        )
        return cursor.rowcount == 1

    def purge(self, older_than: float, consumer: str | None = None) -> int:
        """Forget marks made more than ``older_than`` seconds ago (of one consumer, or of
        all); returns how many were deleted.

        A message redelivered after its mark is purged is handled again, so keep marks
        longer than any redelivery can come late.
        """
        if not older_than >= 0:
            raise ValueError(f"older_than must be a number of seconds >= 0, got {older_than!r}")
        cutoff = self.clock.now() - older_than
        with self.database.transaction() as tx:
            if consumer is None:
                cursor = tx.execute("DELETE FROM inbox WHERE handled_at < ?", (cutoff,))
            else:
                cursor = tx.execute(
                    "DELETE FROM inbox WHERE subscriber = ? AND handled_at < ?",
                    (consumer, cutoff),
                )
            return cursor.rowcount

    def count(self, consumer: str | None = None) -> int:
        """How many marks are kept (for one consumer, or for all)."""
        try:
            conn = self.database.read_connection()
            if consumer is None:
                row = conn.execute("SELECT count(*) FROM inbox").fetchone()
            else:
                row = conn.execute(
                    "SELECT count(*) FROM inbox WHERE subscriber = ?", (consumer,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(exc, "counting the inbox", self.database.path) from exc
        return int(row[0])

    def __repr__(self) -> str:
        return f"<Inbox {self.database.path!r}>"
