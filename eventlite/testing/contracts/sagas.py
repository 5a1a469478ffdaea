"""The :class:`~eventlite.store.sagas.SagaStore` contract: every backend passes it.

Run it with a ``make_storage`` fixture (see :mod:`eventlite.testing.contracts`)::

    class TestSagas(SagaStoreContract):
        pass
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ...codec import Codec
from ...store.sagas import SagaRecord, SagaStatus, SagaStore, StepFailure
from ...store.storage import Storage
from . import StorageFactory

__all__ = ["SagaStoreContract"]

_FAILURE = StepFailure("charge", "builtins.RuntimeError", "card declined ü", "Traceback ...")
_UNFINISHED = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


def _record(saga_id: str, *, saga: str = "checkout", started_at: float = 100.0) -> SagaRecord:
    return SagaRecord(
        id=saga_id,
        saga=saga,
        status=SagaStatus.RUNNING,
        data='{"order":"o-1"}',
        step_index=0,
        completed=(),
        compensated=(),
        compensation_errors=(),
        failed_step=None,
        error=None,
        revision=0,
        started_at=started_at,
        updated_at=started_at,
        finished_at=None,
    )


def _failed(record: SagaRecord) -> SagaRecord:
    """``record`` after a step failed and a compensation did too: every field set."""
    return attrs.evolve(
        record,
        status=SagaStatus.FAILED,
        data='{"order":"o-1","reserved":true}',
        step_index=1,
        completed=("reserve",),
        compensated=("notify",),
        compensation_errors=(attrs.evolve(_FAILURE, step="reserve"),),
        failed_step="charge",
        error=_FAILURE,
        updated_at=record.updated_at + 5,
        finished_at=record.updated_at + 5,
    )


class SagaStoreContract:
    """The tests every :class:`SagaStore` must pass (``make_storage`` gives backends)."""

    state_machine_examples = 30
    """How many random programs the state machine test runs."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Storage:
        """A new, empty storage."""
        return make_storage(Codec())

    @pytest.fixture
    def store(self, storage: Storage) -> SagaStore:
        """Its saga store."""
        return storage.sagas

    def test_create_stores_a_new_instance_once(self, store: SagaStore) -> None:
        """create() stores the record at revision 0 and refuses a second one with its id."""
        record = _record("s-1")
        assert True is store.create(attrs.evolve(record, revision=7))
        assert False is store.create(attrs.evolve(record, saga="other"))
        assert record == store.load("s-1")

    def test_every_field_round_trips(self, store: SagaStore) -> None:
        """Steps, failures (text and tracebacks), data and times come back as saved."""
        store.create(_record("s-1"))
        failed = _failed(_record("s-1"))
        assert True is store.save(failed)
        assert attrs.evolve(failed, revision=1) == store.load("s-1")

    def test_save_is_a_compare_and_set_on_the_revision(self, store: SagaStore) -> None:
        """A save over the loaded revision writes and counts one up; a save over any other
        revision, or of an unknown id, writes nothing and returns False."""
        store.create(_record("s-1"))
        moved = attrs.evolve(_record("s-1"), step_index=1, completed=("reserve",))
        assert True is store.save(moved)
        assert False is store.save(attrs.evolve(moved, step_index=2))
        assert False is store.save(_record("ghost"))
        assert (attrs.evolve(moved, revision=1), None) == (store.load("s-1"), store.load("ghost"))
        assert True is store.save(attrs.evolve(moved, revision=1, step_index=2))
        loaded = store.load("s-1")
        assert loaded is not None
        assert (2, 2) == (loaded.revision, loaded.step_index)

    def test_save_keeps_the_start_time(self, store: SagaStore) -> None:
        """started_at is the creation's; a save does not move it."""
        store.create(_record("s-1", started_at=100.0))
        store.save(attrs.evolve(_record("s-1"), started_at=999.0, updated_at=120.0))
        loaded = store.load("s-1")
        assert loaded is not None
        assert (100.0, 120.0) == (loaded.started_at, loaded.updated_at)

    def test_list_filters_orders_and_limits(self, store: SagaStore) -> None:
        """Oldest first (then by id), one status and one saga when given, at most limit."""
        store.create(_record("b", started_at=2.0))
        store.create(_record("a", started_at=2.0, saga="refund"))
        store.create(_record("c", started_at=1.0))
        store.save(_failed(_record("c", started_at=1.0)))
        assert ["c", "a", "b"] == [r.id for r in store.list()]
        assert ["a", "b"] == [r.id for r in store.list(status=SagaStatus.RUNNING)]
        assert ["c", "b"] == [r.id for r in store.list(saga="checkout")]
        assert ["b"] == [r.id for r in store.list(status=SagaStatus.RUNNING, saga="checkout")]
        assert ["c", "a"] == [r.id for r in store.list(limit=2)]

    def test_unfinished_are_running_and_compensating_oldest_first(self, store: SagaStore) -> None:
        """What a restart resumes: running and compensating instances, not completed or
        failed ones."""
        for n, status in enumerate(SagaStatus):
            store.create(_record(f"s-{n}", started_at=10.0 - n))
            store.save(attrs.evolve(_record(f"s-{n}", started_at=10.0 - n), status=status))
        expected = [f"s-{n}" for n, s in reversed(list(enumerate(SagaStatus))) if s in _UNFINISHED]
        assert expected == [r.id for r in store.unfinished()]

    def test_writes_join_the_open_transaction(self, storage: Storage) -> None:
        """A saga created, or saved, inside a transaction that rolls back is not stored."""
        store = storage.sagas
        store.create(_record("kept"))
        with pytest.raises(RuntimeError), storage.transaction():
            store.create(_record("rolled-back"))
            store.save(_failed(_record("kept")))
            assert None is not store.load("rolled-back")
            raise RuntimeError("the command failed")
        assert (None, _record("kept")) == (store.load("rolled-back"), store.load("kept"))

    def test_any_program_matches_the_model(self, make_storage: StorageFactory) -> None:
        """Random creates and saves (over the right and a stale revision) leave the store
        as a dict of records says; list and unfinished agree with it."""
        run_state_machine_as_test(
            _machine(make_storage),
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )


