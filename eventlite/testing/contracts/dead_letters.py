"""The :class:`~eventlite.store.dead_letters.DeadLetterStore` contract: every backend's
dead-letter store passes these tests (see :mod:`eventlite.testing.contracts`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ...clock import to_datetime
from ...codec import Codec
from ...exceptions import StorageError
from ...store.dead_letters import (
    MAX_ERROR_MESSAGE,
    MAX_TRACEBACK,
    DeadLetterNotFound,
    DeadLetterStatus,
    DeadLetterStore,
    Failure,
)
from ...store.storage import Storage
from . import StorageFactory

__all__ = ["DeadLetterStoreContract"]

DEAD = DeadLetterStatus.DEAD
PARKED = DeadLetterStatus.PARKED
RETRYING = DeadLetterStatus.RETRYING

T0 = 1_700_000_000.0
"""The contract's "now" (epoch seconds); tests move it by hand."""


def failure(text: str = "card declined") -> Failure:
    """The failure of an exception raised with ``text``, traceback included."""
    try:
        raise RuntimeError(text)
    except RuntimeError as exc:
        return Failure.of(exc)


class DeadLetterStoreContract:
    """The dead-letter store contract, as pytest tests over a ``make_storage`` fixture."""

    state_machine_examples = 40
    """Examples of the state machine test (raise it for a soak run)."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Iterator[Storage]:
        """A new, empty storage."""
        storage = make_storage(Codec())
        yield storage
        storage.close()

    @pytest.fixture
    def store(self, storage: Storage) -> DeadLetterStore:
        """Its dead-letter store."""
        return storage.dead_letters

    @staticmethod
    def add(store: DeadLetterStore, key: str | None, *, source: str = "s", n: int = 0) -> Any:
        """A dead entry of ``key`` that failed once at ``T0 + n``."""
        return store.add(
            source,
            f'{{"n": {n}}}',
            key=key,
            failure=failure(f"failure {n}"),
            attempts=1,
            first_failed_at=T0 + n,
            now=T0 + n,
        )

    # -- what is kept -------------------------------------------------------------------

    def test_add_keeps_every_field(self, store: DeadLetterStore) -> None:
        """add returns the entry as stored: get gives the same; every field is kept, the
        creation and last failure dated ``now``."""
        added = store.add(
            "billing",
            '{"type": "Paid"}',
            key="order-1",
            failure=failure(),
            attempts=3,
            first_failed_at=T0 - 30,
            now=T0,
            type_name="Paid",
            message_id="m-1",
            position=41,
            group="g",
        )
        assert added == store.get(added.id)
        assert (
            "billing",
            "order-1",
            DEAD,
            '{"type": "Paid"}',
            "Paid",
            "m-1",
            41,
            "RuntimeError",
            "card declined",
            3,
            to_datetime(T0 - 30),
            to_datetime(T0),
            to_datetime(T0),
            "g",
        ) == (
            added.source,
            added.key,
            added.status,
            added.message,
            added.type_name,
            added.message_id,
            added.position,
            added.error_type,
            added.error_message,
            added.attempts,
            added.first_failed_at,
            added.last_failed_at,
            added.created_at,
            added.group,
        )
        assert added.traceback is not None and "raise RuntimeError(text)" in added.traceback

    def test_ids_increase_and_are_never_reused(self, store: DeadLetterStore) -> None:
        """Ids grow in the order entries are added, and a deleted entry's id is not handed
        out again."""
        first = self.add(store, None)
        second = self.add(store, None)
        store.discard(second.id)
        third = self.add(store, None)
        assert first.id < second.id < third.id

    def test_unknown_id_raises_not_found(self, store: DeadLetterStore) -> None:
        """Every operation on an id that is not there raises DeadLetterNotFound naming it."""
        for call in (store.get, store.retry, store.resolve, store.discard):
            with pytest.raises(DeadLetterNotFound) as info:
                call(404)
            assert 404 == info.value.id
        with pytest.raises(DeadLetterNotFound):
            store.fail_again(404, failure(), now=T0)

    def test_any_text_is_kept_safely(self, store: DeadLetterStore) -> None:
        """Lone surrogates and NUL characters in any text, bytes that are not UTF-8 and huge
        error texts never make a write fail: names and keys come back escaped (and are
        found by the same text), a message with surrogates as its bytes, bytes and valid
        text as given, error texts escaped and bounded."""
        weird = "caf\udcc3\udca9\x00.txt"
        try:
            raise OSError(f"cannot open {weird}" + "!" * (3 * MAX_ERROR_MESSAGE))
        except OSError as exc:
            broken = Failure.of(exc)
        added = store.add(
            weird,
            '{"name": "' + weird + '"}',
            key=weird,
            failure=broken,
            attempts=1,
            first_failed_at=T0,
            now=T0,
            type_name=weird,
            message_id=weird,
            group=weird,
        )
        escaped = "caf\\udcc3\\udca9\\x00.txt"
        assert (escaped, escaped, escaped, escaped, escaped) == (
            added.source,
            added.key,
            added.type_name,
            added.message_id,
            added.group,
        )
        assert b'{"name": "caf\xc3\xa9\x00.txt"}' == added.message
        assert added.error_message is not None and added.traceback is not None
        assert added.error_message.startswith(f"cannot open {escaped}!!!")
        assert "characters cut" in added.error_message
        assert len(added.error_message) < MAX_ERROR_MESSAGE + 100
        assert len(added.traceback) < MAX_TRACEBACK + 100
        assert added.traceback.rstrip().endswith("!")  # the tail names the exception
        raw = b"\xff\xfe not UTF-8"
        nul = "text with a \x00 NUL"
        kept = [
            store.add("s", m, key=None, failure=failure(), attempts=1, first_failed_at=T0, now=T0)
            for m in (raw, nul)
        ]
        assert [raw, nul] == [store.get(k.id).message for k in kept]
        assert added == store.get(added.id)
        assert [added] == store.list(weird)
        assert True is store.is_blocked(weird, weird)
        assert {escaped: 1, "s": 2} == store.sources()

    def test_failure_of_an_exception_whose_str_raises(self) -> None:
        """A Failure is made from any exception, even one whose ``__str__`` raises."""

        class Unprintable(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no str for you")

        made = Failure.of(Unprintable())
        assert "Unprintable" in made.error_type
        assert "str() of the" in made.error_message

    # -- lines --------------------------------------------------------------------------

    def test_park_waits_behind_a_dead_entry_of_its_line(self, store: DeadLetterStore) -> None:
        """A parked entry is ``parked`` behind a dead entry of its source and key,
        ``retrying`` when its line has none; is_blocked says whether a line has entries,
        never for key None."""
        dead = self.add(store, "K")
        parked = store.park("s", "2", key="K", now=T0)
        alone = store.park("s", "3", key="M", now=T0)
        assert (PARKED, RETRYING) == (parked.status, alone.status)
        assert (True, True, False, False, False) == (
            store.is_blocked("s", "K"),
            store.is_blocked("s", "M"),
            store.is_blocked("s", "L"),
            store.is_blocked("other", "K"),
            store.is_blocked("s", None),
        )
        assert (0, None, None) == (parked.attempts, parked.error_type, parked.first_failed_at)
        assert dead.id < parked.id

    def test_retry_releases_the_line_up_to_the_next_dead_entry(
        self, store: DeadLetterStore
    ) -> None:
        """retry of the first dead entry returns it and the parked ones behind it, in
        order, now retrying; a later dead entry and what is behind it stay as they were."""
        a = self.add(store, "K", n=1)
        b = store.park("s", "2", key="K", now=T0)
        c = self.add(store, "K", n=3)
        d = store.park("s", "4", key="K", now=T0)
        assert [(a.id, RETRYING), (b.id, RETRYING)] == [(e.id, e.status) for e in store.retry(a.id)]
        assert [DEAD, PARKED] == [store.get(c.id).status, store.get(d.id).status]
        assert [] == store.retry(a.id)

    def test_retry_behind_an_earlier_dead_entry_stays_parked(self, store: DeadLetterStore) -> None:
        """A dead entry with an earlier dead entry of its line cannot overtake it: retry
        parks it and returns []; retrying the first releases both."""
        a = self.add(store, "K", n=1)
        b = self.add(store, "K", n=2)
        assert [] == store.retry(b.id)
        assert PARKED == store.get(b.id).status
        assert [a.id, b.id] == [e.id for e in store.retry(a.id)]

    def test_an_entry_without_a_key_is_a_line_of_its_own(self, store: DeadLetterStore) -> None:
        """retry of an entry with key None releases only it; others stay dead."""
        a = self.add(store, None, n=1)
        b = self.add(store, None, n=2)
        assert [a.id] == [e.id for e in store.retry(a.id)]
        assert DEAD == store.get(b.id).status

    def test_claim_retries_lists_without_changing(self, store: DeadLetterStore) -> None:
        """claim_retries lists the retrying entries of a source, oldest first, up to
        ``limit``, and changes nothing."""
        ids = [self.add(store, f"K{n}", n=n).id for n in range(3)]
        self.add(store, "K", source="other")
        assert 4 == store.retry_all("s") + store.retry_all("other")
        assert 0 == store.retry_all("s")
        assert ids[:2] == [e.id for e in store.claim_retries("s", limit=2)]
        assert ids == [e.id for e in store.claim_retries("s", limit=10)]

    def test_resolve_and_discard_release_the_line(self, store: DeadLetterStore) -> None:
        """Deleting the dead head of a line (resolve or discard) makes the parked entries
        behind it retrying, up to the next dead one; discard returns the entry."""
        head = self.add(store, "K", n=1)
        behind = store.park("s", "2", key="K", now=T0)
        second = self.add(store, "K", n=3)
        last = store.park("s", "4", key="K", now=T0)
        assert head == store.discard(head.id)
        assert [RETRYING, DEAD, PARKED] == [
            store.get(i).status for i in (behind.id, second.id, last.id)
        ]
        store.resolve(second.id)
        assert RETRYING == store.get(last.id).status

    def test_fail_again_counts_and_parks_the_line_again(self, store: DeadLetterStore) -> None:
        """fail_again makes the entry dead with one more attempt and the new failure, keeps
        its first failure time (now for a parked one), and parks the retrying entries
        behind it again."""
        head = self.add(store, "K", n=1)
        behind = store.park("s", "2", key="K", now=T0)
        store.retry(head.id)
        again = store.fail_again(head.id, failure("second"), now=T0 + 60)
        assert (DEAD, 2, "second", to_datetime(T0 + 1), to_datetime(T0 + 60)) == (
            again.status,
            again.attempts,
            again.error_message,
            again.first_failed_at,
            again.last_failed_at,
        )
        assert PARKED == store.get(behind.id).status
        store.retry(head.id)
        parked_failed = store.fail_again(behind.id, failure("own"), now=T0 + 90)
        assert (1, to_datetime(T0 + 90)) == (parked_failed.attempts, parked_failed.first_failed_at)

    def test_list_count_and_sources_filter(self, store: DeadLetterStore) -> None:
        """list gives entries in id order by source and status up to a limit; count and
        sources count the same way."""
        for n in range(4):
            self.add(store, f"K{n}", n=n)
        store.park("s", "p", key="K0", now=T0)
        self.add(store, None, source="queue:jobs")
        assert 6 == len(store.list())
        assert [0, 1] == [json.loads(e.message)["n"] for e in store.list("s", limit=2)]
        assert (6, 5, 4, 1, 0) == (
            store.count(),
            store.count("s"),
            store.count("s", status=DEAD),
            store.count("s", status=PARKED),
            store.count("s", status=RETRYING),
        )
        assert {"queue:jobs": 1, "s": 5} == store.sources()

    def test_purge(self, store: DeadLetterStore) -> None:
        """purge drops entries of a source or all; with failed_before only dead and retrying
        entries failed at or before it, never a parked one by its own age: those behind a
        purged head are released, those behind a kept dead entry stay."""
        old = self.add(store, "K", n=0)
        behind_old = store.park("s", "1", key="K", now=T0 + 1)
        kept = self.add(store, "L", n=100)
        behind_kept = store.park("s", "2", key="L", now=T0 + 1)
        self.add(store, "K", source="other", n=0)
        assert 1 == store.purge("s", failed_before=T0 + 50)
        with pytest.raises(DeadLetterNotFound):
            store.get(old.id)
        assert [(behind_old.id, RETRYING), (kept.id, DEAD), (behind_kept.id, PARKED)] == [
            (e.id, e.status) for e in store.list("s")
        ]
        assert 0 == store.purge("nobody")
        assert 3 == store.purge("s")
        assert 1 == store.purge()
        assert 0 == store.count()

    def test_find_by_correlation(self, store: DeadLetterStore) -> None:
        """find_by_correlation gives the entries whose message is an envelope of one of the
        flows, in id order, at most ``limit``; messages that are not JSON, not an object,
        or of another flow (even naming the id elsewhere) are not found."""

        def envelope(flow: str, **more: Any) -> str:
            return json.dumps({"type": "Paid", "correlation_id": flow, **more})

        def put(message: str | bytes, key: str | None = None) -> int:
            return store.park("s", message, key=key or "k", now=T0).id

        a1 = put(envelope("flow-a"))
        put(envelope("flow-b", causation_id="flow-a"))
        put("not json at all flow-a")
        put(json.dumps(["flow-a"]))
        b2 = put(envelope("flow-c").encode(), key="k2")
        a2 = put(envelope("flow-a", id="m-2"), key="k3")
        assert [a1, a2] == [d.id for d in store.find_by_correlation(["flow-a"])]
        assert [a1, b2, a2] == [d.id for d in store.find_by_correlation({"flow-a", "flow-c"})]
        assert [a1] == [d.id for d in store.find_by_correlation(["flow-a"], limit=1)]
        assert [] == store.find_by_correlation(["nope"])
        assert [] == store.find_by_correlation([])
        with pytest.raises(TypeError):
            store.find_by_correlation("flow-a")

    def test_writes_join_the_callers_transaction(
        self, storage: Storage, store: DeadLetterStore
    ) -> None:
        """Writes inside storage.transaction() are seen by reads in it, and roll back with
        it."""
        with pytest.raises(RuntimeError), storage.transaction():
            added = self.add(store, "K")
            store.park("s", "x", key="K", now=T0)
            assert (True, 2) == (store.is_blocked("s", "K"), store.count())
            assert added == store.get(added.id)
            raise RuntimeError("the checkpoint write failed")
        assert (False, 0) == (store.is_blocked("s", "K"), store.count())
        with storage.transaction():
            self.add(store, "K")
        assert 1 == store.count()

    def test_closed_storage_raises_storage_error(
        self, storage: Storage, store: DeadLetterStore
    ) -> None:
        """After the storage is closed, writes and reads raise StorageError."""
        storage.close()
        with pytest.raises(StorageError):
            self.add(store, "K")
        with pytest.raises(StorageError):
            store.count()

    # -- every line keeps its shape, under any sequence of operations ---------------------

    def test_lines_keep_their_shape(self, make_storage: StorageFactory) -> None:
        """Random adds, parks, retries, failures, resolutions, discards and purges agree
        with a model: a list of [id, key, status] in id order, each line reshaped after
        every change."""
        run_state_machine_as_test(
            _lines_machine(make_storage),
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )


_KEYS = ("K", "L")


def _lines_machine(make_storage: StorageFactory) -> type[RuleBasedStateMachine]:
    class DeadLetterLines(RuleBasedStateMachine):
        """The store against a list of [id, key, status] of one source."""

        def __init__(self) -> None:
            super().__init__()
            self.storage = make_storage(Codec())
            self.store = self.storage.dead_letters
            self.model: list[list[Any]] = []

        def teardown(self) -> None:
            self.storage.close()

        def _reshape(self, key: str | None) -> None:
            if key is None:
                return
            seen_dead = False
            for entry in self.model:
                if entry[1] != key:
                    continue
                if entry[2] == DEAD:
                    seen_dead = True
                elif seen_dead:
                    entry[2] = PARKED
                else:
                    entry[2] = RETRYING

        def _pick(self, index: int) -> list[Any]:
            return self.model[index % len(self.model)]

        @rule(key=st.sampled_from((*_KEYS, None)))
        def add(self, key: str | None) -> None:
            entry = DeadLetterStoreContract.add(self.store, key)
            self.model.append([entry.id, key, DEAD])
            assert DEAD == entry.status

        @rule(key=st.sampled_from(_KEYS))
        def park(self, key: str) -> None:
            entry = self.store.park("s", "x", key=key, now=T0)
            self.model.append([entry.id, key, PARKED])
            self._reshape(key)
            assert self.model[-1][2] == entry.status

        @precondition(lambda self: self.model)
        @rule(index=st.integers(min_value=0))
        def retry(self, index: int) -> None:
            entry = self._pick(index)
            before = {id(e): e[2] for e in self.model}
            entry[2] = RETRYING
            self._reshape(entry[1])
            expected = [e[0] for e in self.model if e[2] == RETRYING and before[id(e)] != RETRYING]
            assert expected == [e.id for e in self.store.retry(entry[0])]

        @precondition(lambda self: self.model)
        @rule(index=st.integers(min_value=0))
        def fail_again(self, index: int) -> None:
            entry = self._pick(index)
            entry[2] = DEAD
            self._reshape(entry[1])
            self.store.fail_again(entry[0], failure(), now=T0)

        @precondition(lambda self: self.model)
        @rule(index=st.integers(min_value=0), discard=st.booleans())
        def remove(self, index: int, discard: bool) -> None:
            entry = self._pick(index)
            self.model.remove(entry)
            self._reshape(entry[1])
            if discard:
                self.store.discard(entry[0])
            else:
                self.store.resolve(entry[0])

        @rule()
        def purge_all(self) -> None:
            assert len(self.model) == self.store.purge("s")
            self.model.clear()

        @invariant()
        def same_as_model(self) -> None:
            actual = [[e.id, e.key, e.status] for e in self.store.list("s")]
            assert self.model == actual
            for key in _KEYS:
                assert any(e[1] == key for e in self.model) == self.store.is_blocked("s", key)
            assert [e[0] for e in self.model if e[2] == RETRYING] == [
                e.id for e in self.store.claim_retries("s", limit=1000)
            ]

    return DeadLetterLines
