"""Thinking, per task: whether a model with a thinking mode (Qwen3's) thinks before it answers.

`thinking = "auto" | true | false`, in [router] (the default), per model and per call; the call's
value wins, then the answering model's. "auto" thinks for the reason task and not for code or
chat: a thinking turn costs hundreds of tokens, worth paying for a reasoning question only.

The choice goes through the template's own switch (`enable_thinking`, as transformers passes it),
never into the user's text: a "/no_think" appended to a message would change what the model was
asked and what a follow-up turn's prompt holds. A template without that switch (Qwen2.5, Gemma,
the built-in formats) ignores the setting; so does a plain prompt, which no template renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zeta_local.errors import InvalidRequest

if TYPE_CHECKING:  # config imports this module for its check
    from zeta_local.config import ModelSpec

# The variable a chat template reads, as Qwen3's and transformers name it.
TEMPLATE_SWITCH = "enable_thinking"
# The tasks "auto" thinks for.
AUTO_THINKS = frozenset({"reason"})
NO_SWITCH = "thinking n/a (its template has no thinking switch)"


def thinking_problem(value: Any) -> str | None:
    """What is wrong with a `thinking` value, or None; one rule for models.toml and requests."""
    if isinstance(value, bool) or (isinstance(value, str) and value == "auto"):
        return None
    return 'must be "auto", true or false'


def check_thinking(value: Any) -> bool | str | None:
    """A caller's `thinking=` (None: not set), or InvalidRequest."""
    if value is None:
        return None
    problem = thinking_problem(value)
    if problem:
        raise InvalidRequest(f"thinking {problem}, got {value!r}")
    return value


@dataclass(frozen=True)
class ThinkingChoice:
    """Whether one attempt's model is asked to think, and who decided it."""

    on: bool
    why: str  # "auto: reason", "the caller", "models.toml"

    def describe(self) -> str:
        return f"thinking {'on' if self.on else 'off'} ({self.why})"


def resolve(call: bool | str | None, model: ModelSpec, task: str) -> ThinkingChoice:
    """The choice for an attempt on `model`: the caller's true/false, else the model's own
    setting (its table's, else [router]'s), "auto" deciding by the task. A caller's "auto"
    asks for the task's default even where the model's table says otherwise."""
    if isinstance(call, bool):
        return ThinkingChoice(call, "the caller")
    setting = "auto" if call == "auto" else model.thinking
    if isinstance(setting, bool):
        return ThinkingChoice(setting, "models.toml")
    return ThinkingChoice(task in AUTO_THINKS, f"auto: {task}")


def has_thinking_switch(template: str | None) -> bool:
    """Whether a chat template has a thinking mode the router can switch: it reads the variable.
    (A template that never mentions it cannot be switched; it renders the same either way.)"""
    return bool(template) and TEMPLATE_SWITCH in template
