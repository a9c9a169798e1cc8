"""The llama.cpp backend: load a GGUF through llama-cpp-python, generate token by token, embed.

A model that serves generation and embeddings loads its weights once: its two llama.cpp
contexts, each used by its own worker thread, are made on one llama_model, which is freed when
the last of them closes (llama.cpp runs several contexts of one model on different threads at
once; its test-thread-safety does exactly that). The generation context is llama-cpp-python's
`Llama`, made on the shared weights; the embedding context is a low-level context sized for
what it embeds.

The router talks to backends through the small `Backend`/`LoadedModel` protocols below, so that
fault injection can wrap the real backend instead of replacing it with a mock.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import numpy as np

from zeta_local.admission import gpu_offload_supported
from zeta_local.config import ModelSpec
from zeta_local.errors import ContextOverflow, GenerationError, ModelLoadError, OutOfMemory
from zeta_local.gguf_info import GGUFInfo
from zeta_local.memory import EMBED_SEQUENCES, context_length, embedding_context, flash_attn_on
from zeta_local.prompt_format import RenderedPrompt, render_chat
from zeta_local.reasoning import FORCED_CLOSE, ThinkSplitter, Thought, starts_inside
from zeta_local.sampling import SamplingParams
from zeta_local.thinking import has_thinking_switch

log = logging.getLogger(__name__)
llama_log = logging.getLogger("zeta_local.llama_cpp")


@dataclass(frozen=True)
class GenerationEnd:
    """The last item of LoadedModel.generate(): why it stopped and how many tokens it used."""

    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int  # the thinking's and the answer's
    usage_estimated: bool = False  # a remote engine gave no usage: the counts are estimates
    reasoning_tokens: int = 0
    reasoning_seconds: float = 0.0
    reasoning_capped: bool = False  # the reasoning budget closed the thinking


def end_of(splitter: ThinkSplitter | None, finish: str, prompt_tokens: int, completion_tokens: int,
           reasoning_tokens: int, **extra: Any) -> GenerationEnd:
    """The GenerationEnd of an answer whose thinking `splitter` saw (None: a plain prompt)."""
    return GenerationEnd(finish, prompt_tokens, completion_tokens, reasoning_tokens=reasoning_tokens,
                         reasoning_seconds=splitter.seconds if splitter else 0.0, **extra)


class LoadedModel(Protocol):
    name: str
    n_ctx: int
    cancel: threading.Event  # set: the running decode or embedding stops (Aborted)
    decode_hook: Callable[[], None] | None  # called from inside llama_decode (fault injection)
    # Whether its chat template has a thinking switch (thinking.py) that render_chat's
    # template_vars can set; False for a built-in chat_format and for an embedder.
    thinking_switch: bool

    def render_chat(self, messages: list[dict[str, str]],
                    template_vars: Mapping[str, Any] | None = None) -> RenderedPrompt: ...

    def generate(self, prompt: str, params: SamplingParams) -> Iterator[str | Thought | GenerationEnd]:
        """Yield the answer's text pieces as they are decoded (with params.split_thinking, its
        thinking as Thought pieces before them), then one GenerationEnd."""

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def close(self) -> None: ...


class Backend(Protocol):
    def load(self, spec: ModelSpec, path: Path, info: GGUFInfo, *, embedding: bool,
             n_threads: int, cancel: threading.Event | None = None) -> LoadedModel: ...


class Aborted(Exception):
    """llama.cpp stopped a load or a decode because the attempt was cancelled."""


class LlamaCppBackend:
    """Loads models in this process with llama-cpp-python (memory-mapped weights), one copy of
    each model file's weights however many of its contexts are loaded."""

    def __init__(self) -> None:
        self._weights = _SharedWeights()

    def loaded_weights(self) -> dict[str, int]:
        """The model files whose weights are in memory, and how many contexts use each."""
        return self._weights.users()

    def load(self, spec: ModelSpec, path: Path, info: GGUFInfo, *, embedding: bool,
             n_threads: int, cancel: threading.Event | None = None) -> LoadedModel:
        """Make the model's generation or embedding context, loading its weights unless its
        other context holds them already; `cancel` set during the load makes llama.cpp abort
        it (Aborted). A load that fails leaves nothing behind."""
        import llama_cpp
        from jinja2 import TemplateError

        _install_hooks()
        kwargs = llama_kwargs(spec, path, info, n_threads=n_threads)
        n_ctx = kwargs["n_ctx"]
        _LAST_ERRORS.lines = []
        _LOADING.cancel = cancel
        weights: _WeightsRef | None = None
        try:
            weights = self._weights.acquire(path, spec.n_gpu_layers, cancel)
            if embedding:
                return LlamaCppEmbedder(spec, info, weights, embedding_context(n_ctx), kwargs)
            view = weights.view()
            _LOADING.weights = view  # Llama() takes this llama_model instead of loading one
            try:
                llm = llama_cpp.Llama(**kwargs)
            except BaseException:
                view.close()  # frees a context made before the failure, never the weights
                raise
            finally:
                _LOADING.weights = None
            return LlamaCppModel(spec, llm, info, weights)
        except TemplateError as exc:
            # Llama() compiles each template the GGUF carries, for chat handlers we never use; one
            # that does not compile fails the load there, before our own render could say why.
            if weights is not None:
                weights.release()
            raise ModelLoadError(f"{path}: its chat template (tokenizer.chat_template) does not "
                                 f"compile: {type(exc).__name__}: {exc}") from None
        except (ValueError, RuntimeError, OSError, MemoryError) as exc:
            if weights is not None:
                weights.release()
            if cancel is not None and cancel.is_set():
                raise Aborted(f"loading {path} was cancelled") from None
            why = "; ".join(_LAST_ERRORS.lines[-2:]) or str(exc)
            if isinstance(exc, MemoryError) or "alloc" in why:
                raise OutOfMemory(f"not enough memory to load {path}: {why}") from None
            raise ModelLoadError(f"llama.cpp could not load {path}: {why}") from None
        except BaseException:
            if weights is not None:
                weights.release()
            raise
        finally:
            _LOADING.cancel = None


