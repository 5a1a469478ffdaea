"""Unique claims in a dict, undone when the transaction that made them rolls back."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..store.claims import AlreadyClaimed, ClaimStore, validate_claim

if TYPE_CHECKING:
    from . import MemoryStorage

__all__ = ["InMemoryClaimStore"]


class InMemoryClaimStore(ClaimStore):
    """The :class:`~eventlite.store.claims.ClaimStore` contract in memory."""

    def __init__(self, storage: MemoryStorage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], str] = {}

    def claim(self, scope: str, value: str, owner: str) -> None:
        """See :meth:`ClaimStore.claim`."""
        validate_claim(scope, value, owner)
        with self._lock:
            new = (scope, value) not in self._held
            holder = self._held.setdefault((scope, value), owner)
        if holder != owner:
            raise AlreadyClaimed(scope, value, holder)
        tx = self._storage.current()
        if new and tx is not None:
            tx.on_rollback(lambda: self._drop(scope, value, owner))

    def _drop(self, scope: str, value: str, owner: str) -> bool:
        with self._lock:
            if self._held.get((scope, value)) != owner:
                return False
            del self._held[scope, value]
            return True

    def release(self, scope: str, value: str, owner: str) -> bool:
        """See :meth:`ClaimStore.release`."""
        validate_claim(scope, value, owner)
        released = self._drop(scope, value, owner)
        tx = self._storage.current()
        if released and tx is not None:
            tx.on_rollback(lambda: self.claim(scope, value, owner))
        return released

    def holder(self, scope: str, value: str) -> str | None:
        """See :meth:`ClaimStore.holder`."""
        return self._held.get((scope, value))

    def claims_of(self, scope: str, owner: str) -> list[str]:
        """See :meth:`ClaimStore.claims_of`."""
        with self._lock:
            return sorted(v for (s, v), o in self._held.items() if s == scope and o == owner)
