"""The :class:`~eventlite.store.idempotency.IdempotencyStore` contract: every backend's
idempotency-key store passes these tests (see :mod:`eventlite.testing.contracts`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ...codec import Codec
from ...store.idempotency import IdempotencyRecord, IdempotencyStore
from ...store.storage import Storage
from . import StorageFactory

__all__ = ["IdempotencyStoreContract"]

T0 = 1_700_000_000.0
"""The contract's first "now" (epoch seconds)."""
LEASE = 30.0


class IdempotencyStoreContract:
    """The idempotency-key store contract, as pytest tests over a ``make_storage`` fixture."""

    state_machine_examples = 60
    """Examples of the state machine test (raise it for a soak run)."""

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Iterator[Storage]:
        """A new, empty storage."""
        storage = make_storage(Codec())
        yield storage
        storage.close()

    @pytest.fixture
    def store(self, storage: Storage) -> IdempotencyStore:
        """Its idempotency-key store."""
        return storage.idempotency

    def test_claim_complete_and_find(self, store: IdempotencyStore) -> None:
        """A free key is claimed (a running record with its lease); a second claim gets
        that live record and changes nothing; only the owner completes it; then claims get
        the result."""
        assert (True, None) == store.claim("k", "a", now=T0, lease_until=T0 + LEASE)
        running = IdempotencyRecord("k", "a", T0, T0 + LEASE)
        assert running == store.find("k")
        assert (False, running) == store.claim("k", "b", now=T0 + 1, lease_until=T0 + 31)
        assert False is store.complete("k", "b", '"theirs"', expires_at=T0 + 100)
        assert True is store.complete("k", "a", '{"id": 7}', expires_at=T0 + 100)
        done = IdempotencyRecord("k", "a", T0, T0 + LEASE, '{"id": 7}', T0 + 100)
        assert (done, True, True) == (store.find("k"), done.done, done.live(T0 + 99))
        assert (False, done) == store.claim("k", "b", now=T0 + 99, lease_until=T0 + 129)
        assert False is store.complete("k", "a", '"again"', expires_at=T0 + 200)
        assert None is store.find("missing")

    def test_expired_records_are_replaced(self, store: IdempotencyStore) -> None:
        """A result past its expiry, and a claim past its lease (its holder died), are
        replaced by the next claim, which gets them back."""
        store.claim("done", "a", now=T0, lease_until=T0 + LEASE)
        store.complete("done", "a", "1", expires_at=T0 + 10)
        store.claim("stuck", "dead", now=T0, lease_until=T0 + LEASE)
        claimed, replaced = store.claim("done", "b", now=T0 + 10, lease_until=T0 + 40)
        assert (True, "1") == (claimed, replaced.result if replaced else None)
        claimed, replaced = store.claim("stuck", "b", now=T0 + LEASE, lease_until=T0 + 60)
        assert (True, "dead") == (claimed, replaced.owner if replaced else None)
        found = store.find("stuck")
        assert found is not None and ("b", False) == (found.owner, found.done)

    def test_release_forget_and_purge(self, store: IdempotencyStore) -> None:
        """release deletes only its owner's running claim; forget deletes any record;
        purge_expired deletes results expired at or before ``now``, nothing else."""
        store.claim("k", "a", now=T0, lease_until=T0 + LEASE)
        assert (False, True, None) == (
            store.release("k", "b"),
            store.release("k", "a"),
            store.find("k"),
        )
        for key, expires in (("x", T0 + 5), ("y", T0 + 10), ("z", T0 + 50)):
            store.claim(key, "a", now=T0, lease_until=T0 + LEASE)
            store.complete(key, "a", "null", expires_at=expires)
        store.claim("running", "a", now=T0, lease_until=T0 + 1)
        assert False is store.release("x", "a")  # done: not a running claim
        assert 2 == store.purge_expired(T0 + 10)
        assert [None, None] == [store.find("x"), store.find("y")]
        assert (True, False) == (store.forget("z"), store.forget("z"))
        assert store.find("running") is not None

    def test_writes_join_the_callers_transaction(
        self, storage: Storage, store: IdempotencyStore
    ) -> None:
        """A claim inside storage.transaction() rolls back with it."""
        with pytest.raises(RuntimeError), storage.transaction():
            store.claim("k", "a", now=T0, lease_until=T0 + LEASE)
            assert store.find("k") is not None
            raise RuntimeError("roll back")
        assert None is store.find("k")

    def test_results_of_any_text(self, store: IdempotencyStore) -> None:
        """A result is kept as given, whatever JSON text it is."""
        text = (
            '{"name": "caf\\udcc3 \\u0000", "emoji": "\U0001f600", "big": "' + "x" * 100_000 + '"}'
        )
        store.claim("k", "a", now=T0, lease_until=T0 + LEASE)
        store.complete("k", "a", text, expires_at=T0 + 10)
        found = store.find("k")
        assert found is not None and text == found.result

    def test_state_machine(self, make_storage: StorageFactory) -> None:
        """Random claims, completions, releases, forgets, purges and clock moves by two
        owners on two keys agree with a dict model."""
        run_state_machine_as_test(
            _keys_machine(make_storage),
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )


