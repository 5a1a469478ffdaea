"""The :class:`~eventlite.store.processes.ProcessStore` contract: every backend passes it.

Run it with a ``make_storage`` fixture (see :mod:`eventlite.testing.contracts`)::

    class TestProcesses(ProcessStoreContract):
        pass
"""

from __future__ import annotations

import itertools

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from ...codec import Codec
from ...store.processes import ProcessRecord, ProcessStatus, ProcessStore, TimeoutRecord
from ...store.storage import Storage
from . import StorageFactory

__all__ = ["ProcessStoreContract"]

RUNNING = ProcessStatus.RUNNING
DONE = ProcessStatus.DONE


def _timeout(
    timeout_id: str,
    *,
    process: str = "dunning",
    key: str = "o-1",
    name: str | None = None,
    due_at: float = 50.0,
) -> TimeoutRecord:
    return TimeoutRecord(
        id=timeout_id,
        process=process,
        key=key,
        name=name,
        type="PaymentOverdue",
        schema_version=2,
        data='{"order_id":"o-1","note":"ü"}',
        correlation_id="flow-1",
        causation_id="event-1",
        due_at=due_at,
        fired_at=None,
        created_at=10.0,
    )


def _ids(timeouts: list[TimeoutRecord]) -> list[str]:
    return [t.id for t in timeouts]


