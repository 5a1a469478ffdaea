"""The lease store contract: every backend's :class:`~eventlite.store.leases.LeaseStore`
passes these tests (see :mod:`eventlite.testing.contracts` for how to run them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ...clock import FakeClock
from ...codec import Codec
from ...store.leases import Lease, LeaseLost, LeaseStore
from ...store.storage import Storage
from . import StorageFactory

__all__ = ["LeaseStoreContract"]


class LeaseStoreContract:
    """The tests every :class:`~eventlite.store.leases.LeaseStore` must pass, through a
    ``make_storage`` fixture (see :mod:`eventlite.testing.contracts`)."""

    state_machine_examples = 20
    """How many random programs the state machine test runs."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        """The time every lease of the test is read against."""
        return FakeClock()

    @pytest.fixture
    def storage(self, make_storage: StorageFactory) -> Iterator[Storage]:
        """A new, empty storage, closed after the test."""
        storage = make_storage(Codec())
        try:
            yield storage
        finally:
            storage.close()

    @pytest.fixture
    def leases(self, storage: Storage, clock: FakeClock) -> LeaseStore:
        """The storage's lease store, on the fake clock."""
        store = storage.leases
        store.clock = clock
        return store

    def test_first_owner_gets_generation_one(self, leases: LeaseStore, clock: FakeClock) -> None:
        """A lease never held goes to the first owner at generation 1, expiring ttl later."""
        lease = leases.acquire("relay:a", "p1", 10)
        assert Lease("relay:a", "p1", 1, clock.now() + 10) == lease
        assert lease == leases.holder("relay:a")
        assert [lease] == leases.leases()

    def test_held_lease_is_refused_until_it_expires(
        self, leases: LeaseStore, clock: FakeClock
    ) -> None:
        """Another owner gets None while the holder's expiry has not passed, and the lease
        at the next generation once it has; the old tenure is then lost."""
        leases.acquire("a", "p1", 10)
        clock.advance(9.5)
        assert leases.acquire("a", "p2", 10) is None
        clock.advance(0.5)
        taken = leases.acquire("a", "p2", 10)
        assert Lease("a", "p2", 2, clock.now() + 10) == taken
        with pytest.raises(LeaseLost) as info:
            leases.renew("a", "p1", 1, 10)
        assert ("a", "p1", 1, taken) == (
            info.value.name,
            info.value.owner,
            info.value.generation,
            info.value.holder,
        )
        with pytest.raises(LeaseLost):
            leases.check("a", "p1", 1)
        leases.check("a", "p2", 2)

    def test_owner_acquiring_again_extends_its_tenure(
        self, leases: LeaseStore, clock: FakeClock
    ) -> None:
        """The holder acquiring its own lease keeps the generation and gets a new expiry,
        even past the old one when nobody took over."""
        leases.acquire("a", "p1", 10)
        clock.advance(30)
        assert Lease("a", "p1", 1, clock.now() + 5) == leases.acquire("a", "p1", 5)

    def test_expired_tenure_holds_until_taken_over(
        self, leases: LeaseStore, clock: FakeClock
    ) -> None:
        """Past its expiry a tenure can still renew and pass its check while nobody took
        the lease over."""
        leases.acquire("a", "p1", 10)
        clock.advance(60)
        leases.check("a", "p1", 1)
        assert Lease("a", "p1", 1, clock.now() + 10) == leases.renew("a", "p1", 1, 10)

    def test_release_frees_the_lease_at_once(self, leases: LeaseStore, clock: FakeClock) -> None:
        """A released lease has no holder, goes to the next owner at once at the next
        generation, and a second release of the old tenure changes nothing."""
        leases.acquire("a", "p1", 10)
        assert leases.release("a", "p1", 1)
        assert leases.holder("a") is None
        assert [] == leases.leases()
        assert not leases.release("a", "p1", 1)
        assert Lease("a", "p2", 2, clock.now() + 10) == leases.acquire("a", "p2", 10)
        with pytest.raises(LeaseLost) as info:
            leases.check("a", "p1", 1)
        assert "'p2' holds it now, generation 2" in str(info.value)

    def test_leases_lists_held_ones_by_prefix(self, leases: LeaseStore) -> None:
        """leases(prefix) lists the held leases whose names start with prefix, by name."""
        for name in ["relay:b", "projection:x", "relay:a", "relay_z"]:
            leases.acquire(name, "p1", 10)
        leases.release("relay_z", "p1", 1)
        assert ["relay:a", "relay:b"] == [lease.name for lease in leases.leases("relay:")]
        assert ["projection:x", "relay:a", "relay:b"] == [lease.name for lease in leases.leases()]

    def test_check_fails_the_transaction_it_guards(
        self, storage: Storage, leases: LeaseStore, clock: FakeClock
    ) -> None:
        """check inside a transaction raises LeaseLost once the lease was taken over, and
        the transaction's other writes roll back with it."""
        leases.acquire("a", "p1", 10)
        clock.advance(10)
        leases.acquire("a", "p2", 10)
        with pytest.raises(LeaseLost), storage.transaction():
            leases.acquire("b", "p1", 10)
            leases.check("a", "p1", 1)
        assert leases.holder("b") is None

    @pytest.mark.parametrize(
        ("args", "error"),
        [
            (("", "p", 1), ValueError),
            (("a", "", 1), ValueError),
            (("a", "p", 0), ValueError),
            (("a", "p", -1), ValueError),
            (("a", "p", float("nan")), ValueError),
            (("a", "p", float("inf")), ValueError),
            ((3, "p", 1), TypeError),
        ],
    )
    def test_invalid_arguments(
        self, leases: LeaseStore, args: tuple[Any, ...], error: type
    ) -> None:
        """Empty names or owners and a ttl that is not a positive number are refused."""
        with pytest.raises(error):
            leases.acquire(*args)
        assert [] == leases.leases()

    def test_state_machine(self, make_storage: StorageFactory) -> None:
        """Random acquisitions, renewals, releases, checks and clock moves by three owners
        over two leases agree with a plain dict model."""
        run_state_machine_as_test(
            _machine(make_storage),
            settings=settings(
                max_examples=self.state_machine_examples,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )


_NAMES = st.sampled_from(["a", "b"])
_OWNERS = st.sampled_from(["p1", "p2", "p3"])
_TTLS = st.sampled_from([1.0, 5.0, 10.0])


def _machine(make_storage: StorageFactory) -> type[RuleBasedStateMachine]:
    class LeaseMachine(RuleBasedStateMachine):
        """The store against a dict of name -> (owner or None, generation, expiry)."""

        def __init__(self) -> None:
            super().__init__()
            self.clock = FakeClock()
            self.storage = make_storage(Codec())
            self.store = self.storage.leases
            self.store.clock = self.clock
            self.model: dict[str, tuple[str | None, int, float]] = {}

        def teardown(self) -> None:
            self.storage.close()

        def _holds(self, name: str, owner: str, generation: int) -> bool:
            row = self.model.get(name)
            return row is not None and row[0] == owner and row[1] == generation

        def _generation(self, name: str, owner: str, pick: int) -> int:
            """The owner's generation (if it holds the lease) or a stale/future one."""
            row = self.model.get(name)
            current = row[1] if row is not None else 1
            return max(1, current + pick)

        @rule(name=_NAMES, owner=_OWNERS, ttl=_TTLS)
        def acquire(self, name: str, owner: str, ttl: float) -> None:
            now = self.clock.now()
            row = self.model.get(name)
            got = self.store.acquire(name, owner, ttl)
            if row is None:
                expected: Lease | None = Lease(name, owner, 1, now + ttl)
            elif row[0] == owner:
                expected = Lease(name, owner, row[1], now + ttl)
            elif row[0] is None or row[2] <= now:
                expected = Lease(name, owner, row[1] + 1, now + ttl)
            else:
                expected = None
            assert expected == got
            if expected is not None:
                self.model[name] = (owner, expected.generation, expected.expires_at)

        @rule(name=_NAMES, owner=_OWNERS, pick=st.sampled_from([0, 0, -1, 1]), ttl=_TTLS)
        def renew(self, name: str, owner: str, pick: int, ttl: float) -> None:
            generation = self._generation(name, owner, pick)
            now = self.clock.now()
            if self._holds(name, owner, generation):
                assert Lease(name, owner, generation, now + ttl) == self.store.renew(
                    name, owner, generation, ttl
                )
                self.model[name] = (owner, generation, now + ttl)
            else:
                with pytest.raises(LeaseLost):
                    self.store.renew(name, owner, generation, ttl)

        @rule(name=_NAMES, owner=_OWNERS, pick=st.sampled_from([0, 0, -1]))
        def release(self, name: str, owner: str, pick: int) -> None:
            generation = self._generation(name, owner, pick)
            held = self._holds(name, owner, generation)
            assert held == self.store.release(name, owner, generation)
            if held:
                self.model[name] = (None, generation, 0.0)

        @rule(name=_NAMES, owner=_OWNERS, pick=st.sampled_from([0, -1]))
        def check(self, name: str, owner: str, pick: int) -> None:
            generation = self._generation(name, owner, pick)
            if self._holds(name, owner, generation):
                self.store.check(name, owner, generation)
            else:
                with pytest.raises(LeaseLost):
                    self.store.check(name, owner, generation)

        @rule(seconds=st.sampled_from([0.5, 1.0, 4.0, 11.0]))
        def advance(self, seconds: float) -> None:
            self.clock.advance(seconds)

        @invariant()
        def holders_match(self) -> None:
            held = []
            for name in ("a", "b"):
                row = self.model.get(name)
                expected = None if row is None or row[0] is None else Lease(name, *row)  # type: ignore[arg-type]
                assert expected == self.store.holder(name)
                if expected is not None:
                    held.append(expected)
            assert held == self.store.leases()

    return LeaseMachine
