"""Per-request sampling parameters: [router] defaults, overridden per call, checked once."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from zeta_local.config import RouterSettings
from zeta_local.errors import InvalidRequest

MAX_STOP_STRINGS = 16


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repeat_penalty: float
    seed: int | None
    stop: tuple[str, ...] = ()

    def with_stop(self, extra: tuple[str, ...]) -> SamplingParams:
        return replace(self, stop=self.stop + tuple(s for s in extra if s not in self.stop))


SAMPLING_KEYS = tuple(f.name for f in fields(SamplingParams))

# (lower bound, upper bound, whether the lower bound itself is allowed); the upper bounds catch
# absurd values (a temperature of 1e9) that would only produce noise.
_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "max_tokens": (0, 1 << 20, False),
    "temperature": (0, 100, True),
    "top_p": (0, 1, False),
    "top_k": (0, 1 << 20, True),
    "repeat_penalty": (0, 100, False),
    "seed": (0, (1 << 32) - 1, True),
}


def resolve_sampling(defaults: RouterSettings, overrides: dict[str, Any]) -> SamplingParams:
    """Merge per-call overrides (None means "use the default") into the [router] defaults."""
    unknown = sorted(set(overrides) - set(SAMPLING_KEYS))
    if unknown:
        raise InvalidRequest(f"unknown sampling parameter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(SAMPLING_KEYS)}")
    values: dict[str, Any] = {k: getattr(defaults, k) for k in SAMPLING_KEYS if k != "stop"}
    values |= {k: v for k, v in overrides.items() if v is not None}
    for key, (low, high, low_ok) in _BOUNDS.items():
        value = values[key]
        if value is None and key == "seed":
            continue
        integral = key in ("max_tokens", "top_k", "seed")
        if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)):
            raise InvalidRequest(f"{key} must be {'an integer' if integral else 'a number'}, "
                                 f"got {value!r}")
        if not math.isfinite(value) or not (value >= low if low_ok else value > low) or value > high:
            raise InvalidRequest(f"{key} must be {'>=' if low_ok else '>'} {low} and <= {high}, "
                                 f"got {value!r}")
    stop = values.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not all(isinstance(s, str) and s for s in stop) or len(stop) > MAX_STOP_STRINGS:
        raise InvalidRequest(f"stop must be a string or a list of at most {MAX_STOP_STRINGS} "
                             f"non-empty strings, got {stop!r}")
    values["stop"] = tuple(stop)
    values["temperature"] = float(values["temperature"])
    values["top_p"] = float(values["top_p"])
    values["repeat_penalty"] = float(values["repeat_penalty"])
    return SamplingParams(**values)
