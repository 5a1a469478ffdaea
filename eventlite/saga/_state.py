"""An instance while it runs: the mutable working copy of its stored record, its data as
JSON, and the :class:`~eventlite.saga.SagaInstance` users read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from ..clock import to_datetime
from ..codec import Codec
from ..codec import dumps as _dumps
from ..store.sagas import SagaRecord, SagaStatus, SagaStore, StepFailure
from ._definitions import Saga, SagaData, SagaInstance
from ._errors import SagaError

__all__ = ["DataCodec", "State", "instance", "save"]


@attrs.define
class State:
    """One instance as the orchestrator changes it step by step (see
    :class:`~eventlite.store.sagas.SagaRecord` for the fields)."""

    id: str
    name: str
    status: SagaStatus
    data: str
    step_index: int
    completed: tuple[str, ...]
    compensated: tuple[str, ...]
    compensation_errors: tuple[StepFailure, ...]
    failed_step: str | None
    error: StepFailure | None
    revision: int
    started_at: float
    updated_at: float
    finished_at: float | None

    @classmethod
    def new(cls, saga_id: str, saga: str, data: str, now: float) -> State:
        """A new running instance, not yet stored."""
        return cls(
            saga_id, saga, SagaStatus.RUNNING, data, 0, (), (), (), None, None, 0, now, now, None
        )

    @classmethod
    def of(cls, record: SagaRecord) -> State:
        """The working copy of a stored record."""
        return cls(
            id=record.id,
            name=record.saga,
            status=record.status,
            data=record.data,
            step_index=record.step_index,
            completed=record.completed,
            compensated=record.compensated,
            compensation_errors=record.compensation_errors,
            failed_step=record.failed_step,
            error=record.error,
            revision=record.revision,
            started_at=record.started_at,
            updated_at=record.updated_at,
            finished_at=record.finished_at,
        )

    def record(self) -> SagaRecord:
        """The record to store."""
        return SagaRecord(  # positional: it is made on every save
            self.id,
            self.name,
            self.status,
            self.data,
            self.step_index,
            self.completed,
            self.compensated,
            self.compensation_errors,
            self.failed_step,
            self.error,
            self.revision,
            self.started_at,
            self.updated_at,
            self.finished_at,
        )

    def complete(self, step: str) -> None:
        """Record ``step`` as done: the next one is to run."""
        self.completed = (*self.completed, step)
        self.step_index += 1

    def compensated_step(self, step: str) -> None:
        """Record ``step``'s compensation as done (or not needed)."""
        self.compensated = (*self.compensated, step)

    def compensation_failed(self, failure: StepFailure) -> None:
        """Record a compensation that raised."""
        self.compensation_errors = (*self.compensation_errors, failure)

    def pending_compensations(self) -> list[str]:
        """The completed steps still to compensate, next first."""
        done = set(self.compensated) | {f.step for f in self.compensation_errors}
        return [name for name in reversed(self.completed) if name not in done]


def save(store: SagaStore, state: State, now: float) -> None:
    """Store ``state`` over the revision it was loaded at; :class:`SagaError` when another
    writer moved the instance first."""
    state.updated_at = now
    if not store.save(state.record()):
        raise SagaError(
            f"saga {state.name!r} {state.id}: the stored instance changed under this "
            f"orchestrator (expected revision {state.revision}); is another process "
            "driving it?"
        )
    state.revision += 1


class DataCodec:
    """A saga's data to JSON text and back: :class:`SagaData`, or its ``data_type``
    through the codec's converter."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        """Whose converter structures attrs data classes."""

    def load(self, saga: Saga, text: str) -> Any:
        """The data object of stored ``text``."""
        raw = json.loads(text)
        if saga.data_type is None:
            return SagaData(raw)
        return self.codec.converter.structure(raw, saga.data_type)

    def dump(self, saga: Saga, data: Any) -> str:
        """``data`` as JSON text; ``TypeError`` when it is not of the saga's data class."""
        if saga.data_type is None:
            if not isinstance(data, SagaData):
                raise TypeError(f"saga {saga.name!r}: data must stay a SagaData, got {data!r}")
            return _dumps(data.to_dict())
        if not isinstance(data, saga.data_type):
            raise TypeError(
                f"saga {saga.name!r}: data must stay a {saga.data_type.__qualname__}, got {data!r}"
            )
        return _dumps(self.codec.converter.unstructure(data))

    def initial(self, saga: Saga, data: Any) -> str:
        """The JSON text a new instance starts with: ``data`` a dict, an instance of the
        data class, or None for empty data."""
        if data is None:
            data = SagaData() if saga.data_type is None else saga.data_type()
        elif isinstance(data, Mapping):
            data = (
                SagaData(data)
                if saga.data_type is None
                else self.codec.converter.structure(dict(data), saga.data_type)
            )
        return self.dump(saga, data)


def instance(state: State, saga: Saga | None, data: DataCodec) -> SagaInstance:
    """What users read of ``state``; its data as a dict when its saga is not known."""
    step: str | None = None
    if (
        state.status is SagaStatus.RUNNING
        and saga is not None
        and state.step_index < len(saga.steps)
    ):
        step = saga.steps[state.step_index].name
    elif state.status is SagaStatus.COMPENSATING:
        pending = state.pending_compensations()
        step = pending[0] if pending else None
    value: Any = json.loads(state.data) if saga is None else data.load(saga, state.data)
    return SagaInstance(
        id=state.id,
        saga=state.name,
        status=state.status,
        data=value,
        step=step,
        completed_steps=state.completed,
        compensated_steps=state.compensated,
        failed_step=state.failed_step,
        error=state.error,
        compensation_errors=state.compensation_errors,
        started_at=to_datetime(state.started_at),
        updated_at=to_datetime(state.updated_at),
        finished_at=None if state.finished_at is None else to_datetime(state.finished_at),
    )
