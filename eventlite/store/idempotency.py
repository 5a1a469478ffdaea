"""Idempotency keys: claimed by one caller at a time, then holding that call's result.

:class:`IdempotencyStore` is what a backend implements;
:class:`~eventlite.idempotency.Idempotency` is the facade users call (``run(key, fn)``).
"""

from __future__ import annotations

import abc

import attrs

__all__ = ["IdempotencyRecord", "IdempotencyStore"]


@attrs.frozen
class IdempotencyRecord:
    """What a store holds for one key: a running claim, or a finished call's result."""

    key: str
    """The idempotency key."""
    owner: str
    """Who claimed it (an opaque id the caller chose)."""
    started_at: float
    """When it was claimed (epoch seconds)."""
    lease_until: float
    """Until when the claim holds while running; after it, another caller may take it."""
    result: str | None = None
    """The finished call's result as JSON text; None while running."""
    expires_at: float | None = None
    """When a finished call's result stops counting; None while running."""

    @property
    def done(self) -> bool:
        """Whether the call finished and its result is stored."""
        return self.result is not None

    def live(self, now: float) -> bool:
        """Whether the record still holds its key at ``now``: a result before its expiry,
        or a claim within its lease."""
        if self.result is not None:
            return self.expires_at is not None and self.expires_at > now
        return self.lease_until > now


class IdempotencyStore(abc.ABC):
    """Idempotency keys: at most one live record per key.

    A caller :meth:`claim`\\ s a key (a running record with a lease), runs its operation,
    then :meth:`complete`\\ s the claim with the result, or :meth:`release`\\ s it when the
    operation failed. A record that is no longer :meth:`~IdempotencyRecord.live` (a
    result past its expiry, a claim past its lease: its holder probably died) may be
    replaced by the next claim. Only the owner of a claim can complete or release it.

    Keys and owners are valid text without NUL (the facade refuses other keys); results
    are JSON text. Times are epoch seconds from the caller's clock. Every write is atomic
    and joins the calling thread's open transaction of the same storage; backend errors
    raise :class:`~eventlite.exceptions.StorageError`.
    """

    @abc.abstractmethod
    def find(self, key: str) -> IdempotencyRecord | None:
        """The record of ``key``, live or not, or None."""

    @abc.abstractmethod
    def claim(
        self, key: str, owner: str, *, now: float, lease_until: float
    ) -> tuple[bool, IdempotencyRecord | None]:
        """Claim ``key`` for ``owner`` unless a live record holds it.

        Returns ``(True, replaced)`` when the key is now ``owner``'s running claim
        (``replaced`` is the record that was there and had expired, or None), or
        ``(False, live)`` with the live record that holds it, changing nothing.
        """

    @abc.abstractmethod
    def complete(self, key: str, owner: str, result: str, *, expires_at: float) -> bool:
        """Store ``result`` for ``owner``'s running claim of ``key``, live until
        ``expires_at``; False (storing nothing) when the claim is no longer ``owner``'s."""

    @abc.abstractmethod
    def release(self, key: str, owner: str) -> bool:
        """Delete ``owner``'s running claim of ``key``; False when there is none."""

    @abc.abstractmethod
    def forget(self, key: str) -> bool:
        """Delete the record of ``key``, running or done; False when there is none."""

    @abc.abstractmethod
    def purge_expired(self, now: float) -> int:
        """Delete every result whose expiry is at or before ``now``; returns how many."""
