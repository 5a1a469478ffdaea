"""The contract of :class:`~eventlite.store.retries.RetryStore`: see the package doc for how a
backend runs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ...codec import Codec
from ...store.retries import RetryEntry, RetryStore
from ...store.storage import Storage
from . import StorageFactory

__all__ = ["RetryStoreContract"]


class _Rollback(Exception):
    """Raised to roll a test's transaction back."""


def _head(sub: str, position: int, key: str, attempts: int, due: float) -> RetryEntry:
    return RetryEntry(sub, position, key, attempts, due, 1.0, f"failed {attempts}")


def _follower(sub: str, position: int, key: str) -> RetryEntry:
    return RetryEntry(sub, position, key, 0, None, None, None)


class RetryStoreContract:
    """The tests every backend's retry store passes (``make_storage`` fixture)."""

    state_machine_examples = 25
    """How many random walks :meth:`test_state_machine` takes."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Iterator[Storage]:
        """A new, empty storage."""
        yield make_storage(Codec())

    @pytest.fixture
    def retries(self, storage: Storage) -> RetryStore:
        """Its retry store."""
        return storage.retries

    def _head(self, retries: RetryStore, position: int, key: str, due: float) -> None:
        retries.schedule(
            "s", position, key, attempts=3, due_at=due, first_failed_at=1.0, error="failed 3"
        )

    def test_heads_and_followers_are_stored_as_given(self, retries: RetryStore) -> None:
        """schedule() stores a head with its attempts, due time, first failure and error;
        hold() a follower with none of them; entries() lists them by position."""
        self._head(retries, 4, "k", 30.0)
        retries.hold("s", 6, "k")
        assert [_head("s", 4, "k", 3, 30.0), _follower("s", 6, "k")] == retries.entries("s")
        assert [True, False] == [e.is_head for e in retries.entries()]

    def test_reschedule_keeps_the_first_failure(self, retries: RetryStore) -> None:
        """reschedule() gives a head new attempts, due time and error and keeps when it
        first failed; a follower that failed in its turn becomes a head with the first
        failure given; a missing row is False."""
        self._head(retries, 4, "k", 30.0)
        retries.hold("s", 6, "k")
        assert retries.reschedule(
            "s", 4, attempts=4, due_at=60.0, error="failed 4", first_failed_at=50.0
        )
        assert retries.reschedule(
            "s", 6, attempts=3, due_at=70.0, error="failed 3", first_failed_at=55.0
        )
        assert not retries.reschedule(
            "s", 9, attempts=1, due_at=1.0, error="x", first_failed_at=1.0
        )
        assert [
            RetryEntry("s", 4, "k", 4, 60.0, 1.0, "failed 4"),
            RetryEntry("s", 6, "k", 3, 70.0, 55.0, "failed 3"),
        ] == retries.entries("s")

    def test_due_heads_come_by_due_time_then_position(self, retries: RetryStore) -> None:
        """due(now) gives the heads with due_at <= now, earliest first, then by position;
        next_due() is the earliest due time; followers are never due."""
        self._head(retries, 9, "a", 20.0)
        self._head(retries, 3, "b", 20.0)
        self._head(retries, 5, "c", 10.0)
        self._head(retries, 7, "d", 40.0)
        retries.hold("s", 8, "d")
        assert [5, 3, 9] == [e.position for e in retries.due("s", 20.0)]
        assert ([], 10.0, None) == (
            retries.due("s", 9.9),
            retries.next_due("s"),
            retries.next_due("other"),
        )

    def test_keys_stranded_keys_and_followers(self, retries: RetryStore) -> None:
        """keys() holds every key with a row; stranded() the keys with followers only, by
        their lowest position; followers() the positions of a key above a position."""
        self._head(retries, 2, "a", 10.0)
        for position in (4, 6):
            retries.hold("s", position, "a")
        retries.hold("s", 9, "c")
        retries.hold("s", 5, "b")
        retries.hold("s", 7, "b")
        assert frozenset({"a", "b", "c"}) == retries.keys("s")
        assert ["b", "c"] == retries.stranded("s")
        assert ([2, 4, 6], [4, 6], [6], []) == (
            retries.followers("s", "a"),
            retries.followers("s", "a", 2),
            retries.followers("s", "a", 4),
            retries.followers("s", "a", 6),
        )

    def test_forget_and_drop(self, retries: RetryStore) -> None:
        """forget() deletes one row and says whether it was there; drop() deletes every row
        of a key and says how many."""
        self._head(retries, 2, "a", 10.0)
        retries.hold("s", 4, "a")
        retries.hold("s", 5, "b")
        assert (True, False) == (retries.forget("s", 5), retries.forget("s", 5))
        assert (2, 0) == (retries.drop("s", "a"), retries.drop("s", "a"))
        assert [] == retries.entries()

    def test_subscribers_are_apart(self, retries: RetryStore) -> None:
        """Rows of one subscriber are never seen, due, stranded or dropped as another's."""
        self._head(retries, 2, "k", 10.0)
        retries.hold("t", 2, "k")
        assert (frozenset(), [], ["k"]) == (
            retries.keys("u"),
            retries.due("t", 99.0),
            retries.stranded("t"),
        )
        assert 1 == retries.drop("t", "k")
        assert [_head("s", 2, "k", 3, 10.0)] == retries.entries()

    def test_any_error_text_is_stored(self, retries: RetryStore) -> None:
        """An error text holding a lone surrogate (an OS error on a non-UTF-8 file name) is
        stored with the surrogate escaped; valid text is kept exactly."""
        retries.schedule(
            "s", 1, "k", attempts=1, due_at=5.0, first_failed_at=1.0, error="bad \udcff name"
        )
        retries.schedule(
            "s", 2, "k", attempts=1, due_at=5.0, first_failed_at=1.0, error="ünïcødé ✓\x00"
        )
        assert ["bad \\udcff name", "ünïcødé ✓\x00"] == [e.error for e in retries.entries()]

    def test_writes_join_the_callers_transaction(
        self, storage: Storage, retries: RetryStore
    ) -> None:
        """Rows written inside storage.transaction() are seen inside it and gone when it
        rolls back; a forget rolled back leaves the row."""
        retries.hold("s", 1, "k")
        with pytest.raises(_Rollback), storage.transaction():
            self._head(retries, 2, "k", 5.0)
            assert retries.forget("s", 1)
            assert [2] == [e.position for e in retries.entries()]
            raise _Rollback()
        assert [_follower("s", 1, "k")] == retries.entries()

    @pytest.mark.parametrize(
        "call",
        [
            lambda r: r.hold("", 1, "k"),
            lambda r: r.hold("s", -1, "k"),
            lambda r: r.hold("s", 1, ""),
            lambda r: r.hold("s", 1, "lone \udc80"),
            lambda r: r.schedule(
                "s", 1, "k", attempts=-1, due_at=1.0, first_failed_at=1.0, error="e"
            ),
            lambda r: r.schedule(
                "s", 1, "k", attempts=1, due_at=float("nan"), first_failed_at=1.0, error="e"
            ),
        ],
    )
    def test_bad_arguments_are_refused(self, retries: RetryStore, call: Any) -> None:
        """Empty names or keys, text that cannot be stored, negative positions or attempts
        and times that are not finite raise ValueError, writing nothing."""
        with pytest.raises(ValueError):
            call(retries)
        assert [] == retries.entries()

    def test_state_machine(self, make_storage: StorageFactory) -> None:
        """Random schedules, holds, reschedules, forgets and drops agree with a dict model in
        every read."""
        run_state_machine_as_test(
            _machine(make_storage),
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )


