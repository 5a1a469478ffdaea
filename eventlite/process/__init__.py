"""Process managers: long-running processes driven by events, one instance per key.

A :class:`ProcessManager` is a state machine that lives as long as a business process does
(an order from placement to delivery). Events *start* an instance or are *correlated* to
one by a key read from the event; its handlers change the instance's state, dispatch
commands, and schedule timeouts for what must happen if nothing else does::

    @attrs.define
    class Payment:
        reminded: bool = False

    payments = ProcessManager(
        "payment-follow-up",
        state=Payment,
        correlate={OrderPlaced: lambda e: e.order_id, PaymentTaken: lambda e: e.order_id},
    )

    @payments.starts(OrderPlaced)
    def placed(event: OrderPlaced, process: ProcessContext[Payment]) -> None:
        process.schedule(PaymentOverdue(event.order_id), after=timedelta(hours=1), name="due")

    @payments.handles(PaymentOverdue)
    def overdue(event: PaymentOverdue, process: ProcessContext[Payment]) -> None:
        process.dispatch(CancelOrder(event.order_id))
        process.complete()

    @payments.handles(PaymentTaken)
    def paid(event: PaymentTaken, process: ProcessContext[Payment]) -> None:
        process.complete()           # also cancels the pending "due" timeout

    app.process_manager(payments)

The names: :class:`ProcessManager` is the definition; :class:`ProcessContext` is what a
handler receives (one instance: its state, and dispatch, schedule, cancel, complete);
:class:`ProcessInstance` is an instance as stored; :class:`ProcessTimeout` a timeout
waiting; :class:`ProcessManagers` is ``app.processes``, the reader of instances and
timeouts.

The rules (see ``docs/process-managers.md``):

- A process manager is a durable subscriber of the app's storage, named after it, of every
  type it has a handler for: events reach it one at a time, in commit order, at least
  once, also after a crash.
- The instance's state (an attrs class or a dict, stored as JSON), its new and cancelled
  timeouts, the inbox mark of the event and the subscriber's checkpoint are written in one
  transaction. A handler that raises writes none of them; the event is retried per the
  manager's retry policy, then dead-lettered.
- The key is ``correlate[type](event)`` (found along the event class's bases); ``None``
  means the event is not for this manager. A starting event for a key without an instance
  creates one. Any other event for a key without an instance is **ignored** with an INFO
  line on the ``eventlite.process`` logger: it never fails the delivery.
- :meth:`ProcessContext.complete` marks the instance ``done`` and cancels its timeouts;
  later events for its key (starting events too) are ignored with an INFO line.
- :meth:`ProcessContext.dispatch` runs a command at once on the app's bus, correlated to
  the event being handled. A handling that fails after dispatching is retried, so
  commands are dispatched at least once: make their handlers idempotent.
- :meth:`ProcessContext.schedule` stores a timeout with the state. When the app's clock
  passes its time, the relay thread of the manager records the message in the log as an
  event (stream ``process:<name>/<key>``, in the flow of the event that scheduled it), and
  delivers it to the handler of its type for that instance. A timeout cancelled before its
  message is handled never reaches the handler. Timeouts survive restarts: one that fell
  due while the process was down fires when it starts again.

The package: ``_definition`` (the manager), ``_context`` (the handler's view), ``_records``
(what reading returns, errors, the headers of fired timeouts), ``_runner`` (handling
events for the durable subscriber), ``_timeouts`` (firing due timeouts) and ``_managers``
(``app.processes``).
"""

from __future__ import annotations

from ..store.processes import ProcessStatus
from ._context import ProcessContext
from ._definition import ProcessHandler, ProcessManager
from ._managers import ProcessManagers
from ._records import (
    HEADER_KEY,
    HEADER_PROCESS,
    HEADER_TIMEOUT,
    ProcessError,
    ProcessInstance,
    ProcessNotFound,
    ProcessTimeout,
    timeout_stream,
)

__all__ = [
    "HEADER_KEY",
    "HEADER_PROCESS",
    "HEADER_TIMEOUT",
    "ProcessContext",
    "ProcessError",
    "ProcessHandler",
    "ProcessInstance",
    "ProcessManager",
    "ProcessManagers",
    "ProcessNotFound",
    "ProcessStatus",
    "ProcessTimeout",
    "timeout_stream",
]

# Errors are recorded by class path (a saga's failure, a dead letter's error type): name them
# by the public module they are imported from, not the private one they are defined in.
for _error in (ProcessError, ProcessNotFound):
    _error.__module__ = __name__
del _error
