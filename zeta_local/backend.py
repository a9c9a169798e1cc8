"""The llama.cpp backend: load a GGUF through llama-cpp-python, generate token by token, embed.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from zeta_local.admission import gpu_offload_supported
from zeta_local.config import ModelSpec
from zeta_local.errors import ContextOverflow, GenerationError, ModelLoadError, OutOfMemory
from zeta_local.gguf_info import GGUFInfo
from zeta_local.memory import context_length, flash_attn_on
from zeta_local.prompt_format import RenderedPrompt, render_chat
from zeta_local.sampling import SamplingParams

log = logging.getLogger(__name__)
llama_log = logging.getLogger("zeta_local.llama_cpp")

# Longest text, in tokens, that one embedding accepts. llama.cpp sizes the compute buffer by it
# (for Gemma 3 270M: 2.1 GiB at 2048, about 0.5 GiB at 512).
EMBED_BATCH = 512


@dataclass(frozen=True)
class GenerationEnd:
    """The last item of LoadedModel.generate(): why it stopped and how many tokens it used."""

    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


class LoadedModel(Protocol):
    name: str
    n_ctx: int
    cancel: threading.Event  # set: the running decode or embedding stops (Aborted)
    decode_hook: Callable[[], None] | None  # called from inside llama_decode (fault injection)

    def render_chat(self, messages: list[dict[str, str]]) -> RenderedPrompt: ...

    def generate(self, prompt: str, params: SamplingParams) -> Iterator[str | GenerationEnd]:
        """Yield text pieces as they are decoded, then one GenerationEnd."""

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def close(self) -> None: ...


class Backend(Protocol):
    def load(self, spec: ModelSpec, path: Path, info: GGUFInfo, *, embedding: bool,
             n_threads: int, cancel: threading.Event | None = None) -> LoadedModel: ...


class Aborted(Exception):
    """llama.cpp stopped a load or a decode because the attempt was cancelled."""


class LlamaCppBackend:
    """Loads models in this process with llama-cpp-python (memory-mapped weights)."""

    def load(self, spec: ModelSpec, path: Path, info: GGUFInfo, *, embedding: bool,
             n_threads: int, cancel: threading.Event | None = None) -> LlamaCppModel:
        """Load the model; `cancel` set during the load makes llama.cpp abort it (Aborted)."""
        import llama_cpp

        _install_hooks()
        n_ctx = context_length(spec.n_ctx, info)
        kwargs: dict[str, Any] = dict(
            model_path=str(path), n_ctx=n_ctx, n_batch=min(spec.n_batch, n_ctx),
            n_gpu_layers=spec.n_gpu_layers, n_threads=n_threads, n_threads_batch=n_threads,
            use_mmap=True, verbose=False,
            # Always said, never left to llama-cpp-python, whose default (False) also switches
            # off llama.cpp's own "auto": true/false map to LLAMA_FLASH_ATTN_TYPE_ENABLED/DISABLED.
            flash_attn=flash_attn_on(spec, gpu=gpu_offload_supported()),
        )
        if embedding:
            # Pooled embeddings need a whole text in one micro-batch.
            batch = min(n_ctx, EMBED_BATCH)
            kwargs |= dict(embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                           n_batch=batch, n_ubatch=batch)
        _LAST_ERRORS.lines = []
        _LOADING.cancel = cancel
        try:
            llm = llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError, OSError, MemoryError) as exc:
            if cancel is not None and cancel.is_set():
                raise Aborted(f"loading {path} was cancelled") from None
            why = "; ".join(_LAST_ERRORS.lines[-2:]) or str(exc)
            if isinstance(exc, MemoryError) or "alloc" in why:
                raise OutOfMemory(f"not enough memory to load {path}: {why}") from None
            raise ModelLoadError(f"llama.cpp could not load {path}: {why}") from None
        finally:
            _LOADING.cancel = None
        return LlamaCppModel(spec, llm, info, embedding)


class LlamaCppModel:
    """One llama.cpp model and context. Not thread-safe: its worker is its only user."""

    def __init__(self, spec: ModelSpec, llm: Any, info: GGUFInfo, embedding: bool):
        import llama_cpp

        self.name, self.spec, self.info = spec.name, spec, info
        self.n_ctx = llm.n_ctx()
        self._llm = llm
        self._embedding = embedding
        self._is_eog = lambda token: llama_cpp.llama_vocab_is_eog(llm._model.vocab, token)
        # Cancellation inside a decode: llama.cpp polls this callback several hundred times per
        # token, so it only reads a flag. `cancel` is swapped for each request's own event;
        # `decode_hook` lets fault injection block or sleep *inside* llama_decode, so that an
        # injected hang is stopped by exactly the path that stops a real one.
        self.cancel = threading.Event()
        self.decode_hook: Callable[[], None] | None = None

        def should_abort(_data: ctypes.c_void_p) -> bool:
            try:
                hook = self.decode_hook
                if hook is not None:
                    hook()
                return self.cancel.is_set()
            except BaseException:  # an exception cannot cross into C; abort instead
                return True

        self._abort_callback = llama_cpp.ggml_abort_callback(should_abort)  # keep it referenced
        llama_cpp.llama_set_abort_callback(llm._ctx.ctx, self._abort_callback, None)

    def render_chat(self, messages: list[dict[str, str]]) -> RenderedPrompt:
        def token_text(token: int) -> str:
            return "" if token < 0 else self._llm.detokenize([token], special=True).decode("utf-8", "replace")

        try:
            return render_chat(messages, self.spec.chat_format, self.info.chat_template,
                               token_text(self._llm.token_bos()), token_text(self._llm.token_eos()))
        except Exception as exc:  # a template that does not render is this model's failure
            raise GenerationError(f"{self.name}: its chat template failed: {exc}") from None

    def generate(self, prompt: str, params: SamplingParams) -> Iterator[str | GenerationEnd]:
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
        produced, finish = 0, "length"
        try:
            for token in llm.generate(tokens, top_k=params.top_k, top_p=params.top_p,
                                      temp=params.temperature,
                                      repeat_penalty=params.repeat_penalty):
                if self.cancel.is_set():
                    raise Aborted(f"{self.name}: generation cancelled")
                if self._is_eog(token):
                    finish = "stop"
                    break
                produced += 1
                text, stopped = stops.feed(decoder.decode(llm.detokenize([token])))
                if text:
                    yield text
                if stopped:
                    finish = "stop"
                    break
                if produced >= budget:
                    break
        except Exception as exc:
            llm.reset()  # the context may hold half a batch; start the next request clean
            if self.cancel.is_set():
                raise Aborted(f"{self.name}: generation cancelled") from None
            if isinstance(exc, MemoryError):
                raise OutOfMemory(f"{self.name} ran out of memory while generating") from None
            raise
        tail = "" if stops.stopped else stops.flush(decoder.decode(b"", final=True))
        if tail:
            yield tail
        yield GenerationEnd(finish, len(tokens), produced)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not self._embedding:
            raise GenerationError(f"{self.name} was not loaded for embeddings")
        limit = self._llm.n_batch
        for i, text in enumerate(texts):
            n = len(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))
            if n > limit:
                raise ContextOverflow(f"text {i} is {n} tokens; {self.name} embeds at most {limit}")
        try:
            vectors = self._llm.embed(texts, normalize=False, truncate=False)
        except Exception:
            if self.cancel.is_set():
                raise Aborted(f"{self.name}: embedding cancelled") from None
            raise
        return np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()


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
# ggml's levels: 1 debug, 2 info, 3 warn, 4 error, 5 "continue the previous line". llama.cpp's
# info is chatter and its warnings are routine, so both sit one step lower in Python's scale.
_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.WARNING}
_ERROR = 4
_callback: Any = None
_progress_callback: Any = None
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
    replaced by a no-op."""
    global _callback, _progress_callback
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
