"""The watchdog: one thread that watches every attempt in flight against its budgets.

    queued or prefill   first_token_timeout_s (+ first_token_s_per_1k_tokens of prompt)
    loading             load_timeout_s
    decoding            stall_timeout_s since the last token: slow but steady is fine, silent is not
    always              the request's deadline, shared by every attempt in the chain

A trip cancels the attempt inside llama.cpp and tells the waiting caller at once, so the
request moves on without waiting for the model. A worker that has not come back
`cancel_grace_s` after its cancel is quarantined: excluded from routing until it returns.

Workers only write timestamps on the hot path; the watchdog sleeps until the earliest
deadline and re-reads them, so a heartbeat costs nothing. Only a change of phase (a handful per
request) wakes it, because a new phase can bring a deadline closer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

from zeta_local.config import MODEL_BUDGET_KEYS, ModelSpec, RouterSettings
from zeta_local.errors import InvalidRequest
from zeta_local.results import DEADLINE, STALLED, TIMEOUT_FIRST_TOKEN, TIMEOUT_LOAD
from zeta_local.worker import DECODING, FINISHED, LOADING, PREFILL, QUEUED, Job, ModelWorker

log = logging.getLogger(__name__)

BUDGET_KEYS = MODEL_BUDGET_KEYS + ("deadline_s",)
_IDLE_WAIT_S = 60.0


@dataclass(frozen=True)
class Budgets:
    load_timeout_s: float
    first_token_timeout_s: float
    first_token_s_per_1k_tokens: float
    stall_timeout_s: float
    cancel_grace_s: float


def resolve_budgets(router: RouterSettings, spec: ModelSpec, overrides: Mapping[str, Any]) -> Budgets:
    """Per call, else per model, else [router]."""
    def pick(key: str) -> float:
        value = overrides.get(key)
        if value is None:
            value = getattr(spec, key, None)
        return float(value if value is not None else getattr(router, key))

    return Budgets(pick("load_timeout_s"), pick("first_token_timeout_s"),
                   router.first_token_s_per_1k_tokens, pick("stall_timeout_s"), router.cancel_grace_s)


def check_budget_overrides(overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                or value != value or value == float("inf"):
            raise InvalidRequest(f"{key} must be a positive number of seconds, got {value!r}")


@dataclass
class _Watched:
    job: Job
    worker: ModelWorker
    budgets: Budgets
    deadline_at: float


class Watchdog:
    def __init__(self) -> None:
        self._watched: list[_Watched] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="zeta-watchdog", daemon=True)
        self._thread.start()

    def watch(self, job: Job, worker: ModelWorker, budgets: Budgets, deadline_at: float) -> None:
        job.on_phase = self._poke  # a phase change can bring its deadline closer
        with self._wake:
            self._watched.append(_Watched(job, worker, budgets, deadline_at))
            self._wake.notify()

    def _poke(self) -> None:
        with self._wake:
            self._wake.notify()

    def close(self, timeout: float) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        with self._wake:
            while not self._closed:
                now = time.monotonic()
                next_check = now + _IDLE_WAIT_S
                keep = []
                for w in self._watched:
                    due = self._check(w, now)
                    if due is not None:
                        keep.append(w)
                        next_check = min(next_check, due)
                self._watched = keep
                self._wake.wait(max(0.0, next_check - time.monotonic()))

    def _check(self, w: _Watched, now: float) -> float | None:
        """Trip or quarantine what is overdue; return when to look again (None: stop watching)."""
        job, b = w.job, w.budgets
        if job.done.is_set():
            return None
        if job.trip is not None:  # cancelled: it must come back within the grace period
            grace_ends = job.tripped_at + b.cancel_grace_s
            if now < grace_ends:
                return grace_ends
            if not w.worker.quarantined:
                w.worker.quarantined = True
                log.error("%s did not stop within %.1f s of its cancel; quarantined",
                          job.model, b.cancel_grace_s)
            return None
        phase = job.phase
        if phase == LOADING:
            due, outcome, why = job.phase_since + b.load_timeout_s, TIMEOUT_LOAD, \
                f"still loading after {b.load_timeout_s:g} s (load_timeout_s)"
        elif phase in (QUEUED, PREFILL):
            budget = b.first_token_timeout_s + job.prompt_tokens / 1000 * b.first_token_s_per_1k_tokens
            where = "waiting behind other requests" if phase == QUEUED else "no first token"
            due, outcome, why = job.phase_since + budget, TIMEOUT_FIRST_TOKEN, \
                f"{where} after {budget:.3g} s (first_token_timeout_s)"
        elif phase == DECODING:
            due, outcome, why = job.last_token_at + b.stall_timeout_s, STALLED, \
                f"no token for {b.stall_timeout_s:g} s (stall_timeout_s)"
        else:
            assert phase == FINISHED
            return None
        if w.deadline_at < due:
            due, outcome, why = w.deadline_at, DEADLINE, "the request's deadline (deadline_s) passed"
        if now < due:
            return due
        if job.stop(outcome, why):
            log.warning("%s: %s: %s; cancelling it", job.model, outcome, why)
        return job.tripped_at + b.cancel_grace_s
