"""Saga instances in the ``sagas`` table of an eventlite PostgreSQL schema.

A save is a compare-and-set on the revision (one ``UPDATE`` that matches the revision
the caller loaded):
of two writers of one instance, in any processes, the second finds the revision moved
(PostgreSQL checks the condition again after waiting for the first one's row lock) and
writes nothing."""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..store.sagas import SagaRecord, SagaStatus, SagaStore, StepFailure
from ._database import PostgresDatabase, where_equal

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresSagaStore"]

_COLUMNS = (
    "id, name, status, data, step_index, completed, compensated, compensation_errors, "
    "failed_step, error, revision, started_at, updated_at, finished_at"
)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _list(values: Sequence[Any]) -> str:
    return _dumps(values) if values else "[]"  # most lists are empty: skip the encoder


def _failures(failures: Sequence[StepFailure]) -> str:
    return _dumps([_failure_to_dict(f) for f in failures]) if failures else "[]"


def _failure_to_dict(f: StepFailure) -> dict[str, str]:
    return {"step": f.step, "type": f.error_type, "message": f.message, "traceback": f.traceback}


def _failure_from_dict(d: dict[str, str]) -> StepFailure:
    return StepFailure(d["step"], d["type"], d["message"], d["traceback"])


def _record(row: Sequence[Any]) -> SagaRecord:
    return SagaRecord(
        id=row[0],
        saga=row[1],
        status=SagaStatus(row[2]),
        data=row[3],
        step_index=row[4],
        completed=tuple(json.loads(row[5])),
        compensated=tuple(json.loads(row[6])),
        compensation_errors=tuple(_failure_from_dict(d) for d in json.loads(row[7])),
        failed_step=row[8],
        error=None if row[9] is None else _failure_from_dict(json.loads(row[9])),
        revision=row[10],
        started_at=row[11],
        updated_at=row[12],
        finished_at=row[13],
    )


def _changes(record: SagaRecord) -> tuple[Any, ...]:
    return (
        record.status.value,
        record.data,
        record.step_index,
        _list(record.completed),
        _list(record.compensated),
        _failures(record.compensation_errors),
        record.failed_step,
        None if record.error is None else _dumps(_failure_to_dict(record.error)),
        record.updated_at,
        record.finished_at,
    )


class PostgresSagaStore(SagaStore):
    """:class:`SagaStore` over the ``sagas`` table (see the module doc); writes inside an
    open transaction of the same thread join it. The step lists and failures are stored
    as JSON."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        """The database."""

    def _read(self, sql: str, params: Sequence[Any], action: str) -> list[Any]:
        return self.database.run(action, lambda conn: conn.execute(sql, params).fetchall())

    def _write(self, action: str, sql: str, params: Sequence[Any]) -> int:
        def write(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(sql, params).rowcount

        return self.database.run(action, write, repeat=False)

    def create(self, record: SagaRecord) -> bool:
        """See :meth:`SagaStore.create`."""
        return 1 == self._write(
            "creating a saga",
            f"INSERT INTO sagas ({_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s) "
            "ON CONFLICT (id) DO NOTHING",
            (
                record.id,
                record.saga,
                record.status.value,
                record.data,
                record.step_index,
                _list(record.completed),
                _list(record.compensated),
                _failures(record.compensation_errors),
                record.failed_step,
                None if record.error is None else _dumps(_failure_to_dict(record.error)),
                record.started_at,
                record.updated_at,
                record.finished_at,
            ),
        )

    def load(self, saga_id: str) -> SagaRecord | None:
        """See :meth:`SagaStore.load`."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM sagas WHERE id = %s", (saga_id,), "reading a saga"
        )
        return _record(rows[0]) if rows else None

    def save(self, record: SagaRecord) -> bool:
        """See :meth:`SagaStore.save`."""
        return 1 == self._write(
            "saving a saga",
            "UPDATE sagas SET status = %s, data = %s, step_index = %s, completed = %s, "
            "compensated = %s, compensation_errors = %s, failed_step = %s, error = %s, "
            "updated_at = %s, finished_at = %s, revision = revision + 1 "
            "WHERE id = %s AND revision = %s",
            (*_changes(record), record.id, record.revision),
        )

    def list(
        self,
        *,
        status: SagaStatus | None = None,
        saga: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[SagaRecord]:
        """See :meth:`SagaStore.list`."""
        where, params = where_equal(status=None if status is None else status.value, name=saga)
        params.append(limit)
        rows = self._read(
            f'SELECT {_COLUMNS} FROM sagas{where} ORDER BY started_at, id COLLATE "C" LIMIT %s',
            params,
            "listing sagas",
        )
        return [_record(r) for r in rows]

    def unfinished(self) -> builtins.list[SagaRecord]:
        """See :meth:`SagaStore.unfinished`."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM sagas WHERE status IN (%s, %s) "
            'ORDER BY started_at, id COLLATE "C"',
            (SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value),
            "finding unfinished sagas",
        )
        return [_record(r) for r in rows]
