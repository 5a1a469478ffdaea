"""What can go wrong with a saga: definitions, lookups, steps, compensations."""

from __future__ import annotations

from collections.abc import Sequence

from ..exceptions import EventliteError
from ..store.sagas import StepFailure

__all__ = ["CompensationFailed", "SagaError", "SagaNotFound", "StepTimeout"]


class SagaError(EventliteError):
    """A saga cannot be defined, found or run as asked."""


class SagaNotFound(SagaError, LookupError):
    """No saga instance has this id."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(f"no saga instance with id {saga_id!r}")


class StepTimeout(SagaError, TimeoutError):
    """A step (or compensation) ran longer than its ``timeout``; counts as its failure."""

    def __init__(self, saga_id: str, step: str, timeout: float) -> None:
        self.saga_id = saga_id
        self.step = step
        self.timeout = timeout
        super().__init__(f"saga {saga_id}: step {step!r} did not finish within {timeout:g} s")


class CompensationFailed(SagaError):
    """At least one compensation of a failed saga raised: what it did is not fully undone.

    Dead-lettered and given to the alert hook; ``failures`` lists each failed compensation.
    """

    def __init__(self, saga_id: str, saga: str, failures: Sequence[StepFailure]) -> None:
        self.saga_id = saga_id
        self.saga = saga
        self.failures = tuple(failures)
        listed = "; ".join(str(f) for f in self.failures)
        super().__init__(
            f"saga {saga!r} {saga_id}: {len(self.failures)} compensation(s) failed ({listed}); "
            "undo these by hand"
        )
