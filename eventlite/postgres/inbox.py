"""The inbox in the ``inbox`` table of an eventlite PostgreSQL schema: the message ids each
consumer has handled."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..store.checkpoints import check_time
from ..store.inbox import InboxStore, check_consumer
from ._database import PostgresDatabase
from .checkpoints import _text

__all__ = ["PostgresInboxStore"]

_MARK = (
    "INSERT INTO inbox (subscriber, message_id, handled_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (subscriber, message_id) DO NOTHING"
)
_MARK_MANY = (
    "INSERT INTO inbox (subscriber, message_id, handled_at) "
    "SELECT %s, m, %s FROM unnest(%s::text[]) AS m "
    "ON CONFLICT (subscriber, message_id) DO NOTHING"
)
_CONTAINS = "SELECT 1 FROM inbox WHERE subscriber = %s AND message_id = %s"
_HANDLED = "SELECT message_id FROM inbox WHERE subscriber = %s AND message_id = ANY(%s::text[])"
_PURGE_ALL = "DELETE FROM inbox WHERE handled_at < %s"
_PURGE_ONE = "DELETE FROM inbox WHERE subscriber = %s AND handled_at < %s"
_COUNT_ALL = "SELECT count(*) FROM inbox"
_COUNT_ONE = "SELECT count(*) FROM inbox WHERE subscriber = %s"
_CONSUMERS = "SELECT subscriber, count(*) FROM inbox GROUP BY subscriber"


def _check(consumer: str, message_id: str) -> tuple[str, str]:
    """The stored forms of a consumer name and a message id."""
    check_consumer(consumer)
    if not isinstance(message_id, str):
        raise ValueError(f"a message id must be a str, got {message_id!r}")
    return _text(consumer, "an inbox consumer name"), _text(message_id, "a message id")


class PostgresInboxStore(InboxStore):
    """The :class:`~eventlite.store.inbox.InboxStore` contract in PostgreSQL (primary key:
    consumer, message id); a mark joins the calling thread's open transaction, so it
    commits with the handler's effects."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""

    def mark(self, consumer: str, message_id: str, at: float) -> bool:
        """See :meth:`InboxStore.mark`: ``INSERT ... ON CONFLICT DO NOTHING``."""
        params = (*_check(consumer, message_id), check_time(at, "at"))
        count = self.database.run(
            "writing the inbox",
            lambda conn: conn.execute(_MARK, params).rowcount,
            repeat=False,
        )
        return count == 1

    def contains(self, consumer: str, message_id: str) -> bool:
        """See :meth:`InboxStore.contains`."""
        try:
            params = _check(consumer, message_id)
        except ValueError:
            return False
        row = self.database.run(
            "reading the inbox", lambda conn: conn.execute(_CONTAINS, params).fetchone()
        )
        return row is not None

    def mark_many(self, consumer: str, message_ids: Sequence[str], at: float) -> int:
        """See :meth:`InboxStore.mark_many`: one ``INSERT ... SELECT unnest(...)``."""
        check_consumer(consumer)
        stored = [_check(consumer, m)[1] for m in message_ids]
        params = (_text(consumer, "an inbox consumer name"), check_time(at, "at"), stored)
        if not stored:
            return 0
        count: int = self.database.run(
            "writing the inbox",
            lambda conn: conn.execute(_MARK_MANY, params).rowcount,
            repeat=False,
        )
        return count

    def handled(self, consumer: str, message_ids: Iterable[str]) -> set[str]:
        """See :meth:`InboxStore.handled`: one query."""
        by_stored: dict[str, str] = {}
        for m in message_ids:
            try:
                by_stored[_check(consumer, m)[1]] = m
            except ValueError:
                continue  # what cannot be stored was never marked
        if not by_stored:
            return set()
        params = (_text(consumer, "an inbox consumer name"), list(by_stored))
        rows: Any = self.database.run(
            "reading the inbox", lambda conn: conn.execute(_HANDLED, params).fetchall()
        )
        return {by_stored[row[0]] for row in rows}

    def purge(self, before: float, consumer: str | None = None) -> int:
        """See :meth:`InboxStore.purge`."""
        cutoff = check_time(before, "before")
        sql, params = (
            (_PURGE_ALL, (cutoff,))
            if consumer is None
            else (_PURGE_ONE, (_text(consumer, "an inbox consumer name"), cutoff))
        )
        count: int = self.database.run(
            "purging the inbox", lambda conn: conn.execute(sql, params).rowcount
        )
        return count

    def count(self, consumer: str | None = None) -> int:
        """See :meth:`InboxStore.count`."""
        sql, params = (
            (_COUNT_ALL, ())
            if consumer is None
            else (_COUNT_ONE, (_text(consumer, "an inbox consumer name"),))
        )
        row: Any = self.database.run(
            "reading the inbox", lambda conn: conn.execute(sql, params).fetchone()
        )
        return int(row[0])

    def consumers(self) -> dict[str, int]:
        """See :meth:`InboxStore.consumers`."""
        rows: Any = self.database.run(
            "reading the inbox", lambda conn: conn.execute(_CONSUMERS).fetchall()
        )
        return dict(sorted((str(name), int(n)) for name, n in rows))

    def __repr__(self) -> str:
        return f"<PostgresInboxStore {self.database.description}>"
