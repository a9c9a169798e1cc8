"""Thinking kept apart from the answer, and budgets that fit a thinking model (issue 14).

Scripted generation through the real backend: the `script` fault leaves one token possible at
each step (a logits processor), so real llama.cpp contexts decode and sample a known text,
`<think> ... </think>` then an answer, on tiny GGUFs that carry Qwen3's real template and
whose vocabulary spells any text exactly. Faults of other kinds are stacked on top, as a user
would stack them with ZETA_INJECT_FAULTS.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from conftest import run_cli
from real_templates import EMPTY_THINK, QWEN3_TEXT, PromptRecordingBackend

from zeta_local import ZetaDynamicRouter
from zeta_local.config import load_config
from zeta_local.errors import ConfigError, InvalidRequest
from zeta_local.faults import FaultInjectingBackend, parse_faults
from zeta_local.reasoning import ThinkSplitter, Thought, starts_inside
from zeta_local.results import Done, Fallback, ReasoningChunk, TextChunk
from zeta_local.tiny_models import write_tiny_model


A_THINKING = "The units first: 7 + 5 = 12, so 2 carry 1. Then the tens: 1 + 2 + 1 = 4."
A_ANSWER = "17 + 25 = 42."
B_THINKING = "Adding 25 to 17: 17 + 20 is 37, and 5 more is 42."
B_ANSWER = "It is 42."
SCRIPT_A = f"<think>\n{A_THINKING}\n</think>\n\n{A_ANSWER}"
SCRIPT_B = f"<think>\n{B_THINKING}\n</think>\n\n{B_ANSWER}"
QUESTION = [{"role": "user", "content": "What is 17 + 25?"}]


# ---- the splitter on its own --------------------------------------------------------------


def _split(text: str, cuts: list[int], inside: bool = False) -> tuple[str, str, list[Any]]:
    splitter, pieces = ThinkSplitter(inside), []
    for start, end in zip([0] + cuts, cuts + [len(text)]):
        pieces += splitter.feed(text[start:end])
    pieces += splitter.flush()
    return ("".join(p.text for p in pieces if isinstance(p, Thought)),
            "".join(p for p in pieces if isinstance(p, str)), pieces)


def test_the_tags_are_cut_wherever_the_tokens_split_them():
    """Every one-cut and two-cut split of the text, and random many-cut ones: the thinking and
    the answer come out the same, and no piece holds any part of a tag."""
    cuts = [[i] for i in range(1, len(SCRIPT_A))] + [[i, j] for i in range(1, 24) for j in range(i + 1, 24)]
    draws = random.Random(5)
    cuts += [sorted(draws.sample(range(1, len(SCRIPT_A)), 40)) for _ in range(50)]
    for where in cuts:
        thinking, answer, pieces = _split(SCRIPT_A, where)
        assert (thinking, answer) == (A_THINKING, A_ANSWER), where
        assert not any("<" in (p.text if isinstance(p, Thought) else p) for p in pieces), where


def test_what_is_and_is_not_a_thinking_block():
    assert _split("  <think>x</think>  y", [3, 9])[:2] == ("x", "y")  # leading layout whitespace
    assert _split("Use <think> tags like this.", [5])[:2] == ("", "Use <think> tags like this.")
    assert _split("<thinking cap on>", [3])[:2] == ("", "<thinking cap on>")
    assert _split("<think>cut off mid-thou", [4])[:2] == ("cut off mid-thou", "")  # max_tokens
    assert _split("  hello", [1])[:2] == ("", "  hello")  # an answer without a block is untouched
    assert _split("already thinking</think>the answer", [10], inside=True)[:2] == \
        ("already thinking", "the answer")
    assert starts_inside("<|im_start|>assistant\n<think>\n")
    assert not starts_inside("<|im_start|>assistant\n" + EMPTY_THINK) and not starts_inside("plain")


# ---- through the router -------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen3_gguf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("reasoning")
    return {name: write_tiny_model(out / f"{name}.gguf", seed=seed, chat_template=QWEN3_TEXT, exact_text=True)
            for name, seed in (("a", 41), ("b", 42))}


@pytest.fixture
def make_router(write_config: Callable[..., Path], qwen3_gguf: dict[str, Path], tmp_path: Path) -> Iterator[Any]:
    """make_router(scripts={name: text}, faults="", router={}, tasks={}, tables={}) ->
    (router, recorder): models "a" then "b" (every task's chain), each spelling its script,
    the prompts and sampling each was given recorded."""
    made: list[ZetaDynamicRouter] = []

    def make(scripts: dict[str, str], faults: str = "", router: dict[str, Any] | None = None,
             tasks: dict[str, Any] | None = None, tables: dict[str, dict[str, Any]] | None = None):
        models = {name: {"path": str(qwen3_gguf[name]), "n_ctx": 1024} | (tables or {}).get(name, {})
                  for name in scripts}
        recorder = PromptRecordingBackend()
        spelled = FaultInjectingBackend(recorder, parse_faults(";".join(
            f"{name}=script:{_script_file(tmp_path, name, text)}" for name, text in scripts.items())))
        zeta = ZetaDynamicRouter(load_config(write_config(models, router={"max_tokens": 256} | (router or {}),
                                                          tasks=tasks)),
                                 backend=spelled, faults=faults)
        made.append(zeta)
        return zeta, recorder

    yield make
    for zeta in made:
        zeta.close()


def _script_file(folder: Path, name: str, text: str) -> Path:
    path = folder / f"script-{name}.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _detail(result: Any, i: int = -1) -> str:
    return result.attempts[i].detail


def test_the_answer_and_its_thinking_come_apart(make_router):
    router, _ = make_router({"a": SCRIPT_A})
    result = router.chat(QUESTION, task="reason")
    assert (result.reasoning, result.text) == (A_THINKING, A_ANSWER)
    assert result.finish_reason == "stop"
    usage = result.usage
    # Every character is a token in this vocabulary: the thinking is about its length.
    assert abs(usage.reasoning_tokens - len(f"<think>\n{A_THINKING}\n</think>")) <= 8
    assert usage.completion_tokens == len(SCRIPT_A) and usage.reasoning_seconds > 0
    assert f"thought {usage.reasoning_tokens} tokens" in _detail(result)


def test_stream_yields_the_thinking_as_its_own_events_before_the_answer(make_router):
    router, _ = make_router({"a": SCRIPT_A})
    events = list(router.stream(QUESTION, task="reason"))
    kinds = [type(e).__name__ for e in events]
    assert kinds[-1] == "Done" and "Fallback" not in kinds
    last_thought = max(i for i, e in enumerate(events) if isinstance(e, ReasoningChunk))
    assert last_thought < min(i for i, e in enumerate(events) if isinstance(e, TextChunk))
    assert "".join(e.text for e in events if isinstance(e, ReasoningChunk)) == A_THINKING
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == A_ANSWER
    assert all("think>" not in e.text for e in events if isinstance(e, (ReasoningChunk, TextChunk)))
    assert all(e.model == "a" for e in events if isinstance(e, (ReasoningChunk, TextChunk)))


def test_a_plain_prompt_is_not_split(make_router):
    """generate() is a raw completion: its text is what the model wrote, tags and all."""
    router, _ = make_router({"a": SCRIPT_A})
    result = router.generate("What is 17 + 25?", task="reason")
    assert result.text == SCRIPT_A and result.reasoning == "" and result.usage.reasoning_tokens == 0


def test_the_reasoning_budget_closes_the_thinking_and_the_model_answers(make_router):
    router, recorder = make_router({"a": SCRIPT_A}, tasks={"reason": {"reasoning_budget": 12}})
    for result, budget in ((router.chat(QUESTION, task="reason", reasoning_budget=20), 20),  # the call's
                           (router.chat(QUESTION, task="reason"), 12)):  # [tasks.reason]'s
        assert result.text == A_ANSWER and result.finish_reason == "stop"
        assert result.usage.reasoning_tokens == budget
        assert result.reasoning and A_THINKING.startswith(result.reasoning)
        assert len(result.reasoning) < budget
        assert _detail(result).endswith("(closed at reasoning_budget)")
    # A task without a budget thinks to the end; so does a call whose budget is large enough.
    for result in (router.chat(QUESTION, task="chat", thinking=True),
                   router.chat(QUESTION, task="reason", reasoning_budget=1000)):
        assert (result.reasoning, result.text) == (A_THINKING, A_ANSWER)
        assert "closed at" not in _detail(result)
    assert [p.reasoning_budget for p in recorder.params["a"]] == [20, 12, None, 1000]


def test_the_budget_of_zero_answers_at_once(make_router):
    router, _ = make_router({"a": SCRIPT_A})
    result = router.chat(QUESTION, task="reason", reasoning_budget=0)
    assert result.text == A_ANSWER and result.reasoning == ""


def test_max_tokens_per_task_and_per_call(make_router):
    router, recorder = make_router({"a": SCRIPT_A}, router={"max_tokens": 9},
                                   tasks={"chat": {"max_tokens": 5}})
    assert router.generate("Hi", task="chat").usage.completion_tokens == 5
    assert router.generate("Hi", task="code").usage.completion_tokens == 9  # [router]'s
    result = router.generate("Hi", task="chat", max_tokens=3)  # the call's
    assert result.usage.completion_tokens == 3 and result.finish_reason == "length"
    assert [p.max_tokens for p in recorder.params["a"]] == [5, 9, 3]


def test_a_thinking_model_is_making_progress_for_the_watchdog(make_router):
    """Thinking tokens are tokens: 2 s of slow thinking before the answer's first word does not
    trip a 1 s first-token or stall budget ..."""
    router, _ = make_router({"a": SCRIPT_A, "b": SCRIPT_B}, faults="a=slow_token:25",
                            router={"first_token_timeout_s": 1.0, "stall_timeout_s": 1.0})
    result = router.chat(QUESTION, task="reason")
    assert [(a.model, a.outcome) for a in result.attempts] == [("a", "ok")]
    assert result.usage.reasoning_seconds > 1.0 and result.text == A_ANSWER


def test_a_silent_thinker_is_a_stall_and_the_next_model_thinks_afresh(make_router):
    """... while a model that goes silent in its thinking is stalled like any other, and the
    next model is given nothing of the failed one's thinking."""
    router, recorder = make_router({"a": SCRIPT_A, "b": SCRIPT_B}, faults="a=stall_after:10",
                                   router={"stall_timeout_s": 0.5})
    events = list(router.stream(QUESTION, task="reason"))
    hop = next(e for e in events if isinstance(e, Fallback))
    assert (hop.from_model, hop.outcome, hop.text_so_far, hop.continues) == ("a", "stalled", "", False)
    result = events[-1].result
    assert (result.model, result.reasoning, result.text) == ("b", B_THINKING, B_ANSWER)
    assert any(isinstance(e, ReasoningChunk) and e.model == "a" for e in events)  # it was shown
    assert "thinking on (auto: reason)" in _detail(result)
    assert not any(word in recorder.prompts["b"][-1] for word in ("units", "<think>\nThe"))


def test_a_model_failing_mid_answer_is_continued_without_its_thinking(make_router):
    clean, _ = make_router({"a": SCRIPT_A})
    pieces = sum(isinstance(e, (ReasoningChunk, TextChunk)) for e in clean.stream(QUESTION, task="reason"))
    pieces_before_failure = pieces - 6  # inside the answer, 6 pieces before its end
    router, recorder = make_router({"a": SCRIPT_A, "b": "42."},
                                   faults=f"a=raise_after:{pieces_before_failure}")
    events = list(router.stream(QUESTION, task="reason"))
    hop = next(e for e in events if isinstance(e, Fallback))
    assert hop.continues and A_ANSWER.startswith(hop.text_so_far) and hop.text_so_far != A_ANSWER
    result = events[-1].result
    assert result.model == "b" and result.text == hop.text_so_far + "42."
    assert result.reasoning == ""  # b did not think, and a's thinking is not b's
    prompt = recorder.prompts["b"][-1]
    # b was asked to go on from the answer so far, with its own thinking switched off ...
    assert prompt.endswith(EMPTY_THINK + hop.text_so_far)
    assert "thinking off (continuing an answer)" in _detail(result)
    # ... and the hidden thinking of a went nowhere near it.
    assert "units" not in prompt


def test_sampling_follows_the_thinking_mode(make_router):
    """Qwen3's authors recommend 0.6 / 0.95 / 20 thinking and 0.7 / 0.8 / 20 not; the model's
    table and its when_thinking table say so, and the caller still wins."""
    tables = {"a": {"temperature": 0.7, "top_p": 0.8, "top_k": 20,
                    "when_thinking": {"temperature": 0.6, "top_p": 0.95}}}
    router, recorder = make_router({"a": SCRIPT_A}, tables=tables, router={"top_k": 40})
    router.chat(QUESTION, task="reason")  # thinks (auto)
    router.chat(QUESTION, task="code")  # does not
    router.chat(QUESTION, task="reason", temperature=0.1)
    router.generate("plain", task="reason")  # a plain prompt has no thinking mode
    knobs = [(p.temperature, p.top_p, p.top_k) for p in recorder.params["a"]]
    assert knobs == [(0.6, 0.95, 20), (0.7, 0.8, 20), (0.1, 0.95, 20), (0.7, 0.8, 20)]


# ---- models.toml and requests -------------------------------------------------------------


@pytest.mark.parametrize("extra, message", [
    ({"tasks": {"embed": {"max_tokens": 9}}}, r"\[tasks\] embed: unknown key"),
    ({"tasks": {"reason": {"max_token": 9}}}, r"\[tasks.reason\] max_token: unknown key; did you mean 'max_tokens'"),
    ({"tasks": {"reason": {"reasoning_budget": -1}}}, r"\[tasks.reason\] reasoning_budget: must be >= 0"),
    ({"router": {"reasoning_budget": "lots"}}, r"\[router\] reasoning_budget: must be an integer"),
    ({"when_thinking": {"temprature": 0.6}}, r"\[models.m.when_thinking\] temprature: unknown key"),
    ({"when_thinking": {"max_tokens": 9}}, r"\[models.m.when_thinking\] max_tokens: unknown key"),
])
def test_config_errors_name_the_table_and_key(tmp_path: Path, extra: dict[str, Any], message: str):
    from conftest import dump_toml

    model = {"path": "m.gguf"} | ({"when_thinking": extra.pop("when_thinking")} if "when_thinking" in extra else {})
    data = {"models": {"m": model}, "routes": {t: ["m"] for t in ("code", "reason", "chat")} | {"embed": []}}
    data["models"]["m"]["capabilities"] = ["generate"]
    data["routes"]["embed"] = ["e"]
    data["models"]["e"] = {"path": "e.gguf", "capabilities": ["embed"]}
    path = tmp_path / "models.toml"
    path.write_text(dump_toml(data | extra))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_bad_reasoning_budget_in_a_call_is_refused_before_anything_runs(make_router):
    router, recorder = make_router({"a": SCRIPT_A})
    for bad in (-1, 1.5, "many"):
        with pytest.raises(InvalidRequest, match="reasoning_budget must be"):
            router.chat(QUESTION, task="reason", reasoning_budget=bad)
    assert recorder.prompts == {}


def test_the_shipped_models_toml_gives_reasoning_room_and_qwen3_its_two_modes():
    from zeta_local.config import shipped_config_path
    from zeta_local.sampling import SamplingOverrides

    config = load_config(shipped_config_path())
    reason, chat = config.tasks["reason"], config.tasks.get("chat")
    assert reason.reasoning_budget < reason.max_tokens and chat is None
    assert config.router.reasoning_budget < config.router.max_tokens
    for name in ("general-4b", "reason-14b"):
        spec = config.models[name]
        thinking = SamplingOverrides().for_model(config.router, spec, reason, thinking=True)
        plain = SamplingOverrides().for_model(config.router, spec, None, thinking=False)
        assert (thinking.temperature, thinking.top_p, thinking.top_k) == (0.6, 0.95, 20)
        assert (plain.temperature, plain.top_p, plain.top_k) == (0.7, 0.8, 20)
        assert thinking.max_tokens == reason.max_tokens and plain.max_tokens == config.router.max_tokens
    assert config.models["coder-7b"].when_thinking == ()  # Qwen2.5-Coder has no thinking mode


# ---- the server and the CLI ---------------------------------------------------------------


@pytest.fixture
def scripted_server(serve, qwen3_gguf, tmp_path: Path):
    script = _script_file(tmp_path, "answer", SCRIPT_A)
    server, _ = serve({"qwen3": {"path": str(qwen3_gguf["a"]), "n_ctx": 1024}}, router={"max_tokens": 256},
                      faults=f"qwen3=script:{script}")
    return server


def test_the_server_returns_the_thinking_as_reasoning_content(scripted_server):
    url = f"{scripted_server.url}/v1/chat/completions"
    reply = httpx.post(url, timeout=60, json={"model": "reason", "messages": QUESTION})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    message = body["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == (A_THINKING, A_ANSWER)
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    # A client sending the earlier turn back with its reasoning_content is not refused, and a
    # budget per request closes the thinking.
    history = QUESTION + [message, {"role": "user", "content": "And 17 + 26?"}]
    reply = httpx.post(url, timeout=60, json={"model": "reason", "messages": history, "reasoning_budget": 10})
    assert reply.status_code == 200, reply.text
    message = reply.json()["choices"][0]["message"]
    assert message["content"] == A_ANSWER and len(message["reasoning_content"]) < 10
    reply = httpx.post(url, timeout=60, json={"model": "reason", "messages": QUESTION, "reasoning_budget": -1})
    assert reply.status_code == 400 and "reasoning_budget must be >= 0" in reply.text


def test_the_server_streams_the_thinking_as_reasoning_content_deltas(scripted_server):
    deltas = []
    with httpx.stream("POST", f"{scripted_server.url}/v1/chat/completions", timeout=60,
                      json={"model": "reason", "messages": QUESTION, "stream": True}) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                deltas += [c["delta"] for c in json.loads(line[6:])["choices"]]
    thinking = "".join(d.get("reasoning_content", "") for d in deltas)
    answer = "".join(d.get("content", "") for d in deltas)
    assert (thinking, answer) == (A_THINKING, A_ANSWER)
    assert not any("reasoning_content" in d and "content" in d for d in deltas)


def test_a_remote_engines_thinking_comes_apart_too(scripted_server, write_config):
    """zeta-local serve as another machine's engine: its reasoning_content deltas become this
    router's thinking, never its text."""
    config = write_config({"box": {"endpoint": f"{scripted_server.url}/v1", "remote_model": "auto",
                                   "capabilities": ["generate"]},
                           "e": {"model": "tiny-a", "capabilities": ["embed"]}},
                          routes={t: ["box"] for t in ("code", "reason", "chat")} | {"embed": ["e"]},
                          router={"max_tokens": 256}, name="front.toml")
    with ZetaDynamicRouter.from_toml(config) as zeta:
        events = list(zeta.stream(QUESTION, task="reason"))
    result = events[-1].result
    assert (result.reasoning, result.text) == (A_THINKING, A_ANSWER)
    assert result.usage.reasoning_tokens > 0
    assert any(isinstance(e, ReasoningChunk) for e in events)


@pytest.fixture
def cli_config(tmp_path: Path, qwen3_gguf: dict[str, Path]) -> tuple[Path, dict[str, str]]:
    """A new user's models.toml: the 14B entry pointing at a generated GGUF with Qwen3's real
    template, whose answers are scripted."""
    from conftest import dump_toml

    script = _script_file(tmp_path, "answer", SCRIPT_A)
    config = tmp_path / "models.toml"
    config.write_text(dump_toml({
        "router": {"metrics": False, "seed": 3},
        "models": {"reason-14b": {"path": str(qwen3_gguf["a"]), "n_ctx": 1024, "capabilities": ["generate", "embed"]}},
        "routes": {task: ["reason-14b"] for task in ("code", "reason", "chat", "embed")}}))
    return config, {"ZETA_INJECT_FAULTS": f"reason-14b=script:{script}"}


def test_cli_json_shows_reasoning_and_text_apart(cli_config):
    config, env = cli_config
    done = run_cli("ask", "What is 17 + 25?", "--task", "reason", "--json", "--config", str(config), env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["reasoning"], result["text"]) == (A_THINKING, A_ANSWER)
    assert result["usage"]["reasoning_tokens"] > 0


def test_cli_hides_the_thinking_unless_asked_and_says_how_long_it_thought(cli_config):
    config, env = cli_config
    hidden = run_cli("ask", "What is 17 + 25?", "--task", "reason", "--config", str(config), env=env)
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout.strip() == A_ANSWER and "units" not in hidden.stderr
    assert "thought " in hidden.stderr and "--show-reasoning shows it" in hidden.stderr
    shown = run_cli("ask", "What is 17 + 25?", "--task", "reason", "--show-reasoning",
                    "--config", str(config), env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == A_ANSWER and A_THINKING in shown.stderr
    budget = run_cli("ask", "What is 17 + 25?", "--task", "reason", "--reasoning-budget", "16",
                     "--show-reasoning", "--config", str(config), env=env)
    assert budget.returncode == 0, budget.stderr
    assert budget.stdout.strip() == A_ANSWER and A_THINKING not in budget.stderr
    assert "thought 16 tokens" in budget.stderr


def test_the_script_fault_explains_a_bad_file(tmp_path: Path):
    with pytest.raises(InvalidRequest, match="script:.*cannot read it"):
        parse_faults(f"m=script:{tmp_path / 'nope.txt'}")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InvalidRequest, match="the file is empty"):
        parse_faults(f"m=script:{tmp_path / 'empty.txt'}")
    with pytest.raises(InvalidRequest, match="cannot read 'm=script'"):
        parse_faults("m=script")


def test_done_events_carry_the_same_reasoning_as_the_stream(make_router):
    router, _ = make_router({"a": SCRIPT_A})
    events = list(router.stream(QUESTION, task="reason"))
    done = events[-1]
    assert isinstance(done, Done)
    assert done.result.reasoning == "".join(e.text for e in events if isinstance(e, ReasoningChunk))
