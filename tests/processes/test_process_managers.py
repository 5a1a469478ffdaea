"""Process managers: instances per key, state written with the inbox mark, timeouts fired by
the clock (also after a restart) and cancelled, ignored events, dead letters."""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlite.app import App
from eventlite.clock import FakeClock, to_datetime
from eventlite.codec import Codec
from eventlite.envelope import Envelope, current_envelope
from eventlite.exceptions import NotAMessage
from eventlite.messages import Registry, command, event
from eventlite.process import (
    HEADER_KEY,
    HEADER_PROCESS,
    HEADER_TIMEOUT,
    ProcessContext,
    ProcessError,
    ProcessManager,
    ProcessNotFound,
    ProcessStatus,
    timeout_stream,
)
from eventlite.process._runner import ProcessRunner  # patched to fail inside the commit
from eventlite.retry import RetryPolicy

registry = Registry()
DEADLINE = timedelta(minutes=30).total_seconds()
NAME = "follow-up"


@event(registry=registry, name="pm.Placed")
class Placed:
    order_id: str


@event(registry=registry, name="pm.Paid")
class Paid:
    order_id: str


@event(registry=registry, name="pm.Shipped")
class Shipped:
    order_id: str


@event(registry=registry, name="pm.Hold")
class Hold:
    order_id: str


@event(registry=registry, name="pm.Snooze")
class Snooze:
    order_id: str


@event(registry=registry, name="pm.Overdue")
class Overdue:
    order_id: str


@command(registry=registry, name="pm.Remind")
class Remind:
    order_id: str


@attrs.define
class Tracking:
    placed: int = 0
    reminders: int = 0
    shipped: int = 0
    paid: bool = False
    timeout_id: str = ""


def by_order(message: Any) -> str:
    return str(message.order_id)


class Harness:
    """An app on a file running the follow-up process manager, reopened on demand; it
    records the handlers' calls and the Remind commands they dispatch."""

    def __init__(self, path: Path, clock: FakeClock, **options: Any) -> None:
        self.path = path
        self.clock = clock
        self.options = options
        self.calls: list[tuple[str, str]] = []
        self.reminded: list[str] = []
        self.remind_envelopes: list[Envelope] = []
        self.fail_on: set[str] = set()
        self.app = self.open()

    def manager(self) -> ProcessManager[Tracking]:
        pm = ProcessManager(
            NAME,
            state=Tracking,
            correlate={t: by_order for t in (Placed, Paid, Shipped, Hold, Snooze)},
        )

        @pm.starts(Placed)
        def placed(message: Placed, process: ProcessContext[Tracking]) -> None:
            self.calls.append(("placed", process.key))
            process.state.placed += 1
            process.state.timeout_id = process.schedule(
                Overdue(process.key), after=timedelta(seconds=DEADLINE), name="due"
            )

        @pm.handles(Overdue)
        def overdue(message: Overdue, process: ProcessContext[Tracking]) -> None:
            self.calls.append(("overdue", process.key))
            process.state.reminders += 1
            process.dispatch(Remind(process.key))
            process.state.timeout_id = process.schedule(
                Overdue(process.key), after=DEADLINE, name="due"
            )

        @pm.handles(Paid)
        def paid(message: Paid, process: ProcessContext[Tracking]) -> None:
            self.calls.append(("paid", process.key))
            process.state.paid = True
            process.complete()

        @pm.handles(Shipped)
        def shipped(message: Shipped, process: ProcessContext[Tracking]) -> None:
            process.state.shipped += 1
            if "shipped" in self.fail_on:
                raise RuntimeError("shipping handler broke")
            self.calls.append(("shipped", process.key))

        @pm.handles(Hold)
        def hold(message: Hold, process: ProcessContext[Tracking]) -> None:
            self.calls.append(("hold", process.key))
            process.cancel(process.state.timeout_id)

        @pm.handles(Snooze)
        def snooze(message: Snooze, process: ProcessContext[Tracking]) -> None:
            self.calls.append(("snooze", process.key))
            process.cancel("due")

        return pm

    def open(self) -> App:
        app = App(self.path, registry=registry, clock=self.clock, synchronous="normal")

        def remind(cmd: Remind) -> None:
            envelope = current_envelope()
            assert envelope is not None
            self.remind_envelopes.append(envelope)
            self.reminded.append(cmd.order_id)

        app.register(Remind, remind)
        app.process_manager(self.manager(), **self.options)
        return app

    def restart(self, clock: FakeClock | None = None) -> None:
        self.app.close()
        if clock is not None:
            self.clock = clock
        self.app = self.open()

    def append(self, *events: Any) -> list[Envelope]:
        recorded = []
        for e in events:
            recorded += self.app.store.append(f"order-{e.order_id}", [e])
        return recorded

    def settle(self) -> None:
        self.app.run_until_idle()

    def state(self, key: str) -> tuple[str, Tracking]:
        instance = self.app.processes.get(NAME, key)
        return instance.status.value, instance.state

    def waiting(self) -> list[tuple[str, str | None, bool]]:
        return [(t.key, t.name, t.fired) for t in self.app.processes.timeouts(NAME)]

    def close(self) -> None:
        self.app.close()


