"""The chain walk: try the models of a request's chain in turn until one answers.

Every attempt passes the same gates (cancel, deadline, circuit breaker, quarantine, admission,
queue) and ends in exactly one outcome, recorded on the result and heard by the circuit breaker
and the memory ledger. What a request does lives here; what the models hold lives in the pool.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any, Iterator, Sequence

import numpy as np

from zeta_local.backend import GenerationEnd
from zeta_local.breaker import CircuitBreaker
from zeta_local.cancel import CancelToken
from zeta_local.config import Config
from zeta_local.errors import (Cancelled, ContextOverflow, EngineBusy, EngineUnreachable, FallbackExhausted,
                               InvalidModelFile, ModelFileMissing, ModelLoadError, OutOfMemory, ZetaError)
from zeta_local.metrics import AttemptRecord, MetricsStore
from zeta_local.ordering import OrderingPolicy
from zeta_local.pool import ModelPool
from zeta_local.results import (BUSY, BUSY_REROUTED, CANCELLED, CONTEXT_OVERFLOW, COOLING_DOWN, DEADLINE,
                                DOES_NOT_FIT, ERROR, HEALTH_OUTCOMES, INVALID_FILE, LOAD_FAILED, MISSING,
                                OK, OUT_OF_MEMORY, QUARANTINED, QUEUE_FULL, TIMEOUT_FIRST_TOKEN, UNREACHABLE, Attempt,
                                Done, EmbeddingResult, Fallback, GenerationResult, ReasoningChunk,
                                RouteDecision, StreamEvent, TextChunk, Usage)
from zeta_local.sampling import SamplingOverrides
from zeta_local.thinking import NO_SWITCH, ThinkingChoice
from zeta_local.thinking import resolve as resolve_thinking
from zeta_local.watchdog import resolve_budgets
from zeta_local.worker import QUEUED, Job

log = logging.getLogger(__name__)

# What each failure means for the attempt that hit it.
_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (ModelFileMissing, MISSING),
    (InvalidModelFile, INVALID_FILE),
    (ModelLoadError, LOAD_FAILED),
    (ContextOverflow, CONTEXT_OVERFLOW),
    (OutOfMemory, OUT_OF_MEMORY),
    (MemoryError, OUT_OF_MEMORY),
    (EngineUnreachable, UNREACHABLE),
    (EngineBusy, BUSY),
)


def _outcome(exc: BaseException) -> str:
    return next((outcome for kind, outcome in _OUTCOMES if isinstance(exc, kind)), ERROR)


def _detail(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ZetaError) else f"{type(exc).__name__}: {exc}"


class ChainWalker:
    """Walks generation and embedding chains over the pool's workers, one attempt at a time."""

    def __init__(self, config: Config, pool: ModelPool, breaker: CircuitBreaker,
                 policy: OrderingPolicy, metrics: MetricsStore):
        self.config = config
        self._pool = pool
        self._breaker = breaker
        self._policy = policy
        self._metrics = metrics

    def generate(self, prompt: str | None, messages: list[dict[str, str]] | None,
                 sampling: SamplingOverrides, decision: RouteDecision, budgets: dict[str, Any],
                 cancel: CancelToken | None, thinking: bool | str | None = None) -> Iterator[StreamEvent]:
        """The stream of one generation request; a model that fails mid-answer is followed by
        the next one continuing from the answer so far (never from its thinking). Each attempt
        is sampled with what the caller set, else its own model's defaults, else the task's,
        else [router]'s; a chat's thinking is resolved likewise (thinking.py), and each
        attempt's detail says what it was."""
        deadline_at = time.monotonic() + (budgets.get("deadline_s") or self.config.router.deadline_s)
        attempts: list[Attempt] = []
        text_so_far = ""
        remaining = list(decision.chain)
        rerouted: set[str] = set()  # skipped as busy once; next time it is waited for
        while remaining:
            name = remaining.pop(0)
            detour = None if name in rerouted else self._policy.detour(name, remaining, embedding=False)
            if detour is not None:
                idle, why = detour
                log.info("%s: %s (%s)", name, BUSY_REROUTED, why)
                rerouted.add(name)
                attempt = Attempt(name, BUSY_REROUTED, why, 0.0)
                self._record(decision.task, attempt, bool(attempts))
                attempts.append(attempt)
                remaining.remove(idle)
                remaining[:0] = [idle, name]  # should the idle one fail, this one is still there
                continue
            choice = None if messages is None else CONTINUING if text_so_far else \
                resolve_thinking(thinking, self.config.models[name], decision.task)
            params = sampling.for_model(self.config.router, self.config.models[name],
                                        self.config.tasks.get(decision.task),
                                        thinking=bool(choice and choice.on), chat=messages is not None)
            log.debug("%s: sampling with %s", name, params)
            job = Job(model=name, prompt=prompt, messages=messages, params=params, prefix=text_so_far,
                      thinking=None if choice is None else choice.on)
            started = time.monotonic()
            first_text_at: float | None = None
            produced: list[str] = []
            thoughts: list[str] = []
            end: GenerationEnd | None = None
            for kind, *rest in self._attempt(job, embedding=False, deadline_at=deadline_at,
                                             budgets=budgets, cancel=cancel,
                                             later_loaded=self._pool.any_loaded(remaining, False)):
                if kind == "text":
                    first_text_at = first_text_at or time.monotonic()
                    produced.append(rest[0])
                    yield TextChunk(rest[0], name)
                elif kind == "reasoning":
                    first_text_at = first_text_at or time.monotonic()
                    thoughts.append(rest[0])
                    yield ReasoningChunk(rest[0], name)
                elif kind == "end":
                    end = rest[0]
                else:  # ("failed", outcome, detail)
                    outcome, detail = rest
            seconds = time.monotonic() - started
            tokens = (end.prompt_tokens, end.completion_tokens) if end else \
                (job.prompt_tokens, len(produced) + len(thoughts))
            timing = (started, first_text_at, started + seconds)
            if end is not None:
                estimated = " (estimated: the engine gave no usage)" if end.usage_estimated else ""
                attempt = Attempt(name, OK, f"{end.completion_tokens} tokens{estimated} in {seconds:.2f} s"
                                  f"{_thinking_note(job, choice, end)}", seconds)
                self._record(decision.task, attempt, bool(attempts), timing, tokens)
                attempts.append(attempt)
                yield Done(GenerationResult(
                    text=text_so_far + "".join(produced), model=name, task=decision.task,
                    finish_reason=end.finish_reason,
                    usage=Usage(end.prompt_tokens, end.completion_tokens,
                                time.monotonic() - job.generating_since,
                                end.reasoning_tokens, end.reasoning_seconds),
                    route=decision, attempts=tuple(attempts), reasoning="".join(thoughts)))
                return
            attempt = Attempt(name, outcome, detail + _thinking_note(job, choice), seconds)
            self._record(decision.task, attempt, bool(attempts), timing, tokens)
            attempts.append(attempt)
            if outcome == CANCELLED:
                raise Cancelled(attempts)
            text_so_far += "".join(produced)
            remaining = self._policy.fallbacks(remaining, embedding=False, task=decision.task)
            following = remaining[0] if remaining else None
            _log_hop(name, outcome, detail, following)
            if outcome == DEADLINE:
                break
            if following:
                yield Fallback(name, following, outcome, detail, text_so_far)
        raise FallbackExhausted(decision.task, attempts)

    def embed(self, texts: Sequence[str], chain: Sequence[str], budgets: dict[str, Any],
              cancel: CancelToken | None) -> EmbeddingResult:
        """L2-normalised rows from the first model of `chain` that can make them."""
        deadline_at = time.monotonic() + (budgets.get("deadline_s") or self.config.router.deadline_s)
        attempts: list[Attempt] = []
        remaining = list(chain)
        while remaining:
            name = remaining.pop(0)
            started = time.monotonic()
            job = Job(model=name, texts=list(texts))
            for kind, *rest in self._attempt(job, embedding=True, deadline_at=deadline_at,
                                             budgets=budgets, cancel=cancel,
                                             later_loaded=self._pool.any_loaded(remaining, True)):
                if kind == "vectors":
                    vectors = rest[0]
                    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                    vectors = (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)
                    attempt = Attempt(name, OK, f"{len(texts)} texts, dim {vectors.shape[1]}",
                                      time.monotonic() - started)
                    self._record("embed", attempt, bool(attempts))
                    attempts.append(attempt)
                    return EmbeddingResult(vectors, name, tuple(attempts))
                outcome, detail = rest
            attempt = Attempt(name, outcome, detail, time.monotonic() - started)
            self._record("embed", attempt, bool(attempts))
            attempts.append(attempt)
            if outcome == CANCELLED:
                raise Cancelled(attempts)
            remaining = self._policy.fallbacks(remaining, embedding=True, task="embed")
            _log_hop(name, outcome, detail, remaining[0] if remaining else None)
            if outcome == DEADLINE:
                break
        raise FallbackExhausted("embed", attempts)

    def preload(self, name: str, embedding: bool) -> Attempt:
        """Load one model now: an attempt with no work, admitted and watched like any other.
        Raises FallbackExhausted carrying the attempt when it cannot be loaded."""
        started = time.monotonic()
        job = Job(model=name)
        outcome, detail = OK, "loaded"
        for kind, *rest in self._attempt(job, embedding=embedding, budgets={}, cancel=None,
                                         deadline_at=started + self.config.router.deadline_s):
            if kind == "failed":
                outcome, detail = rest
        attempt = Attempt(name, outcome, detail, time.monotonic() - started)
        if outcome != OK:
            raise FallbackExhausted("preload", [attempt])
        return attempt

    def _record(self, task: str, attempt: Attempt, fallback: bool,
                timing: tuple[float, float | None, float] | None = None,
                tokens: tuple[int, int] = (0, 0)) -> None:
        """Hand one attempt to the usage metrics. `timing` is (started, first text, ended) on the
        monotonic clock; the decode rate counts the tokens after the first."""
        first_token_s = tokens_per_s = None
        if timing is not None and timing[1] is not None:
            started, first_text_at, ended = timing
            first_token_s = first_text_at - started
            if tokens[1] > 1 and ended > first_text_at:
                tokens_per_s = (tokens[1] - 1) / (ended - first_text_at)
        self._metrics.record(AttemptRecord(
            at=time.time(), model=attempt.model, task=task, outcome=attempt.outcome,
            seconds=attempt.seconds, first_token_s=first_token_s, tokens_per_s=tokens_per_s,
            prompt_tokens=tokens[0], completion_tokens=tokens[1], fallback=fallback))

    def _attempt(self, job: Job, *, embedding: bool, deadline_at: float, budgets: dict[str, Any],
                 cancel: CancelToken | None, later_loaded: bool = False) -> Iterator[tuple[Any, ...]]:
        """Run one attempt: yields ("text", piece)..., then ("end", GenerationEnd),
        ("vectors", array) or ("loaded",) (a preload), or ("failed", outcome, detail).
        Never raises for the model's sake."""
        name = job.model
        if cancel is not None and cancel.cancelled:
            yield ("failed", CANCELLED, "cancelled by the caller")
            return
        if time.monotonic() >= deadline_at:
            yield ("failed", DEADLINE, "no time left before the request's deadline (deadline_s)")
            return
        why_not = self._breaker.allow(name)
        if why_not:
            yield ("failed", COOLING_DOWN, why_not)
            return
        verdict: str | None = None  # the outcome the circuit breaker hears about
        submitted = False
        try:
            worker = self._pool.worker(name, embedding)
            if worker.quarantined:
                yield ("failed", QUARANTINED, "its worker did not come back from a cancel")
                return
            refused = self._pool.admit(name, embedding, later_loaded)
            if refused:
                yield ("failed", DOES_NOT_FIT, refused)
                return
            submitted = worker.submit(job)
            if not submitted:
                yield ("failed", QUEUE_FULL, f"{self.config.router.queue_size} requests already "
                                             f"waiting (queue_size)")
                return
            spec = self.config.models[name]
            self._pool.watchdog().watch(job, worker, resolve_budgets(self.config.router, spec, budgets),
                                        deadline_at)
            if cancel is not None:
                cancel.attach(job)
            for event in _events(job, deadline_at, self.config.router.cancel_grace_s):
                if event[0] in ("text", "reasoning", "end", "vectors", "loaded"):
                    if event[0] not in ("text", "reasoning"):
                        verdict = OK
                    yield event
                    continue
                outcome, detail = (event[1], event[2]) if event[0] == "tripped" else \
                    (_outcome(event[1]), _detail(event[1]))
                if event[0] == "error" and outcome == ERROR:
                    log.debug("%s raised", name, exc_info=event[1])
                if event[0] == "error" and isinstance(event[1], EngineBusy) and event[1].retry_after:
                    # The engine said how long to leave it alone: skipped that long, no failure counted.
                    self._breaker.hold(name, event[1].retry_after,
                                       f"its engine answered busy and asked for {event[1].retry_after:g} s "
                                       f"(Retry-After)")
                # A wait in the queue behind other requests says nothing about the model's health.
                verdict = outcome if not (outcome == TIMEOUT_FIRST_TOKEN and job.tripped_in == QUEUED) else None
                yield ("failed", outcome, detail)
                return
        except Exception as exc:  # finding or checking the file failed
            verdict = _outcome(exc)
            yield ("failed", verdict, _detail(exc))
        finally:
            if submitted and verdict is None and not job.done.is_set():
                # The consumer stopped reading (or the router is closing): stop the model too.
                job.stop(CANCELLED, "the caller stopped reading the stream")
            if cancel is not None:
                cancel.detach(job)
            if verdict in HEALTH_OUTCOMES:
                self._breaker.record(name, failed=verdict != OK)
            else:
                self._breaker.release_trial(name)
            if verdict is not None:
                self._pool.learn(name, embedding, verdict)


