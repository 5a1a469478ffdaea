"""Leases: which process owns a piece of background work, for how long, and since when.

A durable subscriber, a tracking projection, a saga runner or a process manager must run
in one process at a time, even when several processes (on one machine with SQLite, on
many with PostgreSQL) share one store. Each takes a named lease before working and renews
it in the background; when its owner stops renewing, another process takes the lease over
after it expires.

A lease row holds the ``owner``, a ``generation`` and an expiry. The generation counts
takeovers: it grows by one each time the lease passes to a new owner (or to the same
owner after a release) and never goes down, so ``(owner, generation)`` names one tenure.
Work done under a tenure commits only if :meth:`LeaseStore.check` still finds that tenure
in the same transaction: a former owner that was paused (GC, SIGSTOP) past its expiry,
and whose lease was taken over meanwhile, can never commit its stale work.
"""

from __future__ import annotations

import abc

import attrs

from ..clock import Clock
from ..exceptions import StoreError

__all__ = ["Lease", "LeaseLost", "LeaseStore"]


@attrs.frozen
class Lease:
    """One tenure of a named lease."""

    name: str
    """The work it guards (``"relay:billing"``, ``"projection:orders/2"``)."""
    owner: str
    """Who holds it: an id unique to one process (and one runner in it)."""
    generation: int
    """The tenure's number: 1 for the first owner, one more at every takeover."""
    expires_at: float
    """When another owner may take it over, in seconds since the epoch (the store's
    clock)."""

    def expired(self, now: float) -> bool:
        """Whether the lease has expired at ``now`` (``expires_at <= now``)."""
        return self.expires_at <= now


class LeaseLost(StoreError):
    """A lease is no longer held by the tenure that expected it: another owner took it
    over, or it was released.

    ``name``, ``owner`` and ``generation`` are the tenure that was expected; ``holder`` is
    the current holder's lease, or None when nobody holds it.
    """

    def __init__(self, name: str, owner: str, generation: int, holder: Lease | None) -> None:
        self.name = name
        self.owner = owner
        self.generation = generation
        self.holder = holder
        now = (
            "nobody holds it now"
            if holder is None
            else f"{holder.owner!r} holds it now, generation {holder.generation}"
        )
        super().__init__(
            f"lease {name!r} is no longer held by {owner!r} at generation {generation}: {now}"
        )


class LeaseStore(abc.ABC):
    """Named leases with owner, generation and expiry. The contract every backend keeps.

    **Time.** Expiries are seconds since the epoch, read from :attr:`clock` when it is
    set, else from the backend's own clock: the database server's on PostgreSQL (one
    clock for every machine, so their skew does not matter), the system clock on SQLite
    (one machine). Tests set :attr:`clock` to a :class:`~eventlite.clock.FakeClock`.

    **Tenures.** :meth:`acquire` gives the lease to ``owner`` when nobody holds it, when
    its holder's expiry has passed, or when ``owner`` already holds it (then it only
    extends the expiry). A new tenure gets the previous generation plus one (1 for a
    lease never held); a held lease keeps its generation however long it lasts.
    :meth:`renew` extends a tenure, :meth:`release` ends it. A tenure whose expiry has
    passed still holds the lease until another owner takes it over: renewing it then
    succeeds, and so does :meth:`check`.

    **Transactions.** Every method joins the calling thread's open transaction of the
    storage, so :meth:`check` can guard the writes of the work (a checkpoint moved, an
    inbox mark) in one commit. On PostgreSQL :meth:`check` locks the lease row until that
    commit, so a takeover waits for it; on SQLite the write lock does the same.

    **Errors.** ``ttl`` must be a positive number of seconds (``ValueError``); names and
    owners non-empty strings (``ValueError``). The storage failing raises
    :class:`~eventlite.exceptions.StorageError`.
    """

    clock: Clock | None = None
    """Where expiries are read from; None: the backend's own clock (see the class doc)."""

    @abc.abstractmethod
    def acquire(self, name: str, owner: str, ttl: float) -> Lease | None:
        """Take or extend the lease for ``ttl`` seconds; None when another owner holds
        it and its expiry has not passed."""

    @abc.abstractmethod
    def renew(self, name: str, owner: str, generation: int, ttl: float) -> Lease:
        """Extend the tenure to ``ttl`` seconds from now; raises :class:`LeaseLost`
        unless ``owner`` still holds the lease at ``generation``."""

    @abc.abstractmethod
    def release(self, name: str, owner: str, generation: int) -> bool:
        """End the tenure so another owner can take the lease at once; False (and
        nothing changed) when ``owner`` no longer holds it at ``generation``."""

    @abc.abstractmethod
    def holder(self, name: str) -> Lease | None:
        """The current tenure (expired or not), or None when nobody holds the lease."""

    @abc.abstractmethod
    def leases(self, prefix: str = "") -> list[Lease]:
        """Every held lease whose name starts with ``prefix``, by name."""

    @abc.abstractmethod
    def check(self, name: str, owner: str, generation: int) -> None:
        """Raise :class:`LeaseLost` unless ``owner`` still holds the lease at
        ``generation``. Call it inside the transaction whose writes the tenure guards."""


def validate(name: object, owner: object, ttl: float | None = None) -> None:
    """``ValueError`` (or ``TypeError``) for arguments every :class:`LeaseStore` refuses."""
    for label, value in (("name", name), ("owner", owner)):
        if not isinstance(value, str):
            raise TypeError(f"lease {label} must be a str, got {type(value).__name__}")
        if not value:
            raise ValueError(f"lease {label} must not be empty")
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if ttl == float("inf"):
            raise ValueError("ttl must be finite")
