"""Fault injection: wrap the real llama.cpp backend of named models so that they fail on cue.

Used by the tests, and by people who want to see a fallback happen:

    ZETA_INJECT_FAULTS="coder-7b=fail_load;general-4b=raise_after:5" zeta-local ask "..."

Kinds: `fail_load` (the load is refused), `raise_after:N` (generation raises after N pieces of
text; `raise_after:0` before the first). The model underneath is real: everything that is not
the fault runs through llama.cpp as usual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from zeta_local.backend import Backend, GenerationEnd, LoadedModel
from zeta_local.config import ModelSpec
from zeta_local.errors import GenerationError, InvalidRequest, ModelLoadError
from zeta_local.gguf_info import GGUFInfo
from zeta_local.sampling import SamplingParams

ENV_VAR = "ZETA_INJECT_FAULTS"
KINDS = {"fail_load": False, "raise_after": True}  # kind -> takes a count
_ITEM = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*=\s*([a-z_]+)(?::(\d+))?\s*$")


@dataclass(frozen=True)
class Fault:
    kind: str
    count: int = 0

    def __str__(self) -> str:
        return f"{self.kind}:{self.count}" if KINDS[self.kind] else self.kind


def parse_faults(text: str) -> dict[str, Fault]:
    """'MODEL=KIND;MODEL=KIND:N' -> {model: Fault}. A malformed item is an InvalidRequest."""
    faults: dict[str, Fault] = {}
    for item in filter(str.strip, text.split(";")):
        match = _ITEM.match(item)
        if not match or match.group(2) not in KINDS or KINDS[match.group(2)] != (match.group(3) is not None):
            raise InvalidRequest(
                f"{ENV_VAR}: cannot read {item.strip()!r}; write MODEL=KIND separated by ';', "
                f"with KIND one of fail_load, raise_after:N")
        faults[match.group(1)] = Fault(match.group(2), int(match.group(3) or 0))
    return faults


class FaultInjectingBackend:
    """A Backend that delegates to a real one and injects the configured faults."""

    def __init__(self, inner: Backend, faults: Mapping[str, Fault]):
        self.inner = inner
        self.faults = dict(faults)

    def load(self, spec: ModelSpec, path: Path, info: GGUFInfo, *, embedding: bool,
             n_threads: int) -> LoadedModel:
        fault = self.faults.get(spec.name)
        if fault and fault.kind == "fail_load":
            raise ModelLoadError(f"llama.cpp could not load {path}: injected fault {fault}")
        model = self.inner.load(spec, path, info, embedding=embedding, n_threads=n_threads)
        return _FaultyModel(model, fault) if fault else model


class _FaultyModel:
    def __init__(self, inner: LoadedModel, fault: Fault):
        self.inner, self.fault = inner, fault
        self.name, self.n_ctx, self.lock = inner.name, inner.n_ctx, inner.lock

    def render_chat(self, messages: list[dict[str, str]]) -> Any:
        return self.inner.render_chat(messages)

    def generate(self, prompt: str, params: SamplingParams) -> Iterator[str | GenerationEnd]:
        pieces = 0
        for item in self.inner.generate(prompt, params):
            if self.fault.kind == "raise_after" and pieces >= self.fault.count:
                raise GenerationError(f"injected fault {self.fault} after {pieces} pieces of text")
            pieces += isinstance(item, str)
            yield item

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.fault.kind == "raise_after":
            raise GenerationError(f"injected fault {self.fault} while embedding")
        return self.inner.embed(texts)

    def close(self) -> None:
        self.inner.close()
