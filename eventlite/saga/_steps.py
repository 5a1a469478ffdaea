"""Running one instance: each step within its timeout, compensation in reverse order, the
instance stored after every change, and the failure of a compensation dead-lettered."""

from __future__ import annotations

import contextvars
import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ..clock import Clock
from ..codec import dumps as _dumps
from ..store.sagas import SagaStatus, SagaStore, StepFailure
from ..store.storage import Storage
from ._definitions import Saga, SagaAlert, SagaInstance, SagaStep, StepContext, StepFunction
from ._errors import CompensationFailed, SagaError, StepTimeout
from ._state import DataCodec, State, instance, save

if TYPE_CHECKING:
    from ..dlq import DeadLetterQueue

__all__ = ["DLQ_SOURCE_PREFIX", "LateCalls", "SagaRun"]

_log = logging.getLogger("eventlite.saga")

DLQ_SOURCE_PREFIX: Final = "saga:"
"""Dead letters of a saga named ``n`` have the source ``saga:n``."""


class LateCalls:
    """Step calls that outlived their timeout in this process and are still running:
    (saga id, step) to the event set when the call really ends. Shared by the runs of
    one orchestrator, so a compensation waits for the deed it undoes."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.Lock()

    def add(self, saga_id: str, step: str, done: threading.Event) -> None:
        """Remember a call that timed out."""
        with self._lock:
            self._calls[(saga_id, step)] = done

    def pop(self, saga_id: str, step: str) -> threading.Event | None:
        """Forget a call, returning its event when it was remembered."""
        with self._lock:
            return self._calls.pop((saga_id, step), None)


class SagaRun:
    """Drives one instance from where it stands until it is over or ``stopped()`` says
    so, storing it after every step (made by the orchestrator for each run)."""

    def __init__(
        self,
        saga: Saga,
        state: State,
        *,
        storage: Storage,
        store: SagaStore,
        data: DataCodec,
        clock: Clock,
        late: LateCalls,
        dlq: DeadLetterQueue | None,
        on_alert: SagaAlert | None,
        stopped: Callable[[], bool],
    ) -> None:
        self.saga = saga
        self.state = state
        self._storage = storage
        self._store = store
        self._data = data
        self._clock = clock
        self._late = late
        self._dlq = dlq
        self._on_alert = on_alert
        self._stopped = stopped

    def drive(self) -> SagaInstance:
        """Run to the end (or the stop) and return the instance as it stands."""
        saga, state = self.saga, self.state
        steps = saga.steps
        expected = tuple(s.name for s in steps[: state.step_index])
        if state.completed != expected:
            raise SagaError(
                f"saga {saga.name!r} {state.id}: stored steps {state.completed} do not match "
                f"the definition's first {state.step_index} ({expected})"
            )
        while not self._stopped():
            if state.status is SagaStatus.RUNNING:
                if state.step_index >= len(steps):  # only if stored by hand: nothing left
                    state.status = SagaStatus.COMPLETED
                    state.finished_at = self._clock.now()
                    self._save()
                    break
                self._execute(steps[state.step_index])
            elif state.status is SagaStatus.COMPENSATING:
                pending = state.pending_compensations()
                if not pending:
                    self._finish_failed()
                    break
                self._compensate(saga.step(pending[0]))
            else:
                break
        return instance(state, saga, self._data)

    def _save(self) -> None:
        save(self._store, self.state, self._clock.now())

    def _context(self, step: SagaStep, compensating: bool) -> StepContext:
        state = self.state
        return StepContext(
            saga_id=state.id,
            saga=self.saga.name,
            step=step.name,
            data=self._data.load(self.saga, state.data),
            compensating=compensating,
            error=state.error if compensating else None,
        )

    def _call(self, step: SagaStep, fn: StepFunction, ctx: StepContext) -> None:
        """Run ``fn(ctx)`` within the step's timeout."""
        timeout = step.timeout
        if timeout is None:
            fn(ctx)
            return
        outcome: list[BaseException] = []
        done = threading.Event()

        def call() -> None:
            try:
                fn(ctx)
            except BaseException as exc:
                outcome.append(exc)
            finally:
                done.set()

        runner = threading.Thread(
            target=contextvars.copy_context().run,
            args=(call,),
            name=f"eventlite-saga-{ctx.idempotency_key}",
            daemon=True,
        )
        runner.start()
        if not done.wait(timeout):
            if not ctx.compensating and step.compensate is not None:
                self._late.add(self.state.id, step.name, done)  # its compensation waits
            raise StepTimeout(self.state.id, step.name, timeout)
        if outcome:
            raise outcome[0]

    def _execute(self, step: SagaStep) -> None:
        saga, state = self.saga, self.state
        ctx = self._context(step, compensating=False)
        try:
            self._call(step, step.execute, ctx)
        except Exception as exc:
            _log.info("saga %r %s: step %r failed: %s", saga.name, state.id, step.name, exc)
            if isinstance(exc, StepTimeout) and step.compensate is not None:
                # It may have taken effect (it goes on in its thread): compensate it too.
                # Its data changes are dropped (they are not known).
                state.complete(step.name)
            self._fail(step, exc)
            return
        try:
            data = self._data.dump(saga, ctx.data)
        except Exception as exc:
            # The step did its work: record it as done (with the data as it was before), so
            # that it is compensated, and fail the saga with why its data was not stored.
            _log.info(
                "saga %r %s: the data of step %r cannot be stored: %s",
                saga.name,
                state.id,
                step.name,
                exc,
            )
            state.complete(step.name)
            try:
                raise SagaError(
                    f"saga {saga.name!r} {state.id}: step {step.name!r} ran, but the data it "
                    f"left cannot be stored ({type(exc).__name__}: {exc}); the step is "
                    "compensated"
                ) from exc
            except SagaError as error:
                self._fail(step, error)
            return
        state.data = data
        state.complete(step.name)
        if state.step_index == len(saga.steps):
            state.status = SagaStatus.COMPLETED
            state.finished_at = self._clock.now()
        self._save()

    def _fail(self, step: SagaStep, error: Exception) -> None:
        """Store ``step``'s failure and turn the saga ``compensating``."""
        state = self.state
        state.status = SagaStatus.COMPENSATING
        state.failed_step = step.name
        state.error = StepFailure.of(step.name, error)
        self._save()

    def _wait_late(self, step: SagaStep) -> None:
        """Before compensating a step whose ``execute`` timed out in this process, give that
        call up to the step's timeout again to end, so the undo comes after the deed."""
        late = self._late.pop(self.state.id, step.name)
        if late is not None and not late.wait(step.timeout):
            _log.warning(
                "saga %r %s: step %r is still running after its timeout; compensating it anyway",
                self.state.name,
                self.state.id,
                step.name,
            )

    def _compensate(self, step: SagaStep) -> None:
        saga, state = self.saga, self.state
        if step.compensate is None:
            # Nothing to undo and nothing outside to repeat: stored with the next change.
            state.compensated_step(step.name)
            return
        self._wait_late(step)
        ctx = self._context(step, compensating=True)
        try:
            self._call(step, step.compensate, ctx)
            data = self._data.dump(saga, ctx.data)
        except Exception as exc:
            _log.warning(
                "saga %r %s: compensation of %r failed: %s", saga.name, state.id, step.name, exc
            )
            state.compensation_failed(StepFailure.of(step.name, exc))
        else:
            state.data = data
            state.compensated_step(step.name)
        self._save()

    def _finish_failed(self) -> None:
        saga, state = self.saga, self.state
        state.status = SagaStatus.FAILED
        state.finished_at = self._clock.now()
        error: CompensationFailed | None = None
        if state.compensation_errors:
            error = CompensationFailed(state.id, saga.name, state.compensation_errors)
        dlq = self._dlq
        with self._storage.transaction():
            self._save()
            if error is not None and dlq is not None:
                dlq.add(
                    DLQ_SOURCE_PREFIX + saga.name,
                    self._dead_letter_text(),
                    key=state.id,
                    error=error,
                    attempts=len(state.compensation_errors),
                    type_name=saga.name,
                    message_id=state.id,
                )
        if error is not None:
            self._alert(instance(state, saga, self._data), error)

    def _dead_letter_text(self) -> str:
        state = self.state
        return _dumps(
            {
                "saga": state.name,
                "id": state.id,
                "data": json.loads(state.data),
                "completed": state.completed,
                "compensated": state.compensated,
                "failed_step": state.failed_step,
                "error": None if state.error is None else _failure(state.error),
                "compensation_errors": [_failure(f) for f in state.compensation_errors],
            }
        )

    def _alert(self, found: SagaInstance, error: CompensationFailed) -> None:
        hook = self._on_alert
        if hook is None:
            _log.error("%s", error)
            return
        try:
            hook(found, error)
        except Exception:
            _log.exception("the saga alert hook %r failed", hook)


def _failure(f: StepFailure) -> dict[str, str]:
    return {"step": f.step, "type": f.error_type, "message": f.message, "traceback": f.traceback}
