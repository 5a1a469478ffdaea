"""The contract of :class:`~eventlite.store.inbox.InboxStore`: see the package doc for how a
backend runs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ...codec import Codec
from ...store.inbox import InboxStore
from ...store.storage import Storage
from . import StorageFactory

__all__ = ["InboxStoreContract"]


class _Rollback(Exception):
    """Raised to roll a test's transaction back."""


class InboxStoreContract:
    """The tests every backend's inbox store passes (``make_storage`` fixture)."""

    state_machine_examples = 25
    """How many random walks :meth:`test_state_machine` takes."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Iterator[Storage]:
        """A new, empty storage."""
        yield make_storage(Codec())

    @pytest.fixture
    def inbox(self, storage: Storage) -> InboxStore:
        """Its inbox store."""
        return storage.inbox

    def test_a_mark_is_new_once_per_consumer(self, inbox: InboxStore) -> None:
        """mark() is True the first time a consumer marks an id and False after; another
        consumer's mark of the same id is its own."""
        assert [True, False, True] == [
            inbox.mark("billing", "m-1", 1.0),
            inbox.mark("billing", "m-1", 2.0),
            inbox.mark("shipping", "m-1", 3.0),
        ]
        assert (True, True, False) == (
            inbox.contains("billing", "m-1"),
            inbox.contains("shipping", "m-1"),
            inbox.contains("billing", "m-2"),
        )

    def test_count_per_consumer_and_in_all(self, inbox: InboxStore) -> None:
        """count() counts the marks of one consumer, or of every consumer."""
        for consumer, message_id in [("a", "1"), ("a", "2"), ("b", "1")]:
            inbox.mark(consumer, message_id, 1.0)
        assert (3, 2, 1, 0) == (inbox.count(), inbox.count("a"), inbox.count("b"), inbox.count("c"))

    def test_consumers_lists_each_with_its_marks(self, inbox: InboxStore) -> None:
        """consumers() names every consumer holding marks, sorted, with its count."""
        assert {} == inbox.consumers()
        for consumer, message_id in [("b", "1"), ("a", "1"), ("b", "2"), ("é ✓", "1")]:
            inbox.mark(consumer, message_id, 1.0)
        found = inbox.consumers()
        assert {"a": 1, "b": 2, "é ✓": 1} == found
        assert ["a", "b", "é ✓"] == list(found)

    def test_purge_forgets_marks_made_before_the_cutoff(self, inbox: InboxStore) -> None:
        """purge(before) deletes the marks made strictly before ``before``, of one consumer
        or of all, and says how many."""
        inbox.mark("a", "old", 10.0)
        inbox.mark("a", "edge", 20.0)
        inbox.mark("b", "old", 10.0)
        assert 1 == inbox.purge(20.0, "a")
        assert (False, True, True) == (
            inbox.contains("a", "old"),
            inbox.contains("a", "edge"),
            inbox.contains("b", "old"),
        )
        assert 2 == inbox.purge(25.0)
        assert 0 == inbox.count()

    def test_marks_join_the_callers_transaction(self, storage: Storage, inbox: InboxStore) -> None:
        """A mark made inside storage.transaction() is seen inside it, and is gone when the
        transaction rolls back."""
        with pytest.raises(_Rollback), storage.transaction():
            assert inbox.mark("a", "m-1", 1.0)
            assert inbox.contains("a", "m-1")
            raise _Rollback()
        assert (False, 0) == (inbox.contains("a", "m-1"), inbox.count())
        with storage.transaction():
            inbox.mark("a", "m-1", 1.0)
        assert inbox.contains("a", "m-1")

    def test_mark_many_marks_a_batch_and_counts_the_new_ones(self, inbox: InboxStore) -> None:
        """mark_many() marks every id given (an id twice in one call is one mark) and says
        how many marks are new; handled() names the marked ones among those asked about."""
        inbox.mark("a", "m-2", 1.0)
        assert 3 == inbox.mark_many("a", ["m-1", "m-2", "m-3", "m-1", "m-4"], 2.0)
        assert 0 == inbox.mark_many("a", [], 2.0)
        assert (4, 0) == (inbox.count("a"), inbox.count("b"))
        assert {"m-1", "m-4"} == inbox.handled("a", ["m-1", "m-4", "m-5", "m-1"])
        assert set() == inbox.handled("b", ["m-1"])
        assert set() == inbox.handled("a", [])

    def test_mark_many_joins_the_callers_transaction(
        self, storage: Storage, inbox: InboxStore
    ) -> None:
        """A batch of marks made inside storage.transaction() is gone when it rolls back."""
        with pytest.raises(_Rollback), storage.transaction():
            assert 2 == inbox.mark_many("a", ["m-1", "m-2"], 1.0)
            assert {"m-1", "m-2"} == inbox.handled("a", ["m-1", "m-2"])
            raise _Rollback()
        assert (set(), 0) == (inbox.handled("a", ["m-1", "m-2"]), inbox.count())

    @pytest.mark.parametrize("message_id", ["", "ünïcødé ✓", "tab\tand\nnewline", "nul\x00byte"])
    def test_ids_are_kept_exactly(self, inbox: InboxStore, message_id: str) -> None:
        """Any text is a message id, and only the same text matches it."""
        assert inbox.mark("a", message_id, 1.0)
        assert (True, False) == (
            inbox.contains("a", message_id),
            inbox.contains("a", message_id + " "),
        )
        assert {message_id} == inbox.handled("a", [message_id, message_id + " ", "other"])
        assert 1 == inbox.mark_many("b", [message_id, message_id], 1.0)
        assert {message_id} == inbox.handled("b", [message_id])

    @pytest.mark.parametrize(
        "call",
        [
            lambda i: i.mark("", "m", 1.0),
            lambda i: i.mark(None, "m", 1.0),
            lambda i: i.mark("a", 5, 1.0),
            lambda i: i.mark("a", "lone \udc80 surrogate", 1.0),
            lambda i: i.mark("a", "m", float("inf")),
            lambda i: i.purge(float("nan")),
            lambda i: i.mark_many("", ["m"], 1.0),
            lambda i: i.mark_many("a", ["m", 5], 1.0),
            lambda i: i.mark_many("a", ["m", "lone \udc80 surrogate"], 1.0),
            lambda i: i.mark_many("a", ["m"], float("nan")),
        ],
    )
    def test_bad_arguments_are_refused(self, inbox: InboxStore, call: Any) -> None:
        """Empty consumer names, ids that are not text or cannot be stored, and times that
        are not finite numbers raise ValueError, marking nothing (not even the good ids of
        a batch)."""
        with pytest.raises(ValueError):
            call(inbox)
        assert 0 == inbox.count()

    def test_state_machine(self, make_storage: StorageFactory) -> None:
        """Random marks and purges agree with a dict model."""
        run_state_machine_as_test(
            _machine(make_storage),
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )


