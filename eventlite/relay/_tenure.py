"""A durable subscriber's tenure: this process's hold on the subscriber's lease, so that
one process at a time delivers to it (see ``docs/scaling.md``)."""

from __future__ import annotations

import logging
import os
import socket
import time

from ..store.leases import Lease, LeaseLost, LeaseStore

__all__ = ["Tenure", "dead_here", "lease_name", "live_owners"]

log = logging.getLogger("eventlite.relay")

live_owners: set[str] = set()
"""The owner names of this process's relays that are not closed: a lease held by another
owner of this process (a relay closed while a handler hung, say) is taken over at once."""


def lease_name(subscriber: str) -> str:
    """The lease a durable subscriber is delivered under."""
    return f"subscriber:{subscriber}"


def dead_here(owner: str) -> bool:
    """Whether ``owner`` (``host:pid:tag``, as relays name themselves) is a process of this
    machine that no longer runs. Unknown shapes, other hosts and live processes: False (the
    lease then expires in its own time)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in live_owners
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's, say)
    return False


class Tenure:
    """Takes, renews and gives back one subscriber's lease for ``owner``.

    :meth:`hold` is called before every pass: it renews the lease once a third of its
    time has gone by, or takes it when nobody holds it (or its holder let it expire).
    :meth:`check` runs in the transaction that moves the subscriber's checkpoint, so a
    former owner (paused past its lease: a long GC, SIGSTOP) can never commit after
    another took over: its transaction fails with :class:`LeaseLost` and rolls back.
    """

    __slots__ = ("fresh", "lease", "leases", "name", "owner", "renew_at", "retry_at", "ttl")

    def __init__(self, leases: LeaseStore, subscriber: str, owner: str, ttl: float) -> None:
        self.leases = leases
        self.name = lease_name(subscriber)
        self.owner = owner
        self.ttl = ttl
        self.lease: Lease | None = None
        self.renew_at = 0.0
        # while another process holds the lease: when to try taking it again (standing by
        # costs one write per try, so not on every poll)
        self.retry_at = 0.0
        # True when the lease was just taken (first time, or over from another owner):
        # what the storage says must be read again before delivering
        self.fresh = False

    def hold(self) -> bool:
        """Whether this process holds the lease now (taking or renewing it as needed)."""
        now = time.monotonic()
        lease = self.lease
        if lease is not None and now < self.renew_at:
            return True
        if lease is not None:
            try:
                self.lease = self.leases.renew(self.name, self.owner, lease.generation, self.ttl)
                self.renew_at = now + self.ttl / 3
                return True
            except LeaseLost as lost:
                self.lease = None
                log.warning(
                    "durable subscriber %s: lost its lease (now %s); standing by",
                    self.name,
                    "held by " + lost.holder.owner if lost.holder else "free",
                )
        if self.lease is None and now < self.retry_at:
            return False
        got = self.leases.acquire(self.name, self.owner, self.ttl)
        holder = None
        if got is None:
            holder = self.leases.holder(self.name)
            if holder is not None and dead_here(holder.owner):
                # its holder was a process of this machine that is gone (killed, crashed):
                # a restart takes over at once instead of waiting for the expiry
                self.leases.release(self.name, holder.owner, holder.generation)
                got = self.leases.acquire(self.name, self.owner, self.ttl)
        if got is None:
            if self.retry_at == 0.0:  # said once, when it first stands by
                log.info(
                    "durable subscriber %s: its lease is held by %s; standing by (another "
                    "process, or an App of this one that was not closed)",
                    self.name,
                    holder.owner if holder is not None else "another owner",
                )
            self.retry_at = now + min(self.ttl / 6, 1.0)
            return False
        if lease is None or got.generation != lease.generation:
            self.fresh = True
            if lease is None and got.generation > 1:
                log.info(
                    "durable subscriber %s: took the lease over (generation %d)",
                    self.name,
                    got.generation,
                )
        self.lease = got
        self.renew_at = now + self.ttl / 3
        self.retry_at = 0.0
        return True

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless this process holds the lease (in the caller's
        transaction: on PostgreSQL the lease row stays locked until its commit)."""
        lease = self.lease
        if lease is None:
            raise LeaseLost(self.name, self.owner, 0, self.leases.holder(self.name))
        self.leases.check(self.name, self.owner, lease.generation)

    def drop(self) -> None:
        """Forget the lease (it was lost): the next :meth:`hold` tries to take it again."""
        self.lease = None

    def release(self) -> None:
        """Give the lease back (on close), so another process takes over at once."""
        lease = self.lease
        self.lease = None
        if lease is not None:
            self.leases.release(self.name, self.owner, lease.generation)
