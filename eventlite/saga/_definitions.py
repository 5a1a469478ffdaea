"""What a saga is: its steps, its data, what a step receives, what an instance looks like."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import attrs

from ..store.sagas import SagaStatus, StepFailure
from ._errors import CompensationFailed

__all__ = [
    "Saga",
    "SagaAlert",
    "SagaData",
    "SagaInstance",
    "SagaStep",
    "StepContext",
    "StepFunction",
]


class SagaData:
    """The default saga data: attributes over a dict of JSON values.

    ``data.payment_id = "p-1"`` in a step is stored with the step. Reading a missing
    attribute raises ``AttributeError``; :meth:`get` gives a default instead.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None, **more: Any) -> None:
        object.__setattr__(self, "_values", {**(values or {}), **more})

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"saga data has no {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._values[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self._values[name]
        except KeyError:
            raise AttributeError(f"saga data has no {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name``, or ``default``."""
        return self._values.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """A copy of the values."""
        return dict(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SagaData):
            return NotImplemented
        return bool(self._values == other._values)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"SagaData({inner})"


StepFunction = Callable[["StepContext"], object]
"""A step's ``execute`` or ``compensate``: called with the :class:`StepContext`."""


def _check_timeout(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not value > 0):
        raise ValueError(f"a step's timeout must be > 0 seconds or None, got {value!r}")


@attrs.frozen
class SagaStep:
    """One step of a saga."""

    name: str
    """Unique within the saga and stable across releases: it is stored."""
    execute: StepFunction
    """Does the step's work; raising (or timing out) fails the saga."""
    compensate: StepFunction | None = None
    """Undoes ``execute`` after a later step failed; None when there is nothing to undo."""
    timeout: float | None = attrs.field(default=None, validator=_check_timeout)
    """Seconds ``execute`` (and ``compensate``) may take; longer counts as a failure. The
    call runs in its own thread, which is left to finish in the background; a timed-out
    ``execute`` may have taken effect, so the step is compensated."""


def _steps(value: Iterable[SagaStep]) -> tuple[SagaStep, ...]:
    return tuple(value)


@attrs.frozen
class Saga:
    """A saga definition: a name and its steps, in order.

    ``data_type`` is the class of the saga's data: an attrs class (stored through the
    codec's converter; make it mutable so steps can set fields), or None for
    :class:`SagaData`. Raises ``ValueError`` for no steps or two steps with one name.
    """

    name: str
    """Stable across releases: stored with every instance."""
    steps: tuple[SagaStep, ...] = attrs.field(converter=_steps)
    """The steps, run in this order."""
    data_type: type[Any] | None = None
    """The data's class, or None for :class:`SagaData`."""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a saga needs a non-empty name, got {self.name!r}")
        if not self.steps:
            raise ValueError(f"saga {self.name!r} has no steps")
        names = [s.name for s in self.steps]
        for s in self.steps:
            if not isinstance(s, SagaStep):
                raise TypeError(f"saga {self.name!r}: expected SagaStep, got {s!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"saga {self.name!r}: step names must be unique, got {names}")

    def step(self, name: str) -> SagaStep:
        """The step called ``name``; ``KeyError`` if there is none."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"saga {self.name!r} has no step {name!r}")


@attrs.frozen
class SagaInstance:
    """One run of a saga, as stored after its last step."""

    id: str
    """The instance id."""
    saga: str
    """The saga's name."""
    status: SagaStatus
    """``running``, ``completed``, ``compensating`` or ``failed``."""
    data: Any
    """The data as the last recorded step left it."""
    step: str | None
    """The step to execute (running) or compensate (compensating) next; None when over."""
    completed_steps: tuple[str, ...]
    """Steps recorded as done, in order: the steps to compensate should the saga fail.
    Includes a step that timed out (it may have taken effect) when it has a
    ``compensate``."""
    compensated_steps: tuple[str, ...]
    """Steps whose compensation succeeded (or which had none), in the order undone."""
    failed_step: str | None
    """The step whose failure started compensation."""
    error: StepFailure | None
    """That step's failure."""
    compensation_errors: tuple[StepFailure, ...]
    """Compensations that failed."""
    started_at: datetime
    """When the instance was created (UTC)."""
    updated_at: datetime
    """When it was last stored (UTC)."""
    finished_at: datetime | None
    """When it completed or failed (UTC)."""


class StepContext:
    """What a step's function receives."""

    __slots__ = ("compensating", "data", "error", "idempotency_key", "saga", "saga_id", "step")

    def __init__(
        self,
        *,
        saga_id: str,
        saga: str,
        step: str,
        data: Any,
        compensating: bool,
        error: StepFailure | None,
    ) -> None:
        self.saga_id = saga_id
        """The instance id."""
        self.saga = saga
        """The saga's name."""
        self.step = step
        """This step's name."""
        self.data = data
        """The saga's data: change it here; the changes are stored with the step."""
        self.compensating = compensating
        """True in ``compensate``."""
        self.error = error
        """In ``compensate``: the failure that started compensation."""
        suffix = ":compensate" if compensating else ""
        self.idempotency_key = f"{saga_id}:{step}{suffix}"
        """The same on every attempt of this step of this instance (``compensate`` has its
        own): give it to outside systems so a repeat after a crash is recognised."""

    def __repr__(self) -> str:
        return f"<StepContext {self.idempotency_key}>"


SagaAlert = Callable[[SagaInstance, CompensationFailed], object]
"""``on_alert(instance, error)``: a saga ended with compensations that failed."""
