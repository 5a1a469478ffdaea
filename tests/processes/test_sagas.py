"""Orchestrated sagas: steps in order, compensation of the completed steps in reverse,
failed compensations recorded and dead-lettered, timeouts, stored data, resuming."""

from __future__ import annotations

import threading
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlite.clock import FakeClock
from eventlite.dlq import DeadLetterQueue
from eventlite.saga import (
    CompensationFailed,
    Saga,
    SagaData,
    SagaError,
    SagaInstance,
    SagaNotFound,
    SagaOrchestrator,
    SagaStatus,
    SagaStep,
    StepContext,
    StepTimeout,
)
from eventlite.sqlite import SQLiteStorage


class Recorder:
    """Step functions that log what ran, and fail where they are told to."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.keys: list[str] = []
        self.fail_execute: set[str] = set()
        self.fail_compensate: set[str] = set()

    def execute(self, name: str) -> Any:
        def run(ctx: StepContext) -> None:
            self.log.append(("execute", name))
            self.keys.append(ctx.idempotency_key)
            setattr(ctx.data, name, f"{name}-done")
            if name in self.fail_execute:
                raise RuntimeError(f"{name} failed")

        return run

    def compensate(self, name: str) -> Any:
        def run(ctx: StepContext) -> None:
            self.log.append(("compensate", name))
            self.keys.append(ctx.idempotency_key)
            if name in self.fail_compensate:
                raise ValueError(f"cannot undo {name}")

        return run

    def saga(
        self, name: str, steps: list[str], without_compensation: frozenset[str] = frozenset()
    ) -> Saga:
        return Saga(
            name,
            [
                SagaStep(
                    s,
                    self.execute(s),
                    None if s in without_compensation else self.compensate(s),
                )
                for s in steps
            ],
        )


STEPS = ["reserve", "charge", "ship", "notify"]


def test_all_steps_complete_and_the_data_is_stored(storage: SQLiteStorage) -> None:
    """Every step runs once, in order; the instance ends completed with each step's data
    change stored, and get() reads the same back."""
    rec = Recorder()
    clock = FakeClock()
    sagas = SagaOrchestrator(storage, clock=clock)
    instance = sagas.start(rec.saga("checkout", STEPS), {"order": "o-1"}, saga_id="s-1")
    assert [("execute", s) for s in STEPS] == rec.log
    assert SagaStatus.COMPLETED == instance.status
    assert tuple(STEPS) == instance.completed_steps
    assert SagaData(order="o-1", **{s: f"{s}-done" for s in STEPS}) == instance.data  # type: ignore[arg-type]
    assert (None, None, ()) == (instance.step, instance.error, instance.compensation_errors)
    assert instance.finished_at == instance.started_at  # the fake clock did not move
    assert instance == sagas.get("s-1")
    assert [f"s-1:{s}" for s in STEPS] == rec.keys


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 7),
    data=st.data(),
)
def test_compensation_is_exactly_the_completed_steps_in_reverse(
    tmp_path_factory: Any, n: int, data: st.DataObject
) -> None:
    """For a random failing step (or none), and random steps without a compensation:
    exactly the steps before the failing one are compensated, last first; the failing step
    and the ones after it are not."""
    steps = [f"step{i}" for i in range(n)]
    failing = data.draw(st.one_of(st.none(), st.integers(0, n - 1)), label="failing")
    bare = data.draw(st.sets(st.sampled_from(steps)), label="without compensation")
    rec = Recorder()
    if failing is not None:
        rec.fail_execute.add(steps[failing])
    storage = SQLiteStorage(tmp_path_factory.mktemp("prop") / "s.db", synchronous="normal")
    try:
        instance = SagaOrchestrator(storage).start(rec.saga("p", steps, frozenset(bare)))
    finally:
        storage.close()
    ran = steps if failing is None else steps[: failing + 1]
    completed = steps if failing is None else steps[:failing]
    undone = [] if failing is None else list(reversed(completed))
    assert [("execute", s) for s in ran] + [
        ("compensate", s) for s in undone if s not in bare
    ] == rec.log
    assert tuple(completed) == instance.completed_steps
    assert tuple(undone) == instance.compensated_steps
    if failing is None:
        assert SagaStatus.COMPLETED == instance.status
    else:
        assert SagaStatus.FAILED == instance.status
        assert steps[failing] == instance.failed_step
        assert instance.error is not None
        assert ("RuntimeError", f"{steps[failing]} failed") == (
            instance.error.error_type,
            instance.error.message,
        )


def test_failed_step_data_changes_are_dropped(storage: SQLiteStorage) -> None:
    """The failing step's changes to the data are not stored; compensations see the data
    the completed steps left, and their own changes are stored."""
    seen: list[dict[str, Any]] = []

    def refund(ctx: StepContext) -> None:
        seen.append(ctx.data.to_dict())
        ctx.data.refund_id = "r-9"

    def charge(ctx: StepContext) -> None:
        ctx.data.payment_id = "p-1"

    def ship(ctx: StepContext) -> None:
        ctx.data.tracking = "t-1"
        raise RuntimeError("no courier")

    saga = Saga("c", [SagaStep("charge", charge, refund), SagaStep("ship", ship)])
    instance = SagaOrchestrator(storage).start(saga, {"order": "o-1"})
    assert [{"order": "o-1", "payment_id": "p-1"}] == seen
    assert SagaData(order="o-1", payment_id="p-1", refund_id="r-9") == instance.data


def test_failed_compensation_is_recorded_dead_lettered_and_alerted(storage: SQLiteStorage) -> None:
    """A compensation that raises is recorded; the others still run; the saga ends failed;
    one dead letter (source saga:<name>, key = saga id) and one alert say so."""
    rec = Recorder()
    rec.fail_execute.add("ship")
    rec.fail_compensate.add("charge")
    dlq = DeadLetterQueue(storage)
    alerts: list[tuple[SagaInstance, CompensationFailed]] = []
    sagas = SagaOrchestrator(storage, dlq=dlq, on_alert=lambda i, e: alerts.append((i, e)))
    instance = sagas.start(rec.saga("checkout", STEPS), saga_id="s-1")
    assert [("compensate", "charge"), ("compensate", "reserve")] == rec.log[-2:]
    assert SagaStatus.FAILED == instance.status
    assert ("reserve",) == instance.compensated_steps
    assert ["charge"] == [f.step for f in instance.compensation_errors]
    assert "cannot undo charge" == instance.compensation_errors[0].message
    [letter] = dlq.list()
    assert ("saga:checkout", "s-1", "s-1") == (letter.source, letter.key, letter.message_id)
    assert "eventlite.saga.CompensationFailed" == letter.error_type
    assert [(instance, "s-1")] == [(i, e.saga_id) for i, e in alerts]


def test_failed_compensation_without_a_dlq_is_kept_on_the_instance(storage: SQLiteStorage) -> None:
    """With no DLQ the failure stays on the instance and still reaches the alert hook; an
    alert hook that raises is logged, not raised."""
    rec = Recorder()
    rec.fail_execute.add("charge")
    rec.fail_compensate.add("reserve")
    alerts: list[CompensationFailed] = []

    def alert(instance: SagaInstance, error: CompensationFailed) -> None:
        alerts.append(error)
        raise RuntimeError("pager down")

    instance = SagaOrchestrator(storage, on_alert=alert).start(rec.saga("c", STEPS))
    assert SagaStatus.FAILED == instance.status
    assert ["reserve"] == [f.step for f in alerts[0].failures]
    assert 0 == DeadLetterQueue(storage).count()


def test_a_step_timeout_counts_as_a_failure(storage: SQLiteStorage) -> None:
    """A step that outlives its timeout fails the saga with StepTimeout, and the completed
    steps are compensated; a compensation that times out is a failed compensation."""
    rec = Recorder()
    release = threading.Event()

    def hang(ctx: StepContext) -> None:
        release.wait()

    saga = Saga(
        "t",
        [
            SagaStep("reserve", rec.execute("reserve"), hang, timeout=0.05),
            SagaStep("charge", rec.execute("charge"), rec.compensate("charge")),
            SagaStep("slow", hang, timeout=0.05),
        ],
    )
    try:
        instance = SagaOrchestrator(storage).start(saga)
    finally:
        release.set()
    assert SagaStatus.FAILED == instance.status
    assert instance.error is not None
    assert ("slow", "eventlite.saga.StepTimeout") == (
        instance.failed_step,
        instance.error.error_type,
    )
    assert ("charge",) == instance.compensated_steps
    assert [("reserve", "eventlite.saga.StepTimeout")] == [
        (f.step, f.error_type) for f in instance.compensation_errors
    ]


def test_a_fast_step_with_a_timeout_completes(storage: SQLiteStorage) -> None:
    """A timeout that is not reached changes nothing: the step's data is kept, errors from
    the step's thread are its failure."""
    rec = Recorder()
    rec.fail_execute.add("b")
    saga = Saga(
        "f",
        [
            SagaStep("a", rec.execute("a"), rec.compensate("a"), timeout=30),
            SagaStep("b", rec.execute("b"), timeout=30),
        ],
    )
    instance = SagaOrchestrator(storage).start(saga)
    assert SagaData(a="a-done") == instance.data
    assert instance.error is not None
    assert "b failed" == instance.error.message
    assert ("a",) == instance.compensated_steps