_KEYS = st.sampled_from(["k1", "k2"])
_OWNERS = st.sampled_from(["a", "b"])


def _keys_machine(make_storage: StorageFactory) -> type[RuleBasedStateMachine]:
    class IdempotencyKeys(RuleBasedStateMachine):
        """The store against a dict of key -> record."""

        def __init__(self) -> None:
            super().__init__()
            self.storage = make_storage(Codec())
            self.store = self.storage.idempotency
            self.now = T0
            self.model: dict[str, IdempotencyRecord] = {}
            self.results = 0

        def teardown(self) -> None:
            self.storage.close()

        @rule(key=_KEYS, owner=_OWNERS)
        def claim(self, key: str, owner: str) -> None:
            held = self.model.get(key)
            got = self.store.claim(key, owner, now=self.now, lease_until=self.now + LEASE)
            if held is not None and held.live(self.now):
                assert (False, held) == got
                return
            assert (True, held) == got
            self.model[key] = IdempotencyRecord(key, owner, self.now, self.now + LEASE)

        @rule(key=_KEYS, owner=_OWNERS, ttl=st.sampled_from([5.0, 60.0]))
        def complete(self, key: str, owner: str, ttl: float) -> None:
            self.results += 1
            result = f'"{self.results}"'
            held = self.model.get(key)
            mine = held is not None and held.owner == owner and not held.done
            assert mine == self.store.complete(key, owner, result, expires_at=self.now + ttl)
            if mine:
                assert held is not None
                self.model[key] = IdempotencyRecord(
                    key, owner, held.started_at, held.lease_until, result, self.now + ttl
                )

        @rule(key=_KEYS, owner=_OWNERS)
        def release(self, key: str, owner: str) -> None:
            held = self.model.get(key)
            mine = held is not None and held.owner == owner and not held.done
            assert mine == self.store.release(key, owner)
            if mine:
                del self.model[key]

        @rule(key=_KEYS)
        def forget(self, key: str) -> None:
            assert (key in self.model) == self.store.forget(key)
            self.model.pop(key, None)

        @rule()
        def purge_expired(self) -> None:
            gone = [
                k
                for k, r in self.model.items()
                if r.done and r.expires_at is not None and r.expires_at <= self.now
            ]
            assert len(gone) == self.store.purge_expired(self.now)
            for key in gone:
                del self.model[key]

        @rule(seconds=st.sampled_from([1.0, 10.0, 40.0]))
        def advance(self, seconds: float) -> None:
            self.now += seconds

        @invariant()
        def same_as_model(self) -> None:
            for key in ("k1", "k2"):
                assert self.model.get(key) == self.store.find(key)

    return IdempotencyKeys