# A model continuing another's answer does not think first: the answer has begun.
CONTINUING = ThinkingChoice(False, "continuing an answer")


def _thinking_note(job: Job, choice: ThinkingChoice | None, end: GenerationEnd | None = None) -> str:
    """`; thinking off (auto: code)` for an attempt whose chat was rendered (or sent), or that
    its template has no switch; nothing for a plain prompt or a model that never got that far.
    An answer that thought says for how long, and whether its budget closed the thinking."""
    if choice is None or job.thinking_switch is None:
        return ""
    note = f"; {choice.describe() if job.thinking_switch else NO_SWITCH}"
    if end is not None and (end.reasoning_tokens or end.reasoning_capped):
        note += f"; thought {end.reasoning_tokens} tokens in {end.reasoning_seconds:.2f} s" + \
            (" (closed at reasoning_budget)" if end.reasoning_capped else "")
    return note


def _log_hop(name: str, outcome: str, detail: str, following: str | None) -> None:
    log.warning("%s: %s (%s)%s", name, outcome, detail,
                f"; falling back to {following}" if following and outcome != DEADLINE else "")


def _events(job: Job, deadline_at: float, grace_s: float) -> Iterator[tuple[Any, ...]]:
    """The job's events until its last one. Every wait is bounded: should even the watchdog
    fail to trip, the request's deadline (plus the cancel grace) ends the wait."""
    while True:
        try:
            event = job.events.get(timeout=max(0.0, deadline_at - time.monotonic()) + grace_s)
        except queue.Empty:
            job.stop(DEADLINE, "the request's deadline (deadline_s) passed")
            event = job.events.get_nowait() if not job.events.empty() else \
                ("tripped", DEADLINE, "the request's deadline (deadline_s) passed")
        yield event
        if event[0] not in ("text", "reasoning"):
            return
