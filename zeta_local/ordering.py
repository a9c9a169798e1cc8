"""Which model to try, and in which order. A policy of its own so that it can change (or be read)
without touching the chain walk. It never goes outside the declared chain.

Static (the default): after a failure, the model that answers soonest goes first: loaded and
healthy, then those that fit without eviction, then the rest, each group in the chain's order.

Adaptive (`[router] adaptive = true`): each model is judged on its last `adaptive_window`
attempts within `adaptive_window_s`, counting only outcomes that speak of its health (see
results.HEALTH_OUTCOMES). A model needs MIN_ATTEMPTS of them to be judged; until then it gets
the benefit of the doubt. Then:
- the first choice keeps its place unless its success rate is under `demote_below`;
- a model under `demote_below` goes to the end of the chain (before its circuit breaker opens);
- the others are ordered by success rate in steps of 10 %, then loaded before unloaded (a load
  costs more than any difference in speed), then measured speed (median first-token time plus
  REFERENCE_TOKENS at median tokens/s), then the chain's order.
Failures age out of the window, so a demoted model comes back once its failures are older than
`adaptive_window_s` (and sooner if it answers well as a late fallback).

Load spreading (`[router] max_queue_wait_s`): a model whose expected wait (the request running
and those queued, each at its measured decode time) exceeds the limit hands the request to a
model of the chain that is loaded, healthy and idle.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Protocol

from zeta_local.config import RouterSettings
from zeta_local.metrics import MetricsStore
from zeta_local.results import HEALTH_OUTCOMES, OK, RouteDecision

MIN_ATTEMPTS = 4  # health-telling attempts in the window before a model is judged
REFERENCE_TOKENS = 200  # the answer length the speed score prices
_RECENT_LIMIT = 200  # records read per model; the window is cut from these


class PoolView(Protocol):
    """What the policy needs to know of the pool."""

    def loaded_and_healthy(self, name: str, embedding: bool) -> bool: ...

    def fits_without_eviction(self, name: str, embedding: bool) -> bool: ...

    def jobs(self, name: str, embedding: bool) -> tuple[int, int]: ...


def fallback_order(names: list[str], pool: PoolView, *, embedding: bool, strict: bool) -> list[str]:
    """The static order of the remaining models of a chain: loaded and healthy first, then those
    that fit without eviction, then the rest, each group in the chain's order. A route with
    `strict_order` keeps its order."""
    if strict:
        return names
    return sorted(names, key=lambda name: _load_group(pool, name, embedding))  # stable


def _load_group(pool: PoolView, name: str, embedding: bool) -> int:
    if pool.loaded_and_healthy(name, embedding):
        return 0
    return 1 if pool.fits_without_eviction(name, embedding) else 2


@dataclass(frozen=True)
class Health:
    """How a model did in its recent window."""

    attempts: int  # health-telling attempts in the window
    ok: int
    first_token_s: float | None  # medians over its answers
    tokens_per_s: float | None
    decode_s: float | None  # median time spent decoding one answer: its service time, roughly

    @property
    def judged(self) -> bool:
        return self.attempts >= MIN_ATTEMPTS

    @property
    def success_rate(self) -> float:
        return self.ok / self.attempts if self.judged else 1.0

    @property
    def expected_s(self) -> float:
        """Seconds to a REFERENCE_TOKENS answer at its measured speed; inf when unmeasured."""
        if self.first_token_s is None or not self.tokens_per_s:
            return math.inf
        return self.first_token_s + REFERENCE_TOKENS / self.tokens_per_s

    def describe(self, speed: bool = True) -> str:
        if not self.judged:
            return f"{self.attempts} of {MIN_ATTEMPTS} attempts needed to judge"
        seconds = "" if math.isinf(self.expected_s) or not speed else f", ~{self.expected_s:.1f} s"
        return f"{self.success_rate:.0%} of {self.attempts}{seconds}"


class OrderingPolicy:
    """The order of a request's chain, before it starts and after each failure."""

    def __init__(self, settings: RouterSettings, pool: PoolView, metrics: MetricsStore,
                 strict_order: frozenset[str]):
        self._settings = settings
        self._pool = pool
        self._metrics = metrics
        self._strict = strict_order

    def health(self, name: str) -> Health:
        s = self._settings
        window = [r for r in self._metrics.recent(name, _RECENT_LIMIT, since=time.time() - s.adaptive_window_s)
                  if r.outcome in HEALTH_OUTCOMES][-s.adaptive_window:]
        answers = [r for r in window if r.outcome == OK]
        return Health(
            attempts=len(window), ok=len(answers),
            first_token_s=_median([r.first_token_s for r in answers]),
            tokens_per_s=_median([r.tokens_per_s for r in answers]),
            decode_s=_median([r.completion_tokens / r.tokens_per_s for r in answers if r.tokens_per_s]))

    # ---- order --------------------------------------------------------------------------

    def initial(self, decision: RouteDecision, *, embedding: bool = False) -> RouteDecision:
        """The decision with its chain in adaptive order and the reason saying what moved and
        why; unchanged when adaptive is off, the route keeps a strict order, or nothing moved."""
        task = "embed" if embedding else decision.task
        if not self._settings.adaptive or task in self._strict or len(decision.chain) < 2:
            return decision
        health = {name: self.health(name) for name in decision.chain}
        first, rest = decision.chain[0], list(decision.chain[1:])
        if self._demoted(health[first]):
            order = self._adaptive(list(decision.chain), health, embedding)
            note = (f"adaptive: {first} demoted (success {health[first].describe(speed=False)} < demote_below "
                    f"{self._settings.demote_below:g}); order {', '.join(order)}")
        else:
            order = [first] + self._adaptive(rest, health, embedding)
            if order == list(decision.chain):
                return decision
            note = "adaptive: fallbacks by recent success, loaded, speed: " + ", ".join(
                f"{n} ({health[n].describe()})" for n in order[1:])
        return replace(decision, chain=tuple(order), reason=f"{decision.reason}; {note}")

    def fallbacks(self, names: list[str], *, embedding: bool, task: str) -> list[str]:
        """The remaining models after a failure, in the order to try them."""
        if task in self._strict or not names:
            return names
        if not self._settings.adaptive:
            return fallback_order(names, self._pool, embedding=embedding, strict=False)
        return self._adaptive(names, {n: self.health(n) for n in names}, embedding)

    def _demoted(self, health: Health) -> bool:
        return health.judged and health.success_rate < self._settings.demote_below

    def _adaptive(self, names: list[str], health: dict[str, Health], embedding: bool) -> list[str]:
        def key(name: str) -> tuple[bool, float, int, float]:
            h = health[name]
            return (self._demoted(h), -math.floor(h.success_rate * 10 + 1e-9),
                    _load_group(self._pool, name, embedding), h.expected_s)
        return sorted(names, key=key)  # stable: the chain's order breaks the last ties

    # ---- load spreading -----------------------------------------------------------------

    def detour(self, name: str, remaining: list[str], *, embedding: bool) -> tuple[str, str] | None:
        """(the model to ask instead, why) when `name`'s expected wait exceeds max_queue_wait_s
        and a model of `remaining` is loaded, healthy and idle; else None. A model with no
        measured answer yet is never skipped: its wait cannot be estimated."""
        limit = self._settings.max_queue_wait_s
        if limit is None:
            return None
        running, queued = self._pool.jobs(name, embedding)
        if not running:
            return None
        per_request = self.health(name).decode_s
        if per_request is None:
            return None
        wait = (running + queued) * per_request
        if wait <= limit:
            return None
        idle = next((n for n in remaining if self._pool.loaded_and_healthy(n, embedding)
                     and self._pool.jobs(n, embedding) == (0, 0)), None)
        if idle is None:
            return None
        return idle, (f"expected wait {wait:.1f} s ({running} running + {queued} queued x "
                      f"{per_request:.2f} s measured) > max_queue_wait_s {limit:g}; "
                      f"{idle} is loaded and idle")


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
