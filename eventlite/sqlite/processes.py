"""Process-manager instances and timeouts in the ``process_instances`` and
``process_timeouts`` tables of an eventlite file."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..store.processes import ProcessRecord, ProcessStatus, ProcessStore, TimeoutRecord
from ._database import Database, storage_error, where_equal

__all__ = ["SQLiteProcessStore"]

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


class SQLiteProcessStore(ProcessStore):
    """:class:`ProcessStore` over the ``process_instances`` and ``process_timeouts``
    tables; writes inside an open transaction of the same thread join it."""

    def __init__(self, database: Database) -> None:
        self.database = database
        """The eventlite file."""

    def _read(self, sql: str, params: Sequence[Any], action: str) -> list[Any]:
        try:
            return self.database.read_connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, action, self.database.path) from exc

    # -- instances ----------------------------------------------------------------------

    def load(self, process: str, key: str) -> ProcessRecord | None:
        """See :meth:`ProcessStore.load`."""
        rows = self._read(
            f"SELECT {_INSTANCE} FROM process_instances WHERE process = ? AND key = ?",
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
        params.append(-1 if limit is None else limit)
        rows = self._read(
            f"SELECT {_INSTANCE} FROM process_instances{where} "
            "ORDER BY started_at, process, key LIMIT ?",
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
        with self.database.transaction() as tx:
            if revision == 0:
                cursor = tx.execute(
                    f"INSERT INTO process_instances ({_INSTANCE}) VALUES (?, ?, ?, ?, 1, ?, ?, ?) "
                    "ON CONFLICT (process, key) DO NOTHING",
                    (process, key, status.value, state, now, now, finished),
                )
            else:
                cursor = tx.execute(
                    "UPDATE process_instances SET status = ?, state = ?, revision = revision + 1, "
                    "updated_at = ?, finished_at = ? "
                    "WHERE process = ? AND key = ? AND revision = ?",
                    (status.value, state, now, finished, process, key, revision),
                )
            return cursor.rowcount == 1

    # -- timeouts -----------------------------------------------------------------------

    def schedule(self, timeout: TimeoutRecord) -> None:
        """See :meth:`ProcessStore.schedule`."""
        with self.database.transaction() as tx:
            if timeout.name is not None:
                tx.execute(
                    "DELETE FROM process_timeouts WHERE process = ? AND key = ? AND name = ?",
                    (timeout.process, timeout.key, timeout.name),
                )
            tx.execute(
                f"INSERT INTO process_timeouts ({_TIMEOUT}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
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
        with self.database.transaction() as tx:
            tx.execute(
                "DELETE FROM process_timeouts WHERE process = ? AND key = ? "
                "AND (id = ? OR name = ?)",
                (process, key, timeout, timeout),
            )

    def cancel_all(self, process: str, key: str) -> None:
        """See :meth:`ProcessStore.cancel_all`."""
        with self.database.transaction() as tx:
            tx.execute("DELETE FROM process_timeouts WHERE process = ? AND key = ?", (process, key))

    def delete(self, timeout_id: str) -> bool:
        """See :meth:`ProcessStore.delete`."""
        with self.database.transaction() as tx:
            cursor = tx.execute("DELETE FROM process_timeouts WHERE id = ?", (timeout_id,))
            return cursor.rowcount == 1

    def find_timeout(self, timeout_id: str) -> TimeoutRecord | None:
        """See :meth:`ProcessStore.find_timeout`."""
        rows = self._read(
            f"SELECT {_TIMEOUT} FROM process_timeouts WHERE id = ?",
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
            f"SELECT {_TIMEOUT} FROM process_timeouts{where} ORDER BY due_at, id",
            params,
            "listing timeouts",
        )
        return [_timeout(r) for r in rows]

    def due(self, process: str, now: float, limit: int) -> builtins.list[TimeoutRecord]:
        """See :meth:`ProcessStore.due`."""
        rows = self._read(
            f"SELECT {_TIMEOUT} FROM process_timeouts WHERE process = ? AND fired_at IS NULL "
            "AND due_at <= ? ORDER BY due_at, id LIMIT ?",
            (process, now, limit),
            "reading due timeouts",
        )
        return [_timeout(r) for r in rows]

    def fire(self, timeout_id: str, now: float) -> bool:
        """See :meth:`ProcessStore.fire`."""
        with self.database.transaction() as tx:
            cursor = tx.execute(
                "UPDATE process_timeouts SET fired_at = ? WHERE id = ? AND fired_at IS NULL",
                (now, timeout_id),
            )
            return cursor.rowcount == 1

    def next_due(self, process: str) -> float | None:
        """See :meth:`ProcessStore.next_due`."""
        rows = self._read(
            "SELECT min(due_at) FROM process_timeouts WHERE process = ? AND fired_at IS NULL",
            (process,),
            "reading timeouts",
        )
        value = rows[0][0]
        return None if value is None else float(value)
