"""Fault injection: wrap the real llama.cpp backend of named models so that they fail on cue.

Used by the tests, the benchmarks, and people who want to see a fallback happen:

    ZETA_INJECT_FAULTS="coder-7b=hang_prefill;general-4b=stall_after:3" zeta-local ask "..."

Kinds:
    fail_load        the load is refused
    hang_load        the load blocks inside llama.cpp's loader until cancelled (for a context
                     made on weights its other context loaded, in the same load-progress check)
    oom_load         the load fails to allocate
    hang_prefill     prompt evaluation blocks inside llama_decode until cancelled
    stall_after:N    after N pieces of text, the next decode blocks until cancelled
    raise_after:N    generation raises after N pieces of text (0: before the first)
    slow_token:MS    every token takes MS milliseconds longer
    flaky:P          a share P (0 to 1) of requests raise before their first text; the draws
                     are fresh in each process, or the same every run with $ZETA_FAULT_SEED set
    script:FILE      every answer spells the text in FILE (UTF-8), token by token: a logits
                     processor leaves only the script's next token possible, so the decode and
                     sampling are real and the text is known. A script that opens with
                     `<think> ... </think>` shows thinking and answer apart; should the reasoning
                     budget close the thinking early, it goes on with the text after its close

The model underneath is real, and hangs block *inside* llama.cpp (in its load-progress and
abort callbacks), so they are stopped by exactly the path that stops a real hang.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from zeta_local.backend import Backend, GenerationEnd, LoadedModel, load_hook
from zeta_local.config import ModelSpec
from zeta_local.errors import GenerationError, InvalidRequest, ModelLoadError, OutOfMemory
from zeta_local.gguf_info import GGUFInfo
from zeta_local.reasoning import CLOSE, FORCED_CLOSE, Thought
from zeta_local.sampling import SamplingParams

ENV_VAR = "ZETA_INJECT_FAULTS"
SEED_ENV_VAR = "ZETA_FAULT_SEED"
# kind -> the argument it takes: none, a count, a probability, or a file
KINDS: dict[str, type | None] = {
    "fail_load": None, "hang_load": None, "oom_load": None, "hang_prefill": None,
    "stall_after": int, "raise_after": int, "slow_token": int, "flaky": float, "script": Path}
_ITEM = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*=\s*([a-z_]+)(?::([^;]*?))?\s*$")
_NUMBER = re.compile(r"^[0-9]*\.?[0-9]+$")
_ARGUMENT = {int: ":N", float: ":P", Path: ":FILE"}
_POLL_S = 0.001  # how often a blocked hook looks at its cancel flag


@dataclass(frozen=True)
class Fault:
    kind: str
    count: float = 0  # N of stall_after/raise_after/slow_token, P of flaky
    text: str = ""  # script's text

    def __str__(self) -> str:
        if KINDS[self.kind] is Path:
            return f"{self.kind} ({len(self.text)} characters)"
        return f"{self.kind}:{self.count:g}" if KINDS[self.kind] else self.kind


def parse_faults(text: str) -> dict[str, Fault]:
    """'MODEL=KIND;MODEL=KIND:N' -> {model: Fault}. A malformed item is an InvalidRequest."""
    faults: dict[str, Fault] = {}
    for item in filter(str.strip, text.split(";")):
        match = _ITEM.match(item)
        kind = KINDS.get(match.group(2), str) if match else str
        argument = match.group(3) if match else None
        if kind is str or (kind is None) != (argument is None) or \
                (kind in (int, float) and not _NUMBER.match(argument)) or \
                (kind is int and not argument.isdigit()) or (kind is float and float(argument) > 1) or \
                (kind is Path and not argument.strip()):
            raise InvalidRequest(
                f"{ENV_VAR}: cannot read {item.strip()!r}; write MODEL=KIND separated by ';', with "
                f"KIND one of {', '.join(k + _ARGUMENT.get(n, '') for k, n in KINDS.items())} "
                f"(N a whole number, P a share from 0 to 1, FILE a text file)")
        name = match.group(1)
        if kind is Path:
            faults[name] = Fault(match.group(2), text=_script(argument.strip()))
        else:
            faults[name] = Fault(match.group(2), kind(argument) if kind else 0)
    return faults


def _script(file: str) -> str:
    try:
        text = Path(file).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{ENV_VAR}: script:{file}: cannot read it "
                             f"({getattr(exc, 'strerror', None) or exc})") from None
    if not text:
        raise InvalidRequest(f"{ENV_VAR}: script:{file}: the file is empty; write the answer to spell")
    return text


def _block_until(cancel: threading.Event | None) -> Callable[[], None]:
    """A hook that blocks the llama.cpp call it runs in until `cancel` is set."""
    def hook() -> None:
        while cancel is None or not cancel.wait(_POLL_S):
            pass
    return hook


class FaultInjectingBackend:
    """A Backend that delegates to a real one and injects the configured faults."""

    def __init__(self, inner: Backend, faults: Mapping[str, Fault], seed: str | int | None = None):
        """`seed` makes flaky's draws repeat from run to run (one sequence per model, which
        continues across its reloads); None draws afresh in each process."""
        self.inner = inner
        self.faults = dict(faults)
        self._draws = {name: random.Random(None if seed is None else f"{name}:{seed}")
                       for name, f in self.faults.items() if f.kind == "flaky"}

    def load(self, spec: ModelSpec, path: Path, info: GGUFInfo, *, embedding: bool,
             n_threads: int, cancel: threading.Event | None = None) -> LoadedModel:
        fault = self.faults.get(spec.name)
        kind = fault.kind if fault else None
        if kind == "fail_load":
            raise ModelLoadError(f"llama.cpp could not load {path}: injected fault {fault}")
        if kind == "oom_load":
            raise OutOfMemory(f"not enough memory to load {path}: injected fault {fault}")
        if kind == "hang_load":
            with load_hook(_block_until(cancel)):
                return self.inner.load(spec, path, info, embedding=embedding,
                                       n_threads=n_threads, cancel=cancel)
        model = self.inner.load(spec, path, info, embedding=embedding, n_threads=n_threads,
                                cancel=cancel)
        return _FaultyModel(model, fault, self._draws.get(spec.name)) if fault else model


class _FaultyModel:
    """The real loaded context (generation or embedding), with a fault on its path."""

    def __init__(self, inner: LoadedModel, fault: Fault, draws: random.Random | None = None):
        self.inner, self.fault, self._draws = inner, fault, draws
        self.name, self.n_ctx = inner.name, inner.n_ctx
        self.thinking_switch = inner.thinking_switch

    def _flakes(self) -> bool:
        """Whether this request is one of flaky's failures (one draw per request)."""
        return self._draws is not None and self._draws.random() < self.fault.count

    # cancel and decode_hook live on the real model, where llama.cpp's callback reads them.
    @property
    def cancel(self) -> threading.Event:
        return self.inner.cancel

    @cancel.setter
    def cancel(self, event: threading.Event) -> None:
        self.inner.cancel = event

    @property
    def decode_hook(self) -> Callable[[], None] | None:
        return self.inner.decode_hook

    @decode_hook.setter
    def decode_hook(self, hook: Callable[[], None] | None) -> None:
        self.inner.decode_hook = hook

    def render_chat(self, messages: list[dict[str, str]], template_vars: Any = None) -> Any:
        return self.inner.render_chat(messages, template_vars)

    def generate(self, prompt: str, params: SamplingParams) -> Iterator[str | Thought | GenerationEnd]:
        kind, count = self.fault.kind, self.fault.count
        if self._flakes():
            raise GenerationError(f"injected fault {self.fault}: this request is one of its failures")
        if kind == "hang_prefill":
            self.inner.decode_hook = _block_until(self.inner.cancel)
        if kind == "script":
            tokenize = getattr(self.inner, "tokenize", None)
            if tokenize is None:
                raise GenerationError(f"injected fault {self.fault}: needs a llama.cpp generation model")
            self.inner.logits_hook = [_Spelling(tokenize, self.fault.text, self.inner.end_token)]
        pieces = 0
        try:
            for item in self.inner.generate(prompt, params):
                if kind == "raise_after" and pieces >= count:
                    raise GenerationError(f"injected fault {self.fault} after {pieces} pieces of text")
                if kind == "slow_token":
                    self.inner.cancel.wait(count / 1000)
                pieces += not isinstance(item, GenerationEnd)  # thinking or answer
                if kind == "stall_after" and pieces >= count:
                    self.inner.decode_hook = _block_until(self.inner.cancel)
                yield item
        finally:
            self.inner.decode_hook = None
            if kind == "script":
                self.inner.logits_hook = None

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.fault.kind == "raise_after" or self._flakes():
            raise GenerationError(f"injected fault {self.fault} while embedding")
        if self.fault.kind in ("hang_prefill", "stall_after"):
            self.inner.decode_hook = _block_until(self.inner.cancel)
        try:
            return self.inner.embed(texts)
        finally:
            self.inner.decode_hook = None

    def close(self) -> None:
        self.inner.close()


class _Spelling:
    """A llama-cpp-python logits processor that leaves one token possible: the script's next,
    then the end of text. Should the reasoning budget close the thinking early (the tokens
    made stop following the script), it spells the script's answer, after its `</think>`."""

    def __init__(self, tokenize: Callable[[str], list[int]], text: str, end_token: int):
        self._script = tokenize(text)
        _, closed, answer = text.partition(CLOSE)
        self._answer = tokenize(answer.lstrip()) if closed else []
        self._close = tokenize(FORCED_CLOSE)
        self._end = end_token
        self._start: int | None = None  # where the answer begins in the sequence

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if self._start is None:  # the first call comes right after the prompt
            self._start = len(input_ids)
        made = [int(t) for t in input_ids[self._start:]]
        if made == self._script[:len(made)]:
            following = self._script[len(made):]
        else:
            at = next((i + len(self._close) for i in range(len(made) - len(self._close), -1, -1)
                       if made[i:i + len(self._close)] == self._close), len(made))
            following = self._answer[len(made) - at:]
        logits[:] = -np.inf
        logits[following[0] if following else self._end] = 0.0
        return logits
