"""Thinking, per task (issue 14): "auto" thinks for reason and not for code or chat, through the
template's own switch; models.toml and the call override it; a template without the switch
ignores it; every choice is on the record. Real llama.cpp on tiny GGUFs carrying the shipped
templates, the prompt each model was given seen through a recording wrapper."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from real_templates import (
    EMPTY_THINK,
    QWEN3_TEXT,
    QWEN25_TEXT,
    SYSTEM_USER,
    PromptRecordingBackend,
    reference,
)

from zeta_local import ZetaDynamicRouter
from zeta_local.config import load_config
from zeta_local.errors import ConfigError, InvalidRequest
from zeta_local.openai_api import ChatRequest, RequestError
from zeta_local.thinking import NO_SWITCH, has_thinking_switch
from zeta_local.tiny_models import write_tiny_model



@pytest.fixture(scope="module")
def template_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("thinking")
    return {"qwen3": write_tiny_model(out / "qwen3.gguf", seed=31, chat_template=QWEN3_TEXT),
            "qwen25": write_tiny_model(out / "qwen25.gguf", seed=32, chat_template=QWEN25_TEXT)}


@pytest.fixture
def make_router(write_config: Callable[..., Path], template_models: dict[str, Path]) -> Iterator[Any]:
    """make_router(models={name: table}, router={...}, faults="") -> (router, backend); a
    table's `template` ("qwen3", "qwen25") names its GGUF. Every task's chain: the models, in order."""
    made: list[ZetaDynamicRouter] = []

    def make(models: dict[str, dict[str, Any]], router: dict[str, Any] | None = None,
             faults: str = "") -> tuple[ZetaDynamicRouter, PromptRecordingBackend]:
        tables = {}
        for name, table in models.items():
            table = dict(table)
            if "template" in table:
                table["path"] = str(template_models[table.pop("template")])
            tables[name] = table
        backend = PromptRecordingBackend()
        zeta = ZetaDynamicRouter(load_config(write_config(tables, router=router)), backend=backend,
                                 faults=faults)
        made.append(zeta)
        return zeta, backend

    yield make
    for zeta in made:
        zeta.close()


def _detail(result: Any) -> str:
    return result.attempts[-1].detail


def test_auto_thinks_for_reason_and_not_for_code_or_chat(make_router):
    router, backend = make_router({"general": {"template": "qwen3"}})
    for task, on in (("reason", True), ("code", False), ("chat", False)):
        result = router.chat(SYSTEM_USER, task=task, max_tokens=1)
        prompt = backend.prompts["general"][-1]
        assert prompt == reference(QWEN3_TEXT, SYSTEM_USER, enable_thinking=on)
        # On: the turn is left open for the model's own <think>; off: closed empty at once.
        assert prompt.endswith(EMPTY_THINK) == (not on)
        assert ("<think>" in prompt) == (not on)
        # The user's text is never edited to switch it ("/no_think").
        assert "no_think" not in prompt and "Name a prime.<|im_end|>" in prompt
        expected = f"thinking {'on' if on else 'off'} (auto: {task})"
        assert result.route.thinking == expected
        assert _detail(result).endswith(f"; {expected}")


def test_models_toml_and_the_call_override_auto(make_router):
    router, backend = make_router({"thinks": {"template": "qwen3", "thinking": True},
                                   "terse": {"template": "qwen3", "thinking": False}},
                                  router={"thinking": "auto"})
    prompts = backend.prompts
    result = router.chat(SYSTEM_USER, task="code", model="thinks", max_tokens=1)
    assert not prompts["thinks"][-1].endswith(EMPTY_THINK)
    assert _detail(result).endswith("; thinking on (models.toml)")
    result = router.chat(SYSTEM_USER, task="reason", model="terse", max_tokens=1)
    assert prompts["terse"][-1].endswith(EMPTY_THINK)
    assert _detail(result).endswith("; thinking off (models.toml)")
    # The call wins over the model's table, either way ...
    result = router.chat(SYSTEM_USER, task="code", model="terse", thinking=True, max_tokens=1)
    assert not prompts["terse"][-1].endswith(EMPTY_THINK)
    assert _detail(result).endswith("; thinking on (the caller)")
    result = router.chat(SYSTEM_USER, task="reason", model="thinks", thinking=False, max_tokens=1)
    assert prompts["thinks"][-1].endswith(EMPTY_THINK)
    assert result.route.thinking == "thinking off (the caller)"
    # ... and a call's "auto" asks for the task's default whatever the table says.
    result = router.chat(SYSTEM_USER, task="code", model="thinks", thinking="auto", max_tokens=1)
    assert prompts["thinks"][-1].endswith(EMPTY_THINK)
    assert _detail(result).endswith("; thinking off (auto: code)")


def test_router_default_applies_to_models_without_the_key(make_router):
    router, backend = make_router({"general": {"template": "qwen3"}}, router={"thinking": False})
    result = router.chat(SYSTEM_USER, task="reason", max_tokens=1)
    assert backend.prompts["general"][-1].endswith(EMPTY_THINK)
    assert result.route.thinking == "thinking off (models.toml)"


@pytest.mark.parametrize("model", ["qwen25", "chatml"])
def test_a_template_without_the_switch_renders_the_same_whatever_the_setting(make_router, model):
    tables = {"qwen25": {"template": "qwen25"}, "chatml": {"model": "tiny-chatml"}}
    router, backend = make_router({model: tables[model]})
    results = [router.chat(SYSTEM_USER, task=task, max_tokens=1, **({} if thinking is None else
                                                                    {"thinking": thinking}))
               for task in ("reason", "code") for thinking in (None, True, False)]
    assert len(set(backend.prompts[model])) == 1
    if model == "qwen25":
        assert backend.prompts[model][0] == reference(QWEN25_TEXT, SYSTEM_USER)
    assert all(_detail(r).endswith(f"; {NO_SWITCH}") for r in results)


def test_a_plain_prompt_is_not_rendered_so_the_setting_does_not_apply(make_router):
    router, backend = make_router({"general": {"template": "qwen3", "thinking": False}})
    result = router.generate("Name a prime.", task="reason", thinking=True, max_tokens=1)
    assert backend.prompts["general"] == ["Name a prime."]
    assert result.route.thinking is None and "; thinking" not in _detail(result)


def test_each_attempt_resolves_its_own_models_setting(make_router):
    """The route records the first model's choice; a fallback is asked with its own setting,
    and its attempt says so. A model that failed before rendering says nothing about it."""
    router, backend = make_router({"first": {"template": "qwen3", "thinking": False},
                                   "second": {"template": "qwen3"}}, faults="first=fail_load")
    result = router.chat(SYSTEM_USER, task="reason", max_tokens=1)
    assert result.route.thinking == "thinking off (models.toml)"
    assert [(a.model, a.outcome) for a in result.attempts] == [("first", "load_failed"), ("second", "ok")]
    assert "; thinking" not in result.attempts[0].detail
    assert result.attempts[1].detail.endswith("; thinking on (auto: reason)")
    assert backend.prompts["second"] == [reference(QWEN3_TEXT, SYSTEM_USER, enable_thinking=True)]


@pytest.mark.parametrize("value", ["yes", 1, "on", ["auto"]])
def test_a_bad_thinking_option_is_refused_before_anything_runs(make_router, value):
    router, backend = make_router({"general": {"template": "qwen3"}})
    with pytest.raises(InvalidRequest, match='thinking must be "auto", true or false'):
        router.chat(SYSTEM_USER, thinking=value)
    assert backend.prompts == {}


@pytest.mark.parametrize("table, value, message", [
    ("models", '"on"', 'must be "auto", true or false, got \'on\''),
    ("router", '"yes"', 'must be "auto", true or false, got \'yes\''),
    ("models", "1", "must be a string or true or false, got an integer 1"),
])
def test_config_validation_names_the_table_and_key(tmp_path: Path, table: str, value: str, message: str):
    model = f"thinking = {value}\n" if table == "models" else ""
    router = f"thinking = {value}\n" if table == "router" else ""
    path = tmp_path / "models.toml"
    path.write_text(f'[router]\n{router}\n[models.a]\npath = "a.gguf"\n{model}\n'
                    '[routes]\ncode = ["a"]\nreason = ["a"]\nchat = ["a"]\nembed = ["a"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    where = "[models.a] thinking" if table == "models" else "[router] thinking"
    assert where in str(caught.value) and message in str(caught.value)


def test_config_reads_back(tmp_path: Path):
    path = tmp_path / "models.toml"
    path.write_text('[router]\nthinking = false\n[models.a]\npath = "a.gguf"\nthinking = "auto"\n'
                    'capabilities = ["generate", "embed"]\n'
                    '[models.b]\npath = "b.gguf"\n'
                    '[models.c]\nendpoint = "http://127.0.0.1:9/v1"\nremote_model = "m"\nthinking = true\n'
                    '[routes]\ncode = ["a"]\nreason = ["a"]\nchat = ["a"]\nembed = ["a"]\n')
    config = load_config(path)
    assert config.router.thinking is False
    assert [config.models[n].thinking for n in "abc"] == ["auto", False, True]


def test_which_templates_have_a_switch():
    assert has_thinking_switch(QWEN3_TEXT)
    assert not has_thinking_switch(QWEN25_TEXT) and not has_thinking_switch(None)


def test_the_server_takes_chat_template_kwargs(make_router):
    """vLLM's and llama.cpp's field for the switch: enable_thinking is taken, anything else refused."""
    from zeta_local.server import BackgroundServer

    def request(**extra: Any) -> ChatRequest:
        return ChatRequest(model="auto", messages=[{"role": "user", "content": "Hi"}], **extra)

    assert request(chat_template_kwargs={"enable_thinking": False}).sampling()["thinking"] is False
    assert "thinking" not in request().sampling()
    with pytest.raises(RequestError, match="only enable_thinking is supported"):
        request(chat_template_kwargs={"add_generation_prompt": False}).sampling()
    with pytest.raises(RequestError, match="must be true or false"):
        request(chat_template_kwargs={"enable_thinking": "no"}).sampling()

    router, backend = make_router({"general": {"template": "qwen3"}})
    server = BackgroundServer(router)
    try:
        reply = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
            "model": "reason", "messages": SYSTEM_USER, "max_tokens": 1,
            "chat_template_kwargs": {"enable_thinking": False}})
        assert reply.status_code == 200, reply.text
        assert backend.prompts["general"][-1].endswith(EMPTY_THINK)
        assert reply.json()["zeta"]["thinking"] == "thinking off (the caller)"
    finally:
        server.close()