_CONSUMERS = st.sampled_from(["a", "b"])
_IDS = st.sampled_from(["m1", "m2", "m3"])


def _machine(make_storage: StorageFactory) -> type[RuleBasedStateMachine]:
    class InboxMachine(RuleBasedStateMachine):
        """The store against a dict of (consumer, id) -> time marked."""

        def __init__(self) -> None:
            super().__init__()
            self.inbox = make_storage(Codec()).inbox
            self.model: dict[tuple[str, str], float] = {}

        @rule(consumer=_CONSUMERS, message_id=_IDS, at=st.integers(0, 20))
        def mark(self, consumer: str, message_id: str, at: int) -> None:
            new = (consumer, message_id) not in self.model
            self.model.setdefault((consumer, message_id), float(at))
            assert new == self.inbox.mark(consumer, message_id, float(at))

        @rule(consumer=_CONSUMERS, message_ids=st.lists(_IDS, max_size=4), at=st.integers(0, 20))
        def mark_many(self, consumer: str, message_ids: list[str], at: int) -> None:
            new = {m for m in message_ids if (consumer, m) not in self.model}
            for m in message_ids:
                self.model.setdefault((consumer, m), float(at))
            assert len(new) == self.inbox.mark_many(consumer, message_ids, float(at))

        @rule(before=st.integers(0, 25), consumer=st.none() | _CONSUMERS)
        def purge(self, before: int, consumer: str | None) -> None:
            gone = [
                k
                for k, at in self.model.items()
                if at < before and (consumer is None or k[0] == consumer)
            ]
            for k in gone:
                del self.model[k]
            assert len(gone) == self.inbox.purge(float(before), consumer)

        @invariant()
        def agrees(self) -> None:
            assert len(self.model) == self.inbox.count()
            for consumer in ("a", "b"):
                assert sum(1 for k in self.model if k[0] == consumer) == self.inbox.count(consumer)
                marked = {m for c, m in self.model if c == consumer}
                assert marked == self.inbox.handled(consumer, ["m1", "m2", "m3", "m4"])
                for message_id in ("m1", "m2", "m3"):
                    assert ((consumer, message_id) in self.model) == self.inbox.contains(
                        consumer, message_id
                    )

    return InboxMachine
