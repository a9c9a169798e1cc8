"""Circuit breaker: a model that keeps failing is skipped for a while instead of costing every
request a timeout. `allowed_fails` failures within `fail_window_s` open the circuit for
`cooldown_s`; then one request is let through, and its success closes the circuit again."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class _Circuit:
    failures: list[float] = field(default_factory=list)
    open_until: float = 0.0
    trial_running: bool = False
    held_for: str = ""  # why it is skipped, when the model itself asked (Retry-After)


class CircuitBreaker:
    def __init__(self, allowed_fails: int, fail_window_s: float, cooldown_s: float):
        self.allowed_fails, self.fail_window_s, self.cooldown_s = allowed_fails, fail_window_s, cooldown_s
        self._circuits: dict[str, _Circuit] = {}
        self._lock = threading.Lock()

    def allow(self, model: str) -> str | None:
        """None if the model may be tried now, else why not."""
        now = time.monotonic()
        with self._lock:
            c = self._circuits.get(model)
            if c is None or not c.open_until:
                return None
            if now < c.open_until and c.held_for:
                return f"{c.held_for}; skipped for another {c.open_until - now:.1f} s"
            if now < c.open_until:
                return (f"{len(c.failures)} failures within {self.fail_window_s:g} s; skipped for "
                        f"another {c.open_until - now:.1f} s (cooldown_s)")
            if c.trial_running:
                return "cooling down: one trial request is already testing it"
            c.trial_running = True
            return None

    def cooling_until(self, model: str) -> float | None:
        """The monotonic time until which the model is skipped, if it is."""
        with self._lock:
            c = self._circuits.get(model)
            return c.open_until if c and c.open_until > time.monotonic() else None

    def record(self, model: str, failed: bool) -> None:
        now = time.monotonic()
        with self._lock:
            c = self._circuits.setdefault(model, _Circuit())
            if not failed:
                self._circuits[model] = _Circuit()  # trusted again
                return
            c.failures = [t for t in c.failures if now - t < self.fail_window_s] + [now]
            if c.trial_running or len(c.failures) >= self.allowed_fails:
                c.open_until, c.trial_running, c.held_for = now + self.cooldown_s, False, ""

    def hold(self, model: str, seconds: float, why: str) -> None:
        """Skip the model for `seconds` because it asked (a remote engine's Retry-After), without
        counting a failure: after that, one request tries it again, as after a cooldown."""
        now = time.monotonic()
        with self._lock:
            c = self._circuits.setdefault(model, _Circuit())
            c.open_until = max(c.open_until, now + seconds)
            c.trial_running, c.held_for = False, why

    def release_trial(self, model: str) -> None:
        """A trial that ended without a verdict (cancelled, skipped) lets another one through."""
        with self._lock:
            c = self._circuits.get(model)
            if c is not None:
                c.trial_running = False
