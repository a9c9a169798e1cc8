"""What the real-template tests share: the shipped models' templates (tests/data/templates),
the transformers reference rendering, and a recording wrapper around the real backend."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from zeta_local.backend import LlamaCppBackend

TEMPLATES = Path(__file__).parent / "data" / "templates"
QWEN3 = "Qwen-Qwen3-0.6B.jinja"  # general-4b, reason-14b
QWEN25 = "Qwen-Qwen2.5-7B-Instruct.jinja"  # coder-7b
QWEN3_TEXT = (TEMPLATES / QWEN3).read_text(encoding="utf-8")
QWEN25_TEXT = (TEMPLATES / QWEN25).read_text(encoding="utf-8")
EMPTY_THINK = "<think>\n\n</think>\n\n"  # what Qwen3's template adds with enable_thinking false

SYSTEM_USER = [{"role": "system", "content": "You are terse."},
               {"role": "user", "content": "Name a prime."}]
MULTI_TURN = [{"role": "user", "content": "Name a prime."},
              {"role": "assistant", "content": "7"},
              {"role": "user", "content": "And an even one?"}]


def reference(template: str, messages: list[dict[str, str]], **kwargs: Any) -> str:
    """The template rendered as transformers' apply_chat_template(tokenize=False,
    add_generation_prompt=True, **kwargs) renders it: a sandboxed environment with trim_blocks,
    lstrip_blocks and loop controls, raise_exception and strftime_now, `tools` and `documents`
    None, the tokenizer's special tokens (Qwen's: no BOS, EOS <|im_end|>), then the caller's
    keyword arguments. (Its own `tojson` filter only matters to tool calls, not used here.)"""

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda f: datetime.now().strftime(f)
    special = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    return env.from_string(template).render(messages=messages, tools=None, documents=None,
                                            add_generation_prompt=True, **special, **kwargs)


class PromptRecordingBackend:
    """The real backend, remembering each prompt a model was asked to continue, and the
    sampling it was given: what the router actually sent, after its own rendering
    (bench_baseline.RecordingBackend's pattern)."""

    def __init__(self) -> None:
        self._inner = LlamaCppBackend()
        self.prompts: dict[str, list[str]] = {}
        self.params: dict[str, list[Any]] = {}

    def load(self, spec: Any, path: Path, info: Any, **options: Any) -> Any:
        model = self._inner.load(spec, path, info, **options)
        if not options.get("embedding"):
            generate, prompts = model.generate, self.prompts.setdefault(spec.name, [])
            params_given = self.params.setdefault(spec.name, [])

            def recorded(prompt: str, params: Any) -> Any:
                prompts.append(prompt)
                params_given.append(params)
                return generate(prompt, params)

            model.generate = recorded
        return model
