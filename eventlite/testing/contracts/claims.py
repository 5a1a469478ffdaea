"""The claim store contract: every backend's :class:`~eventlite.store.claims.ClaimStore`
passes these tests (see :mod:`eventlite.testing.contracts` for how to run them)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ...codec import Codec
from ...store.claims import AlreadyClaimed, ClaimStore
from ...store.storage import Storage
from . import StorageFactory

__all__ = ["ClaimStoreContract"]


class ClaimStoreContract:
    """The tests every :class:`~eventlite.store.claims.ClaimStore` must pass, through a
    ``make_storage`` fixture (see :mod:`eventlite.testing.contracts`)."""

    state_machine_examples = 25
    """How many random programs the state machine test runs."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Iterator[Storage]:
        """A new, empty storage, closed after the test."""
        storage = make_storage(Codec())
        try:
            yield storage
        finally:
            storage.close()

    @pytest.fixture
    def claims(self, storage: Storage) -> ClaimStore:
        """The storage's claim store."""
        return storage.claims

    def test_a_free_value_is_claimed_once(self, claims: ClaimStore) -> None:
        """The first owner gets a free value; claiming it again is a no-op; another owner
        is refused, naming scope, value and holder."""
        claims.claim("batch-ref", "B-1", "product-a")
        claims.claim("batch-ref", "B-1", "product-a")
        with pytest.raises(AlreadyClaimed) as info:
            claims.claim("batch-ref", "B-1", "product-b")
        assert ("batch-ref", "B-1", "product-a") == (
            info.value.scope,
            info.value.value,
            info.value.owner,
        )
        assert "product-a" == claims.holder("batch-ref", "B-1")
        assert ["B-1"] == claims.claims_of("batch-ref", "product-a")
        assert [] == claims.claims_of("batch-ref", "product-b")

    def test_scopes_are_separate(self, claims: ClaimStore) -> None:
        """The same value in two scopes is two claims."""
        claims.claim("email", "x@y", "u1")
        claims.claim("nickname", "x@y", "u2")
        assert ("u1", "u2") == (claims.holder("email", "x@y"), claims.holder("nickname", "x@y"))

    def test_release_frees_only_for_the_holder(self, claims: ClaimStore) -> None:
        """release by another owner does nothing; by the holder it frees the value."""
        claims.claim("s", "v", "a")
        assert False is claims.release("s", "v", "b")
        assert True is claims.release("s", "v", "a")
        assert None is claims.holder("s", "v")
        claims.claim("s", "v", "b")
        assert "b" == claims.holder("s", "v")

    def test_a_claim_rolls_back_with_its_transaction(
        self, storage: Storage, claims: ClaimStore
    ) -> None:
        """A claim made in a transaction that rolls back was never made."""
        with pytest.raises(RuntimeError), storage.transaction():
            claims.claim("s", "v", "a")
            raise RuntimeError("rolled back")
        assert None is claims.holder("s", "v")
        claims.claim("s", "v", "b")

    def test_refused_claim_leaves_the_transaction_usable(
        self, storage: Storage, claims: ClaimStore
    ) -> None:
        """A refused claim inside a transaction writes nothing and the rest commits."""
        claims.claim("s", "v", "a")
        with storage.transaction():
            with pytest.raises(AlreadyClaimed):
                claims.claim("s", "v", "b")
            claims.claim("s", "w", "b")
        assert ("a", "b") == (claims.holder("s", "v"), claims.holder("s", "w"))

    @pytest.mark.parametrize(
        ("scope", "value", "owner", "error"),
        [
            ("", "v", "o", ValueError),
            ("s", 1, "o", TypeError),
            ("s", "v", "bad\udc80", ValueError),
            ("s", "v\x00", "o", ValueError),
        ],
    )
    def test_bad_arguments_are_refused(
        self, claims: ClaimStore, scope: object, value: object, owner: object, error: type
    ) -> None:
        """Empty, non-string, unstorable text: refused before anything is written."""
        with pytest.raises(error):
            claims.claim(scope, value, owner)  # type: ignore[arg-type]

    def test_racing_owners_one_wins(self, claims: ClaimStore) -> None:
        """Eight threads claiming one value for eight owners: exactly one holds it, the
        others got AlreadyClaimed naming it."""
        barrier = threading.Barrier(8)
        outcomes: list[str] = []
        lock = threading.Lock()

        def race(owner: str) -> None:
            barrier.wait()
            try:
                claims.claim("s", "contested", owner)
                result = f"won {owner}"
            except AlreadyClaimed as exc:
                result = f"lost to {exc.owner}"
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=race, args=(f"o{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        winner = claims.holder("s", "contested")
        assert [f"won {winner}"] == [o for o in outcomes if o.startswith("won")]
        assert [f"lost to {winner}"] * 7 == [o for o in outcomes if o.startswith("lost")]

    def test_state_machine(self, make_storage: StorageFactory) -> None:
        """Random claims and releases agree with a dict model."""
        contract = self

        class Claims(RuleBasedStateMachine):
            def __init__(self) -> None:
                super().__init__()
                self.storage = make_storage(Codec())
                self.store = self.storage.claims
                self.model: dict[tuple[str, str], str] = {}

            @rule(
                scope=st.sampled_from(["a", "b"]),
                value=st.sampled_from(["1", "2", "3"]),
                owner=st.sampled_from(["x", "y"]),
            )
            def claim(self, scope: str, value: str, owner: str) -> None:
                held = self.model.get((scope, value))
                if held is None or held == owner:
                    self.store.claim(scope, value, owner)
                    self.model[scope, value] = owner
                else:
                    with pytest.raises(AlreadyClaimed):
                        self.store.claim(scope, value, owner)

            @rule(
                scope=st.sampled_from(["a", "b"]),
                value=st.sampled_from(["1", "2", "3"]),
                owner=st.sampled_from(["x", "y"]),
            )
            def release(self, scope: str, value: str, owner: str) -> None:
                expected = self.model.get((scope, value)) == owner
                assert expected == self.store.release(scope, value, owner)
                if expected:
                    del self.model[scope, value]

            @invariant()
            def agrees(self) -> None:
                for scope in ("a", "b"):
                    for owner in ("x", "y"):
                        assert sorted(
                            v for (s, v), o in self.model.items() if s == scope and o == owner
                        ) == self.store.claims_of(scope, owner)

            def teardown(self) -> None:
                self.storage.close()

        run_state_machine_as_test(
            Claims,
            settings=settings(
                max_examples=contract.state_machine_examples,
                stateful_step_count=15,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