@pytest.fixture
def harness(tmp_path: Path) -> Any:
    h = Harness(tmp_path / "pm.db", FakeClock())
    yield h
    h.close()


def test_a_timeout_fires_once_the_clock_passes_it_and_not_before(harness: Harness) -> None:
    """The timeout scheduled by the starting event is handled only when the fake clock
    reaches its time: one second early nothing happens, at the time it fires once."""
    harness.append(Placed("o-1"))
    harness.settle()
    harness.clock.advance(DEADLINE - 1)
    harness.settle()
    assert ([("placed", "o-1")], [], [("o-1", "due", False)]) == (
        harness.calls,
        harness.reminded,
        harness.waiting(),
    )
    harness.clock.advance(1)
    harness.settle()
    assert [("placed", "o-1"), ("overdue", "o-1")] == harness.calls
    assert ["o-1"] == harness.reminded
    status, state = harness.state("o-1")
    assert ("running", 1, 1) == (status, state.placed, state.reminders)
    assert [("o-1", "due", False)] == harness.waiting()  # the next one, rescheduled


def test_a_cancelled_timeout_never_fires(harness: Harness) -> None:
    """Timeouts cancelled by id, by name, by completing the instance, and from outside
    through app.processes.cancel never reach the handler; an untouched one does."""
    harness.append(*(Placed(k) for k in ("by-id", "by-name", "done", "outside", "kept")))
    harness.settle()
    outside = next(t for t in harness.app.processes.timeouts(NAME) if t.key == "outside")
    cancels = [harness.app.processes.cancel(outside.id) for _ in range(2)]
    assert [True, False] == cancels  # the second finds nothing waiting
    harness.append(Hold("by-id"), Snooze("by-name"), Paid("done"))
    harness.settle()
    harness.clock.advance(DEADLINE * 10)
    harness.settle()
    fired = [key for call, key in harness.calls if call == "overdue"]
    assert (["kept"], ["kept"]) == (fired, harness.reminded)
    assert [("kept", "due", False)] == harness.waiting()


def test_a_timeout_due_while_the_process_was_down_fires_after_a_restart(
    harness: Harness,
) -> None:
    """The timeout row outlives the app: a new App on the file, with a clock past the due
    time, fires it at once, exactly once."""
    harness.append(Placed("o-1"))
    harness.settle()
    harness.app.close()
    later = FakeClock(harness.clock.now() + DEADLINE + 60)
    harness.restart(later)
    harness.settle()
    assert [("placed", "o-1"), ("overdue", "o-1")] == harness.calls
    harness.restart(FakeClock(later.now()))
    harness.settle()
    assert (["o-1"], 1) == (harness.reminded, harness.state("o-1")[1].reminders)


def test_two_keys_drive_two_independent_instances(harness: Harness) -> None:
    """Events of two orders, interleaved, change only their own instance."""
    harness.append(Placed("o-1"), Placed("o-2"), Shipped("o-2"), Paid("o-1"), Shipped("o-2"))
    harness.settle()
    one, two = harness.state("o-1"), harness.state("o-2")
    assert ("done", 1, True, 0) == (one[0], one[1].placed, one[1].paid, one[1].shipped)
    assert ("running", 1, False, 2) == (two[0], two[1].placed, two[1].paid, two[1].shipped)
    assert [("o-2", "due", False)] == harness.waiting()  # completing o-1 dropped its own


