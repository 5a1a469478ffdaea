"""Orchestrated sagas: a business process of several steps, each with an undo.

A :class:`Saga` is a named list of :class:`SagaStep`\\ s. Each step has an ``execute``
function and, when it changes something outside, a ``compensate`` function that undoes
it; both receive a :class:`StepContext` with the saga's ``data``::

    checkout = Saga("checkout", [
        SagaStep("reserve", execute=reserve_stock, compensate=release_stock),
        SagaStep("charge", execute=charge_card, compensate=refund_card, timeout=10),
        SagaStep("ship", execute=book_courier),
    ])
    sagas = SagaOrchestrator(app.storage, app.codec)
    sagas.register(checkout)
    sagas.resume()                                   # finish what a crash interrupted
    sagas.start("checkout", {"order_id": "o-1", "total": 30})

A :class:`SagaOrchestrator` keeps every instance in the storage's
:class:`~eventlite.store.sagas.SagaStore` and rewrites it after every step: status, step
reached, completed and compensated steps, data, error. So:

- The steps run in order. When one fails (raises, or outlives its ``timeout``), the saga
  turns ``compensating`` and the *completed* steps are compensated in reverse order. A step
  that raised is not compensated: it is not recorded as done, and its data changes are
  dropped.
- A step that timed out may have taken effect (it goes on in its thread): when it has a
  ``compensate``, it is recorded as done (its data changes dropped) and compensated first,
  once its late call has ended or its ``timeout`` has passed again.
- A step whose ``execute`` returned but whose data cannot be stored is recorded as done
  (data as before the step) and compensated; the saga's error says why the data could not
  be stored.
- A compensation that fails is recorded and the others still run; the saga ends
  ``failed``, and the failure goes to the dead-letter queue (when one is given) in the same
  transaction, then to the ``on_alert`` hook.
- After a crash, :meth:`SagaOrchestrator.resume` runs ``running`` sagas on from the step
  they reached and finishes compensating ``compensating`` ones.
- A step recorded as done never runs again. A step the process was running when it crashed
  runs again on resume: it receives ``ctx.idempotency_key`` (saga id and step name, the
  same on every attempt) to pass to the outside system so the repeat is recognised.

The package: ``_definitions`` (what a saga is), ``_errors``, ``_state`` (an instance's
working copy and its data as JSON), ``_steps`` (running one instance: steps, timeouts,
compensation) and ``_orchestrator``.
"""

from __future__ import annotations

from ..store.sagas import SagaStatus, StepFailure
from ._definitions import (
    Saga,
    SagaAlert,
    SagaData,
    SagaInstance,
    SagaStep,
    StepContext,
    StepFunction,
)
from ._errors import CompensationFailed, SagaError, SagaNotFound, StepTimeout
from ._orchestrator import SagaOrchestrator
from ._steps import DLQ_SOURCE_PREFIX

__all__ = [
    "DLQ_SOURCE_PREFIX",
    "CompensationFailed",
    "Saga",
    "SagaAlert",
    "SagaData",
    "SagaError",
    "SagaInstance",
    "SagaNotFound",
    "SagaOrchestrator",
    "SagaStatus",
    "SagaStep",
    "StepContext",
    "StepFailure",
    "StepFunction",
    "StepTimeout",
]

# Errors are recorded by class path (a saga's failure, a dead letter's error type): name them
# by the public module they are imported from, not the private one they are defined in.
for _error in (CompensationFailed, SagaError, SagaNotFound, StepTimeout):
    _error.__module__ = __name__
del _error