def test_timeout_error_is_a_timeout_error() -> None:
    """StepTimeout is a SagaError and a TimeoutError, and names step and saga."""
    exc = StepTimeout("s-1", "charge", 2.5)
    assert isinstance(exc, TimeoutError)
    assert isinstance(exc, SagaError)
    assert "saga s-1: step 'charge' did not finish within 2.5 s" == str(exc)


@attrs.define
class Checkout:
    """An attrs data class for a saga."""

    order: str
    payment_id: str | None = None
    items: list[str] = attrs.Factory(list)


def test_attrs_data_class_round_trips(storage: SQLiteStorage) -> None:
    """A saga with an attrs data type gets instances of it, stored through the converter."""

    def charge(ctx: StepContext) -> None:
        ctx.data.payment_id = "p-7"
        ctx.data.items.append("tea")

    def check(ctx: StepContext) -> None:
        assert Checkout("o-1", "p-7", ["tea"]) == ctx.data

    saga = Saga("a", [SagaStep("charge", charge), SagaStep("check", check)], data_type=Checkout)
    sagas = SagaOrchestrator(storage)
    instance = sagas.start(saga, Checkout("o-1"))
    assert SagaStatus.COMPLETED == instance.status
    assert Checkout("o-1", "p-7", ["tea"]) == sagas.get(instance.id).data
    assert Checkout("o-2") == sagas.get(sagas.create(saga, {"order": "o-2"})).data


