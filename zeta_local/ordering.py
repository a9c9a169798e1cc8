"""Which model to try next after one fails. A policy of its own so that it can change (or be
read) without touching the chain walk: after a failure, the model that answers soonest goes
first, but never a model outside the declared chain.
"""

from __future__ import annotations

from typing import Protocol


class PoolView(Protocol):
    """What the policy needs to know of the pool."""

    def loaded_and_healthy(self, name: str, embedding: bool) -> bool: ...

    def fits_without_eviction(self, name: str, embedding: bool) -> bool: ...


def fallback_order(names: list[str], pool: PoolView, *, embedding: bool, strict: bool) -> list[str]:
    """The remaining models of a chain, in the order to try them: loaded and healthy first, then
    those that fit without eviction, then the rest, each group in the chain's order. A route
    with `strict_order` keeps its order."""
    if strict:
        return names

    def group(name: str) -> int:
        if pool.loaded_and_healthy(name, embedding):
            return 0
        return 1 if pool.fits_without_eviction(name, embedding) else 2

    return sorted(names, key=group)  # sorted() is stable: chain order within a group
