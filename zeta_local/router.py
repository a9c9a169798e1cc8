"""ZetaDynamicRouter: route each request by its task and walk that task's fallback chain.

request -> route (task + chain) -> for each model in the chain: circuit breaker, file check,
its worker's queue -> load, generate, heartbeat (worker thread) <- watchdog (budgets, cancel)
-> a result carrying every attempt, or one typed error (FallbackExhausted, Cancelled).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import replace
from typing import Any, Iterator, Sequence

import numpy as np

from zeta_local.admission import MemoryLedger, gpu_offload_supported, memory_budgets
from zeta_local.backend import Backend, GenerationEnd, LlamaCppBackend, LoadedModel
from zeta_local.breaker import CircuitBreaker
from zeta_local.cancel import CancelToken
from zeta_local.classifier import classify
from zeta_local.config import TASKS, Config, ModelSpec, load_config
from zeta_local.errors import (Cancelled, ContextOverflow, FallbackExhausted, InvalidModelFile,
                               InvalidRequest, ModelFileMissing, ModelLoadError, OutOfMemory,
                               UnknownModel, ZetaError)
from zeta_local.faults import ENV_VAR as FAULTS_ENV
from zeta_local.faults import FaultInjectingBackend, parse_faults
from zeta_local.gguf_info import read_gguf_info
from zeta_local.memory import MemoryEstimate, estimate_for, estimate_memory
from zeta_local.prompt_format import validate_messages
from zeta_local.results import (CANCELLED, CONTEXT_OVERFLOW, COOLING_DOWN, DEADLINE, DOES_NOT_FIT, ERROR,
                                INVALID_FILE, LOAD_FAILED, MISSING, OK, OUT_OF_MEMORY, QUARANTINED,
                                QUEUE_FULL, STALLED, TIMEOUT_FIRST_TOKEN, TIMEOUT_LOAD, Attempt,
                                Done, EmbeddingResult, Fallback, GenerationResult, ModelStatus,
                                RouteDecision, StreamEvent, TextChunk, Usage)
from zeta_local.sampling import SamplingParams, resolve_sampling
from zeta_local.sources import find_model_file
from zeta_local.watchdog import BUDGET_KEYS, Watchdog, check_budget_overrides, resolve_budgets
from zeta_local.worker import QUEUED, Job, ModelWorker

log = logging.getLogger(__name__)

GENERATE_TASKS = tuple(t for t in TASKS if t != "embed")

# What each failure means for the attempt that hit it.
_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (ModelFileMissing, MISSING),
    (InvalidModelFile, INVALID_FILE),
    (ModelLoadError, LOAD_FAILED),
    (ContextOverflow, CONTEXT_OVERFLOW),
    (OutOfMemory, OUT_OF_MEMORY),
    (MemoryError, OUT_OF_MEMORY),
)
# Outcomes that say something about the model's health, and so count for its circuit breaker.
_BREAKER_OUTCOMES = {LOAD_FAILED, ERROR, OUT_OF_MEMORY, TIMEOUT_LOAD, TIMEOUT_FIRST_TOKEN, STALLED}


def _outcome(exc: BaseException) -> str:
    return next((outcome for kind, outcome in _OUTCOMES if isinstance(exc, kind)), ERROR)


def _detail(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ZetaError) else f"{type(exc).__name__}: {exc}"


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
        self._backend = backend if backend is not None else LlamaCppBackend()
        faults = faults if faults is not None else os.environ.get(FAULTS_ENV, "")
        if faults:
            parsed = parse_faults(faults)
            unknown = sorted(set(parsed) - set(config.models))
            if unknown:
                raise InvalidRequest(f"{FAULTS_ENV} names unknown model(s) {', '.join(unknown)}; "
                                     f"declared: {', '.join(config.models)}")
            log.warning("injecting faults: %s", "; ".join(f"{m}={f}" for m, f in parsed.items()))
            self._backend = FaultInjectingBackend(self._backend, parsed)
        settings = config.router
        self._n_threads = settings.n_threads or _physical_cores()
        self._breaker = CircuitBreaker(settings.allowed_fails, settings.fail_window_s, settings.cooldown_s)
        self._workers: dict[tuple[str, bool], ModelWorker] = {}
        self._estimates: dict[tuple[str, bool], MemoryEstimate] = {}
        self._gpu = gpu_offload_supported()
        self._ledger = MemoryLedger(*memory_budgets(settings.ram_budget, settings.vram_budget,
                                                     settings.memory_headroom, self._gpu))
        self._headers: dict[tuple[str, bool], Any] = {}  # GGUFInfo of each model seen
        self._gpu_layers: dict[tuple[str, bool], int] = {}  # partial offloads chosen by admission
        self._admission_lock = threading.Lock()
        self._watchdog: Watchdog | None = None
        self._lock = threading.Lock()
        self._closed = False

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
        with self._lock:
            self._closed = True
            workers, self._workers = list(self._workers.values()), {}
            watchdog, self._watchdog = self._watchdog, None
        grace = self.config.router.cancel_grace_s + 1
        stuck = [w.name for w in workers if not w.close(timeout=grace)]
        if watchdog is not None:
            watchdog.close(timeout=grace)
        if stuck:  # daemon threads: they cannot keep the process alive
            log.error("worker(s) of %s did not stop within %.1f s", ", ".join(stuck), grace)

    # ---- routing ------------------------------------------------------------------------

    def route(self, prompt: str, task: str | None = None) -> RouteDecision:
        """Decide the task and chain for a prompt without running anything."""
        _check_prompt(prompt)
        if task is not None:
            if task not in GENERATE_TASKS:
                hint = "; call embed() for embeddings" if task == "embed" else ""
                raise InvalidRequest(f"unknown task {task!r}; use one of "
                                     f"{', '.join(GENERATE_TASKS)}{hint}")
            return RouteDecision(task, self.config.routes[task], "task given by the caller")
        found = classify(prompt)
        return RouteDecision(found.task, self.config.routes[found.task], found.reason,
                             found.confidence)

    # ---- generation ---------------------------------------------------------------------

    def generate(self, prompt: str, task: str | None = None, *, cancel: CancelToken | None = None,
                 **options: Any) -> GenerationResult:
        """Complete `prompt` as plain text with the first model of the task's chain that can.

        `options`: sampling (max_tokens, temperature, top_p, top_k, repeat_penalty, seed, stop)
        and budgets in seconds (deadline_s, load_timeout_s, first_token_timeout_s,
        stall_timeout_s), each overriding models.toml for this call."""
        _check_prompt(prompt)
        return _last(self.stream(prompt, task=task, cancel=cancel, **options))

    def chat(self, messages: Sequence[dict[str, str]], task: str | None = None, *,
             cancel: CancelToken | None = None, **options: Any) -> GenerationResult:
        """Answer a conversation, formatted with each model's own chat template."""
        if isinstance(messages, str):
            raise InvalidRequest("chat() takes a non-empty list of {'role': ..., 'content': ...} "
                                 "messages; use generate() for a plain prompt")
        return _last(self.stream(messages, task=task, cancel=cancel, **options))

    def stream(self, prompt_or_messages: str | Sequence[dict[str, str]], task: str | None = None,
               *, cancel: CancelToken | None = None, **options: Any) -> Iterator[StreamEvent]:
        """Yield TextChunk events as text is produced, a Fallback event each time the answering
        model changes, and one final Done event with the result. A model that fails mid-answer
        is followed by the next one continuing from the text so far. Raises FallbackExhausted
        when no model could answer, Cancelled when `cancel` was used.

        Request errors (empty prompt, unknown task, bad option) raise at once, before the first
        event, so that a caller never starts consuming a request that cannot run.
        """
        if isinstance(prompt_or_messages, str):
            messages = None
            decision = self.route(prompt_or_messages, task)
        elif isinstance(prompt_or_messages, (bytes, int, float, type(None))):
            raise InvalidRequest("the prompt must be a string (or a list of chat messages), "
                                 f"got {type(prompt_or_messages).__name__}")
        else:
            messages = _check_messages(prompt_or_messages)
            last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user"
                             and m["content"].strip())
            decision = self.route(last_user, task)
        budgets = {k: options.pop(k) for k in BUDGET_KEYS if k in options}
        check_budget_overrides(budgets)
        params = resolve_sampling(self.config.router, options)
        self._check_open()
        prompt = prompt_or_messages if messages is None else None
        return self._run_chain(prompt, messages, params, decision, budgets, cancel)

    def _run_chain(self, prompt: str | None, messages: list[dict[str, str]] | None,
                   params: SamplingParams, decision: RouteDecision, budgets: dict[str, Any],
                   cancel: CancelToken | None) -> Iterator[StreamEvent]:
        deadline_at = time.monotonic() + (budgets.get("deadline_s") or self.config.router.deadline_s)
        attempts: list[Attempt] = []
        text_so_far = ""
        remaining = list(decision.chain)
        while remaining:
            name = remaining.pop(0)
            job = Job(model=name, prompt=prompt, messages=messages, params=params, prefix=text_so_far)
            started = time.monotonic()
            produced: list[str] = []
            end: GenerationEnd | None = None
            for kind, *rest in self._attempt(job, embedding=False, deadline_at=deadline_at,
                                             budgets=budgets, cancel=cancel,
                                             later_loaded=self._any_loaded(remaining, False)):
                if kind == "text":
                    produced.append(rest[0])
                    yield TextChunk(rest[0], name)
                elif kind == "end":
                    end = rest[0]
                else:  # ("failed", outcome, detail)
                    outcome, detail = rest
            seconds = time.monotonic() - started
            if end is not None:
                attempts.append(Attempt(name, OK, f"{end.completion_tokens} tokens in {seconds:.2f} s",
                                        seconds))
                yield Done(GenerationResult(
                    text=text_so_far + "".join(produced), model=name, task=decision.task,
                    finish_reason=end.finish_reason,
                    usage=Usage(end.prompt_tokens, end.completion_tokens,
                                time.monotonic() - job.generating_since),
                    route=decision, attempts=tuple(attempts)))
                return
            attempts.append(Attempt(name, outcome, detail, seconds))
            if outcome == CANCELLED:
                raise Cancelled(attempts)
            text_so_far += "".join(produced)
            if decision.task not in self.config.strict_order:
                remaining = self._fallback_order(remaining, embedding=False)
            following = remaining[0] if remaining else None
            self._log_hop(name, outcome, detail, following)
            if outcome == DEADLINE:
                break
            if following:
                yield Fallback(name, following, outcome, detail, text_so_far)
        raise FallbackExhausted(decision.task, attempts)

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
            worker = self._worker(name, embedding)
            if worker.quarantined:
                yield ("failed", QUARANTINED, "its worker did not come back from a cancel")
                return
            refused = self._admit(name, embedding, later_loaded)
            if refused:
                yield ("failed", DOES_NOT_FIT, refused)
                return
            submitted = worker.submit(job)
            if not submitted:
                yield ("failed", QUEUE_FULL, f"{self.config.router.queue_size} requests already "
                                             f"waiting (queue_size)")
                return
            spec = self.config.models[name]
            self._ensure_watchdog().watch(job, worker, resolve_budgets(self.config.router, spec, budgets),
                                          deadline_at)
            if cancel is not None:
                cancel.attach(job)
            for event in _events(job, deadline_at, self.config.router.cancel_grace_s):
                if event[0] in ("text", "end", "vectors", "loaded"):
                    if event[0] != "text":
                        verdict = OK
                    yield event
                    continue
                outcome, detail = (event[1], event[2]) if event[0] == "tripped" else \
                    (_outcome(event[1]), _detail(event[1]))
                if event[0] == "error" and outcome == ERROR:
                    log.debug("%s raised", name, exc_info=event[1])
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
            if verdict in _BREAKER_OUTCOMES or verdict == OK:
                self._breaker.record(name, failed=verdict != OK)
            else:
                self._breaker.release_trial(name)
            if verdict == OUT_OF_MEMORY:  # the estimate was too low: never trust it again as is
                self._ledger.correct_upward((name, embedding))
            elif verdict == OK:
                self._ledger.touch((name, embedding))

    def _admit(self, name: str, embedding: bool, later_loaded: bool) -> str | None:
        """Reserve the model's predicted memory before it loads; None when admitted (or already
        loaded), else why not, with the numbers. Idle models are evicted to make room, least
        recently used first, but not when a model later in the chain is loaded already: that
        one answers sooner than an eviction and a cold load would."""
        key = (name, embedding)
        with self._admission_lock:
            # Loaded, loading or queued models hold a reservation already. (An evicted model
            # whose unload is still queued does not, and is admitted again like any other.)
            if key in self._ledger.held():
                return None
            busy = {k for k, w in self._workers.items() if w.busy}
            admission = self._ledger.consider(key, self._estimates[key], busy)
            if not admission.fits and self.config.models[name].allow_partial_offload:
                admission = self._partial_offload(key, busy) or admission
            if not admission.fits:
                return admission.detail
            if admission.evict and later_loaded:
                return (f"{admission.detail}; it would take evicting "
                        f"{', '.join(k[0] for k in admission.evict)}, and a model later in the "
                        f"chain is loaded already")
            for victim in admission.evict:
                log.info("evicting %s (least recently used) to make room for %s", victim[0], name)
                self._ledger.release(victim)
                self._workers[victim].unload()
            self._ledger.take(key, self._estimates[key], self.config.models[name].pinned)
            return None

    def _partial_offload(self, key: tuple[str, bool], busy: set[tuple[str, bool]]) -> Any:
        """The most GPU layers that fit (allow_partial_offload); None if none do. The choice is
        kept for the load and the ledger."""
        info = self._headers[key]
        estimate = self._estimates[key]
        layers = info.arch_value("block_count")
        if not (self._gpu and estimate.vram and isinstance(layers, int)):
            return None
        for on_gpu in range(layers - 1, -1, -1):
            partial = estimate_memory(info, n_ctx=estimate.n_ctx, n_gpu_layers=on_gpu,
                                      embedding=key[1])
            admission = self._ledger.consider(key, partial, busy)
            if admission.fits:
                log.info("%s: %d of %d layers on the GPU (allow_partial_offload)", key[0], on_gpu, layers)
                self._estimates[key], self._gpu_layers[key] = partial, on_gpu
                return admission
        return None

    def _any_loaded(self, names: list[str], embedding: bool) -> bool:
        return any(self._loaded_and_healthy(n, embedding) for n in names)

    def _loaded_and_healthy(self, name: str, embedding: bool) -> bool:
        worker = self._workers.get((name, embedding))
        return worker is not None and worker.model is not None and not worker.quarantined \
            and self._breaker.cooling_until(name) is None

    def _fallback_order(self, names: list[str], embedding: bool) -> list[str]:
        """Fallback candidates: loaded and healthy first, then those that fit without eviction,
        then the rest, each group in the chain's order."""
        def group(name: str) -> int:
            if self._loaded_and_healthy(name, embedding):
                return 0
            estimate = self._estimates.get((name, embedding))
            if estimate is None:  # never seen yet: its file may not even be here
                return 2
            admission = self._ledger.consider((name, embedding), estimate, set())
            return 1 if admission.fits and not admission.evict else 2
        return sorted(names, key=group)  # sorted() is stable: chain order within a group

    def _log_hop(self, name: str, outcome: str, detail: str, following: str | None) -> None:
        log.warning("%s: %s (%s)%s", name, outcome, detail,
                    f"; falling back to {following}" if following and outcome != DEADLINE else "")

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
        chain = (model,) if model is not None else self.config.routes["embed"]
        self._check_open()
        deadline_at = time.monotonic() + (budgets.get("deadline_s") or self.config.router.deadline_s)
        attempts: list[Attempt] = []
        remaining = list(chain)
        while remaining:
            name = remaining.pop(0)
            started = time.monotonic()
            job = Job(model=name, texts=list(texts))
            for kind, *rest in self._attempt(job, embedding=True, deadline_at=deadline_at,
                                             budgets=budgets, cancel=cancel,
                                             later_loaded=self._any_loaded(remaining, True)):
                if kind == "vectors":
                    vectors = rest[0]
                    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                    vectors = (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)
                    attempts.append(Attempt(name, OK, f"{len(texts)} texts, dim {vectors.shape[1]}",
                                            time.monotonic() - started))
                    return EmbeddingResult(vectors, name, tuple(attempts))
                outcome, detail = rest
            attempts.append(Attempt(name, outcome, detail, time.monotonic() - started))
            if outcome == CANCELLED:
                raise Cancelled(attempts)
            if "embed" not in self.config.strict_order:
                remaining = self._fallback_order(remaining, embedding=True)
            self._log_hop(name, outcome, detail, remaining[0] if remaining else None)
            if outcome == DEADLINE:
                break
        raise FallbackExhausted("embed", attempts)

    # ---- models -------------------------------------------------------------------------

    def preload(self, name: str, *, embedding: bool = False) -> Attempt:
        """Load a model now (admitted like any other load), so that a first request does not
        wait for it. Raises FallbackExhausted carrying the attempt when it cannot be loaded."""
        self._spec(name)
        self._check_open()
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

    def unload(self, name: str) -> None:
        """Release the model (after the requests already queued for it)."""
        self._spec(name)
        with self._lock:
            workers = [w for (n, _), w in self._workers.items() if n == name]
        for worker in workers:
            worker.unload()

    def loaded_models(self) -> list[str]:
        with self._lock:
            return sorted({name for (name, _), w in self._workers.items() if w.model is not None})

    def status(self) -> list[ModelStatus]:
        """Every model's state, queue and counts, as the router sees it now."""
        rows = []
        with self._lock:
            workers = dict(self._workers)
        held = self._ledger.held()  # one consistent snapshot for every row
        for name, spec in self.config.models.items():
            mine = [w for (n, _), w in workers.items() if n == name]
            states = {w.state for w in mine}
            cooling = self._breaker.cooling_until(name)
            detail = ""
            if "quarantined" in states:
                state, detail = "quarantined", "its worker did not come back from a cancel"
            elif cooling is not None:
                state = "cooling_down"
                detail = f"skipped for another {cooling - time.monotonic():.1f} s"
            else:
                state = next((s for s in ("loading", "busy", "ready") if s in states), "unloaded")
                if state == "unloaded":
                    try:
                        path = find_model_file(spec, materialize=False)
                        if path is not None:
                            read_gguf_info(path)
                    except (ModelFileMissing, InvalidModelFile) as exc:
                        state, detail = "unavailable", str(exc)
            rows.append(ModelStatus(name, state, detail, sum(w.queue_length() for w in mine),
                                    sum(w.served for w in mine), sum(w.failed for w in mine),
                                    sum(h.ram + h.vram for (n, _), h in held.items() if n == name)))
        return rows

    def _worker(self, name: str, embedding: bool) -> ModelWorker:
        """The model's worker, created on first use after its file is found and checked. The
        worker loads the model itself, on its own thread, under the watchdog's load budget."""
        key = (name, embedding)
        with self._lock:
            self._check_open()
            worker = self._workers.get(key)
        if worker is not None:
            return worker
        spec = self.config.models[name]
        path = find_model_file(spec)
        assert path is not None
        info = read_gguf_info(path)
        estimate = estimate_for(spec, info, gpu=self._gpu, embedding=embedding)

        def load(cancel: threading.Event) -> LoadedModel:
            started = time.monotonic()
            layers = self._gpu_layers.get(key)
            model = self._backend.load(spec if layers is None else replace(spec, n_gpu_layers=layers),
                                       path, info, embedding=embedding, n_threads=self._n_threads,
                                       cancel=cancel)
            log.info("loaded %s%s from %s in %.2f s", name, " (embedding)" if embedding else "",
                     path, time.monotonic() - started)
            return model

        with self._lock:
            self._check_open()
            worker = self._workers.get(key)
            if worker is None:  # another thread may have created it meanwhile
                self._estimates[key], self._headers[key] = estimate, info
                worker = self._workers[key] = ModelWorker(
                    f"{name}{'-embed' if embedding else ''}", load, self.config.router.queue_size,
                    keep_alive_s=None if spec.pinned else spec.keep_alive_s,
                    on_release=lambda: self._ledger.release(key))
            return worker

    def _ensure_watchdog(self) -> Watchdog:
        with self._lock:
            if self._watchdog is None:
                self._watchdog = Watchdog()
            return self._watchdog

    def _spec(self, name: str) -> ModelSpec:
        """The model's [models.NAME] table; an unknown name is an error, never a substitute."""
        spec = self.config.models.get(name)
        if spec is None:
            raise UnknownModel(f"no model named {name!r}; models.toml declares "
                               f"{', '.join(self.config.models)}")
        return spec

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidRequest("this router has been closed; create a new one")


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
        if event[0] != "text":
            return


def _check_prompt(prompt: Any) -> None:
    if not isinstance(prompt, str):
        raise InvalidRequest(f"the prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InvalidRequest("the prompt is empty; nothing to answer")


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


def _physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