def llama_kwargs(spec: ModelSpec, path: Path, info: GGUFInfo, *, n_threads: int) -> dict[str, Any]:
    """The `llama_cpp.Llama(...)` arguments of a model's generation context (its embedding
    context starts from them too): the one place they are decided, so that the benchmark's raw
    llama-cpp-python baseline loads the model the same way."""
    n_ctx = context_length(spec.n_ctx, info)
    return dict(
        model_path=str(path), n_ctx=n_ctx, n_batch=min(spec.n_batch, n_ctx),
        n_gpu_layers=spec.n_gpu_layers, n_threads=n_threads, n_threads_batch=n_threads,
        use_mmap=True, verbose=False,
        # Always said, never left to llama-cpp-python, whose default (False) also switches
        # off llama.cpp's own "auto": true/false map to LLAMA_FLASH_ATTN_TYPE_ENABLED/DISABLED.
        flash_attn=flash_attn_on(spec, gpu=gpu_offload_supported()),
    )


class LlamaCppModel:
    """A generation context (llama-cpp-python's Llama) on the model's shared weights. Not
    thread-safe: its worker is its only user."""

    def __init__(self, spec: ModelSpec, llm: Any, info: GGUFInfo, weights: _WeightsRef):
        import llama_cpp

        self.name, self.spec, self.info = spec.name, spec, info
        self.n_ctx = llm.n_ctx()
        # A chat_format overrides the GGUF's template, and the built-in formats have no switch.
        self.thinking_switch = spec.chat_format is None and has_thinking_switch(info.chat_template)
        self._llm = llm
        self._weights = weights
        self._is_eog = lambda token: llama_cpp.llama_vocab_is_eog(llm._model.vocab, token)
        self.cancel = threading.Event()  # swapped for each request's own event
        self.decode_hook: Callable[[], None] | None = None
        # llama-cpp-python logits processors run before sampling (faults.py's scripted answers).
        self.logits_hook: Any = None
        self.end_token = llm.token_eos()
        self._abort_callback = _watch_decodes(self, llm._ctx.ctx)  # keep it referenced

    @property
    def weights_id(self) -> int:
        """The llama_model this context runs on, as llama.cpp reports it: equal for contexts
        that share their weights."""
        return _model_of(self._llm._ctx.ctx)

    def render_chat(self, messages: list[dict[str, str]],
                    template_vars: Mapping[str, Any] | None = None) -> RenderedPrompt:
        def token_text(token: int) -> str:
            return "" if token < 0 else self._llm.detokenize([token], special=True).decode("utf-8", "replace")

        try:
            return render_chat(messages, self.spec.chat_format, self.info.chat_template,
                               token_text(self._llm.token_bos()), token_text(self._llm.token_eos()),
                               template_vars=template_vars)
        except Exception as exc:  # a template that does not render is this model's failure
            raise GenerationError(f"{self.name}: its chat template failed: {exc}") from None

    def tokenize(self, text: str) -> list[int]:
        """The tokens of `text` in the middle of a sequence: no BOS, special tokens parsed."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def generate(self, prompt: str, params: SamplingParams) -> Iterator[str | Thought | GenerationEnd]:
        llm = self._llm
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        if len(tokens) >= self.n_ctx:
            raise ContextOverflow(
                f"the prompt is {len(tokens)} tokens and {self.name}'s context holds "
                f"{self.n_ctx}; shorten it or raise n_ctx in [models.{self.name}]")
        budget = min(params.max_tokens, self.n_ctx - len(tokens))
        llm.set_seed(params.seed if params.seed is not None else random.randrange(1 << 31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = _StopScanner(params.stop)
        splitter = ThinkSplitter(starts_inside(prompt)) if params.split_thinking else None
        produced: list[int] = []
        thinking_tokens, finish, capped = 0, "length", False

        def pieces(text: str) -> list[str | Thought]:
            return (splitter.feed(text) if splitter else [text]) if text else []

        try:
            while True:
                closing: list[int] = []  # the budget ran out: the tokens that end the thinking
                for token in llm.generate(tokens + produced, top_k=params.top_k, top_p=params.top_p,
                                          temp=params.temperature, repeat_penalty=params.repeat_penalty,
                                          logits_processor=self.logits_hook):
                    if self.cancel.is_set():
                        raise Aborted(f"{self.name}: generation cancelled")
                    if self._is_eog(token):
                        finish = "stop"
                        break
                    produced.append(token)
                    was_thinking = splitter is not None and splitter.thinking
                    text, stopped = stops.feed(decoder.decode(llm.detokenize([token])))
                    yield from pieces(text)
                    thinking_tokens += was_thinking or (splitter is not None and splitter.thinking)
                    if stopped:
                        finish = "stop"
                        break
                    if len(produced) >= budget:
                        break
                    if splitter is not None and splitter.thinking and params.reasoning_budget is not None \
                            and thinking_tokens >= params.reasoning_budget:
                        closing = self.tokenize(FORCED_CLOSE)
                        break
                if not closing or len(produced) + len(closing) >= budget:
                    break
                # As llama.cpp's reasoning budget does: the model is made to close its thinking,
                # then goes on from there (its cache holds everything up to the close).
                log.debug("%s: reasoning_budget %d reached; closing the thinking", self.name,
                          params.reasoning_budget)
                capped = True
                produced += closing
                text, _ = stops.feed(decoder.decode(FORCED_CLOSE.encode("utf-8")))
                yield from pieces(text)
        except Exception as exc:
            llm.reset()  # the context may hold half a batch; start the next request clean
            if self.cancel.is_set():
                raise Aborted(f"{self.name}: generation cancelled") from None
            if isinstance(exc, MemoryError):
                raise OutOfMemory(f"{self.name} ran out of memory while generating") from None
            raise
        tail = "" if stops.stopped else stops.flush(decoder.decode(b"", final=True))
        yield from pieces(tail)
        if splitter is not None:
            yield from splitter.flush()
        yield end_of(splitter, finish, len(tokens), len(produced), thinking_tokens, reasoning_capped=capped)

    def embed(self, texts: list[str]) -> np.ndarray:
        raise GenerationError(f"{self.name} was not loaded for embeddings")

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()
            self._weights.release()


class LlamaCppEmbedder:
    """An embedding context on the model's shared weights, sized for what it embeds: texts of
    up to n_ctx tokens, mean-pooled, up to EMBED_SEQUENCES of them per decode (one sequence
    each, in one cache of n_ctx cells). Not thread-safe: its worker is its only user."""

    def __init__(self, spec: ModelSpec, info: GGUFInfo, weights: _WeightsRef, n_ctx: int,
                 kwargs: dict[str, Any]):
        import llama_cpp
        import llama_cpp._internals as internals

        self.name, self.spec, self.info = spec.name, spec, info
        self.n_ctx = n_ctx
        self.thinking_switch = False  # it renders no chats
        self._weights = weights
        self._model = weights.view()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx  # a text is pooled in one micro-batch
        params.n_seq_max = EMBED_SEQUENCES
        params.kv_unified = True  # the texts of a decode share the n_ctx cells
        params.n_threads, params.n_threads_batch = kwargs["n_threads"], kwargs["n_threads_batch"]
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if kwargs.get("flash_attn") \
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as Llama() maps the same setting
        try:
            self._ctx = internals.LlamaContext(model=self._model, params=params, verbose=False)
            self._batch = internals.LlamaBatch(n_tokens=n_ctx, embd=0, n_seq_max=1, verbose=False)
        except BaseException:
            self._model.close()  # frees the context if it was made, never the weights
            raise
        self._n_embd = self._model.n_embd()
        self.cancel = threading.Event()
        self.decode_hook: Callable[[], None] | None = None
        self._abort_callback = _watch_decodes(self, self._ctx.ctx)  # keep it referenced

    @property
    def weights_id(self) -> int:
        return _model_of(self._ctx.ctx)

    def render_chat(self, messages: list[dict[str, str]],
                    template_vars: Mapping[str, Any] | None = None) -> RenderedPrompt:
        raise GenerationError(f"{self.name} was loaded for embeddings, not generation")

    def generate(self, prompt: str, params: SamplingParams) -> Iterator[str | GenerationEnd]:
        raise GenerationError(f"{self.name} was loaded for embeddings, not generation")

    def embed(self, texts: list[str]) -> np.ndarray:
        """One mean-pooled (not normalised) row per text. A text's row depends only on the
        texts decoded with it, which depend only on the request: the same request gives the
        same rows."""
        import llama_cpp

        tokens = [self._model.tokenize(text.encode("utf-8"), add_bos=True, special=False) for text in texts]
        for i, text_tokens in enumerate(tokens):
            if len(text_tokens) > self.n_ctx:
                raise ContextOverflow(f"text {i} is {len(text_tokens)} tokens; {self.name} embeds at "
                                      f"most {self.n_ctx}")
            if not text_tokens:
                raise GenerationError(f"text {i} makes no tokens for {self.name}")
        vectors = np.empty((len(texts), self._n_embd), dtype=np.float32)
        row = 0
        for group in _decode_groups(tokens, self.n_ctx, EMBED_SEQUENCES):
            self._batch.reset()
            for seq, text_tokens in enumerate(group):
                self._batch.add_sequence(text_tokens, seq, True)  # every token an output: all are pooled
            self._ctx.kv_cache_clear()
            try:
                self._ctx.decode(self._batch)
            except RuntimeError:
                if self.cancel.is_set():
                    raise Aborted(f"{self.name}: embedding cancelled") from None
                raise
            for seq in range(len(group)):
                pooled = llama_cpp.llama_get_embeddings_seq(self._ctx.ctx, seq)
                if not pooled:
                    raise GenerationError(f"{self.name}: llama.cpp returned no embedding")
                vectors[row] = np.ctypeslib.as_array(pooled, shape=(self._n_embd,))
                row += 1
        return vectors

    def close(self) -> None:
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx is not None:
            self._batch.close()
            ctx.close()
            self._model.close()
            self._weights.release()


def _decode_groups(tokens: list[list[int]], n_ctx: int, max_texts: int) -> Iterator[list[list[int]]]:
    """The texts in order, as many per decode as fit its n_ctx tokens and max_texts sequences."""
    group: list[list[int]] = []
    used = 0
    for text_tokens in tokens:
        if group and (used + len(text_tokens) > n_ctx or len(group) == max_texts):
            yield group
            group, used = [], 0
        group.append(text_tokens)
        used += len(text_tokens)
    if group:
        yield group


def _watch_decodes(owner: LlamaCppModel | LlamaCppEmbedder, ctx: Any) -> Any:
    """Cancellation inside a decode: llama.cpp polls this callback several hundred times per
    token, so it only reads a flag. `owner.cancel` is swapped for each request's own event;
    `owner.decode_hook` lets fault injection block or sleep *inside* llama_decode, so that an
    injected hang is stopped by exactly the path that stops a real one. Registered once per
    context; the owner keeps the returned callback referenced for the context's lifetime."""
    import llama_cpp

    def should_abort(_data: ctypes.c_void_p) -> bool:
        try:
            hook = owner.decode_hook
            if hook is not None:
                hook()
            return owner.cancel.is_set()
        except BaseException:  # an exception cannot cross into C; abort instead
            return True

    callback = llama_cpp.ggml_abort_callback(should_abort)
    llama_cpp.llama_set_abort_callback(ctx, callback, None)
    return callback