_SUBS = st.sampled_from(["s", "t"])
_KEYS = st.sampled_from(["a", "b"])
_POSITIONS = st.integers(1, 8)
_TIMES = st.integers(0, 10)


def _machine(make_storage: StorageFactory) -> type[RuleBasedStateMachine]:
    class RetryMachine(RuleBasedStateMachine):
        """The store against a dict of (subscriber, position) -> entry."""

        def __init__(self) -> None:
            super().__init__()
            self.retries = make_storage(Codec()).retries
            self.model: dict[tuple[str, int], RetryEntry] = {}

        @rule(sub=_SUBS, position=_POSITIONS, key=_KEYS, attempts=st.integers(0, 5), due=_TIMES)
        def schedule(self, sub: str, position: int, key: str, attempts: int, due: int) -> None:
            entry = RetryEntry(sub, position, key, attempts, float(due), 0.5, f"e{attempts}")
            self.model[sub, position] = entry
            self.retries.schedule(
                sub,
                position,
                key,
                attempts=attempts,
                due_at=float(due),
                first_failed_at=0.5,
                error=f"e{attempts}",
            )

        @rule(sub=_SUBS, position=_POSITIONS, key=_KEYS)
        def hold(self, sub: str, position: int, key: str) -> None:
            self.model[sub, position] = RetryEntry(sub, position, key, 0, None, None, None)
            self.retries.hold(sub, position, key)

        @rule(sub=_SUBS, position=_POSITIONS, attempts=st.integers(0, 5), due=_TIMES)
        def reschedule(self, sub: str, position: int, attempts: int, due: int) -> None:
            old = self.model.get((sub, position))
            if old is not None:
                first = old.first_failed_at if old.first_failed_at is not None else 2.5
                self.model[sub, position] = old._replace(
                    attempts=attempts, due_at=float(due), first_failed_at=first, error="again"
                )
            found = self.retries.reschedule(
                sub,
                position,
                attempts=attempts,
                due_at=float(due),
                error="again",
                first_failed_at=2.5,
            )
            assert (old is not None) == found

        @rule(sub=_SUBS, position=_POSITIONS)
        def forget(self, sub: str, position: int) -> None:
            found = self.model.pop((sub, position), None) is not None
            assert found == self.retries.forget(sub, position)

        @rule(sub=_SUBS, key=_KEYS)
        def drop(self, sub: str, key: str) -> None:
            gone = [k for k, e in self.model.items() if k[0] == sub and e.key == key]
            for k in gone:
                del self.model[k]
            assert len(gone) == self.retries.drop(sub, key)

        def _rows(self, sub: str) -> list[RetryEntry]:
            return [e for k, e in sorted(self.model.items()) if k[0] == sub]

        @invariant()
        def agrees(self) -> None:
            assert [e for _, e in sorted(self.model.items())] == self.retries.entries()
            for sub in ("s", "t"):
                rows = self._rows(sub)
                assert rows == self.retries.entries(sub)
                heads = [(e.due_at, e.position, e) for e in rows if e.due_at is not None]
                assert frozenset(e.key for e in rows) == self.retries.keys(sub)
                assert (min(h[0] for h in heads) if heads else None) == (self.retries.next_due(sub))
                due = [h[2] for h in sorted(heads) if h[0] <= 5.0]
                assert due == self.retries.due(sub, 5.0)
                lowest: dict[str, int] = {}
                for e in rows:
                    lowest.setdefault(e.key, e.position)
                stranded = [
                    k
                    for k in sorted(lowest, key=lowest.__getitem__)
                    if all(e.due_at is None for e in rows if e.key == k)
                ]
                assert stranded == self.retries.stranded(sub)
                for key in ("a", "b"):
                    assert [e.position for e in rows if e.key == key and e.position > 3] == (
                        self.retries.followers(sub, key, 3)
                    )

    return RetryMachine
