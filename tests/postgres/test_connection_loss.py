"""A connection lost mid-append (``pg_terminate_backend``): a named StorageError, nothing
half-written, and the pool goes on with a new connection."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from eventlite.exceptions import StorageError
from eventlite.postgres import PostgresStorage
from eventlite.testing.store_contract import Noted

from ._pg import psycopg_or_skip

pytestmark = pytest.mark.services

psycopg = psycopg_or_skip()


def _terminate_waiting(url: str, schema: str, timeout: float = 10.0) -> int:
    """Terminate the backend of this schema's storage that waits on a lock; its pid."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%%eventlite_append%%' AND pid <> pg_backend_pid() "
                "AND datname = current_database()"
            ).fetchone()
            if row is not None:
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                return int(row[0])
            time.sleep(0.01)
    raise AssertionError("no append waited on the log's lock")


def test_lost_inside_a_transaction(storage: PostgresStorage, pg_url: str) -> None:
    """The backend killed after an append inside a transaction: the commit raises a
    StorageError saying the connection was lost, none of the transaction is stored, and
    the next append works."""
    storage.events.append("a", [Noted(n=0)])
    with pytest.raises(StorageError) as info, storage.transaction() as tx:
        storage.events.append("a", [Noted(n=1)])
        storage.events.append("b", [Noted(n=2)])
        pid = tx.conn.info.backend_pid
        with psycopg.connect(pg_url, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert "connection was lost" in str(info.value)
    assert storage.description in str(info.value)
    assert [("a", 1)] == [(e.stream_id, e.version) for e in storage.events.read_all()]
    (after,) = storage.events.append("a", [Noted(n=3)])
    assert (2, 2) == (after.version, after.position)


def test_lost_while_waiting_for_the_log(storage: PostgresStorage, pg_url: str, schema: str) -> None:
    """The backend of an append killed while it waits for the log's lock: that append
    raises a StorageError saying nothing was written; positions stay gap-free and the
    next append works."""
    storage.events.append("a", [Noted(n=0)])
    outcome: list[Any] = []
    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (storage.database.log_lock,))

        def append() -> None:
            try:
                outcome.append(storage.events.append("a", [Noted(n=1)]))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=append)
        thread.start()
        _terminate_waiting(pg_url, schema)
        thread.join(10)
        holder.execute("SELECT pg_advisory_unlock(%s)", (storage.database.log_lock,))
    (error,) = outcome
    assert isinstance(error, StorageError), error
    assert "nothing of the append was written" in str(error)
    assert 1 == storage.events.head_position()
    (after,) = storage.events.append("a", [Noted(n=2)])
    assert (2, 2) == (after.version, after.position)


def test_idle_connection_lost_is_replaced_for_reads(storage: PostgresStorage, pg_url: str) -> None:
    """Connections the server closed while idle in the pool: reads go on (once more on a
    new connection) without an error."""
    storage.events.append("a", [Noted(n=1)])
    with storage.database.connection() as conn:
        pid = conn.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.05)
    assert 1 == storage.events.head_position()
    assert 1 == len(storage.events.read_stream("a"))
    with storage.database.connection() as conn:
        assert pid != conn.info.backend_pid


def test_idle_connection_lost_is_replaced_for_transactions(
    storage: PostgresStorage, pg_url: str
) -> None:
    """A transaction that begins on a connection the server closed while it was idle in
    the pool begins on a new one instead, without an error."""
    storage.events.append("a", [Noted(n=1)])
    with storage.database.connection() as conn:
        pid = conn.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.05)
    with storage.transaction() as tx:
        storage.events.append("a", [Noted(n=2)])
        assert pid != tx.conn.info.backend_pid
    assert 2 == storage.events.stream_version("a")