def _model_of(ctx: Any) -> int:
    import llama_cpp

    return ctypes.cast(llama_cpp.llama_get_model(ctx), ctypes.c_void_p).value or 0


# ---- one copy of the weights ---------------------------------------------------------------

class _SharedWeights:
    """The llama_model of each model file this backend has loaded, shared by the contexts made
    on it and freed when the last of them closes. Two contexts asking at once load it once:
    the second waits for the first (still cancellable), then shares."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[str, _Weights] = {}

    def acquire(self, path: Path, n_gpu_layers: int, cancel: threading.Event | None) -> _WeightsRef:
        key = str(path)
        ref: _WeightsRef | None = None
        while True:
            with self._lock:
                weights = self._loaded.get(key)
                if weights is None:
                    weights = self._loaded[key] = _Weights()
                    break  # this thread loads them
                if weights.model is not None:
                    weights.users += 1
                    ref = _WeightsRef(self, key, weights)
                    break
            while not weights.ready.wait(_POLL_S):  # another context is loading them
                if cancel is not None and cancel.is_set():
                    raise Aborted(f"loading {path} was cancelled")
        if ref is not None:
            # Loaded already: the load-progress check still runs once, so that a cancel (or an
            # injected fault) reaches a context made on shared weights as it reaches a load.
            if not _on_load_progress(1.0, None):
                ref.release()
                raise Aborted(f"loading {path} was cancelled")
            log.debug("%s: a second context on its loaded weights", path)
            return ref
        try:
            model = _load_weights(path, n_gpu_layers)
        except BaseException:
            with self._lock:
                del self._loaded[key]
            weights.ready.set()  # a waiting context loads them itself
            raise
        with self._lock:
            weights.model = model
            weights.users += 1
        weights.ready.set()
        return _WeightsRef(self, key, weights)

    def users(self) -> dict[str, int]:
        with self._lock:
            return {key: w.users for key, w in self._loaded.items() if w.model is not None}

    def release(self, key: str, weights: _Weights) -> None:
        with self._lock:
            weights.users -= 1
            if weights.users > 0:
                return
            del self._loaded[key]
        assert weights.model is not None
        weights.model.close()  # llama_model_free: every context on it is closed already


@dataclass(eq=False)
class _Weights:
    model: Any = None  # llama_cpp._internals.LlamaModel, once loaded
    users: int = 0
    ready: threading.Event = field(default_factory=threading.Event)


class _WeightsRef:
    """One context's hold on shared weights."""

    def __init__(self, owner: _SharedWeights, key: str, weights: _Weights):
        self._owner, self._key, self._weights = owner, key, weights
        self._released = False

    def view(self) -> Any:
        """The shared llama_model as a LlamaModel of the context's own: closing it frees the
        contexts made on it, never the weights. (llama-cpp-python's LlamaModel frees its
        llama_model through its exit stack; the view has the same fields and an empty stack.)"""
        model = self._weights.model
        view = object.__new__(_plain_model_class)
        view.__dict__.update(model.__dict__)
        view._exit_stack = contextlib.ExitStack()
        view.custom_samplers = []
        view.shares = model  # the owner outlives its views, even when the garbage collector frees them
        return view

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._owner.release(self._key, self._weights)


