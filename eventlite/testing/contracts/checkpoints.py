"""The contract of :class:`~eventlite.store.checkpoints.CheckpointStore`: see the package doc
for how a backend runs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ...codec import Codec
from ...store.checkpoints import Checkpoint, CheckpointMoved, CheckpointStore
from ...store.storage import Storage
from . import StorageFactory

__all__ = ["CheckpointStoreContract"]


class _Rollback(Exception):
    """Raised to roll a test's transaction back."""


class CheckpointStoreContract:
    """The tests every backend's checkpoint store passes (``make_storage`` fixture)."""

    state_machine_examples = 25
    """How many random walks :meth:`test_state_machine` takes."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Iterator[Storage]:
        """A new, empty storage."""
        yield make_storage(Codec())

    @pytest.fixture
    def checkpoints(self, storage: Storage) -> CheckpointStore:
        """Its checkpoint store."""
        return storage.checkpoints

    def test_a_new_checkpoint_starts_where_it_is_created(
        self, checkpoints: CheckpointStore
    ) -> None:
        """create() stores a checkpoint at the position given and returns it; get() reads it;
        an unknown name has none."""
        made = checkpoints.create("billing", 7, 100.5)
        assert (Checkpoint("billing", 7, 100.5), made) == (checkpoints.get("billing"), made)
        assert None is checkpoints.get("shipping")

    def test_create_leaves_an_existing_checkpoint_alone(self, checkpoints: CheckpointStore) -> None:
        """Creating a checkpoint that exists changes nothing and returns the stored one."""
        checkpoints.create("billing", 3, 1.0)
        checkpoints.move("billing", 3, 9, 2.0)
        assert Checkpoint("billing", 9, 2.0) == checkpoints.create("billing", 0, 3.0)
        assert Checkpoint("billing", 9, 2.0) == checkpoints.get("billing")

    def test_move_is_a_compare_and_set(self, checkpoints: CheckpointStore) -> None:
        """move() from the stored position moves it (forwards or back); from another position
        it raises CheckpointMoved naming both positions, and changes nothing."""
        checkpoints.create("billing", 0, 1.0)
        checkpoints.move("billing", 0, 5, 2.0)
        with pytest.raises(CheckpointMoved) as info:
            checkpoints.move("billing", 0, 6, 3.0)
        assert ("billing", 0, 5) == (info.value.name, info.value.expected, info.value.actual)
        assert Checkpoint("billing", 5, 2.0) == checkpoints.get("billing")
        checkpoints.move("billing", 5, 2, 4.0)
        assert Checkpoint("billing", 2, 4.0) == checkpoints.get("billing")

    def test_moving_a_missing_checkpoint_fails(self, checkpoints: CheckpointStore) -> None:
        """A move of a checkpoint that does not exist raises CheckpointMoved with actual
        None, and creates nothing."""
        with pytest.raises(CheckpointMoved) as info:
            checkpoints.move("ghost", 0, 1, 1.0)
        assert (None, None) == (info.value.actual, checkpoints.get("ghost"))

    def test_list_is_sorted_by_name(self, checkpoints: CheckpointStore) -> None:
        """list() holds every checkpoint, by name."""
        for name in ("c", "a", "b"):
            checkpoints.create(name, len(name), 1.0)
        assert ["a", "b", "c"] == [c.name for c in checkpoints.list()]

    def test_writes_join_the_callers_transaction(
        self, storage: Storage, checkpoints: CheckpointStore
    ) -> None:
        """create() and move() inside storage.transaction() roll back with it, and commit
        with it."""
        checkpoints.create("kept", 0, 1.0)
        with pytest.raises(_Rollback), storage.transaction():
            checkpoints.create("gone", 0, 1.0)
            checkpoints.move("kept", 0, 4, 2.0)
            assert Checkpoint("kept", 4, 2.0) == checkpoints.get("kept")  # its own writes
            raise _Rollback()
        assert (None, Checkpoint("kept", 0, 1.0)) == (
            checkpoints.get("gone"),
            checkpoints.get("kept"),
        )
        with storage.transaction():
            checkpoints.move("kept", 0, 4, 2.0)
        assert Checkpoint("kept", 4, 2.0) == checkpoints.get("kept")

    def test_a_failed_move_spoils_nothing_else_of_the_transaction(
        self, storage: Storage, checkpoints: CheckpointStore
    ) -> None:
        """A CheckpointMoved caught inside a transaction leaves its other writes to commit."""
        checkpoints.create("a", 0, 1.0)
        checkpoints.create("b", 0, 1.0)
        with storage.transaction():
            checkpoints.move("a", 0, 1, 2.0)
            with pytest.raises(CheckpointMoved):
                checkpoints.move("b", 3, 4, 2.0)
        assert [1, 0] == [c.position for c in checkpoints.list()]

    @pytest.mark.parametrize(
        "call",
        [
            lambda c: c.create("", 0, 1.0),
            lambda c: c.create(None, 0, 1.0),
            lambda c: c.create("a", -1, 1.0),
            lambda c: c.create("a", 2**63, 1.0),
            lambda c: c.create("a", True, 1.0),
            lambda c: c.create("a", 0, float("nan")),
            lambda c: c.move("a", 0, -1, 1.0),
            lambda c: c.move("a", "0", 1, 1.0),
        ],
    )
    def test_bad_arguments_are_refused(self, checkpoints: CheckpointStore, call: Any) -> None:
        """Empty or non-str names, positions outside 0..2**63-1 or not ints, and times that
        are not finite numbers raise ValueError."""
        with pytest.raises(ValueError):
            call(checkpoints)
        assert [] == checkpoints.list()

    def test_state_machine(self, make_storage: StorageFactory) -> None:
        """Random creates and moves (from the right and from wrong positions) agree with a
        dict model."""
        run_state_machine_as_test(
            _machine(make_storage),
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )


_NAMES = st.sampled_from(["a", "b", "c"])
_POSITIONS = st.integers(0, 50)


def _machine(make_storage: StorageFactory) -> type[RuleBasedStateMachine]:
    class CheckpointMachine(RuleBasedStateMachine):
        """The store against a dict of name -> (position, updated_at)."""

        def __init__(self) -> None:
            super().__init__()
            self.checkpoints = make_storage(Codec()).checkpoints
            self.model: dict[str, tuple[int, float]] = {}
            self.now = 0.0

        def _tick(self) -> float:
            self.now += 1.0
            return self.now

        @rule(name=_NAMES, position=_POSITIONS)
        def create(self, name: str, position: int) -> None:
            at = self._tick()
            self.model.setdefault(name, (position, at))
            stored = self.model[name]
            assert Checkpoint(name, *stored) == self.checkpoints.create(name, position, at)

        @rule(name=_NAMES, to=_POSITIONS, wrong=st.booleans())
        def move(self, name: str, to: int, wrong: bool) -> None:
            at = self._tick()
            current = self.model.get(name)
            expected = 0 if current is None else current[0]
            if wrong:
                expected += 1
            if current is None or wrong:
                with pytest.raises(CheckpointMoved) as info:
                    self.checkpoints.move(name, expected, to, at)
                assert (None if current is None else current[0]) == info.value.actual
            else:
                self.checkpoints.move(name, expected, to, at)
                self.model[name] = (to, at)

        @invariant()
        def agrees(self) -> None:
            expected = [Checkpoint(n, *v) for n, v in sorted(self.model.items())]
            assert expected == self.checkpoints.list()
            for name in ("a", "b", "c"):
                stored = self.model.get(name)
                assert (None if stored is None else Checkpoint(name, *stored)) == (
                    self.checkpoints.get(name)
                )

    return CheckpointMachine
