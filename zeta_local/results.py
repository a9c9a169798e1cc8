"""The typed values the router hands back: decisions, attempts, results and stream events."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Union

import numpy as np

# Outcomes of one attempt on one model. Every attempt ends in exactly one of these.
OK = "ok"
MISSING = "missing"  # the model's file is not on this machine
INVALID_FILE = "invalid_file"  # the file is not a valid GGUF (wrong magic, truncated, corrupt)
LOAD_FAILED = "load_failed"  # llama.cpp refused to load it
CONTEXT_OVERFLOW = "context_overflow"  # the prompt does not fit this model's context
ERROR = "error"  # the model raised while generating or embedding
OUT_OF_MEMORY = "out_of_memory"  # it could not allocate; the model is released
TIMEOUT_LOAD = "timeout_load"  # still loading after load_timeout_s
TIMEOUT_FIRST_TOKEN = "timeout_first_token"  # no first token within first_token_timeout_s
STALLED = "stalled"  # no token for stall_timeout_s in the middle of an answer
DEADLINE = "deadline"  # the request's deadline_s passed; no further model is tried
QUEUE_FULL = "queue_full"  # too many requests already waiting for this model
COOLING_DOWN = "cooling_down"  # the circuit breaker skips a model that keeps failing
QUARANTINED = "quarantined"  # its worker did not come back from a cancel
CANCELLED = "cancelled"  # the caller cancelled the request
DOES_NOT_FIT = "does_not_fit"  # its predicted memory does not fit the budgets (numbers in detail)
BUSY_REROUTED = "busy_rerouted"  # its expected wait passed max_queue_wait_s; an idle model answered
UNREACHABLE = "unreachable"  # a remote engine could not be connected to, or the connection broke
BUSY = "busy"  # a remote engine answered 429 or 503; skipped for its Retry-After, if it gave one
# Outcomes that say something about the model's health: the circuit breaker counts them, and the
# adaptive order scores a model by them. The others are about the request or the moment.
HEALTH_OUTCOMES = frozenset({OK, LOAD_FAILED, ERROR, OUT_OF_MEMORY, TIMEOUT_LOAD, TIMEOUT_FIRST_TOKEN, STALLED,
                             UNREACHABLE})


@dataclass(frozen=True)
class Attempt:
    """One model tried for one request."""

    model: str
    outcome: str
    detail: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.outcome == OK


@dataclass(frozen=True)
class RouteDecision:
    """Which task a request is, which models will be tried in which order, and why.

    `task` is the task whose chain (or label) the request runs under; `classified` is what the
    classifier said, None when it did not run (task= given). They differ when an uncertain
    decision was escalated (`escalated`). `affinity` names the model a conversation continues
    on, when a follow-up turn stays with the model that answered the turn before.

    `thinking` is the thinking choice for a chat on the chain's first model, and who made it
    ("thinking off (auto: code)"; None for a plain prompt, or from route(), which has no chat).
    It is per model: a fallback's own choice, and whether its template could take it, is in
    its attempt's detail."""

    task: str
    chain: tuple[str, ...]
    reason: str
    confidence: float = 1.0
    classified: str | None = None
    affinity: str | None = None
    thinking: str | None = None

    @property
    def escalated(self) -> bool:
        """Whether the classifier's task was uncertain and the request moved to another chain."""
        return self.classified is not None and self.classified != self.task


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int  # the thinking's tokens and the answer's
    seconds: float  # generation time of the answering model, its load excluded
    reasoning_tokens: int = 0  # of completion_tokens, how many were thinking
    reasoning_seconds: float = 0.0  # how long it thought, from its block's opening to its close

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class GenerationResult:
    """The answer to generate()/chat(): the text, who produced it, and what was tried before.

    `text` is the answer alone; `reasoning` is the answering model's thinking (the inside of the
    `<think>` block a chat's answer opened with: reasoning.py), "" when it did not think."""

    text: str
    model: str
    task: str
    finish_reason: str  # "stop" (end of text or a stop string) or "length" (max_tokens)
    usage: Usage
    route: RouteDecision
    attempts: tuple[Attempt, ...]
    reasoning: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"]["tokens_per_s"] = round(self.usage.tokens_per_s, 2)
        return data


@dataclass(frozen=True)
class EmbeddingResult:
    """One L2-normalised row per input text. Vectors of different models live in different
    spaces, so `model` always says which one made them."""

    vectors: np.ndarray = field(repr=False)
    model: str
    attempts: tuple[Attempt, ...]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dim": self.dim,
            "vectors": self.vectors.tolist(),
            "attempts": [asdict(a) for a in self.attempts],
        }


# Events of router.stream(): text as it is produced (the thinking and the answer apart), a
# notice when the answering model changes, and one final event carrying the whole result.


@dataclass(frozen=True)
class TextChunk:
    text: str
    model: str


@dataclass(frozen=True)
class ReasoningChunk:
    """A piece of the model's thinking, before its answer: shown or hidden as the caller likes,
    never part of the answer's text."""

    text: str
    model: str


@dataclass(frozen=True)
class Fallback:
    """The model that was answering failed; `to_model` is tried next.

    `text_so_far` is the answer streamed before the failure (empty when the failed model had
    produced nothing, or only thinking). The next model continues from it: its text follows on
    directly, and the final result's text is the whole answer. The failed model's thinking is
    not passed on: the next model thinks for itself, or, continuing an answer, not at all."""

    from_model: str
    to_model: str
    outcome: str
    detail: str
    text_so_far: str = ""

    @property
    def continues(self) -> bool:
        return bool(self.text_so_far)


@dataclass(frozen=True)
class ModelStatus:
    """One model as status() sees it."""

    name: str
    state: str  # unloaded, unavailable, loading, ready, busy, cooling_down, quarantined
    detail: str  # why unavailable, until when cooling down, ...
    queue_length: int
    served: int
    failed: int
    memory_bytes: int = 0  # what the ledger says it holds (its estimate), 0 when unloaded
    flash_attn: bool = False  # whether it runs (or will run) with flash attention


@dataclass(frozen=True)
class Done:
    result: GenerationResult


StreamEvent = Union[TextChunk, ReasoningChunk, Fallback, Done]


class Stream(Iterator[StreamEvent]):
    """The events of one request (ZetaDynamicRouter.stream), with its route decided up front:
    `route` is known before any model runs, so that a caller can say where the request goes
    (an HTTP server's headers, a UI's label) before the first text arrives."""

    def __init__(self, route: RouteDecision, events: Iterator[StreamEvent]):
        self.route = route
        self._events = events

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> StreamEvent:
        return next(self._events)

    def close(self) -> None:
        """Stop the request (as breaking out of the loop does): the model running is cancelled."""
        close = getattr(self._events, "close", None)
        if close is not None:
            close()