def _load_weights(path: Path, n_gpu_layers: int) -> Any:
    """The llama_model alone, with the parameters Llama() would give it."""
    import llama_cpp.llama_cpp as low_level

    params = low_level.llama_model_default_params()  # with the load-progress callback (patched there)
    params.n_gpu_layers = 0x7FFFFFFF if n_gpu_layers == -1 else n_gpu_layers  # as Llama() maps -1
    params.load_mode = low_level.LLAMA_LOAD_MODE_MMAP
    return _plain_model_class(path_model=str(path), params=params, verbose=False)


class _StopScanner:
    """Cuts the text at the first stop string, holding back a tail that may begin one so that a
    stop string split across tokens is never streamed out."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending, self.stopped = self.pending[:cut], "", True
            return out, True
        hold = max((k for s in self.stops for k in range(min(len(s) - 1, len(self.pending)), 0, -1)
                    if self.pending.endswith(s[:k])), default=0)
        out = self.pending[:len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out, False

    def flush(self, text: str) -> str:
        out, _ = self.feed(text)
        rest, self.pending = self.pending, ""
        return out + rest


# ---- process-wide hooks into llama.cpp ---------------------------------------------------
# llama.cpp writes to stderr even with verbose=False; an application embedding the router must
# stay quiet, so its log goes through `logging` instead. The last error lines of the calling
# thread are kept to explain a failed load, which llama-cpp-python reports only as "Failed to
# load model from file". Loads are cancelled through llama.cpp's load-progress callback.

_LAST_ERRORS = threading.local()
_LOADING = threading.local()  # .cancel: the event that aborts the load running on this thread
                              # .hook: called from llama.cpp's load progress (fault injection)
                              # .weights: the llama_model the Llama() made on this thread uses
_POLL_S = 0.005  # how often a context waiting for its weights to load looks at its cancel flag
# ggml's levels: 1 debug, 2 info, 3 warn, 4 error, 5 "continue the previous line". llama.cpp's
# info is chatter and its warnings are routine, so both sit one step lower in Python's scale.
_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.WARNING}
_ERROR = 4
_callback: Any = None
_progress_callback: Any = None
_plain_model_class: Any = None  # llama-cpp-python's LlamaModel, before Llama() is made to share
_callback_lock = threading.Lock()


@contextlib.contextmanager
def load_hook(hook: Callable[[], None]) -> Iterator[None]:
    """Call `hook` from inside llama.cpp's model loader on this thread (fault injection)."""
    _LOADING.hook = hook
    try:
        yield
    finally:
        _LOADING.hook = None