def _machine(make_storage: StorageFactory) -> type[RuleBasedStateMachine]:
    ids = st.sampled_from(["a", "b", "c", "d"])

    class SagaMachine(RuleBasedStateMachine):
        """The store against a dict of id -> record."""

        def __init__(self) -> None:
            super().__init__()
            self.store = make_storage(Codec()).sagas
            self.model: dict[str, SagaRecord] = {}

        @rule(saga_id=ids, saga=st.sampled_from(["x", "y"]), started=st.integers(0, 3))
        def create(self, saga_id: str, saga: str, started: int) -> None:
            record = _record(saga_id, saga=saga, started_at=float(started))
            created = self.store.create(record)
            assert (saga_id not in self.model) == created
            self.model.setdefault(saga_id, record)

        @rule(
            saga_id=ids,
            stale=st.booleans(),
            status=st.sampled_from(list(SagaStatus)),
            step=st.integers(0, 4),
        )
        def save(self, saga_id: str, stale: bool, status: SagaStatus, step: int) -> None:
            known = self.model.get(saga_id)
            base = known if known is not None else _record(saga_id)
            revision = base.revision - 1 if stale else base.revision
            change = attrs.evolve(
                base,
                revision=revision,
                status=status,
                step_index=step,
                completed=tuple(f"s{i}" for i in range(step)),
                updated_at=base.updated_at + 1,
            )
            saved = self.store.save(change)
            assert (known is not None and not stale) == saved
            if saved:
                self.model[saga_id] = attrs.evolve(change, revision=revision + 1)

        @invariant()
        def matches(self) -> None:
            ordered = sorted(self.model.values(), key=lambda r: (r.started_at, r.id))
            assert ordered == self.store.list()
            assert [r for r in ordered if r.status in _UNFINISHED] == self.store.unfinished()
            for saga_id, record in self.model.items():
                assert record == self.store.load(saga_id)

    return SagaMachine
