"""One-statement writes that join the calling thread's open transaction without a savepoint.

A store write made inside ``Database.transaction()`` must join it; a nested
``transaction()`` does that as a savepoint, which costs two more statements and two
context managers. A write that is a single statement needs none: SQLite rolls a failed
statement back by itself and leaves the transaction as it was. The delivery stores write
this way on the relay's hot path (an inbox mark and a checkpoint move per message).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ._database import Database, Transaction, storage_error

__all__ = ["write_many", "write_one"]


def write_one(database: Database, sql: str, parameters: tuple[Any, ...], action: str) -> int:
    """Run one write statement in the thread's open transaction, or in a transaction of its
    own; returns its row count. ``sqlite3`` errors become ``StorageError`` (``action`` says
    what was being done); ``UnicodeEncodeError`` goes up as it is, changing nothing."""
    # The thread's open transaction, as Database.in_transaction() reads it: one lookup on
    # the hot path instead of two calls (this module belongs to the same backend).
    tx: Transaction | None = getattr(database._local, "tx", None)
    if tx is not None:
        try:
            return tx.conn.execute(sql, parameters).rowcount
        except sqlite3.Error as exc:
            raise storage_error(exc, action, database.path) from exc
    with database.transaction() as tx:
        return tx.execute(sql, parameters).rowcount


def write_many(database: Database, sql: str, rows: list[tuple[Any, ...]], action: str) -> int:
    """``sql`` run for each of ``rows`` in one ``executemany``, all or none: in the
    thread's open transaction as a savepoint of it (a failure midway takes back the rows
    before it), else in a transaction of its own. Returns the rows changed; errors as
    :func:`write_one`."""
    with database.transaction() as tx:
        try:
            return tx.executemany(sql, rows).rowcount
        except sqlite3.Error as exc:
            raise storage_error(exc, action, database.path) from exc