def _on_load_progress(_progress: float, _data: ctypes.c_void_p) -> bool:
    """llama.cpp asks this whether to go on loading; False aborts the load."""
    try:
        hook = getattr(_LOADING, "hook", None)
        if hook is not None:
            hook()
        cancel = getattr(_LOADING, "cancel", None)
        return not (cancel is not None and cancel.is_set())
    except BaseException:
        return False


def _no_redirect(*_args: Any, **_kwargs: Any) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def _install_hooks() -> None:
    """Once per process: llama.cpp's log into `logging`, and a load-progress callback through
    which a load can be cancelled (llama-cpp-python exposes neither). The progress callback is
    set by wrapping llama_model_default_params, which Llama() calls to build its parameters.

    Also: with verbose=False, llama-cpp-python points the whole process's stdout and stderr
    file descriptors at /dev/null for the length of a load, swallowing what every other thread
    prints meanwhile. llama.cpp's log comes through `logging` already, so that redirection is
    replaced by a no-op.

    And: Llama() always loads a llama_model of its own. While `_LOADING.weights` is set on the
    calling thread, it gets that (shared) one instead: the class it constructs the model with
    returns the shared model's view, and loads as before otherwise."""
    global _callback, _progress_callback, _plain_model_class
    import llama_cpp
    import llama_cpp._internals as internals
    import llama_cpp.llama as high_level
    import llama_cpp.llama_cpp as low_level

    with _callback_lock:
        if _callback is not None:
            return
        high_level.suppress_stdout_stderr = internals.suppress_stdout_stderr = _no_redirect
        _progress_callback = low_level.llama_progress_callback(_on_load_progress)
        default_params = low_level.llama_model_default_params

        def params_with_progress() -> Any:
            params = default_params()
            params.progress_callback = _progress_callback
            return params

        low_level.llama_model_default_params = params_with_progress

        _plain_model_class = internals.LlamaModel

        class ModelOrShared(_plain_model_class):  # type: ignore[misc,valid-type]
            def __new__(cls, *args: Any, **kwargs: Any) -> Any:
                shared = getattr(_LOADING, "weights", None)
                # A view is not a ModelOrShared, so Python does not run __init__ (the load) on it.
                return shared if shared is not None else super().__new__(cls)

        internals.LlamaModel = ModelOrShared

        @llama_cpp.llama_log_callback
        def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            state = _LAST_ERRORS
            if level != 5:  # 5 continues the previous message at its level
                state.level = level
            state.partial = getattr(state, "partial", "") + text.decode("utf-8", "replace")
            if not state.partial.endswith("\n"):
                return
            line, state.partial = state.partial.strip(), ""
            level_now = getattr(state, "level", 1)
            if line:
                llama_log.log(_LEVELS.get(level_now, logging.DEBUG), "%s", line)
                if level_now == _ERROR:
                    lines = getattr(state, "lines", [])
                    state.lines = (lines + [line])[-8:]

        _callback = on_log  # keep a reference: llama.cpp calls it for the life of the process
        llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