class ProcessStoreContract:
    """The tests every :class:`ProcessStore` must pass (``make_storage`` gives backends)."""

    state_machine_examples = 30
    """How many random programs the state machine test runs."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Storage:
        """A new, empty storage."""
        return make_storage(Codec())

    @pytest.fixture
    def store(self, storage: Storage) -> ProcessStore:
        """Its process store."""
        return storage.processes

    # -- instances ----------------------------------------------------------------------

    def test_revision_zero_creates_an_instance_once(self, store: ProcessStore) -> None:
        """A save over revision 0 creates the instance at revision 1, started then; a
        second one finds it there and writes nothing."""
        assert True is store.save("dunning", "o-1", state="{}", status=RUNNING, revision=0, now=5.0)
        assert False is store.save(
            "dunning", "o-1", state='{"x":1}', status=RUNNING, revision=0, now=6.0
        )
        expected = ProcessRecord("dunning", "o-1", RUNNING, "{}", 1, 5.0, 5.0, None)
        assert (expected, None) == (store.load("dunning", "o-1"), store.load("dunning", "o-2"))

    def test_save_is_a_compare_and_set_on_the_revision(self, store: ProcessStore) -> None:
        """A save over the stored revision writes and counts one up (done dates the end);
        one over another revision, or of an unknown instance, writes nothing."""
        store.save("dunning", "o-1", state="{}", status=RUNNING, revision=0, now=5.0)
        assert True is store.save(
            "dunning", "o-1", state='{"n":1}', status=DONE, revision=1, now=7.0
        )
        assert False is store.save(
            "dunning", "o-1", state='{"n":2}', status=RUNNING, revision=1, now=8.0
        )
        assert False is store.save(
            "dunning", "o-9", state="{}", status=RUNNING, revision=3, now=8.0
        )
        expected = ProcessRecord("dunning", "o-1", DONE, '{"n":1}', 2, 5.0, 7.0, 7.0)
        assert (expected, None) == (store.load("dunning", "o-1"), store.load("dunning", "o-9"))

    def test_list_filters_orders_and_limits(self, store: ProcessStore) -> None:
        """Oldest first (then manager, then key), one manager and one status when given, at
        most limit."""
        store.save("b", "k", state="{}", status=RUNNING, revision=0, now=2.0)
        store.save("a", "k2", state="{}", status=RUNNING, revision=0, now=2.0)
        store.save("a", "k1", state="{}", status=RUNNING, revision=0, now=2.0)
        store.save("a", "k0", state="{}", status=RUNNING, revision=0, now=1.0)
        store.save("a", "k0", state="{}", status=DONE, revision=1, now=3.0)
        keys = [(r.process, r.key) for r in store.list()]
        assert [("a", "k0"), ("a", "k1"), ("a", "k2"), ("b", "k")] == keys
        assert ["k0", "k1", "k2"] == [r.key for r in store.list("a")]
        assert ["k1", "k2", "k"] == [r.key for r in store.list(status=RUNNING)]
        assert ["k0"] == [r.key for r in store.list("a", status=DONE)]
        assert ["k0", "k1"] == [r.key for r in store.list(limit=2)]

    # -- timeouts -----------------------------------------------------------------------

    def test_a_timeout_round_trips(self, store: ProcessStore) -> None:
        """Every field of a scheduled timeout comes back; fired_at is None until fired."""
        stored = _timeout("t-1", name="due")
        store.schedule(attrs.evolve(stored, fired_at=99.0))
        assert (stored, [stored]) == (store.find_timeout("t-1"), store.timeouts())
        assert None is store.find_timeout("nope")

    def test_a_named_timeout_replaces_its_namesake(self, store: ProcessStore) -> None:
        """Scheduling under a name drops the instance's timeout of that name (fired or not),
        and no other instance's."""
        store.schedule(_timeout("t-1", name="due"))
        store.schedule(_timeout("t-9", key="o-2", name="due"))
        store.fire("t-1", 60.0)
        store.schedule(_timeout("t-2", name="due", due_at=70.0))
        store.schedule(_timeout("t-3"))
        assert ["t-3", "t-9", "t-2"] == _ids(store.timeouts())

    def test_cancel_by_id_or_name_within_the_instance(self, store: ProcessStore) -> None:
        """cancel() removes the instance's timeout of that id or name; other instances keep
        theirs; cancelling nothing is no error."""
        store.schedule(_timeout("t-1", name="due"))
        store.schedule(_timeout("t-2", due_at=60.0))
        store.schedule(_timeout("t-3", key="o-2", name="due"))
        store.cancel("dunning", "o-1", "due")
        store.cancel("dunning", "o-1", "t-3")  # another instance's id: untouched
        store.cancel("dunning", "o-1", "gone")
        assert ["t-3", "t-2"] == _ids(store.timeouts())
        store.cancel("dunning", "o-1", "t-2")
        assert ["t-3"] == _ids(store.timeouts("dunning"))

    def test_cancel_all_and_delete(self, store: ProcessStore) -> None:
        """cancel_all() empties one instance; delete() removes one timeout by id and says
        whether it was there."""
        store.schedule(_timeout("t-1"))
        store.schedule(_timeout("t-2", name="due"))
        store.schedule(_timeout("t-3", key="o-2"))
        store.schedule(_timeout("t-4", process="other"))
        store.cancel_all("dunning", "o-1")
        assert ["t-3", "t-4"] == _ids(store.timeouts())
        assert (True, False) == (store.delete("t-3"), store.delete("t-3"))
        assert (["t-4"], [], ["t-4"]) == (
            _ids(store.timeouts()),
            store.timeouts("dunning"),
            _ids(store.timeouts("other", "o-1")),
        )

    def test_due_timeouts_are_fired_once(self, store: ProcessStore) -> None:
        """due() lists what is due and not fired, earliest first, up to limit; fire() claims
        one once; a fired timeout stays (listed, not due) until deleted."""
        for n, due_at in enumerate((30.0, 10.0, 20.0, 99.0)):
            store.schedule(_timeout(f"t-{n}", due_at=due_at))
        store.schedule(_timeout("x", process="other", due_at=1.0))
        assert (["t-1", "t-2", "t-0"], ["t-1"]) == (
            _ids(store.due("dunning", 30.0, 10)),
            _ids(store.due("dunning", 30.0, 1)),
        )
        assert (True, False, False) == (
            store.fire("t-1", 31.0),
            store.fire("t-1", 32.0),
            store.fire("gone", 32.0),
        )
        assert ["t-2", "t-0"] == _ids(store.due("dunning", 30.0, 10))
        fired = store.find_timeout("t-1")
        assert 31.0 == (None if fired is None else fired.fired_at)
        assert (20.0, 1.0, None) == (
            store.next_due("dunning"),
            store.next_due("other"),
            store.next_due("nobody"),
        )

    def test_writes_join_the_open_transaction(self, storage: Storage) -> None:
        """An instance and its timeouts written inside a transaction that rolls back are
        not stored, a timeout's claim neither."""
        store = storage.processes
        store.schedule(_timeout("kept"))
        with pytest.raises(RuntimeError), storage.transaction():
            store.save("dunning", "o-1", state="{}", status=RUNNING, revision=0, now=1.0)
            store.schedule(_timeout("t-1"))
            store.fire("kept", 2.0)
            assert ["kept", "t-1"] == _ids(store.timeouts())
            raise RuntimeError("the handler failed")
        assert (None, [_timeout("kept")]) == (store.load("dunning", "o-1"), store.timeouts())

    def test_any_program_matches_the_model(self, make_storage: StorageFactory) -> None:
        """Random schedules, cancellations, claims and deletes leave the timeouts as a dict
        of records says; due and next_due agree with it."""
        run_state_machine_as_test(
            _machine(make_storage),
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )


def _machine(make_storage: StorageFactory) -> type[RuleBasedStateMachine]:
    processes = st.sampled_from(["p", "q"])
    keys = st.sampled_from(["k1", "k2"])
    names = st.one_of(st.none(), st.sampled_from(["due", "later"]))
    times = st.integers(0, 20).map(float)
    counter = itertools.count()

    class TimeoutMachine(RuleBasedStateMachine):
        """The store's timeouts against a dict of id -> record."""

        ids = Bundle("ids")

        def __init__(self) -> None:
            super().__init__()
            self.store = make_storage(Codec()).processes
            self.model: dict[str, TimeoutRecord] = {}

        @rule(target=ids, process=processes, key=keys, name=names, due_at=times)
        def schedule(self, process: str, key: str, name: str | None, due_at: float) -> str:
            timeout = _timeout(
                f"t{next(counter):04d}", process=process, key=key, name=name, due_at=due_at
            )
            self.store.schedule(timeout)
            if name is not None:
                self.model = {
                    i: t
                    for i, t in self.model.items()
                    if (t.process, t.key, t.name) != (process, key, name)
                }
            self.model[timeout.id] = timeout
            return timeout.id

        @rule(process=processes, key=keys, which=st.one_of(names.filter(bool), ids))
        def cancel(self, process: str, key: str, which: str) -> None:
            self.store.cancel(process, key, which)
            self.model = {
                i: t
                for i, t in self.model.items()
                if not ((t.process, t.key) == (process, key) and which in (t.id, t.name))
            }

        @rule(process=processes, key=keys)
        def cancel_all(self, process: str, key: str) -> None:
            self.store.cancel_all(process, key)
            self.model = {
                i: t for i, t in self.model.items() if (t.process, t.key) != (process, key)
            }

        @rule(timeout_id=consumes(ids))
        def delete(self, timeout_id: str) -> None:
            assert (timeout_id in self.model) == self.store.delete(timeout_id)
            self.model.pop(timeout_id, None)

        @rule(timeout_id=ids, now=times)
        def fire(self, timeout_id: str, now: float) -> None:
            known = self.model.get(timeout_id)
            claimable = known is not None and known.fired_at is None
            assert claimable == self.store.fire(timeout_id, now)
            if claimable and known is not None:
                self.model[timeout_id] = attrs.evolve(known, fired_at=now)

        @rule(process=processes, now=times, limit=st.integers(1, 4))
        def due(self, process: str, now: float, limit: int) -> None:
            waiting = [
                t
                for t in self._ordered()
                if t.process == process and t.fired_at is None and t.due_at <= now
            ]
            assert waiting[:limit] == self.store.due(process, now, limit)

        def _ordered(self) -> list[TimeoutRecord]:
            return sorted(self.model.values(), key=lambda t: (t.due_at, t.id))

        @invariant()
        def matches(self) -> None:
            assert self._ordered() == self.store.timeouts()
            for process in ("p", "q"):
                waiting = [
                    t.due_at
                    for t in self.model.values()
                    if t.process == process and t.fired_at is None
                ]
                assert (min(waiting) if waiting else None) == self.store.next_due(process)

    return TimeoutMachine