def test_unstorable_data_fails_the_saga(storage: SQLiteStorage) -> None:
    """A step that leaves data JSON cannot hold ran: it is recorded as done (and so
    compensated), and the saga fails with a SagaError saying its data cannot be stored."""
    rec = Recorder()

    def bad(ctx: StepContext) -> None:
        ctx.data.when = object()

    saga = Saga("u", [SagaStep("a", rec.execute("a"), rec.compensate("a")), SagaStep("b", bad)])
    instance = SagaOrchestrator(storage).start(saga)
    assert (SagaStatus.FAILED, ("b", "a")) == (instance.status, instance.compensated_steps)
    assert instance.error is not None and "eventlite.saga.SagaError" == instance.error.error_type


# -- resuming -------------------------------------------------------------------------------


def test_resume_runs_on_from_the_step_reached(storage: SQLiteStorage) -> None:
    """A saga stopped after a step (the orchestrator closed mid-run) is left running; a new
    orchestrator's resume() runs the remaining steps, never a step recorded as done."""
    rec = Recorder()
    first = SagaOrchestrator(storage)

    def stop(ctx: StepContext) -> None:
        rec.log.append(("execute", "charge"))
        first.close()

    saga = Saga(
        "r",
        [
            SagaStep("reserve", rec.execute("reserve")),
            SagaStep("charge", stop),
            SagaStep("ship", rec.execute("ship")),
        ],
    )
    stopped = first.start(saga, saga_id="s-1")
    assert (SagaStatus.RUNNING, "ship") == (stopped.status, stopped.step)
    with pytest.raises(SagaError, match="closed"):
        first.start(saga)
    second = SagaOrchestrator(storage)
    second.register(saga)
    [resumed] = second.resume()
    assert (SagaStatus.COMPLETED, "s-1") == (resumed.status, resumed.id)
    assert [("execute", "reserve"), ("execute", "charge"), ("execute", "ship")] == rec.log
    assert [] == second.resume()


