"""The shipped models' own chat templates (tests/data/templates), rendered by the router exactly
as Hugging Face transformers' apply_chat_template renders them, read from generated GGUFs the way
the real models' templates are read; and a template that fails is that model's failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from real_templates import (
    MULTI_TURN,
    QWEN3,
    QWEN25,
    SYSTEM_USER,
    TEMPLATES,
    PromptRecordingBackend,
    reference,
)

from zeta_local import ZetaDynamicRouter
from zeta_local.gguf_info import read_gguf_info
from zeta_local.prompt_format import render_chat
from zeta_local.tiny_models import write_tiny_model


@pytest.fixture(scope="module")
def real_template_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny GGUFs whose tokenizer.chat_template is a shipped model's template, byte for byte."""
    out = tmp_path_factory.mktemp("real-templates")
    return {name: write_tiny_model(out / f"{name}.gguf", seed=11 + i,
                                   chat_template=(TEMPLATES / name).read_text(encoding="utf-8"))
            for i, name in enumerate((QWEN3, QWEN25))}


def test_the_gguf_carries_the_template_byte_for_byte(real_template_models: dict[str, Path]):
    """What the router's header reader gives back is the published file, unchanged."""
    for name, path in real_template_models.items():
        assert read_gguf_info(path).chat_template == (TEMPLATES / name).read_text(encoding="utf-8")


# (template, conversation, template variables): enable_thinking only means something to Qwen3.
CASES = [(QWEN3, SYSTEM_USER, {}), (QWEN3, MULTI_TURN, {}),
         (QWEN3, SYSTEM_USER, {"enable_thinking": True}), (QWEN3, SYSTEM_USER, {"enable_thinking": False}),
         (QWEN3, MULTI_TURN, {"enable_thinking": True}), (QWEN3, MULTI_TURN, {"enable_thinking": False}),
         (QWEN25, SYSTEM_USER, {}), (QWEN25, MULTI_TURN, {})]


@pytest.mark.parametrize("name, messages, template_vars", CASES,
                         ids=[f"{n.split('-')[1]}-{'sys' if m is SYSTEM_USER else 'multi'}-{v}"
                              for n, m, v in CASES])
def test_render_chat_matches_the_reference(real_template_models: dict[str, Path], name: str,
                                           messages: list[dict[str, str]], template_vars: dict[str, Any]):
    template = read_gguf_info(real_template_models[name]).chat_template
    assert template is not None
    rendered = render_chat(messages, None, template, "", "<|im_end|>", template_vars=template_vars)
    assert rendered.text == reference(template, messages, **template_vars)
    assert rendered.format == "gguf-template" and rendered.stop == ("<|im_end|>",)


def test_what_the_references_are():
    """The reference pinned as text, so that it and the router cannot be wrong alike: Qwen3
    opens a thinking turn unless enable_thinking is false, which closes it empty at once;
    Qwen2.5 supplies its own system prompt when the conversation has none."""
    qwen3 = (TEMPLATES / QWEN3).read_text(encoding="utf-8")
    head = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a prime.<|im_end|>\n"
    assert reference(qwen3, SYSTEM_USER) == head + "<|im_start|>assistant\n"
    assert reference(qwen3, SYSTEM_USER, enable_thinking=True) == head + "<|im_start|>assistant\n"
    assert reference(qwen3, SYSTEM_USER, enable_thinking=False) == \
        head + "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert reference(qwen3, MULTI_TURN) == (
        "<|im_start|>user\nName a prime.<|im_end|>\n<|im_start|>assistant\n7<|im_end|>\n"
        "<|im_start|>user\nAnd an even one?<|im_end|>\n<|im_start|>assistant\n")
    qwen25 = (TEMPLATES / QWEN25).read_text(encoding="utf-8")
    assert reference(qwen25, MULTI_TURN) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nName a prime.<|im_end|>\n<|im_start|>assistant\n7<|im_end|>\n"
        "<|im_start|>user\nAnd an even one?<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture
def real_router(write_config: Callable[..., Path], real_template_models: dict[str, Path]):
    """general (Qwen3's template) and coder (Qwen2.5's), each its own chain."""
    path = write_config({"general": {"path": str(real_template_models[QWEN3])},
                         "coder": {"path": str(real_template_models[QWEN25])}},
                        routes={"chat": ["general"], "reason": ["general"], "code": ["coder"],
                                "embed": ["general"]})
    backend = PromptRecordingBackend()
    with ZetaDynamicRouter.from_toml(path, backend=backend) as router:
        yield router, backend


