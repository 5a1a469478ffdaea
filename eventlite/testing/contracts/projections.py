"""The :class:`~eventlite.store.projections.ProjectionStore` contract: every backend passes it.

Run it with a ``make_storage`` fixture (see :mod:`eventlite.testing.contracts`)::

    class TestProjections(ProjectionStoreContract):
        pass
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ...codec import Codec
from ...store.projections import LIVE, REBUILDING, ProjectionRecord, ProjectionStore
from ...store.storage import Storage
from . import StorageFactory

__all__ = ["ProjectionStoreContract"]

_NAMES = st.sampled_from(["orders", "totals", "Ünïcode"])
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_TIMES = st.floats(min_value=1.0, max_value=2e9, allow_nan=False, allow_infinity=False)


class ProjectionStoreContract:
    """The tests every :class:`ProjectionStore` must pass (``make_storage`` gives backends)."""

    state_machine_examples = 30
    """How many random programs the state machine test runs."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Storage:
        """A new, empty storage."""
        return make_storage(Codec())

    @pytest.fixture
    def store(self, storage: Storage) -> ProjectionStore:
        """Its projection store."""
        return storage.projections

    def test_register_starts_at_zero_and_keeps_a_known_position(
        self, store: ProjectionStore
    ) -> None:
        """A new name starts live at 0; registering it again changes its mode only."""
        first = store.register("orders", "inline", 10.0)
        assert ProjectionRecord("orders", "inline", 0, LIVE, None, 10.0, None) == first
        assert store.advance("orders", expected=0, position=7, now=11.0)
        again = store.register("orders", "tracking", 12.0)
        assert ProjectionRecord("orders", "tracking", 7, LIVE, None, 11.0, None) == again
        assert again == store.get("orders")

    def test_unknown_names_are_not_errors(self, store: ProjectionStore) -> None:
        """Reading an unknown name gives None; writing to one changes nothing."""
        assert None is store.get("nobody")
        assert False is store.advance("nobody", expected=0, position=1, now=1.0)
        store.fail("nobody", "boom")
        store.begin_rebuild("nobody", 1.0)
        assert [] == store.list()

    def test_advance_is_a_compare_and_set(self, store: ProjectionStore) -> None:
        """A move from a position the checkpoint is not at returns False and changes
        nothing; one from where it is moves it, dates it and clears the error."""
        store.register("orders", "tracking", 1.0)
        store.fail("orders", "RuntimeError: boom")
        assert False is store.advance("orders", expected=3, position=9, now=2.0)
        assert ProjectionRecord("orders", "tracking", 0, LIVE, "RuntimeError: boom", 1.0, None) == (
            store.get("orders")
        )
        assert True is store.advance("orders", expected=0, position=9, now=3.0)
        assert ProjectionRecord("orders", "tracking", 9, LIVE, None, 3.0, None) == store.get(
            "orders"
        )

    def test_a_rebuild_starts_over_and_goes_live_when_told(self, store: ProjectionStore) -> None:
        """begin_rebuild puts the checkpoint at 0, rebuilding; advances keep it rebuilding
        until one says live."""
        store.register("orders", "tracking", 1.0)
        store.advance("orders", expected=0, position=5, now=2.0)
        store.fail("orders", "boom")
        store.begin_rebuild("orders", 4.0)
        assert ProjectionRecord("orders", "tracking", 0, REBUILDING, None, 4.0, 4.0) == (
            store.get("orders")
        )
        store.advance("orders", expected=0, position=3, now=5.0)
        assert REBUILDING == _state(store, "orders")
        store.advance("orders", expected=3, position=6, now=6.0, live=True)
        assert ProjectionRecord("orders", "tracking", 6, LIVE, None, 6.0, 4.0) == (
            store.get("orders")
        )

    def test_list_is_by_name(self, store: ProjectionStore) -> None:
        """Every row, sorted by name."""
        for name in ("b", "c", "a"):
            store.register(name, "inline", 1.0)
        assert ["a", "b", "c"] == [r.name for r in store.list()]

    def test_writes_join_the_open_transaction(self, storage: Storage) -> None:
        """Moves made inside a transaction that rolls back are rolled back; inside one,
        reads see them."""
        store = storage.projections
        store.register("orders", "inline", 1.0)
        with pytest.raises(RuntimeError), storage.transaction():
            assert store.advance("orders", expected=0, position=4, now=2.0)
            assert 4 == _position(store, "orders")
            store.register("other", "inline", 2.0)
            raise RuntimeError("the batch failed")
        assert (0, None) == (_position(store, "orders"), store.get("other"))

    def test_the_read_model_is_there_inside_and_outside_transactions(
        self, storage: Storage
    ) -> None:
        """The read-model helper (the backend's own object) can be taken inside a
        transaction, for handlers, and outside one, for queries."""
        with storage.transaction():
            inside = storage.projections.read_model()
        assert inside is not None
        assert None is not storage.projections.read_model()

    def test_reserved_tables_are_names(self, store: ProjectionStore) -> None:
        """The backend names its own tables, which read models may not take."""
        reserved = store.reserved_tables()
        assert (frozenset, True) == (type(reserved), all(isinstance(n, str) for n in reserved))

    def test_any_program_matches_the_model(self, make_storage: StorageFactory) -> None:
        """Random registers, moves (from the right and the wrong position), failures and
        rebuilds leave the store as a dict of records says."""
        machine = _machine(make_storage)
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )


def _position(store: ProjectionStore, name: str) -> int | None:
    found = store.get(name)
    return None if found is None else found.position


def _state(store: ProjectionStore, name: str) -> str | None:
    found = store.get(name)
    return None if found is None else found.state


def _machine(make_storage: StorageFactory) -> type[RuleBasedStateMachine]:
    class ProjectionMachine(RuleBasedStateMachine):
        """The store against a dict of name -> record."""

        def __init__(self) -> None:
            super().__init__()
            self.store = make_storage(Codec()).projections
            self.model: dict[str, ProjectionRecord] = {}

        @rule(name=_NAMES, mode=st.sampled_from(["inline", "tracking"]), now=_TIMES)
        def register(self, name: str, mode: str, now: float) -> None:
            known = self.model.get(name)
            if known is None:
                known = ProjectionRecord(name, mode, 0, LIVE, None, now, None)
            self.model[name] = attrs.evolve(known, mode=mode)
            assert self.model[name] == self.store.register(name, mode, now)

        @rule(
            name=_NAMES,
            wrong=st.booleans(),
            step=st.integers(0, 50),
            now=_TIMES,
            live=st.booleans(),
        )
        def advance(self, name: str, wrong: bool, step: int, now: float, live: bool) -> None:
            known = self.model.get(name)
            at = 0 if known is None else known.position
            expected = at + 1 if wrong else at
            position = expected + step
            moved = self.store.advance(
                name, expected=expected, position=position, now=now, live=live
            )
            ok = known is not None and not wrong
            assert ok == moved
            if ok and known is not None:
                self.model[name] = attrs.evolve(
                    known,
                    position=position,
                    error=None,
                    updated_at=now,
                    state=LIVE if live else known.state,
                )

        @rule(name=_NAMES, error=_TEXT)
        def fail(self, name: str, error: str) -> None:
            self.store.fail(name, error)
            if name in self.model:
                self.model[name] = attrs.evolve(self.model[name], error=error)

        @rule(name=_NAMES, now=_TIMES)
        def begin_rebuild(self, name: str, now: float) -> None:
            self.store.begin_rebuild(name, now)
            if name in self.model:
                self.model[name] = attrs.evolve(
                    self.model[name],
                    position=0,
                    state=REBUILDING,
                    error=None,
                    updated_at=now,
                    rebuilt_at=now,
                )

        @invariant()
        def matches(self) -> None:
            assert [self.model[n] for n in sorted(self.model)] == self.store.list()

    return ProjectionMachine
