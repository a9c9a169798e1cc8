"""ZetaDynamicRouter: route each request by its task and walk that task's fallback chain.

request -> route (task + chain) -> for each model in the chain: find file, check header, load
(once, then kept) -> generate or embed -> a result carrying every attempt, or FallbackExhausted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Iterator, Sequence

import numpy as np

from zeta_local.backend import Backend, LlamaCppBackend, LoadedModel
from zeta_local.classifier import classify
from zeta_local.config import TASKS, Config, load_config
from zeta_local.errors import (ContextOverflow, FallbackExhausted, InvalidModelFile, InvalidRequest,
                               ModelFileMissing, ModelLoadError, UnknownModel, ZetaError)
from zeta_local.faults import ENV_VAR as FAULTS_ENV
from zeta_local.faults import FaultInjectingBackend, parse_faults
from zeta_local.gguf_info import read_gguf_info
from zeta_local.prompt_format import validate_messages
from zeta_local.results import (CONTEXT_OVERFLOW, ERROR, INVALID_FILE, LOAD_FAILED, MISSING, OK,
                                Attempt, Done, EmbeddingResult, Fallback, GenerationResult,
                                RouteDecision, StreamEvent, TextChunk, Usage)
from zeta_local.sampling import SamplingParams, resolve_sampling
from zeta_local.sources import find_model_file

log = logging.getLogger(__name__)

GENERATE_TASKS = tuple(t for t in TASKS if t != "embed")

# What each failure means for the attempt that hit it.
_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (ModelFileMissing, MISSING),
    (InvalidModelFile, INVALID_FILE),
    (ModelLoadError, LOAD_FAILED),
    (ContextOverflow, CONTEXT_OVERFLOW),
)


def _outcome(exc: BaseException) -> str:
    return next((outcome for kind, outcome in _OUTCOMES if isinstance(exc, kind)), ERROR)


def _detail(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ZetaError) else f"{type(exc).__name__}: {exc}"


class ZetaDynamicRouter:
    """Routes prompts to the right local model and falls back along the task's chain.

    Use as a context manager, or call close() to release every model. Safe to share between
    threads: each loaded model serves one request at a time.
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
        self._n_threads = config.router.n_threads or _physical_cores()
        self._loaded: dict[tuple[str, bool], LoadedModel] = {}
        self._load_locks: dict[tuple[str, bool], threading.Lock] = {}
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
        """Release every loaded model. Safe to call twice."""
        with self._lock:
            self._closed = True
            loaded, self._loaded = list(self._loaded.items()), {}
        for (name, _), model in loaded:
            try:
                model.close()
            except Exception:  # one model failing to close must not keep the others loaded
                log.exception("closing %s failed", name)

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

    def generate(self, prompt: str, task: str | None = None, **sampling: Any) -> GenerationResult:
        """Complete `prompt` as plain text with the first model of the task's chain that can."""
        _check_prompt(prompt)
        return _last(self.stream(prompt, task=task, **sampling))

    def chat(self, messages: Sequence[dict[str, str]], task: str | None = None,
             **sampling: Any) -> GenerationResult:
        """Answer a conversation, formatted with each model's own chat template."""
        if isinstance(messages, str):
            raise InvalidRequest("chat() takes a non-empty list of {'role': ..., 'content': ...} "
                                 "messages; use generate() for a plain prompt")
        return _last(self.stream(messages, task=task, **sampling))

    def stream(self, prompt_or_messages: str | Sequence[dict[str, str]], task: str | None = None,
               **sampling: Any) -> Iterator[StreamEvent]:
        """Yield TextChunk events as text is produced, a Fallback event each time the answering
        model changes, and one final Done event with the result. Raises FallbackExhausted when
        no model in the chain could answer.

        Request errors (empty prompt, unknown task, bad sampling value) raise at once, before
        the first event, so that a caller never starts consuming a request that cannot run.
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
        params = resolve_sampling(self.config.router, sampling)
        self._check_open()
        return self._run_chain(prompt_or_messages, messages, decision, params)

    def _run_chain(self, prompt: Any, messages: list[dict[str, str]] | None,
                   decision: RouteDecision, params: SamplingParams) -> Iterator[StreamEvent]:
        attempts: list[Attempt] = []
        for position, name in enumerate(decision.chain):
            started = time.monotonic()
            produced: list[str] = []
            try:
                model = self._get_model(name, embedding=False)
                if messages is None:
                    text, stop = prompt, ()
                else:
                    rendered = model.render_chat(messages)
                    text, stop = rendered.text, rendered.stop
                end = None
                generation_started = time.monotonic()  # usage excludes the load
                with model.lock:  # a llama.cpp context serves one request at a time
                    for piece in model.generate(text, params.with_stop(stop)):
                        if isinstance(piece, str):
                            produced.append(piece)
                            yield TextChunk(piece, name)
                        else:
                            end = piece
            except Exception as exc:  # any failure of this model is an attempt, never a crash
                attempt = Attempt(name, _outcome(exc), _detail(exc), time.monotonic() - started)
                attempts.append(attempt)
                if attempt.outcome == ERROR:
                    log.debug("%s raised", name, exc_info=exc)
                following = decision.chain[position + 1] if position + 1 < len(decision.chain) else None
                log.warning("%s: %s (%s)%s", name, attempt.outcome, attempt.detail,
                            f"; falling back to {following}" if following else "")
                if following:
                    yield Fallback(name, following, attempt.outcome, attempt.detail, "".join(produced))
                continue
            now = time.monotonic()
            assert end is not None, "a generation ended without its summary"
            attempts.append(Attempt(name, OK, f"{end.completion_tokens} tokens in {now - started:.2f} s",
                                    now - started))
            yield Done(GenerationResult(
                text="".join(produced), model=name, task=decision.task,
                finish_reason=end.finish_reason,
                usage=Usage(end.prompt_tokens, end.completion_tokens, now - generation_started),
                route=decision, attempts=tuple(attempts)))
            return
        raise FallbackExhausted(decision.task, attempts)

    # ---- embeddings ---------------------------------------------------------------------

    def embed(self, texts: str | Sequence[str], model: str | None = None) -> EmbeddingResult:
        """Embed each text into one L2-normalised row, with the first embedding model that can
        (or exactly `model`, never a substitute)."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or not texts or \
                not all(isinstance(t, str) and t.strip() for t in texts):
            raise InvalidRequest("embed() needs a non-empty list of non-empty strings")
        if model is not None:
            spec = self.config.models.get(model)
            if spec is None:
                raise UnknownModel(f"no model named {model!r}; models.toml declares "
                                   f"{', '.join(self.config.models)}")
            if "embed" not in spec.capabilities:
                raise InvalidRequest(f"model {model!r} does not have the 'embed' capability")
        chain = (model,) if model is not None else self.config.routes["embed"]
        self._check_open()
        attempts: list[Attempt] = []
        for name in chain:
            started = time.monotonic()
            try:
                loaded = self._get_model(name, embedding=True)
                with loaded.lock:
                    vectors = loaded.embed(list(texts))
            except Exception as exc:
                attempts.append(Attempt(name, _outcome(exc), _detail(exc), time.monotonic() - started))
                log.warning("%s: %s (%s)", name, attempts[-1].outcome, attempts[-1].detail)
                continue
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1, norms)
            attempts.append(Attempt(name, OK, f"{len(texts)} texts, dim {vectors.shape[1]}",
                                    time.monotonic() - started))
            return EmbeddingResult(vectors.astype(np.float32), name, tuple(attempts))
        raise FallbackExhausted("embed", attempts)

    # ---- models -------------------------------------------------------------------------

    def loaded_models(self) -> list[str]:
        with self._lock:
            return sorted({name for name, _ in self._loaded})

    def _get_model(self, name: str, *, embedding: bool) -> LoadedModel:
        """The loaded model, loading it on first use. Two requests never load the same model at
        once: the second waits for the first load and then shares it."""
        key = (name, embedding)
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            spec = self.config.models[name]
            path = find_model_file(spec)
            assert path is not None
            info = read_gguf_info(path)
            started = time.monotonic()
            model = self._backend.load(spec, path, info, embedding=embedding,
                                       n_threads=self._n_threads)
            log.info("loaded %s%s from %s in %.2f s", name, " (embedding)" if embedding else "",
                     path, time.monotonic() - started)
            with self._lock:
                if self._closed:  # closed while loading: do not leak the new model
                    model.close()
                    self._check_open()
                self._loaded[key] = model
            return model

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidRequest("this router has been closed; create a new one")


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