@pytest.mark.parametrize("model, name", [("general", QWEN3), ("coder", QWEN25)])
@pytest.mark.parametrize("messages", [SYSTEM_USER, MULTI_TURN], ids=["sys", "multi"])
def test_the_router_prompts_with_the_reference_rendering(real_router: Any, model: str, name: str,
                                                         messages: list[dict[str, str]]):
    """A chat through the router completes, and the prompt its model was given is the
    reference rendering of the template read from the model's file (thinking on: Qwen3's own
    default, which the reference renders without variables)."""
    router, backend = real_router
    result = router.chat(messages, model=model, max_tokens=4, thinking=True)
    assert result.model == model and result.attempts[-1].outcome == "ok"
    template = (TEMPLATES / name).read_text(encoding="utf-8")
    assert backend.prompts[model] == [reference(template, messages)]


def test_enable_thinking_reaches_the_loaded_models_template(real_router: Any):
    """The loaded model's render path passes template variables through (the per-task
    `thinking` setting that uses it is tested in test_thinking.py)."""
    router, _ = real_router
    router.chat(SYSTEM_USER, model="general", max_tokens=1)
    loaded = router._pool.workers[("general", False)].model
    template = (TEMPLATES / QWEN3).read_text(encoding="utf-8")
    for thinking in (True, False):
        rendered = loaded.render_chat(SYSTEM_USER, {"enable_thinking": thinking})
        assert rendered.text == reference(template, SYSTEM_USER, enable_thinking=thinking)
    assert loaded.render_chat(SYSTEM_USER).text == reference(template, SYSTEM_USER)


# A template that refuses a conversation, in the words of the Llama 2 / Mistral templates.
ALTERNATING = (
    "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]"
)


@pytest.fixture
def failing_templates(tmp_path: Path) -> dict[str, Path]:
    return {"strict": write_tiny_model(tmp_path / "strict.gguf", seed=21, chat_template=ALTERNATING),
            "broken": write_tiny_model(tmp_path / "broken.gguf", seed=22,
                                       chat_template="{% for m in messages %}{{ m.content }"),
            "fine": write_tiny_model(tmp_path / "fine.gguf", seed=23,
                                     chat_template=(TEMPLATES / QWEN3).read_text(encoding="utf-8"))}


def test_a_template_that_refuses_the_messages_is_that_models_failure(
        write_config: Callable[..., Path], failing_templates: dict[str, Path]):
    """raise_exception in the GGUF's template (two user turns in a row) fails that model with
    the template's own words, and the next model of the chain answers."""
    path = write_config({name: {"path": str(p)} for name, p in failing_templates.items()},
                        routes={"chat": ["strict", "fine"]})
    with ZetaDynamicRouter.from_toml(path) as router:
        result = router.chat([{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}],
                             task="chat")
        assert result.model == "fine"
        first = result.attempts[0]
        assert (first.model, first.outcome) == ("strict", "error")
        assert "chat template" in first.detail and "roles must alternate" in first.detail
        # The same model still answers a conversation its template accepts.
        assert router.chat([{"role": "user", "content": "hi"}], task="chat",
                           max_tokens=2).model == "strict"


def test_a_template_that_does_not_compile_fails_the_load_not_the_router(
        write_config: Callable[..., Path], failing_templates: dict[str, Path]):
    """A syntax error in the GGUF's template: llama-cpp-python compiles it while loading, so the
    model fails to load, saying why, and the chain moves on."""
    path = write_config({name: {"path": str(p)} for name, p in failing_templates.items()},
                        routes={"chat": ["broken", "fine"]})
    with ZetaDynamicRouter.from_toml(path) as router:
        result = router.chat([{"role": "user", "content": "hi"}], task="chat", max_tokens=2)
        assert result.model == "fine"
        first = result.attempts[0]
        assert (first.model, first.outcome) == ("broken", "load_failed")
        assert "chat template (tokenizer.chat_template) does not compile" in first.detail
        assert "TemplateSyntaxError" in first.detail
