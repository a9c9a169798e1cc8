"""Chat messages -> one prompt string, so that every model generates through the same loop.

A GGUF usually carries its own Jinja chat template; `chat_format` in models.toml overrides it;
a model with neither (a base model such as Gemma 3 270M) gets the `plain` format. We never fall
back to llama-cpp-python's silent `llama-2` default, which makes base models answer nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    stop: tuple[str, ...]  # strings that end the assistant's turn
    format: str  # which format rendered it, for the record


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """Messages are [{"role": ..., "content": ...}, ...]; return a clean copy or raise ValueError."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}]['role'] must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}]['content'] must be a string, got {type(content).__name__}")
        clean.append({"role": role, "content": content})
    if not any(m["content"].strip() for m in clean if m["role"] == "user"):
        raise ValueError("messages hold no user text; nothing to answer")
    return clean


def _plain(messages: list[dict[str, str]]) -> RenderedPrompt:
    # A question-and-answer transcript: of the simple formats we tried on Gemma 3 270M (base),
    # this one gave direct answers most often ("User:/Assistant:" made it echo the question).
    # The turn ends when the model starts writing the next question.
    # An earlier answer is written back as the model wrote it after "Answer:" (often "\nThe..."
    # rather than " The..."), so that the next turn's prompt begins with exactly the tokens its
    # context holds: llama-cpp-python then reuses their KV cache instead of evaluating the
    # answer again (see affinity.py). An answer without leading whitespace gets the space.
    lines = []
    for m in messages:
        if m["role"] == "system":
            lines.append(m["content"].strip() + "\n")
        elif m["role"] == "user":
            lines.append(f"Question: {m['content'].strip()}")
        else:
            answer = m["content"].rstrip()
            lines.append(f"Answer:{'' if answer[:1].isspace() else ' '}{answer}")
    return RenderedPrompt("\n".join(lines) + "\nAnswer:", ("\nQuestion:",), "plain")


def _chatml(messages: list[dict[str, str]]) -> RenderedPrompt:
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return RenderedPrompt(body + "<|im_start|>assistant\n", ("<|im_end|>",), "chatml")


def _gemma(messages: list[dict[str, str]]) -> RenderedPrompt:
    # Gemma has no system role: the system text opens the first user turn.
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = []
    for m in (m for m in messages if m["role"] != "system"):
        content = m["content"]
        if system and m["role"] == "user":
            content, system = f"{system}\n\n{content}", ""
        role = "model" if m["role"] == "assistant" else "user"
        turns.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    return RenderedPrompt("".join(turns) + "<start_of_turn>model\n", ("<end_of_turn>",), "gemma")


CHAT_FORMATS = {"plain": _plain, "chatml": _chatml, "gemma": _gemma}


def render_chat(messages: list[dict[str, str]], chat_format: str | None, template: str | None,
                bos_token: str = "", eos_token: str = "", *,
                template_vars: Mapping[str, Any] | None = None) -> RenderedPrompt:
    """Render with `chat_format` if set, else the GGUF's template if it has one, else `plain`.

    `template_vars` are extra variables for a GGUF template, as transformers' apply_chat_template
    passes its keyword arguments (Qwen3's `enable_thinking`); one left out keeps the template's
    own default. The built-in formats have no such switches and ignore them."""
    if chat_format is not None:
        return CHAT_FORMATS[chat_format](messages)
    if template:
        return _jinja(template, messages, bos_token, eos_token, template_vars or {})
    return _plain(messages)


@lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    # The same sandboxed environment llama.cpp's chat templates are written for.
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)


def _raise_exception(message: str) -> None:
    raise ValueError(f"the model's chat template refused the messages: {message}")


def _jinja(template: str, messages: list[dict[str, str]], bos: str, eos: str,
           template_vars: Mapping[str, Any]) -> RenderedPrompt:
    # The router's own variables win: a caller's variable never replaces the messages.
    text = _compile(template).render({
        **template_vars,
        "messages": messages, "bos_token": bos, "eos_token": eos, "add_generation_prompt": True,
        "raise_exception": _raise_exception, "strftime_now": lambda f: datetime.now().strftime(f),
    })
    # The BOS token is added by the tokenizer; a template that writes it too would double it.
    if bos and text.startswith(bos):
        text = text[len(bos):]
    return RenderedPrompt(text, (eos,) if eos else (), "gguf-template")