def test_resume_finishes_compensating(storage: SQLiteStorage) -> None:
    """A saga stopped while compensating is compensated to the end by resume(), skipping
    the compensations already stored."""
    rec = Recorder()
    rec.fail_execute.add("ship")
    first = SagaOrchestrator(storage)

    def undo_charge(ctx: StepContext) -> None:
        rec.log.append(("compensate", "charge"))
        first.close()

    saga = Saga(
        "c",
        [
            SagaStep("reserve", rec.execute("reserve"), rec.compensate("reserve")),
            SagaStep("charge", rec.execute("charge"), undo_charge),
            SagaStep("ship", rec.execute("ship")),
        ],
    )
    stopped = first.start(saga)
    assert (SagaStatus.COMPENSATING, "reserve") == (stopped.status, stopped.step)
    second = SagaOrchestrator(storage)
    second.register(saga)
    [done] = second.resume()
    assert (SagaStatus.FAILED, ("charge", "reserve")) == (done.status, done.compensated_steps)
    assert ["charge", "reserve"] == [s for kind, s in rec.log if kind == "compensate"]


def test_a_step_interrupted_before_it_was_stored_runs_again_with_the_same_key(
    storage: SQLiteStorage,
) -> None:
    """A step the process was running when it stopped (here: a BaseException escapes) is
    not recorded as done; resume runs it again with the same idempotency key."""
    keys: list[str] = []
    crash = [True]

    def charge(ctx: StepContext) -> None:
        keys.append(ctx.idempotency_key)
        if crash[0]:
            crash[0] = False
            raise KeyboardInterrupt

    saga = Saga("k", [SagaStep("charge", charge)])
    sagas = SagaOrchestrator(storage)
    with pytest.raises(KeyboardInterrupt):
        sagas.start(saga, saga_id="s-1")
    assert SagaStatus.RUNNING == sagas.get("s-1").status
    [instance] = sagas.resume()
    assert SagaStatus.COMPLETED == instance.status
    assert ["s-1:charge", "s-1:charge"] == keys


def test_resume_skips_unregistered_sagas(storage: SQLiteStorage) -> None:
    """Instances of a saga this orchestrator does not know are left for another one."""
    rec = Recorder()
    SagaOrchestrator(storage).create(rec.saga("other", ["a"]), saga_id="x")
    assert [] == SagaOrchestrator(storage).resume()
    assert SagaStatus.RUNNING == SagaOrchestrator(storage).get("x").status


def test_many_threads_run_sagas_at_once(storage: SQLiteStorage) -> None:
    """Eight threads starting sagas on one orchestrator: every instance completes."""
    rec = Recorder()
    sagas = SagaOrchestrator(storage)
    saga = sagas.register(rec.saga("m", STEPS))
    results: list[SagaInstance] = []

    def run() -> None:
        for _ in range(10):
            results.append(sagas.start(saga))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [SagaStatus.COMPLETED] * 80 == [r.status for r in results]
    assert 80 == len(sagas.list(status="completed"))
    assert 320 == len(rec.log)


# -- errors and reading ---------------------------------------------------------------------


