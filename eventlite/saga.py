"""Orchestrated sagas: a business process of several steps, each with an undo.

A :class:`Saga` is a named list of :class:`SagaStep`\\ s. Each step has an ``execute``
function and, when it changes something outside, a ``compensate`` function that undoes
it; both receive a :class:`StepContext` with the saga's ``data``::

    checkout = Saga("checkout", [
        SagaStep("reserve", execute=reserve_stock, compensate=release_stock),
        SagaStep("charge", execute=charge_card, compensate=refund_card, timeout=10),
        SagaStep("ship", execute=book_courier),
    ])
    sagas = SagaOrchestrator(database)
    sagas.register(checkout)
    sagas.resume()                                   # finish what a crash interrupted
    sagas.start("checkout", {"order_id": "o-1", "total": 30})

A :class:`SagaOrchestrator` keeps every instance in the ``sagas`` table of the SQLite file
and rewrites it after every step: status, step reached, completed and compensated steps,
data, error. So:

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
"""

from __future__ import annotations

import builtins
import contextvars
import enum
import json
import logging
import sqlite3
import threading
import traceback as _traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._ids import new_id
from .clock import Clock, SystemClock, to_datetime
from .codec import Codec
from .exceptions import EventliteError
from .sqlite._database import Database, Transaction, storage_error, where_equal

if TYPE_CHECKING:
    from .dlq import DeadLetterQueue

