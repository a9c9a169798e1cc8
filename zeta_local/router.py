"""ZetaDynamicRouter: the public face of the router, kept thin on purpose.

It validates each request at the edge and delegates: routing to the classifier, the fallback
walk to chain.py (and its ordering policy to ordering.py), the models and their memory to
pool.py. A new feature belongs in one of those, or a module of its own, not here.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Any, Iterator, Sequence

from zeta_local.affinity import ConversationAffinity
from zeta_local.backend import Backend, LlamaCppBackend
from zeta_local.breaker import CircuitBreaker
from zeta_local.cancel import CancelToken
from zeta_local.chain import ChainWalker
from zeta_local.config import GENERATE_TASKS, Config, ModelSpec, load_config
from zeta_local.errors import InvalidRequest, UnknownModel, ZetaError
from zeta_local.faults import ENV_VAR as FAULTS_ENV
from zeta_local.faults import SEED_ENV_VAR as FAULT_SEED_ENV
from zeta_local.faults import FaultInjectingBackend, parse_faults
from zeta_local.metrics import UsageStats, store_for, summarize
from zeta_local.ordering import OrderingPolicy
from zeta_local.pool import ModelPool
from zeta_local.prompt_format import validate_messages
from zeta_local.results import (Attempt, Done, EmbeddingResult, GenerationResult, ModelStatus,
                                RouteDecision, Stream, StreamEvent)
from zeta_local.routing import decide
from zeta_local.sampling import SamplingOverrides
from zeta_local.semantic import SemanticStage, Vote, load_examples
from zeta_local.sources import find_model_file
from zeta_local.thinking import check_thinking
from zeta_local.thinking import resolve as resolve_thinking
from zeta_local.watchdog import BUDGET_KEYS, check_budget_overrides

log = logging.getLogger(__name__)


class ZetaDynamicRouter:
    """Routes prompts to the right local model and falls back along the task's chain.

    Each model runs on its own worker thread under one watchdog. Use as a context manager, or
    call close() to stop the threads and release every model. Safe to share between threads.
    """

    def __init__(self, config: Config, *, backend: Backend | None = None,
                 faults: str | None = None):
        """`faults` ("MODEL=KIND;...", default $ZETA_INJECT_FAULTS) wraps the backend of the
        named models with injected failures; see zeta_local.faults."""
        self.config = config
        backend = backend if backend is not None else LlamaCppBackend()
        faults = faults if faults is not None else os.environ.get(FAULTS_ENV, "")
        if faults:
            parsed = parse_faults(faults)
            unknown = sorted(set(parsed) - set(config.models))
            if unknown:
                raise InvalidRequest(f"{FAULTS_ENV} names unknown model(s) {', '.join(unknown)}; "
                                     f"declared: {', '.join(config.models)}")
            remote = sorted(m for m in parsed if config.models[m].remote)
            if remote:
                raise InvalidRequest(f"{FAULTS_ENV} names remote model(s) {', '.join(remote)}; faults are "
                                     f"injected into local models only (a misbehaving engine is a server)")
            log.warning("injecting faults: %s", "; ".join(f"{m}={f}" for m, f in parsed.items()))
            backend = FaultInjectingBackend(backend, parsed, seed=os.environ.get(FAULT_SEED_ENV))
        settings = config.router
        breaker = CircuitBreaker(settings.allowed_fails, settings.fail_window_s, settings.cooldown_s)
        self._pool = ModelPool(config, backend, breaker)
        self._metrics = store_for(settings)
        self._policy = OrderingPolicy(settings, self._pool, self._metrics, config.strict_order)
        self._chains = ChainWalker(config, self._pool, breaker, self._policy, self._metrics)
        self._affinity = ConversationAffinity() if settings.affinity else None
        self._semantic = SemanticStage(load_examples(settings.semantic_examples)) \
            if settings.semantic_routing else None

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str] | None = None, *,
                  backend: Backend | None = None, faults: str | None = None) -> ZetaDynamicRouter:
        """Read models.toml (discovered as described in config.find_config) and build a router."""
        return cls(load_config(path), backend=backend, faults=faults)

    def __enter__(self) -> ZetaDynamicRouter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Cancel what runs, stop every thread and release every model. Safe to call twice."""
        if self._semantic is not None:
            self._semantic.stop()  # before the pool: an index build between batches ends here
        self._pool.close()
        if self._semantic is not None:
            self._semantic.close()  # ... and one waiting on an embedding, now refused
        self._metrics.close()  # after the pool: the last attempts are recorded by then

    # ---- routing ------------------------------------------------------------------------

    def route(self, prompt: str, task: str | None = None) -> RouteDecision:
        """Decide the task and chain for a prompt without running anything (an uncertain
        classification escalated as routing.py says, the chain in adaptive order when that is
        on; no conversation affinity, which needs messages)."""
        _check_prompt(prompt)
        _check_task(task)
        return self._policy.initial(decide(prompt, task, self.config, second_opinion=self._second_opinion))

    def _second_opinion(self, prompt: str) -> Vote | None:
        """The semantic stage's vote, with the first embedding model of the embed chain that
        is already loaded (none is loaded for it); None when off, or no such model is loaded."""
        if self._semantic is None:
            return None
        name = next((n for n in self.config.routes["embed"] if not self.config.models[n].remote
                     and self._pool.loaded_and_healthy(n, True)), None)  # its index is keyed by the file
        if name is None:
            return None

        def embed(texts: list[str], deadline_s: float) -> Any:
            return self._chains.embed(texts, (name,), {"deadline_s": deadline_s}, None).vectors

        try:
            return self._semantic.second_opinion(prompt, find_model_file(self.config.models[name]), embed)
        except ZetaError as exc:  # the file went away: route without this stage
            log.info("semantic stage abstains: %s", exc)
            return None

    # ---- generation ---------------------------------------------------------------------

    def generate(self, prompt: str, task: str | None = None, *, model: str | None = None,
                 cancel: CancelToken | None = None, **options: Any) -> GenerationResult:
        """Complete `prompt` as plain text with the first model of the task's chain that can
        (or exactly `model`, never a substitute; `task` then only labels the request).

        `options`: sampling (max_tokens, temperature, top_p, top_k, repeat_penalty, seed, stop)
        and budgets in seconds (deadline_s, load_timeout_s, first_token_timeout_s,
        stall_timeout_s), each overriding models.toml for this call. A sampling key not given
        takes the answering model's own default, else [router]'s. `thinking` is accepted but
        changes nothing here: a plain prompt is not rendered by a chat template, whose switch
        it is (see chat())."""
        _check_prompt(prompt)
        return _last(self.stream(prompt, task=task, model=model, cancel=cancel, **options))

    def chat(self, messages: Sequence[dict[str, str]], task: str | None = None, *,
             model: str | None = None, cancel: CancelToken | None = None,
             **options: Any) -> GenerationResult:
        """Answer a conversation, formatted with each model's own chat template. A follow-up
        turn goes first to the model that answered the turn before, while that model is in
        the turn's chain and healthy ([router] affinity; see affinity.py).

        `thinking` ("auto", True or False; default: the answering model's models.toml setting)
        sets the template's thinking switch (Qwen3's enable_thinking) for a model that has one;
        "auto" thinks for the reason task only. Other options as for generate()."""
        if isinstance(messages, str):
            raise InvalidRequest("chat() takes a non-empty list of {'role': ..., 'content': ...} "
                                 "messages; use generate() for a plain prompt")
        return _last(self.stream(messages, task=task, model=model, cancel=cancel, **options))

    def stream(self, prompt_or_messages: str | Sequence[dict[str, str]], task: str | None = None,
               *, model: str | None = None, cancel: CancelToken | None = None,
               **options: Any) -> Stream:
        """Yield TextChunk events as text is produced, a Fallback event each time the answering
        model changes, and one final Done event with the result; the returned Stream's `route`
        says where the request goes before the first event. A model that fails mid-answer
        is followed by the next one continuing from the text so far. Raises FallbackExhausted
        when no model could answer, Cancelled when `cancel` was used.

        Request errors (empty prompt, unknown task or model, bad option) raise at once, before the first
        event, so that a caller never starts consuming a request that cannot run.
        """
        if isinstance(prompt_or_messages, str):
            messages = None
            decision = self._decide(prompt_or_messages, task, model)
        elif isinstance(prompt_or_messages, (bytes, int, float, type(None))):
            raise InvalidRequest("the prompt must be a string (or a list of chat messages), "
                                 f"got {type(prompt_or_messages).__name__}")
        else:
            messages = _check_messages(prompt_or_messages)
            last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user"
                             and m["content"].strip())
            decision = self._decide(last_user, task, model)
            if self._affinity is not None and model is None:
                decision = self._affinity.apply(decision, messages, self.config.routes,
                                                self._pool.healthy)
        budgets = {k: options.pop(k) for k in BUDGET_KEYS if k in options}
        check_budget_overrides(budgets)
        thinking = check_thinking(options.pop("thinking", None))
        sampling = SamplingOverrides.from_options(options)
        self._check_open()
        prompt = prompt_or_messages if messages is None else None
        if messages is not None:  # what the first model will be asked; a fallback's is its attempt's
            first = resolve_thinking(thinking, self.config.models[decision.chain[0]], decision.task)
            decision = replace(decision, thinking=first.describe())
        events = self._chains.generate(prompt, messages, sampling, decision, budgets, cancel, thinking)
        if self._affinity is not None and messages is not None:
            events = self._affinity.track(messages, decision, events)
        return Stream(decision, events)

    def _decide(self, prompt: str, task: str | None, model: str | None) -> RouteDecision:
        """route(); with `model` given, a chain of that model alone, under the task given or
        classified (never escalated: the model answers whatever the task)."""
        if model is None:
            return self.route(prompt, task)
        _check_prompt(prompt)
        _check_task(task)
        if "generate" not in self._spec(model).capabilities:
            raise InvalidRequest(f"model {model!r} does not have the 'generate' capability")
        decision = decide(prompt, task, self.config, escalate=False)
        return replace(decision, chain=(model,), reason=f"model {model} given by the caller")

    # ---- embeddings ---------------------------------------------------------------------

    def embed(self, texts: str | Sequence[str], model: str | None = None, *,
              cancel: CancelToken | None = None, **budgets: Any) -> EmbeddingResult:
        """Embed each text into one L2-normalised row, with the first embedding model that can
        (or exactly `model`, never a substitute)."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or not texts or \
                not all(isinstance(t, str) and t.strip() for t in texts):
            raise InvalidRequest("embed() needs a non-empty list of non-empty strings")
        unknown = sorted(set(budgets) - set(BUDGET_KEYS))
        if unknown:
            raise InvalidRequest(f"unknown option(s) {', '.join(unknown)}; embed() takes "
                                 f"{', '.join(BUDGET_KEYS)}")
        check_budget_overrides(budgets)
        if model is not None:
            if "embed" not in self._spec(model).capabilities:
                raise InvalidRequest(f"model {model!r} does not have the 'embed' capability")
        chain = (model,) if model is not None else self._policy.initial(
            RouteDecision("embed", self.config.routes["embed"], "embed chain"), embedding=True).chain
        self._check_open()
        return self._chains.embed(texts, chain, budgets, cancel)

    # ---- models -------------------------------------------------------------------------

    def preload(self, name: str, *, embedding: bool = False) -> Attempt:
        """Load a model now (admitted like any other load), so that a first request does not
        wait for it. Raises FallbackExhausted carrying the attempt when it cannot be loaded."""
        self._spec(name)
        self._check_open()
        return self._chains.preload(name, embedding)

    def unload(self, name: str) -> None:
        """Release the model (after the requests already queued for it)."""
        self._spec(name)
        self._pool.unload(name)

    def loaded_models(self) -> list[str]:
        return self._pool.loaded_models()

    def status(self) -> list[ModelStatus]:
        """Every model's state, queue and counts, as the router sees it now."""
        return self._pool.status()

    def stats(self, since: float | None = None) -> list[UsageStats]:
        """Requests, success rate, failures, first-token time and speed per model and task, from
        the usage metrics (every process's that shares the file); `since`: only the last that
        many seconds. Memory only, this router's own attempts, when [router] metrics is off."""
        return summarize(self._metrics.records(None if since is None else time.time() - since))

    def _spec(self, name: str) -> ModelSpec:
        """The model's [models.NAME] table; an unknown name is an error, never a substitute."""
        spec = self.config.models.get(name)
        if spec is None:
            raise UnknownModel(f"no model named {name!r}; models.toml declares "
                               f"{', '.join(self.config.models)}")
        return spec

    def _check_open(self) -> None:
        self._pool.check_open()


def _check_prompt(prompt: Any) -> None:
    if not isinstance(prompt, str):
        raise InvalidRequest(f"the prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InvalidRequest("the prompt is empty; nothing to answer")


def _check_task(task: Any) -> None:
    if task is not None and task not in GENERATE_TASKS:
        hint = "; call embed() for embeddings" if task == "embed" else ""
        raise InvalidRequest(f"unknown task {task!r}; use one of {', '.join(GENERATE_TASKS)}{hint}")


def _check_messages(messages: Any) -> list[dict[str, str]]:
    try:
        return validate_messages(messages)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _last(events: Iterator[StreamEvent]) -> GenerationResult:
    for event in events:
        if isinstance(event, Done):
            return event.result
    raise AssertionError("a stream ended without a result or an error")  # pragma: no cover
