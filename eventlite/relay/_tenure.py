"""A durable subscriber's tenure: this process's hold on the subscriber's lease, so that
one process at a time delivers to it (see ``docs/scaling.md``)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from ..store.leases import Lease, LeaseLost, LeaseStore

__all__ = ["Share", "Tenure", "dead_here", "lease_name", "live_owners", "member_prefix"]

log = logging.getLogger("eventlite.relay")

live_owners: set[str] = set()
"""The owner names of this process's relays that are not closed: a lease held by another
owner of this process (a relay closed while a handler hung, say) is taken over at once."""


def lease_name(subscriber: str) -> str:
    """The lease a durable subscriber is delivered under."""
    return f"subscriber:{subscriber}"


def member_prefix(subscriber: str) -> str:
    """The prefix of the membership leases of a split subscriber's processes (one each,
    ``segment-owners:<name>#<owner>``), by which they count each other."""
    return f"segment-owners:{subscriber}#"


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


class Share:
    """This process's part of a subscriber split into segments: which segments it holds,
    and how many it may hold.

    **Fair share.** Every process that runs the subscriber keeps a membership lease of its
    own (``segment-owners:<name>#<owner>``, renewed as it takes or renews segments); the
    live owners are the distinct owners of unexpired memberships (a dead process of this
    machine does not count), this process included. A process holds at most
    ``ceil(segments / live owners)`` segments: it takes free or expired ones while below
    that share, and when it holds more (another process joined) it gives back its
    highest-numbered extras, one at each of their renewals, so the newcomer takes them.
    """

    __slots__ = (
        "current",
        "held",
        "leases",
        "lock",
        "member",
        "owner",
        "prefix",
        "refresh_at",
        "segments",
        "ttl",
    )

    def __init__(
        self, leases: LeaseStore, subscriber: str, segments: int, owner: str, ttl: float
    ) -> None:
        self.leases = leases
        self.prefix = member_prefix(subscriber)
        self.member = self.prefix + owner
        self.segments = segments
        self.owner = owner
        self.ttl = ttl
        self.held: set[int] = set()
        self.lock = threading.Lock()
        self.current = segments
        self.refresh_at = 0.0

    def quota(self) -> int:
        """How many segments this process may hold now: ``ceil(segments / live owners)``.
        Renews its membership and counts the others' at most every ``min(ttl / 6, 1)``
        seconds; in between it answers from memory."""
        now = time.monotonic()
        with self.lock:
            if now < self.refresh_at:
                return self.current
            self.refresh_at = now + min(self.ttl / 6, 1.0)
        mine = self.leases.acquire(self.member, self.owner, self.ttl)
        # the store's clock now (the database server's on PostgreSQL), from our own expiry
        store_now = None if mine is None else mine.expires_at - self.ttl
        owners = {self.owner}
        for lease in self.leases.leases(self.prefix):
            if lease.owner in owners:
                continue
            if (store_now is not None and lease.expired(store_now)) or dead_here(lease.owner):
                # a process that died without closing: forget it, so that the scan stays
                # short however many have come and gone (one that was only paused takes
                # its membership again when it resumes)
                self.leases.release(lease.name, lease.owner, lease.generation)
                continue
            owners.add(lease.owner)
        share = -(-self.segments // len(owners))
        with self.lock:
            self.current = share
        return share

    def reserve(self, index: int) -> bool:
        """Count segment ``index`` as held if that keeps this process within its share;
        False (nothing counted) when it would not."""
        share = self.quota()
        with self.lock:
            if index in self.held:
                return True
            if len(self.held) >= share:
                return False
            self.held.add(index)
            return True

    def extra(self, index: int) -> bool:
        """Whether segment ``index`` is one this process holds beyond its share (its
        highest-numbered ones are)."""
        share = self.quota()
        with self.lock:
            return len(self.held) > share and index in sorted(self.held)[share:]

    def drop(self, index: int) -> None:
        """Segment ``index`` is no longer held."""
        with self.lock:
            self.held.discard(index)

    def close(self) -> None:
        """Give the membership back (on close): the others count one process fewer."""
        lease = self.leases.holder(self.member)
        if lease is not None and lease.owner == self.owner:
            self.leases.release(self.member, self.owner, lease.generation)


class Tenure:
    """Takes, renews and gives back one subscriber's lease for ``owner``.

    :meth:`hold` is called before every pass: it renews the lease once a third of its
    time has gone by, or takes it when nobody holds it (or its holder let it expire).
    :meth:`check` runs in the transaction that moves the subscriber's checkpoint, so a
    former owner (paused past its lease: a long GC, SIGSTOP) can never commit after
    another took over: its transaction fails with :class:`LeaseLost` and rolls back.

    A segment of a split subscriber has a :class:`Share` (with its ``index``): it is only
    taken within this process's fair share, and given back, after ``before_release``
    (which writes the checkpoint), when it is one of the extras.
    """

    __slots__ = (
        "before_release",
        "fresh",
        "index",
        "label",
        "lease",
        "leases",
        "name",
        "owner",
        "renew_at",
        "retry_at",
        "share",
        "ttl",
    )

    def __init__(
        self,
        leases: LeaseStore,
        subscriber: str,
        owner: str,
        ttl: float,
        share: Share | None = None,
        index: int = 0,
        *,
        lease: str | None = None,
        label: str = "durable subscriber",
    ) -> None:
        self.leases = leases
        self.share = share
        self.index = index
        self.before_release: Callable[[], None] | None = None
        # the lease row: subscriber:<name> unless given (projection:<name>, say)
        self.name = lease if lease is not None else lease_name(subscriber)
        self.label = label  # what the logs call the holder's work
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
        share = self.share
        if (
            lease is not None
            and share is not None
            and share.extra(self.index)
            and self._give_back(now)
        ):
            return False
        if lease is not None:
            try:
                self.lease = self.leases.renew(self.name, self.owner, lease.generation, self.ttl)
                self.renew_at = now + self.ttl / 3
                if share is not None:
                    with share.lock:
                        share.held.add(self.index)
                return True
            except LeaseLost as lost:
                self.lease = None
                if share is not None:
                    share.drop(self.index)
                log.warning(
                    "%s %s: lost its lease (now %s); standing by",
                    self.label,
                    self.name,
                    "held by " + lost.holder.owner if lost.holder else "free",
                )
        if self.lease is None and now < self.retry_at:
            return False
        if share is not None and not share.reserve(self.index):
            self.retry_at = now + min(self.ttl / 6, 1.0)  # this process has its share
            return False
        try:
            got = self._acquire()
        except BaseException:
            if share is not None:
                share.drop(self.index)
            raise
        if got is None:
            if share is not None:
                share.drop(self.index)
            if self.retry_at == 0.0:  # said once, when it first stands by
                holder = self.leases.holder(self.name)
                log.info(
                    "%s %s: its lease is held by %s; standing by (another process, or an "
                    "App of this one that was not closed)",
                    self.label,
                    self.name,
                    holder.owner if holder is not None else "another owner",
                )
            self.retry_at = now + min(self.ttl / 6, 1.0)
            return False
        if lease is None or got.generation != lease.generation:
            self.fresh = True
            if lease is None and got.generation > 1:
                log.info(
                    "%s %s: took the lease over (generation %d)",
                    self.label,
                    self.name,
                    got.generation,
                )
        self.lease = got
        self.renew_at = now + self.ttl / 3
        self.retry_at = 0.0
        return True

    def _acquire(self) -> Lease | None:
        """Take the lease if free or expired, or at once from a dead process of this
        machine; None when another owner holds it."""
        got = self.leases.acquire(self.name, self.owner, self.ttl)
        if got is None:
            holder = self.leases.holder(self.name)
            if holder is not None and dead_here(holder.owner):
                # its holder was a process of this machine that is gone (killed, crashed):
                # a restart takes over at once instead of waiting for the expiry
                self.leases.release(self.name, holder.owner, holder.generation)
                got = self.leases.acquire(self.name, self.owner, self.ttl)
        return got

    def _give_back(self, now: float) -> bool:
        """Release a segment beyond this process's share, after writing its checkpoint;
        False (it keeps it for now) when that write fails."""
        try:
            if self.before_release is not None:
                self.before_release()
            self.release()
        except Exception as exc:
            log.info("durable subscriber %s: keeps its lease for now (%s)", self.name, exc)
            return False
        self.retry_at = now + min(self.ttl / 6, 1.0)
        log.info(
            "durable subscriber %s: gave its lease back (more processes share the "
            "subscriber: this one keeps %d segments)",
            self.name,
            self.share.current if self.share is not None else 0,
        )
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
        if self.share is not None:
            self.share.drop(self.index)

    def release(self) -> None:
        """Give the lease back (on close), so another process takes over at once."""
        lease = self.lease
        self.lease = None
        if self.share is not None:
            self.share.drop(self.index)
        if lease is not None:
            self.leases.release(self.name, self.owner, lease.generation)