def test_definitions_are_checked() -> None:
    """No steps, two steps with one name, a bad timeout, an empty name: refused."""
    noop = SagaStep("a", lambda ctx: None)
    with pytest.raises(ValueError, match="no steps"):
        Saga("s", [])
    with pytest.raises(ValueError, match="unique"):
        Saga("s", [noop, noop])
    with pytest.raises(ValueError, match="timeout"):
        SagaStep("a", lambda ctx: None, timeout=0)
    with pytest.raises(ValueError, match="name"):
        Saga("", [noop])
    with pytest.raises(KeyError):
        Saga("s", [noop]).step("b")


def test_lookup_errors(storage: SQLiteStorage) -> None:
    """Unknown ids, unknown saga names, a reused id, another definition under a registered
    name, a changed definition, running an instance twice at once: clear errors."""
    rec = Recorder()
    sagas = SagaOrchestrator(storage)
    saga = sagas.register(rec.saga("s", ["a", "b"]))
    with pytest.raises(SagaNotFound, match="nope"):
        sagas.get("nope")
    assert None is sagas.find("nope")
    with pytest.raises(SagaError, match="no saga named 'x'"):
        sagas.start("x")
    sagas.start("s", saga_id="one")
    with pytest.raises(SagaError, match="already exists"):
        sagas.create("s", saga_id="one")
    with pytest.raises(ValueError, match="already registered"):
        sagas.register(rec.saga("s", ["a"]))
    other = SagaOrchestrator(storage)
    other.register(rec.saga("s", ["b", "a"]))
    with pytest.raises(SagaError, match="do not match"):
        other.run("one")

    inside: list[BaseException] = []

    def reenter(ctx: StepContext) -> None:
        try:
            sagas.run(ctx.saga_id)
        except SagaError as exc:
            inside.append(exc)

    sagas.start(Saga("re", [SagaStep("a", reenter)]))
    assert "already running" in str(inside[0])
    assert saga is sagas.sagas["s"]


def test_create_joins_a_transaction_and_run_refuses_one(storage: SQLiteStorage) -> None:
    """create() inside a transaction commits or rolls back with it; running or starting a
    saga inside one is refused (start stores nothing), and running it after the commit
    works."""
    rec = Recorder()
    sagas = SagaOrchestrator(storage)
    saga = sagas.register(rec.saga("t", ["a"]))
    with pytest.raises(RuntimeError), storage.transaction():
        sagas.create(saga, saga_id="rolled-back")
        raise RuntimeError("the command failed")
    assert None is sagas.find("rolled-back")
    ran: list[SagaInstance] = []
    with storage.transaction() as tx:
        saga_id = sagas.create(saga, saga_id="kept")
        with pytest.raises(SagaError, match="outside a database transaction"):
            sagas.run(saga_id)
        tx.on_commit(lambda: ran.append(sagas.run(saga_id)))
    assert [("kept", SagaStatus.COMPLETED)] == [(i.id, i.status) for i in ran]
    with (
        storage.transaction(),
        pytest.raises(SagaError, match="outside a database transaction"),
    ):
        sagas.start(saga, saga_id="never")
    assert None is sagas.find("never")


def test_list_filters_by_status_and_saga(storage: SQLiteStorage) -> None:
    """list() filters by status and saga name and keeps creation order."""
    rec = Recorder()
    rec.fail_execute.add("b")
    sagas = SagaOrchestrator(storage)
    sagas.start(rec.saga("ok", ["a"]), saga_id="1")
    sagas.start(rec.saga("bad", ["a", "b"]), saga_id="2")
    sagas.create("ok", saga_id="3")
    assert ["1", "2", "3"] == [i.id for i in sagas.list()]
    assert ["2"] == [i.id for i in sagas.list(status=SagaStatus.FAILED)]
    assert ["1", "3"] == [i.id for i in sagas.list(saga="ok")]
    assert ["3"] == [i.id for i in sagas.list(status="running", saga="ok", limit=5)]