__all__ = [
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

_log = logging.getLogger("eventlite.saga")

DLQ_SOURCE_PREFIX: Final = "saga:"
"""Dead letters of a saga named ``n`` have the source ``saga:n``."""


# -- errors -------------------------------------------------------------------------------


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


# -- definitions --------------------------------------------------------------------------


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


# -- the orchestrator ---------------------------------------------------------------------

_COLUMNS = (
    "id, name, status, data, step_index, completed, compensated, compensation_errors, "
    "failed_step, error, revision, started_at, updated_at, finished_at"
)
_RUNNING = SagaStatus.RUNNING.value
_COMPLETED = SagaStatus.COMPLETED.value
_COMPENSATING = SagaStatus.COMPENSATING.value
_FAILED = SagaStatus.FAILED.value
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _failure_to_dict(f: StepFailure) -> dict[str, str]:
    return {"step": f.step, "type": f.error_type, "message": f.message, "traceback": f.traceback}


def _failure_from_dict(d: dict[str, str]) -> StepFailure:
    return StepFailure(d["step"], d["type"], d["message"], d["traceback"])


@attrs.define
class _State:
    """The stored row of one instance, changed step by step while it runs."""

    id: str
    name: str
    status: str
    data: str
    step_index: int
    completed: list[str]
    compensated: list[str]
    compensation_errors: list[StepFailure]
    failed_step: str | None
    error: StepFailure | None
    revision: int
    started_at: float
    updated_at: float
    finished_at: float | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> _State:
        return cls(
            id=row[0],
            name=row[1],
            status=row[2],
            data=row[3],
            step_index=row[4],
            completed=json.loads(row[5]),
            compensated=json.loads(row[6]),
            compensation_errors=[_failure_from_dict(d) for d in json.loads(row[7])],
            failed_step=row[8],
            error=None if row[9] is None else _failure_from_dict(json.loads(row[9])),
            revision=row[10],
            started_at=row[11],
            updated_at=row[12],
            finished_at=row[13],
        )

    def params(self) -> tuple[Any, ...]:
        return (
            self.status,
            self.data,
            self.step_index,
            _dumps(self.completed),
            _dumps(self.compensated),
            _dumps([_failure_to_dict(f) for f in self.compensation_errors]),
            self.failed_step,
            None if self.error is None else _dumps(_failure_to_dict(self.error)),
            self.updated_at,
            self.finished_at,
        )

    def pending_compensations(self) -> list[str]:
        done = set(self.compensated) | {f.step for f in self.compensation_errors}
        return [name for name in reversed(self.completed) if name not in done]


class SagaOrchestrator:
    """Runs sagas step by step, storing each instance in the SQLite file after every step.

    ``database`` is the file shared with the event store; ``codec`` gives the converter for
    attrs data classes (default: a new :class:`Codec`); ``dlq`` receives a dead letter (in
    the transaction that marks the saga ``failed``) when compensations fail — without one,
    the failure is kept only on the instance (``compensation_errors``) and given to the
    alert hook. ``on_alert(instance, error)`` is called after that commit; an exception from
    it is logged. Without a hook the alert is an error on the ``eventlite.saga`` logger.
    ``clock`` dates the instances.

    Steps run in the thread that calls :meth:`start`, :meth:`run` or :meth:`resume`; many
    threads may run different instances at once. One process should drive a given
    instance: the orchestrator refuses to run an instance it is already running, and a
    writer that finds the stored instance changed under it raises :class:`SagaError`.

    Wiring into an app: create it with the app's database, codec, DLQ and clock, register
    the sagas, call :meth:`resume` when the app starts and :meth:`close` before the
    database closes.
    """

    def __init__(
        self,
        database: Database,
        codec: Codec | None = None,
        *,
        dlq: DeadLetterQueue | None = None,
        on_alert: SagaAlert | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(database, Database):
            raise TypeError(
                "SagaOrchestrator needs an eventlite Database (for example store.database), "
                f"got {type(database).__name__}"
            )
        self._db = database
        self.codec = codec if codec is not None else Codec()
        """Converts attrs data classes to JSON and back."""
        self.dlq = dlq
        """Where failed compensations are dead-lettered, or None."""
        self.on_alert = on_alert
        """Told when a saga ends with failed compensations."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """Dates the instances."""
        self._sagas: dict[str, Saga] = {}
        self._running: set[str] = set()
        # (saga id, step) -> set when an ``execute`` that timed out has really ended.
        self._late: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def database(self) -> Database:
        """The SQLite file the instances live in."""
        return self._db

    @property
    def sagas(self) -> dict[str, Saga]:
        """The registered saga definitions, by name."""
        return dict(self._sagas)

    def register(self, saga: Saga) -> Saga:
        """Register a saga definition (needed before starting or resuming its instances);
        returns it. ``ValueError`` for another definition under the same name."""
        if not isinstance(saga, Saga):
            raise TypeError(f"expected a Saga, got {type(saga).__name__}")
        with self._lock:
            known = self._sagas.get(saga.name)
            if known is not None and known is not saga:
                raise ValueError(f"a saga named {saga.name!r} is already registered")
            self._sagas = {**self._sagas, saga.name: saga}
        return saga

    def _saga(self, name: str) -> Saga:
        try:
            return self._sagas[name]
        except KeyError:
            raise SagaError(
                f"no saga named {name!r} is registered (known: {sorted(self._sagas)})"
            ) from None

    # -- data -----------------------------------------------------------------------------

    def _load_data(self, saga: Saga, text: str) -> Any:
        raw = json.loads(text)
        if saga.data_type is None:
            return SagaData(raw)
        return self.codec.converter.structure(raw, saga.data_type)

    def _dump_data(self, saga: Saga, data: Any) -> str:
        if saga.data_type is None:
            if not isinstance(data, SagaData):
                raise TypeError(f"saga {saga.name!r}: data must stay a SagaData, got {data!r}")
            return _dumps(data.to_dict())
        if not isinstance(data, saga.data_type):
            raise TypeError(
                f"saga {saga.name!r}: data must stay a {saga.data_type.__qualname__}, got {data!r}"
            )
        return _dumps(self.codec.converter.unstructure(data))

    def _initial(self, saga: Saga, data: Any) -> str:
        if data is None:
            data = SagaData() if saga.data_type is None else saga.data_type()
        elif isinstance(data, Mapping):
            data = (
                SagaData(data)
                if saga.data_type is None
                else self.codec.converter.structure(dict(data), saga.data_type)
            )
        return self._dump_data(saga, data)

    # -- storing --------------------------------------------------------------------------

    def _write(self, tx: Transaction, state: _State) -> None:
        state.updated_at = self.clock.now()
        cursor = tx.execute(
            "UPDATE sagas SET status = ?, data = ?, step_index = ?, completed = ?, "
            "compensated = ?, compensation_errors = ?, failed_step = ?, error = ?, "
            "updated_at = ?, finished_at = ?, revision = revision + 1 "
            "WHERE id = ? AND revision = ?",
            (*state.params(), state.id, state.revision),
        )
        if cursor.rowcount != 1:
            raise SagaError(
                f"saga {state.name!r} {state.id}: the stored instance changed under this "
                f"orchestrator (expected revision {state.revision}); is another process "
                "driving it?"
            )
        state.revision += 1

    def _save(self, state: _State) -> None:
        with self._db.transaction() as tx:
            self._write(tx, state)

    def _load(self, conn: sqlite3.Connection, saga_id: str) -> _State:
        try:
            row = conn.execute(f"SELECT {_COLUMNS} FROM sagas WHERE id = ?", (saga_id,)).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading a saga", self._db.path) from exc
        if row is None:
            raise SagaNotFound(saga_id)
        return _State.from_row(row)

    def _instance(self, state: _State) -> SagaInstance:
        saga = self._sagas.get(state.name)
        step: str | None = None
        if state.status == _RUNNING and saga is not None and state.step_index < len(saga.steps):
            step = saga.steps[state.step_index].name
        elif state.status == _COMPENSATING:
            pending = state.pending_compensations()
            step = pending[0] if pending else None
        data: Any = json.loads(state.data)
        if saga is not None:
            data = self._load_data(saga, state.data)
        return SagaInstance(
            id=state.id,
            saga=state.name,
            status=SagaStatus(state.status),
            data=data,
            step=step,
            completed_steps=tuple(state.completed),
            compensated_steps=tuple(state.compensated),
            failed_step=state.failed_step,
            error=state.error,
            compensation_errors=tuple(state.compensation_errors),
            started_at=to_datetime(state.started_at),
            updated_at=to_datetime(state.updated_at),
            finished_at=None if state.finished_at is None else to_datetime(state.finished_at),
        )

    # -- starting and running -------------------------------------------------------------

    def create(self, saga: Saga | str, data: Any = None, *, saga_id: str | None = None) -> str:
        """Store a new ``running`` instance without running it; returns its id.

        ``data`` is a dict, an instance of the saga's data type, or None for empty data.
        ``saga_id`` defaults to a new time-ordered id; an id already used raises
        :class:`SagaError`. Inside a transaction of the database it joins it, so a saga can
        be created atomically with the events that call for it; run it once that commits
        (``tx.on_commit(lambda: sagas.run(saga_id))``).
        """
        return self._create(saga, data, saga_id).id

    def _create(self, saga: Saga | str, data: Any, saga_id: str | None) -> _State:
        self._check_open()
        definition = self.register(saga) if isinstance(saga, Saga) else self._saga(saga)
        text = self._initial(definition, data)
        saga_id = new_id() if saga_id is None else saga_id
        if not isinstance(saga_id, str) or not saga_id:
            raise ValueError(f"saga_id must be a non-empty str, got {saga_id!r}")
        now = self.clock.now()
        with self._db.transaction() as tx:
            cursor = tx.execute(
                f"INSERT INTO sagas ({_COLUMNS}) VALUES (?, ?, ?, ?, 0, '[]', '[]', '[]', "
                "NULL, NULL, 0, ?, ?, NULL) ON CONFLICT (id) DO NOTHING",
                (saga_id, definition.name, _RUNNING, text, now, now),
            )
            if cursor.rowcount != 1:
                raise SagaError(f"a saga instance with id {saga_id!r} already exists")
        return _State(
            id=saga_id,
            name=definition.name,
            status=_RUNNING,
            data=text,
            step_index=0,
            completed=[],
            compensated=[],
            compensation_errors=[],
            failed_step=None,
            error=None,
            revision=0,
            started_at=now,
            updated_at=now,
            finished_at=None,
        )

    def start(
        self, saga: Saga | str, data: Any = None, *, saga_id: str | None = None
    ) -> SagaInstance:
        """:meth:`create` an instance and :meth:`run` it to the end, in this thread.

        Returns the instance as it ended: ``completed``, or ``failed`` after compensation.
        A step's failure is not raised (it is in ``instance.error``); storage errors are.
        """
        self._check_outside(saga_id)
        state = self._create(saga, data, saga_id)
        result = self._run(state.id, state)
        assert result is not None  # a new id cannot be running already
        return result

    def run(self, saga_id: str) -> SagaInstance:
        """Run a stored instance on from where it stands, in this thread, until it is
        ``completed`` or ``failed`` (or the orchestrator is closed, which leaves it to
        :meth:`resume`). Returns it as it ended. Raises :class:`SagaNotFound`, and
        :class:`SagaError` when its saga is not registered, the instance is already running
        in this process, or its stored steps do not match the definition.
        """
        self._check_open()
        result = self._run(saga_id)
        if result is None:
            raise SagaError(f"saga {saga_id} is already running in this process")
        return result

    def _check_outside(self, saga_id: str | None) -> None:
        if self._db.in_transaction():
            # Each step must be stored (and its effects made) on its own commit, and no
            # step should run while this thread holds the file's write lock.
            raise SagaError(
                f"saga {saga_id or '(new)'}: run, start and resume must be called outside a "
                "database transaction (create joins one: run the saga after it commits)"
            )

    def _run(self, saga_id: str, state: _State | None = None) -> SagaInstance | None:
        """Run the instance (``state``: as just created); None when this process is
        running it already."""
        self._check_outside(saga_id)
        with self._lock:
            if saga_id in self._running:
                return None
            self._running.add(saga_id)
        try:
            if state is None:
                state = self._load(self._db.read_connection(), saga_id)
            return self._drive(self._saga(state.name), state)
        finally:
            with self._lock:
                self._running.discard(saga_id)

    def resume(self) -> builtins.list[SagaInstance]:
        """Run every ``running`` and ``compensating`` instance of a registered saga to its
        end, oldest first; returns them as they ended. Call it when the app starts.

        Instances of sagas not registered here are left alone (with a warning), as are
        those this process is running already.
        """
        self._check_open()
        try:
            with self._db.read() as conn:
                rows = conn.execute(
                    "SELECT id, name FROM sagas WHERE status IN (?, ?) ORDER BY started_at, id",
                    (_RUNNING, _COMPENSATING),
                ).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "finding unfinished sagas", self._db.path) from exc
        out: builtins.list[SagaInstance] = []
        for saga_id, name in rows:
            if self._closed:
                break
            if name not in self._sagas:
                _log.warning("saga %s: no saga named %r is registered; not resuming", saga_id, name)
                continue
            instance = self._run(saga_id)
            if instance is not None:
                out.append(instance)
        return out

    def _drive(self, saga: Saga, state: _State) -> SagaInstance:
        steps = saga.steps
        expected = [s.name for s in steps[: state.step_index]]
        if state.completed != expected:
            raise SagaError(
                f"saga {saga.name!r} {state.id}: stored steps {state.completed} do not match "
                f"the definition's first {state.step_index} ({expected})"
            )
        while not self._closed:
            if state.status == _RUNNING:
                if state.step_index >= len(steps):  # only if stored by hand: nothing left
                    state.status = _COMPLETED
                    state.finished_at = self.clock.now()
                    self._save(state)
                    break
                self._execute(saga, state, steps[state.step_index])
            elif state.status == _COMPENSATING:
                pending = state.pending_compensations()
                if not pending:
                    self._finish_failed(saga, state)
                    break
                self._compensate(saga, state, saga.step(pending[0]))
            else:
                break
        return self._instance(state)

    def _context(
        self, saga: Saga, state: _State, step: SagaStep, compensating: bool
    ) -> StepContext:
        return StepContext(
            saga_id=state.id,
            saga=saga.name,
            step=step.name,
            data=self._load_data(saga, state.data),
            compensating=compensating,
            error=state.error if compensating else None,
        )

    def _call(self, state: _State, step: SagaStep, fn: StepFunction, ctx: StepContext) -> None:
        """Run ``fn(ctx)`` within the step's timeout."""
        timeout = step.timeout
        if timeout is None:
            fn(ctx)
        else:
            outcome: builtins.list[BaseException] = []
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
                    # Its compensation waits for it (see _wait_late).
                    with self._lock:
                        self._late[(state.id, step.name)] = done
                raise StepTimeout(state.id, step.name, timeout)
            if outcome:
                raise outcome[0]

    def _execute(self, saga: Saga, state: _State, step: SagaStep) -> None:
        ctx = self._context(saga, state, step, compensating=False)
        try:
            self._call(state, step, step.execute, ctx)
        except Exception as exc:
            _log.info("saga %r %s: step %r failed: %s", saga.name, state.id, step.name, exc)
            if isinstance(exc, StepTimeout) and step.compensate is not None:
                # It may have taken effect (it goes on in its thread): compensate it too.
                # Its data changes are dropped (they are not known).
                state.completed.append(step.name)
                state.step_index += 1
            self._fail(state, step, exc)
            return
        try:
            data = self._dump_data(saga, ctx.data)
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
            state.completed.append(step.name)
            state.step_index += 1
            try:
                raise SagaError(
                    f"saga {saga.name!r} {state.id}: step {step.name!r} ran, but the data it "
                    f"left cannot be stored ({type(exc).__name__}: {exc}); the step is "
                    "compensated"
                ) from exc
            except SagaError as error:
                self._fail(state, step, error)
            return
        state.data = data
        state.completed.append(step.name)
        state.step_index += 1
        if state.step_index == len(saga.steps):
            state.status = _COMPLETED
            state.finished_at = self.clock.now()
        self._save(state)

    def _fail(self, state: _State, step: SagaStep, error: Exception) -> None:
        """Store ``step``'s failure and turn the saga ``compensating``."""
        state.status = _COMPENSATING
        state.failed_step = step.name
        state.error = StepFailure.of(step.name, error)
        self._save(state)

    def _wait_late(self, state: _State, step: SagaStep) -> None:
        """Before compensating a step whose ``execute`` timed out in this process, give that
        call up to the step's timeout again to end, so the undo comes after the deed."""
        with self._lock:
            late = self._late.pop((state.id, step.name), None)
        if late is not None and not late.wait(step.timeout):
            _log.warning(
                "saga %r %s: step %r is still running after its timeout; compensating it anyway",
                state.name,
                state.id,
                step.name,
            )

    def _compensate(self, saga: Saga, state: _State, step: SagaStep) -> None:
        if step.compensate is None:
            # Nothing to undo and nothing outside to repeat: stored with the next change.
            state.compensated.append(step.name)
            return
        self._wait_late(state, step)
        ctx = self._context(saga, state, step, compensating=True)
        try:
            self._call(state, step, step.compensate, ctx)
            data = self._dump_data(saga, ctx.data)
        except Exception as exc:
            _log.warning(
                "saga %r %s: compensation of %r failed: %s", saga.name, state.id, step.name, exc
            )
            state.compensation_errors.append(StepFailure.of(step.name, exc))
        else:
            state.data = data
            state.compensated.append(step.name)
        self._save(state)

    def _finish_failed(self, saga: Saga, state: _State) -> None:
        state.status = _FAILED
        state.finished_at = self.clock.now()
        error: CompensationFailed | None = None
        if state.compensation_errors:
            error = CompensationFailed(state.id, saga.name, state.compensation_errors)
        with self._db.transaction() as tx:
            self._write(tx, state)
            if error is not None and self.dlq is not None:
                self.dlq.add(
                    DLQ_SOURCE_PREFIX + saga.name,
                    self._dead_letter_text(state),
                    key=state.id,
                    error=error,
                    attempts=len(state.compensation_errors),
                    type_name=saga.name,
                    message_id=state.id,
                )
        if error is not None:
            self._alert(self._instance(state), error)

    @staticmethod
    def _dead_letter_text(state: _State) -> str:
        return _dumps(
            {
                "saga": state.name,
                "id": state.id,
                "data": json.loads(state.data),
                "completed": state.completed,
                "compensated": state.compensated,
                "failed_step": state.failed_step,
                "error": None if state.error is None else _failure_to_dict(state.error),
                "compensation_errors": [_failure_to_dict(f) for f in state.compensation_errors],
            }
        )

    def _alert(self, instance: SagaInstance, error: CompensationFailed) -> None:
        hook = self.on_alert
        if hook is None:
            _log.error("%s", error)
            return
        try:
            hook(instance, error)
        except Exception:
            _log.exception("the saga alert hook %r failed", hook)

    # -- reading --------------------------------------------------------------------------

    def get(self, saga_id: str) -> SagaInstance:
        """The stored instance; raises :class:`SagaNotFound`."""
        return self._instance(self._load(self._db.read_connection(), saga_id))

    def find(self, saga_id: str) -> SagaInstance | None:
        """The stored instance, or None."""
        try:
            return self.get(saga_id)
        except SagaNotFound:
            return None

    def list(
        self,
        *,
        status: SagaStatus | str | None = None,
        saga: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[SagaInstance]:
        """Stored instances, oldest first, optionally of one status and one saga."""
        where, params = where_equal(
            status=None if status is None else SagaStatus(status).value, name=saga
        )
        sql = f"SELECT {_COLUMNS} FROM sagas{where} ORDER BY started_at, id LIMIT ?"
        params.append(-1 if limit is None else limit)
        try:
            rows = self._db.read_connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "listing sagas", self._db.path) from exc
        return [self._instance(_State.from_row(r)) for r in rows]

    # -- life -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SagaError("the saga orchestrator is closed")

    def close(self) -> None:
        """Stop: instances being run stop after their current step, stored as they are
        (``resume`` continues them). Idempotent; the database stays open."""
        self._closed = True

    def __enter__(self) -> SagaOrchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SagaOrchestrator {self._db.path!r} {sorted(self._sagas)}>"
