"""Unique claims: a value held by one owner at a time, across aggregates.

An aggregate guards its own invariants; a rule across aggregates ("a batch reference is
unique across every product", "one account per e-mail address") needs a place that says
who holds a value. A claim is that place: ``(scope, value)`` held by ``owner``. Claiming
inside the unit of work that records the owner's events makes the two commit together,
so a value is never held by an owner whose events were rolled back, and two concurrent
claims of one value can never both commit.
"""

from __future__ import annotations

import abc

from ..exceptions import StoreError

__all__ = ["AlreadyClaimed", "ClaimStore", "validate_claim"]


class AlreadyClaimed(StoreError):
    """A value of a scope is already held by another owner."""

    def __init__(self, scope: str, value: str, owner: str) -> None:
        super().__init__(f"{scope} {value!r} is already claimed by {owner!r}")
        self.scope = scope
        """The claim's scope (what kind of value it is)."""
        self.value = value
        """The value that was asked for."""
        self.owner = owner
        """Who holds it."""


def validate_claim(scope: object, value: object, owner: object) -> None:
    """``TypeError``/``ValueError`` unless scope, value and owner are non-empty strings
    that can be stored (no lone surrogate, no NUL)."""
    for name, text in (("scope", scope), ("value", value), ("owner", owner)):
        if not isinstance(text, str):
            raise TypeError(f"a claim's {name} must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError(f"a claim's {name} must not be empty")
        if "\x00" in text:
            raise ValueError(f"a claim's {name} must not hold a NUL character: {text!r}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"a claim's {name} is not valid text: {text!r}") from None


class ClaimStore(abc.ABC):
    """Who holds each ``(scope, value)``: at most one owner per value of a scope.

    **Claiming.** :meth:`claim` makes ``owner`` the holder of ``value`` in ``scope``; it
    is idempotent for the owner that already holds it, and raises :class:`AlreadyClaimed`
    (naming scope, value and holder) when another owner holds it, writing nothing. Two
    owners claiming one free value concurrently, each in its own transaction: one commits,
    the other gets :class:`AlreadyClaimed` (at its claim or at its commit).

    **Releasing.** :meth:`release` frees a value only if ``owner`` holds it; it returns
    whether it did. A released value can be claimed again by anyone.

    **Transactions.** Every write joins the calling thread's open
    ``storage.transaction()``: a claim rolled back with it was never made.

    Scopes, values and owners are non-empty strings (:func:`validate_claim`).
    """

    @abc.abstractmethod
    def claim(self, scope: str, value: str, owner: str) -> None:
        """Make ``owner`` hold ``value`` of ``scope`` (see the class doc)."""

    @abc.abstractmethod
    def release(self, scope: str, value: str, owner: str) -> bool:
        """Free ``value`` of ``scope`` if ``owner`` holds it; whether it did."""

    @abc.abstractmethod
    def holder(self, scope: str, value: str) -> str | None:
        """Who holds ``value`` of ``scope``, or None."""

    @abc.abstractmethod
    def claims_of(self, scope: str, owner: str) -> list[str]:
        """The values of ``scope`` that ``owner`` holds, sorted."""
