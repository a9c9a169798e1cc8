"""Sampling: what a caller set for one request, checked once at the edge, and the parameters of
each attempt, resolved for the model that makes it.

Per key, the caller's value wins; else the answering model's own default (its [models.NAME]
table: how its authors say to sample it, and its [models.NAME.when_thinking] table for an
attempt that thinks); else the task's ([tasks.NAME]: max_tokens and reasoning_budget); else
[router]. A request that falls back to another model is sampled the way that model wants,
except where the caller said otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Mapping

from zeta_local.errors import InvalidRequest

if TYPE_CHECKING:  # config imports this module for its bounds
    from zeta_local.config import ModelSpec, RouterSettings, TaskSettings

MAX_STOP_STRINGS = 16


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repeat_penalty: float
    seed: int | None
    # The most tokens a chat's thinking may take before it is closed for it (reasoning.py);
    # None: no cap but max_tokens, which counts the thinking and the answer together.
    reasoning_budget: int | None = None
    stop: tuple[str, ...] = ()
    # Not the caller's: set for a chat, whose answer may open with a thinking block to split off.
    split_thinking: bool = False

    def with_stop(self, extra: tuple[str, ...]) -> SamplingParams:
        return replace(self, stop=self.stop + tuple(s for s in extra if s not in self.stop))


SAMPLING_KEYS = tuple(f.name for f in fields(SamplingParams) if f.name != "split_thinking")
# What a [models.NAME] table may set for itself (and for its thinking mode, in when_thinking);
# what a [tasks.NAME] table may; the rest belongs to the request or [router].
MODEL_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repeat_penalty")
TASK_SAMPLING_KEYS = ("max_tokens", "reasoning_budget")
INTEGER_SAMPLING_KEYS = ("max_tokens", "top_k", "seed", "reasoning_budget")

# (lower bound, upper bound, whether the lower bound itself is allowed); the upper bounds catch
# absurd values (a temperature of 1e9) that would only produce noise. One rule for models.toml
# and for requests, so that no default can be what a request may not ask for.
_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "max_tokens": (0, 1 << 20, False),
    "temperature": (0, 100, True),
    "top_p": (0, 1, False),
    "top_k": (0, 1 << 20, True),
    "repeat_penalty": (0, 100, False),
    "seed": (0, (1 << 32) - 1, True),
    "reasoning_budget": (0, 1 << 20, True),  # 0: close the thinking as soon as it opens
}


def sampling_problem(key: str, value: Any) -> str | None:
    """What is wrong with one sampling value ("must be >= 0 and <= 100"), or None."""
    low, high, low_ok = _BOUNDS[key]
    integral = key in INTEGER_SAMPLING_KEYS
    if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)):
        return f"must be {'an integer' if integral else 'a number'}"
    if not math.isfinite(value) or not (value >= low if low_ok else value > low) or value > high:
        return f"must be {'>=' if low_ok else '>'} {low} and <= {high}"
    return None


@dataclass(frozen=True)
class SamplingOverrides:
    """What the caller of one request set; None: not set. Checked once, by from_options()."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    reasoning_budget: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SamplingOverrides:
        """The caller's sampling options (None means "not set"), or InvalidRequest naming the
        first bad one."""
        unknown = sorted(set(options) - set(SAMPLING_KEYS))
        if unknown:
            raise InvalidRequest(f"unknown sampling parameter(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(SAMPLING_KEYS)}")
        values = {k: options[k] for k in SAMPLING_KEYS if options.get(k) is not None}
        stop = values.pop("stop", ())
        for key, value in values.items():
            problem = sampling_problem(key, value)
            if problem:
                raise InvalidRequest(f"{key} {problem}, got {value!r}")
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (list, tuple)) or len(stop) > MAX_STOP_STRINGS or \
                not all(isinstance(s, str) and s for s in stop):
            raise InvalidRequest(f"stop must be a string or a list of at most {MAX_STOP_STRINGS} "
                                 f"non-empty strings, got {stop!r}")
        floats = {k: float(v) for k, v in values.items() if k not in INTEGER_SAMPLING_KEYS}
        return cls(**(values | floats), stop=tuple(stop))

    def for_model(self, router: RouterSettings, model: ModelSpec, task: TaskSettings | None = None, *,
                  thinking: bool = False, chat: bool = False) -> SamplingParams:
        """The parameters of an attempt on `model`: per key, the caller's value, else the
        model's own default (its thinking mode's, when the attempt thinks), else the task's,
        else [router]. `chat`: the answer is split into thinking and text."""
        own = dict(model.when_thinking) if thinking else {}

        def pick(key: str) -> Any:
            for value in (getattr(self, key),
                          own.get(key) if key in MODEL_SAMPLING_KEYS else None,
                          getattr(model, key) if key in MODEL_SAMPLING_KEYS else None,
                          getattr(task, key) if key in TASK_SAMPLING_KEYS and task else None):
                if value is not None:
                    return value
            return getattr(router, key)

        return SamplingParams(**{k: pick(k) for k in SAMPLING_KEYS if k != "stop"}, stop=self.stop,
                              split_thinking=chat)
