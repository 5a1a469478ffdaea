"""Orchestrated saga instances, rewritten after every step.

The :class:`~eventlite.saga.SagaOrchestrator` keeps each instance as a :class:`SagaRecord`
through a :class:`SagaStore`; :class:`SagaStatus` and :class:`StepFailure` are the values
both sides exchange (and :mod:`eventlite.saga` re-exports).
"""

from __future__ import annotations

import abc
import builtins
import enum
import traceback as _traceback

import attrs

__all__ = ["SagaRecord", "SagaStatus", "SagaStore", "StepFailure"]


class SagaStatus(enum.Enum):
    """Where a saga instance stands."""

    RUNNING = "running"
    """Executing its steps."""
    COMPLETED = "completed"
    """Every step executed."""
    COMPENSATING = "compensating"
    """A step failed; undoing the completed steps, last first."""
    FAILED = "failed"
    """A step failed and compensation is over (see ``compensation_errors``)."""


@attrs.frozen
class StepFailure:
    """How one step or compensation failed, as recorded on the instance."""

    step: str
    """The step's name."""
    error_type: str
    """The exception's class (``module.QualName``; builtins unqualified)."""
    message: str
    """``str()`` of the exception."""
    traceback: str
    """The formatted traceback."""

    @classmethod
    def of(cls, step: str, error: BaseException) -> StepFailure:
        """The record of ``error`` raised by ``step``."""
        kind = type(error)
        name = kind.__qualname__
        if kind.__module__ != "builtins":
            name = f"{kind.__module__}.{name}"
        text = "".join(_traceback.format_exception(kind, error, error.__traceback__))
        return cls(step, name, str(error), text)

    def __str__(self) -> str:
        return f"{self.step}: {self.error_type}: {self.message}"


@attrs.frozen
class SagaRecord:
    """One saga instance as a :class:`SagaStore` keeps it."""

    id: str
    """The instance id."""
    saga: str
    """The saga's name."""
    status: SagaStatus
    """Where it stands."""
    data: str
    """The saga's data as JSON text."""
    step_index: int
    """How many steps executed (the index of the next one to run)."""
    completed: tuple[str, ...]
    """Steps recorded as done, in order."""
    compensated: tuple[str, ...]
    """Steps whose compensation succeeded (or which had none), in the order undone."""
    compensation_errors: tuple[StepFailure, ...]
    """Compensations that failed."""
    failed_step: str | None
    """The step whose failure started compensation."""
    error: StepFailure | None
    """That step's failure."""
    revision: int
    """How many times the instance was saved since it was created (0 when new)."""
    started_at: float
    """When it was created (seconds since the epoch)."""
    updated_at: float
    """When it was last saved."""
    finished_at: float | None
    """When it completed or failed, or None."""


class SagaStore(abc.ABC):
    """Saga instances by id, each rewritten as a whole after every step.

    **Revisions.** A stored instance has a ``revision``: 0 when created, one more after
    each :meth:`save`. :meth:`save` writes only over the revision the caller loaded, so
    two orchestrators driving one instance cannot overwrite each other: the second gets
    False and stops.

    **Transactions.** Every write joins the calling thread's open
    ``storage.transaction()`` (a saga created with the events that call for it, a failed
    saga saved with its dead letter), else commits on its own.

    **Order.** Lists are oldest first: by ``started_at``, then ``id``.

    **Errors.** The storage failing raises :class:`~eventlite.exceptions.StorageError`;
    an unknown id is not an error (None, or False from a write).
    """

    @abc.abstractmethod
    def create(self, record: SagaRecord) -> bool:
        """Store a new instance as given (its revision is stored as 0); False, writing
        nothing, when an instance with its id exists."""

    @abc.abstractmethod
    def load(self, saga_id: str) -> SagaRecord | None:
        """The stored instance, or None."""

    @abc.abstractmethod
    def save(self, record: SagaRecord) -> bool:
        """Write every field of ``record`` but ``started_at`` over the stored instance if
        that is still at ``record.revision``; the stored revision becomes one more. False,
        writing nothing, when the stored revision differs or the instance is gone."""

    @abc.abstractmethod
    def list(
        self,
        *,
        status: SagaStatus | None = None,
        saga: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[SagaRecord]:
        """Stored instances, oldest first, of one status and one saga when given; at most
        ``limit`` of them."""

    @abc.abstractmethod
    def unfinished(self) -> builtins.list[SagaRecord]:
        """The instances still :attr:`~SagaStatus.RUNNING` or
        :attr:`~SagaStatus.COMPENSATING`, oldest first: what a restart resumes."""
