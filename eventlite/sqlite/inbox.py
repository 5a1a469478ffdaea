"""The inbox in the ``inbox`` table: message ids handled per consumer."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from ..store.checkpoints import check_time
from ..store.inbox import InboxStore, check_consumer
from ._database import Database, storage_error
from ._statements import write_many, write_one

__all__ = ["SQLiteInboxStore"]

_MARK = "INSERT OR IGNORE INTO inbox (subscriber, message_id, handled_at) VALUES (?, ?, ?)"
_CONTAINS = "SELECT 1 FROM inbox WHERE subscriber = ? AND message_id = ?"
_HANDLED = (
    "SELECT message_id FROM inbox WHERE subscriber = ? "
    "AND message_id IN (SELECT value FROM json_each(?))"
)
_PURGE_ALL = "DELETE FROM inbox WHERE handled_at < ?"
_PURGE_ONE = "DELETE FROM inbox WHERE subscriber = ? AND handled_at < ?"
_COUNT_ALL = "SELECT count(*) FROM inbox"
_WRITING = "writing the inbox"
_COUNT_ONE = "SELECT count(*) FROM inbox WHERE subscriber = ?"
_CONSUMERS = "SELECT subscriber, count(*) FROM inbox GROUP BY subscriber"


def _bad_text(exc: UnicodeEncodeError) -> ValueError:
    return ValueError(f"inbox consumer names and message ids must be valid Unicode text: {exc}")


class SQLiteInboxStore(InboxStore):
    """The :class:`~eventlite.store.inbox.InboxStore` contract in the ``inbox`` table of an
    eventlite file (primary key: consumer, message id)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    def _read(self, sql: str, parameters: tuple[Any, ...]) -> Any:
        db = self.database
        try:
            return db.read_connection().execute(sql, parameters).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading the inbox", db.path) from exc
        except UnicodeEncodeError as exc:
            raise _bad_text(exc) from None

    def _write(self, sql: str, parameters: tuple[Any, ...]) -> int:
        try:
            return write_one(self.database, sql, parameters, _WRITING)
        except UnicodeEncodeError as exc:
            raise _bad_text(exc) from None

    def mark(self, consumer: str, message_id: str, at: float) -> bool:
        """See :meth:`InboxStore.mark`: ``INSERT OR IGNORE``."""
        if not (type(consumer) is str and consumer and type(message_id) is str):
            check_consumer(consumer)
            if not isinstance(message_id, str):
                raise ValueError(f"a message id must be a str, got {message_id!r}")
        if not (type(at) is float and at - at == 0.0):
            at = check_time(at, "at")
        try:  # write_one without _write: the relay marks every message it delivers
            return write_one(self.database, _MARK, (consumer, message_id, at), _WRITING) == 1
        except UnicodeEncodeError as exc:
            raise _bad_text(exc) from None

    def contains(self, consumer: str, message_id: str) -> bool:
        """See :meth:`InboxStore.contains`."""
        return self._read(_CONTAINS, (consumer, message_id)) is not None

    def mark_many(self, consumer: str, message_ids: Sequence[str], at: float) -> int:
        """See :meth:`InboxStore.mark_many`: one ``INSERT OR IGNORE`` run for them all."""
        check_consumer(consumer)
        for message_id in message_ids:
            if type(message_id) is not str and not isinstance(message_id, str):
                raise ValueError(f"a message id must be a str, got {message_id!r}")
        if not (type(at) is float and at - at == 0.0):
            at = check_time(at, "at")
        try:
            return write_many(
                self.database, _MARK, [(consumer, m, at) for m in message_ids], _WRITING
            )
        except UnicodeEncodeError as exc:
            raise _bad_text(exc) from None

    def handled(self, consumer: str, message_ids: Iterable[str]) -> set[str]:
        """See :meth:`InboxStore.handled`: one query (the ids go in as a JSON array)."""
        ids = [m for m in message_ids if type(m) is str or isinstance(m, str)]
        if not ids:
            return set()
        # SQLite's JSON functions end a string at a NUL character: such ids are asked
        # about one at a time
        found = {m for m in ids if "\x00" in m and self.contains(consumer, m)}
        listed = json.dumps([m for m in ids if "\x00" not in m])
        db = self.database
        try:
            rows = db.read_connection().execute(_HANDLED, (consumer, listed)).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading the inbox", db.path) from exc
        except UnicodeEncodeError as exc:
            raise _bad_text(exc) from None
        return found.union(row[0] for row in rows)

    def purge(self, before: float, consumer: str | None = None) -> int:
        """See :meth:`InboxStore.purge`."""
        cutoff = check_time(before, "before")
        if consumer is None:
            return self._write(_PURGE_ALL, (cutoff,))
        return self._write(_PURGE_ONE, (consumer, cutoff))

    def count(self, consumer: str | None = None) -> int:
        """See :meth:`InboxStore.count`."""
        if consumer is None:
            return int(self._read(_COUNT_ALL, ())[0])
        return int(self._read(_COUNT_ONE, (consumer,))[0])

    def consumers(self) -> dict[str, int]:
        """See :meth:`InboxStore.consumers`."""
        db = self.database
        try:
            rows = db.read_connection().execute(_CONSUMERS).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading the inbox", db.path) from exc
        return dict(sorted((str(name), int(n)) for name, n in rows))

    def __repr__(self) -> str:
        return f"<SQLiteInboxStore {self.database.path!r}>"