def test_an_event_for_an_unknown_key_is_ignored_with_a_log_line(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """An event that does not start an instance, for a key with none, is ignored with an
    INFO line naming the key; nothing is dead-lettered and later events still flow."""
    caplog.set_level(logging.INFO, logger="eventlite.process")
    harness.append(Shipped("ghost"), Paid("ghost"), Placed("o-1"))
    harness.settle()
    assert [("placed", "o-1")] == harness.calls
    assert None is harness.app.processes.find(NAME, "ghost")
    ignored = [r.getMessage() for r in caplog.records if "'ghost'" in r.getMessage()]
    assert [True, True] == ["ignored" in line for line in ignored]
    status = harness.app.subscribers()[0]
    assert (NAME, 0, 0, 3) == (status.name, status.dead_letters, status.lag, status.checkpoint)


def test_events_for_a_completed_instance_are_ignored(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """After complete(), later events for the key, a starting one too, reach no handler."""
    caplog.set_level(logging.INFO, logger="eventlite.process")
    harness.append(Placed("o-1"), Paid("o-1"), Shipped("o-1"), Placed("o-1"))
    harness.settle()
    assert [("placed", "o-1"), ("paid", "o-1")] == harness.calls
    status, state = harness.state("o-1")
    assert ("done", 1, 0) == (status, state.placed, state.shipped)
    assert 2 == sum("is done" in r.getMessage() for r in caplog.records)
    instance = harness.app.processes.get(NAME, "o-1")
    assert (ProcessStatus.DONE, True) == (instance.status, instance.finished_at is not None)


def test_a_starting_event_for_a_running_instance_runs_on_it(harness: Harness) -> None:
    """A second starting event for a running key is handled by the same instance, and
    scheduling under the same name replaces the waiting timeout."""
    harness.append(Placed("o-1"), Placed("o-1"))
    harness.settle()
    assert (1, 2) == (len(harness.app.processes.list(NAME)), harness.state("o-1")[1].placed)
    assert [("o-1", "due", False)] == harness.waiting()


def test_a_failing_handler_leaves_neither_state_nor_inbox_mark(tmp_path: Path) -> None:
    """A handler that changed the state and then raised stores nothing: the instance is
    as before, the event is not in the inbox, and it is dead-lettered after its attempts;
    retried once fixed, it is handled once."""
    harness = Harness(tmp_path / "pm.db", FakeClock(), retry=RetryPolicy(max_attempts=2))
    try:
        harness.fail_on.add("shipped")
        harness.append(Placed("o-1"))
        [shipped] = harness.append(Shipped("o-1"))
        harness.settle()
        inbox = harness.app.relay.inbox
        assert (0, False) == (harness.state("o-1")[1].shipped, inbox.contains(NAME, shipped.id))
        [letter] = harness.app.dlq.list(NAME)
        assert ("RuntimeError", 2) == (str(letter.error_type).rsplit(".")[-1], letter.attempts)
        harness.fail_on.clear()
        harness.app.dlq.retry(letter.id)
        harness.settle()
        assert (1, True) == (harness.state("o-1")[1].shipped, inbox.contains(NAME, shipped.id))
    finally:
        harness.close()


def test_state_and_inbox_mark_commit_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the commit fails after the state and the inbox mark were written in it, both
    are rolled back: no instance, no mark, no timeout row."""
    original = ProcessRunner._write

    def write_then_fail(self: ProcessRunner, tx: Any, *args: Any) -> None:
        original(self, tx, *args)
        assert 1 == tx.execute("SELECT count(*) FROM process_instances").fetchone()[0]
        raise OSError("disk on fire")

    monkeypatch.setattr(ProcessRunner, "_write", write_then_fail)
    harness = Harness(tmp_path / "pm.db", FakeClock(), retry=RetryPolicy(max_attempts=1))
    try:
        [placed] = harness.append(Placed("o-1"))
        harness.settle()
        app = harness.app
        assert app.database is not None
        counts = app.database.read_connection().execute(
            "SELECT (SELECT count(*) FROM process_instances), "
            "(SELECT count(*) FROM process_timeouts), "
            "(SELECT count(*) FROM inbox WHERE subscriber = ?)",
            (NAME,),
        )
        assert ((0, 0, 0), 1) == (counts.fetchone(), app.dlq.count(NAME))
        monkeypatch.setattr(ProcessRunner, "_write", original)
        app.dlq.retry(app.dlq.list(NAME)[0].id)
        harness.settle()
        assert (1, True) == (
            harness.state("o-1")[1].placed,
            app.relay.inbox.contains(NAME, placed.id),
        )
    finally:
        harness.close()


def test_commands_and_timeouts_follow_the_flow_of_the_event(harness: Harness) -> None:
    """A fired timeout is an event in its own stream, correlated to the event that
    scheduled it and marked with the process headers; the command its handler dispatches
    is caused by it."""
    [placed] = harness.append(Placed("o-1"))
    harness.settle()
    harness.clock.advance(DEADLINE)
    harness.settle()
    [fired] = list(harness.app.store.read_stream(timeout_stream(NAME, "o-1")))
    assert (placed.correlation_id, placed.id) == (fired.correlation_id, fired.causation_id)
    assert {HEADER_PROCESS: NAME, HEADER_KEY: "o-1", HEADER_TIMEOUT: fired.id} == dict(
        fired.metadata.headers
    )
    [remind] = harness.remind_envelopes
    assert (placed.correlation_id, fired.id) == (remind.correlation_id, remind.causation_id)


def test_a_timeout_that_no_longer_decodes_is_dead_lettered(harness: Harness) -> None:
    """A stored timeout whose message cannot be decoded goes to the DLQ, raw, when it falls
    due; the other timeouts still fire."""
    harness.append(Placed("bad"), Placed("good"))
    harness.settle()
    assert harness.app.database is not None
    with harness.app.database.transaction() as tx:
        tx.execute("UPDATE process_timeouts SET data = '{not json' WHERE key = 'bad'")
    harness.clock.advance(DEADLINE)
    harness.settle()
    [letter] = harness.app.dlq.list(NAME)
    assert ("pm.Overdue", ["good"]) == (letter.type_name, harness.reminded)
    assert ["good"] == [t.key for t in harness.app.processes.timeouts(NAME)]


def test_a_dict_state_and_a_correlation_that_says_none(tmp_path: Path) -> None:
    """The default state is a dict stored as JSON; a correlate function that returns None
    keeps the event away from every instance."""
    pm = ProcessManager(
        "counter", correlate={Placed: lambda e: None if e.order_id == "skip" else e.order_id}
    )

    @pm.starts(Placed)
    def count(message: Placed, process: ProcessContext[dict[str, Any]]) -> None:
        process.state["seen"] = process.state.get("seen", 0) + 1

    with App(tmp_path / "pm.db", registry=registry, synchronous="normal") as app:
        app.process_manager(pm)
        app.store.append("s", [Placed("o-1"), Placed("skip"), Placed("o-1")])
        app.run_until_idle()
        assert [("o-1", {"seen": 2})] == [(i.key, i.state) for i in app.processes.list()]


def test_a_state_that_changes_class_fails_the_handling(tmp_path: Path) -> None:
    """A handler that replaces the state with something of another class fails (and is
    dead-lettered), storing nothing."""
    pm = ProcessManager("bad-state", state=Tracking, correlate={Placed: by_order})

    @pm.starts(Placed)
    def replace(message: Placed, process: ProcessContext[Any]) -> None:
        process.state = {"not": "tracking"}

    with App(tmp_path / "pm.db", registry=registry, synchronous="normal") as app:
        app.process_manager(pm, retry=RetryPolicy(max_attempts=1))
        app.store.append("s", [Placed("o-1")])
        app.run_until_idle()
        assert ([], 1) == (app.processes.list(), app.dlq.count("bad-state"))
        with pytest.raises(ProcessNotFound, match="bad-state"):
            app.processes.get("bad-state", "o-1")


def test_reading_an_instance_of_a_manager_not_added_gives_its_json(harness: Harness) -> None:
    """Another app on the file that does not run the manager reads its instances as dicts."""
    harness.append(Placed("o-1"))
    harness.settle()
    with App(harness.path, registry=registry) as reader:
        [instance] = reader.processes.list(NAME, status="running")
        assert ("o-1", 1) == (instance.key, instance.state["placed"])


def test_bad_definitions_are_refused(tmp_path: Path) -> None:
    """Definitions that could never work fail when they are made or added, naming why."""
    with pytest.raises(TypeError, match="needs a default"):
        ProcessManager("p", state=Placed)
    with pytest.raises(TypeError, match="dict or an attrs class"):
        ProcessManager("p", state=list)
    with pytest.raises(ValueError, match="non-empty name"):
        ProcessManager("")
    pm = ProcessManager("p", correlate={Placed: by_order})
    with pytest.raises(ValueError, match="needs a correlate function"):
        pm.starts(Paid)
    pm.starts(Placed)(lambda e, p: None)
    with pytest.raises(ValueError, match="already has a handler"):
        pm.handles(Placed)
    idle = ProcessManager("idle", correlate={Placed: by_order})
    idle.handles(Placed)(lambda e, p: None)
    with App(tmp_path / "pm.db", registry=registry) as app:
        with pytest.raises(ValueError, match="no @starts handler"):
            app.process_manager(idle)
        app.subscribe(Paid, lambda e: None, durable=True, name="p")
        with pytest.raises(ValueError, match="already exists"):
            app.process_manager(pm)
    with App(registry=registry) as memory, pytest.raises(RuntimeError, match="durable storage"):
        memory.process_manager(pm)
    with App(tmp_path / "other.db", registry=registry) as app:
        app.process_manager(pm)
        with pytest.raises(ProcessError, match="define every handler before"):
            pm.handles(Paid)


def test_schedule_refuses_what_it_could_not_deliver() -> None:
    """schedule() refuses a negative delay, a message the manager has no handler for, and a
    class that is not a registered message; cancel() refuses an empty id."""
    pm = ProcessManager("p", correlate={Placed: by_order})
    pm.starts(Placed)(lambda e, p: None)
    pm.handles(Overdue)(lambda e, p: None)
    process: ProcessContext[dict[str, Any]] = ProcessContext(
        pm,
        "k",
        {},
        is_new=True,
        envelope=None,
        dispatch=lambda c: None,
        clock=FakeClock(),
        codec=Codec(registry),
    )
    with pytest.raises(ValueError, match="seconds >= 0"):
        process.schedule(Overdue("k"), after=-1)
    with pytest.raises(ValueError, match="no handler for Paid"):
        process.schedule(Paid("k"), after=1)

    @attrs.frozen
    class Unregistered:
        n: int

    pm.handles(Unregistered)(lambda e, p: None)
    with pytest.raises(NotAMessage):
        process.schedule(Unregistered(1), after=1)
    with pytest.raises(ValueError, match="timeout id or name"):
        process.cancel("")
    assert str is type(process.schedule(Overdue("k"), after=timedelta(0)))


def test_process_error_names_the_manager() -> None:
    """ProcessNotFound is a ProcessError and a LookupError naming manager and key."""
    error = ProcessNotFound("follow-up", "o-7")
    assert (True, True) == (isinstance(error, ProcessError), isinstance(error, LookupError))
    assert "process manager 'follow-up' has no instance with key 'o-7'" == str(error)


# -- a reference model ----------------------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["place", "pay", "ship", "advance", "restart"]),
        st.sampled_from(["a", "b"]),
        st.integers(0, 4000),
    ),
    max_size=14,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_any_sequence_matches_the_reference_model(ops: list[tuple[str, str, int]]) -> None:
    """For any sequence of events for two keys, clock moves and restarts (settling after
    each), the stored instances, the waiting timeouts and the reminders sent are what a
    plain model of the process says."""
    clock = FakeClock()
    model: dict[str, dict[str, Any]] = {}
    reminders: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        harness = Harness(Path(tmp) / "pm.db", clock)
        try:
            for op, key, seconds in ops:
                now = clock.now()
                if op == "place":
                    harness.append(Placed(key))
                    entry = model.setdefault(
                        key, {"placed": 0, "shipped": 0, "reminders": 0, "done": False}
                    )
                    if not entry["done"]:
                        entry["placed"] += 1
                        entry["due"] = now + DEADLINE
                elif op in ("pay", "ship"):
                    harness.append(Paid(key) if op == "pay" else Shipped(key))
                    entry = model.get(key, {"done": True})
                    if not entry["done"] and op == "pay":
                        entry.update(done=True, due=None)
                    elif not entry["done"]:
                        entry["shipped"] += 1
                elif op == "advance":
                    now = clock.advance(seconds)
                    for k, entry in model.items():
                        if not entry["done"] and entry["due"] <= now:
                            entry["reminders"] += 1
                            entry["due"] = now + DEADLINE
                            reminders[k] += 1
                else:
                    harness.restart()
                harness.settle()
            stored = {
                i.key: (i.status.value, i.state.placed, i.state.shipped, i.state.reminders)
                for i in harness.app.processes.list(NAME)
            }
            expected = {
                key: ("done" if e["done"] else "running", e["placed"], e["shipped"], e["reminders"])
                for key, e in model.items()
            }
            assert expected == stored
            waiting = {t.key: t.due_at for t in harness.app.processes.timeouts(NAME)}
            assert {k: to_datetime(e["due"]) for k, e in model.items() if not e["done"]} == waiting
            assert reminders == Counter(harness.reminded)
        finally:
            harness.close()
