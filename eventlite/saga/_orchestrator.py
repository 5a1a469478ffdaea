"""The orchestrator: registers sagas, creates, runs, resumes and reads their instances."""

from __future__ import annotations

import builtins
import logging
import threading
from typing import TYPE_CHECKING, Any

from .._ids import new_id
from ..clock import Clock, SystemClock
from ..codec import Codec
from ..store.sagas import SagaStatus
from ..store.storage import Storage
from ._definitions import Saga, SagaAlert, SagaInstance
from ._errors import SagaError, SagaNotFound
from ._state import DataCodec, State, instance
from ._steps import LateCalls, SagaRun

if TYPE_CHECKING:
    from ..dlq import DeadLetterQueue

__all__ = ["SagaOrchestrator"]

_log = logging.getLogger("eventlite.saga")


class SagaOrchestrator:
    """Runs sagas step by step, storing each instance after every step.

    ``storage`` keeps the instances (``app.storage``; a backend without sagas, such as the
    in-memory one, raises :class:`~eventlite.exceptions.StorageError`); ``codec`` gives the
    converter for attrs data classes (default: a new :class:`Codec`); ``dlq`` receives a
    dead letter (in the transaction that marks the saga ``failed``) when compensations
    fail — without one, the failure is kept only on the instance (``compensation_errors``)
    and given to the alert hook. ``on_alert(instance, error)`` is called after that
    commit; an exception from it is logged. Without a hook the alert is an error on the
    ``eventlite.saga`` logger. ``clock`` dates the instances.

    Steps run in the thread that calls :meth:`start`, :meth:`run` or :meth:`resume`; many
    threads may run different instances at once. One process should drive a given
    instance: the orchestrator refuses to run an instance it is already running, and a
    writer that finds the stored instance changed under it raises :class:`SagaError`.

    Wiring into an app: create it with the app's storage, codec, DLQ and clock, register
    the sagas, call :meth:`resume` when the app starts and :meth:`close` before the
    storage closes.
    """

    def __init__(
        self,
        storage: Storage,
        codec: Codec | None = None,
        *,
        dlq: DeadLetterQueue | None = None,
        on_alert: SagaAlert | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(storage, Storage):
            raise TypeError(
                "SagaOrchestrator needs a Storage (for example app.storage), "
                f"got {type(storage).__name__}"
            )
        self.storage = storage
        """Where the instances are kept."""
        self._store = storage.sagas
        self.codec = codec if codec is not None else Codec()
        """Converts attrs data classes to JSON and back."""
        self.dlq = dlq
        """Where failed compensations are dead-lettered, or None."""
        self.on_alert = on_alert
        """Told when a saga ends with failed compensations."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """Dates the instances."""
        self._data = DataCodec(self.codec)
        self._sagas: dict[str, Saga] = {}
        self._running: set[str] = set()
        self._late = LateCalls()
        self._lock = threading.Lock()
        self._closed = False

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

    # -- starting and running -------------------------------------------------------------

    def create(self, saga: Saga | str, data: Any = None, *, saga_id: str | None = None) -> str:
        """Store a new ``running`` instance without running it; returns its id.

        ``data`` is a dict, an instance of the saga's data type, or None for empty data.
        ``saga_id`` defaults to a new time-ordered id; an id already used raises
        :class:`SagaError`. Inside a transaction of the storage it joins it, so a saga can
        be created atomically with the events that call for it; run it once that commits
        (``tx.on_commit(lambda: sagas.run(saga_id))``).
        """
        return self._create(saga, data, saga_id).id

    def _create(self, saga: Saga | str, data: Any, saga_id: str | None) -> State:
        self._check_open()
        definition = self.register(saga) if isinstance(saga, Saga) else self._saga(saga)
        text = self._data.initial(definition, data)
        saga_id = new_id() if saga_id is None else saga_id
        if not isinstance(saga_id, str) or not saga_id:
            raise ValueError(f"saga_id must be a non-empty str, got {saga_id!r}")
        state = State.new(saga_id, definition.name, text, self.clock.now())
        if not self._store.create(state.record()):
            raise SagaError(f"a saga instance with id {saga_id!r} already exists")
        return state

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
        if self.storage.in_transaction():
            # Each step must be stored (and its effects made) on its own commit, and no
            # step should run while this thread holds the storage's write lock.
            raise SagaError(
                f"saga {saga_id or '(new)'}: run, start and resume must be called outside a "
                "database transaction (create joins one: run the saga after it commits)"
            )

    def _run(self, saga_id: str, state: State | None = None) -> SagaInstance | None:
        """Run the instance (``state``: as just created); None when this process is
        running it already."""
        self._check_outside(saga_id)
        with self._lock:
            if saga_id in self._running:
                return None
            self._running.add(saga_id)
        try:
            if state is None:
                state = self._load(saga_id)
            run = SagaRun(
                self._saga(state.name),
                state,
                storage=self.storage,
                store=self._store,
                data=self._data,
                clock=self.clock,
                late=self._late,
                dlq=self.dlq,
                on_alert=self.on_alert,
                stopped=lambda: self._closed,
            )
            return run.drive()
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
        out: builtins.list[SagaInstance] = []
        for record in self._store.unfinished():
            if self._closed:
                break
            if record.saga not in self._sagas:
                _log.warning(
                    "saga %s: no saga named %r is registered; not resuming", record.id, record.saga
                )
                continue
            found = self._run(record.id)
            if found is not None:
                out.append(found)
        return out

    # -- reading --------------------------------------------------------------------------

    def _load(self, saga_id: str) -> State:
        record = self._store.load(saga_id)
        if record is None:
            raise SagaNotFound(saga_id)
        return State.of(record)

    def _instance(self, state: State) -> SagaInstance:
        return instance(state, self._sagas.get(state.name), self._data)

    def get(self, saga_id: str) -> SagaInstance:
        """The stored instance; raises :class:`SagaNotFound`."""
        return self._instance(self._load(saga_id))

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
        records = self._store.list(
            status=None if status is None else SagaStatus(status), saga=saga, limit=limit
        )
        return [self._instance(State.of(r)) for r in records]

    # -- life -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SagaError("the saga orchestrator is closed")

    def close(self) -> None:
        """Stop: instances being run stop after their current step, stored as they are
        (``resume`` continues them). Idempotent; the storage stays open."""
        self._closed = True

    def __enter__(self) -> SagaOrchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SagaOrchestrator {self.storage.description!r} {sorted(self._sagas)}>"
