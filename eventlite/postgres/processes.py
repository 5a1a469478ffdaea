"""Process-manager instances and timeouts in the ``process_instances`` and
``process_timeouts`` tables of an eventlite PostgreSQL schema.

Every write is one statement whose condition PostgreSQL checks again on the row's newest
version after waiting for another writer: a save is a compare-and-set on the revision
(creating is ``INSERT ... ON CONFLICT DO NOTHING``), firing a timeout claims it only if
it is not fired yet, and scheduling a named timeout replaces the one of that name with
``ON CONFLICT``, so writers in several processes never both win.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..store.processes import ProcessRecord, ProcessStatus, ProcessStore, TimeoutRecord
from ._database import PostgresDatabase, where_equal

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresProcessStore"]

_INSTANCE = "process, key, status, state, revision, started_at, updated_at, finished_at"
_TIMEOUT = (
    "id, process, key, name, type, schema_version, data, correlation_id, causation_id, "
    "due_at, fired_at, created_at"
)


def _instance(row: Sequence[Any]) -> ProcessRecord:
    process, key, status, state, revision, started, updated, finished = row
    return ProcessRecord(
        process, key, ProcessStatus(status), state, revision, started, updated, finished
    )


def _timeout(row: Sequence[Any]) -> TimeoutRecord:
    return TimeoutRecord(*row)


class PostgresProcessStore(ProcessStore):
    """:class:`ProcessStore` over the ``process_instances`` and ``process_timeouts``
    tables (see the module doc); writes inside an open transaction of the same thread
    join it."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""

    def _read(self, sql: str, params: Sequence[Any], action: str) -> list[Any]:
        return self.database.run(action, lambda conn: conn.execute(sql, params).fetchall())

    def _write(self, action: str, sql: str, params: Sequence[Any]) -> int:
        def write(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(sql, params).rowcount

        return self.database.run(action, write, repeat=False)

    # -- instances ----------------------------------------------------------------------

    def load(self, process: str, key: str) -> ProcessRecord | None:
        """See :meth:`ProcessStore.load`."""
        rows = self._read(
            f"SELECT {_INSTANCE} FROM process_instances WHERE process = %s AND key = %s",
            (process, key),
            "reading a process instance",
        )
        return _instance(rows[0]) if rows else None

    def list(
        self,
        process: str | None = None,
        *,
        status: ProcessStatus | None = None,
        limit: int | None = None,
    ) -> builtins.list[ProcessRecord]:
        """See :meth:`ProcessStore.list`."""
        where, params = where_equal(
            process=process, status=None if status is None else status.value
        )
        params.append(limit)
        rows = self._read(
            f"SELECT {_INSTANCE} FROM process_instances{where} "
            'ORDER BY started_at, process COLLATE "C", key COLLATE "C" LIMIT %s',
            params,
            "listing process instances",
        )
        return [_instance(r) for r in rows]

    def save(
        self,
        process: str,
        key: str,
        *,
        state: str,
        status: ProcessStatus,
        revision: int,
        now: float,
    ) -> bool:
        """See :meth:`ProcessStore.save`."""
        finished = now if status is ProcessStatus.DONE else None
        if revision == 0:
            return 1 == self._write(
                "creating a process instance",
                f"INSERT INTO process_instances ({_INSTANCE}) "
                "VALUES (%s, %s, %s, %s, 1, %s, %s, %s) ON CONFLICT (process, key) DO NOTHING",
                (process, key, status.value, state, now, now, finished),
            )
        return 1 == self._write(
            "saving a process instance",
            "UPDATE process_instances SET status = %s, state = %s, revision = revision + 1, "
            "updated_at = %s, finished_at = %s "
            "WHERE process = %s AND key = %s AND revision = %s",
            (status.value, state, now, finished, process, key, revision),
        )

    # -- timeouts -----------------------------------------------------------------------

    def schedule(self, timeout: TimeoutRecord) -> None:
        """See :meth:`ProcessStore.schedule`."""
        # A named timeout takes the place of the one of its instance and name, in one
        # statement (two schedulers of one name: the second replaces the first).
        conflict = (
            "ON CONFLICT (process, key, name) WHERE name IS NOT NULL DO UPDATE SET "
            "id = excluded.id, type = excluded.type, "
            "schema_version = excluded.schema_version, data = excluded.data, "
            "correlation_id = excluded.correlation_id, causation_id = excluded.causation_id, "
            "due_at = excluded.due_at, fired_at = NULL, created_at = excluded.created_at"
            if timeout.name is not None
            else ""
        )
        self._write(
            "scheduling a timeout",
            f"INSERT INTO process_timeouts ({_TIMEOUT}) "
            f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, %s) {conflict}",
            (
                timeout.id,
                timeout.process,
                timeout.key,
                timeout.name,
                timeout.type,
                timeout.schema_version,
                timeout.data,
                timeout.correlation_id,
                timeout.causation_id,
                timeout.due_at,
                timeout.created_at,
            ),
        )

    def cancel(self, process: str, key: str, timeout: str) -> None:
        """See :meth:`ProcessStore.cancel`."""
        self._write(
            "cancelling a timeout",
            "DELETE FROM process_timeouts WHERE process = %s AND key = %s "
            "AND (id = %s OR name = %s)",
            (process, key, timeout, timeout),
        )

    def cancel_all(self, process: str, key: str) -> None:
        """See :meth:`ProcessStore.cancel_all`."""
        self._write(
            "cancelling timeouts",
            "DELETE FROM process_timeouts WHERE process = %s AND key = %s",
            (process, key),
        )

    def delete(self, timeout_id: str) -> bool:
        """See :meth:`ProcessStore.delete`."""
        return 1 == self._write(
            "deleting a timeout", "DELETE FROM process_timeouts WHERE id = %s", (timeout_id,)
        )

    def find_timeout(self, timeout_id: str) -> TimeoutRecord | None:
        """See :meth:`ProcessStore.find_timeout`."""
        rows = self._read(
            f"SELECT {_TIMEOUT} FROM process_timeouts WHERE id = %s",
            (timeout_id,),
            "reading a timeout",
        )
        return _timeout(rows[0]) if rows else None

    def timeouts(
        self, process: str | None = None, key: str | None = None
    ) -> builtins.list[TimeoutRecord]:
        """See :meth:`ProcessStore.timeouts`."""
        where, params = where_equal(process=process, key=key)
        rows = self._read(
            f'SELECT {_TIMEOUT} FROM process_timeouts{where} ORDER BY due_at, id COLLATE "C"',
            params,
            "listing timeouts",
        )
        return [_timeout(r) for r in rows]

    def due(self, process: str, now: float, limit: int) -> builtins.list[TimeoutRecord]:
        """See :meth:`ProcessStore.due`."""
        rows = self._read(
            f"SELECT {_TIMEOUT} FROM process_timeouts WHERE process = %s AND fired_at IS NULL "
            'AND due_at <= %s ORDER BY due_at, id COLLATE "C" LIMIT %s',
            (process, now, limit),
            "reading due timeouts",
        )
        return [_timeout(r) for r in rows]

    def fire(self, timeout_id: str, now: float) -> bool:
        """See :meth:`ProcessStore.fire`."""
        return 1 == self._write(
            "firing a timeout",
            "UPDATE process_timeouts SET fired_at = %s WHERE id = %s AND fired_at IS NULL",
            (now, timeout_id),
        )

    def next_due(self, process: str) -> float | None:
        """See :meth:`ProcessStore.next_due`."""
        rows = self._read(
            "SELECT min(due_at) FROM process_timeouts WHERE process = %s AND fired_at IS NULL",
            (process,),
            "reading timeouts",
        )
        value = rows[0][0]
        return None if value is None else float(value)
