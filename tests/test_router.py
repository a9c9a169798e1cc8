"""ZetaDynamicRouter on real llama.cpp with generated models: routing, every fallback outcome,
exhaustion, lazy loading, streaming, request validation, and sharing between threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import pytest

from zeta_local import (ConfigError, Done, Fallback, FallbackExhausted, InvalidRequest, TextChunk,
                        UnknownModel, ZetaDynamicRouter)

CHAIN_OF_FAILURES = {
    "gone": {"path": "/nonexistent/gone.gguf"},
    "html": {"model": "not-gguf"},
    "cut": {"model": "truncated"},
    "refused": {"model": "no-output-norm"},
    "good": {"model": "tiny-a"},
}


@pytest.fixture
def router(write_config: Callable[..., Path]):
    path = write_config(
        {"coder": {"model": "tiny-a"}, "thinker": {"model": "tiny-b"},
         "talker": {"model": "tiny-chatml"}},
        routes={"code": ["coder", "talker"], "reason": ["thinker", "talker"],
                "chat": ["talker"], "embed": ["coder"]})
    with ZetaDynamicRouter.from_toml(path) as r:
        yield r


def test_each_task_goes_to_its_chain(router: ZetaDynamicRouter):
    """The classifier's task picks the chain, and the first model of that chain answers."""
    code = router.generate("def add(a, b):\n    return a + b\n# write a unit test for this in Python")
    reason = router.generate("Prove that the square root of 2 is irrational, step by step.")
    chat = router.generate("Hello! How are you today?")
    assert (code.task, code.model) == ("code", "coder")
    assert (reason.task, reason.model) == ("reason", "thinker")
    assert (chat.task, chat.model) == ("chat", "talker")
    assert code.route.reason and code.route.chain == ("coder", "talker")


def test_explicit_task_always_wins(router: ZetaDynamicRouter):
    """task= overrides whatever the classifier would say."""
    result = router.generate("Hello! How are you today?", task="reason")
    assert (result.task, result.model) == ("reason", "thinker")
    assert router.route("def f(): pass", task="chat").chain == ("talker",)
    assert router.route("def f(): pass", task="chat").reason == "task given by the caller"


CODE_PROMPT = "def add(a, b):\n    return a + b\n# write a unit test for this in Python"


def test_pinned_model_answers_alone(router: ZetaDynamicRouter):
    """model= runs exactly that model, even one that is not first in the task's chain; the
    task still comes from task= or the classifier, and only labels the request."""
    result = router.generate(CODE_PROMPT, model="talker")
    assert (result.task, result.model) == ("code", "talker")
    assert result.route.chain == ("talker",)
    assert result.route.reason == "model talker given by the caller"
    assert result.route.confidence == router.route(CODE_PROMPT).confidence
    assert [(a.model, a.outcome) for a in result.attempts] == [("talker", "ok")]
    chat = router.chat([{"role": "user", "content": "hi"}], task="reason", model="coder")
    assert (chat.task, chat.model, chat.route.chain) == ("reason", "coder", ("coder",))
    done = list(router.stream("hello", task="chat", model="thinker"))[-1]
    assert isinstance(done, Done) and (done.result.task, done.result.model) == ("chat", "thinker")
    assert router.loaded_models() == ["coder", "talker", "thinker"]


def test_pinned_model_must_be_declared_and_generate(write_config: Callable[..., Path]):
    """An undeclared name or an embedding-only model is refused before any work."""
    path = write_config({"a": {"model": "tiny-a"}, "vec": {"model": "tiny-b", "capabilities": ["embed"]}},
                        routes={"embed": ["a", "vec"]}, default_chain=["a"])
    with ZetaDynamicRouter.from_toml(path) as router:
        with pytest.raises(UnknownModel, match="no model named 'nobody'; models.toml declares a, vec"):
            router.generate("hello", model="nobody")
        with pytest.raises(InvalidRequest, match="model 'vec' does not have the 'generate' capability"):
            router.chat([{"role": "user", "content": "hi"}], model="vec")
        assert router.loaded_models() == []


def test_pinned_model_that_fails_is_never_substituted(write_config: Callable[..., Path]):
    """A pinned model that fails ends the request with its one attempt; the working model
    next in the chain is not tried."""
    path = write_config({"first": {"model": "tiny-a"}, "second": {"model": "tiny-b"}})
    with ZetaDynamicRouter.from_toml(path, faults="first=raise_after:0") as router:
        with pytest.raises(FallbackExhausted) as caught:
            router.generate("hello", task="chat", model="first")
        assert "second" not in router.loaded_models()
    assert caught.value.task == "chat"
    assert [(a.model, a.outcome) for a in caught.value.attempts] == [("first", "error")]


def test_every_fallback_outcome_is_recorded_in_order(write_config: Callable[..., Path]):
    """Missing, not-a-GGUF, truncated and refused-by-llama.cpp each fall back to the next."""
    path = write_config(CHAIN_OF_FAILURES)
    with ZetaDynamicRouter.from_toml(path) as router:
        result = router.generate("hello", task="chat")
    assert result.model == "good"
    outcomes = [(a.model, a.outcome) for a in result.attempts]
    assert outcomes == [("gone", "missing"), ("html", "invalid_file"), ("cut", "invalid_file"),
                        ("refused", "load_failed"), ("good", "ok")]
    details = {a.model: a.detail for a in result.attempts}
    assert "no file at /nonexistent/gone.gguf" in details["gone"]
    assert "HTML page" in details["html"]
    assert "truncated" in details["cut"]
    assert "output_norm" in details["refused"], "llama.cpp's own reason is kept"
    assert all(a.seconds >= 0 for a in result.attempts)


def test_error_during_generation_falls_back(write_config: Callable[..., Path]):
    """An exception while generating (injected into the real backend) moves to the next model."""
    path = write_config({"first": {"model": "tiny-a"}, "second": {"model": "tiny-b"}})
    with ZetaDynamicRouter.from_toml(path, faults="first=raise_after:0") as router:
        result = router.generate("hello", task="chat")
    assert result.model == "second"
    assert [a.outcome for a in result.attempts] == ["error", "ok"]
    assert "injected fault raise_after:0" in result.attempts[0].detail


def test_mid_stream_failure_continues_on_the_next_model(write_config: Callable[..., Path]):
    """A model that fails after streaming text: the next model continues from the text so far
    (it is the prefix of its prompt), the Fallback event says so, and the result is the whole
    answer."""
    path = write_config({"first": {"model": "tiny-a"}, "second": {"model": "tiny-b"}},
                        router={"max_tokens": 12}, routes={"code": ["second"]})
    with ZetaDynamicRouter.from_toml(path, faults="first=raise_after:3") as router:
        events = list(router.stream("hello", task="chat"))
        alone = router.generate("hello", task="code")  # the second model without a prefix
    first_chunks = [e.text for e in events if isinstance(e, TextChunk) and e.model == "first"]
    fallback = next(e for e in events if isinstance(e, Fallback))
    done = events[-1]
    assert isinstance(done, Done)
    assert len(first_chunks) == 3
    assert fallback.from_model == "first" and fallback.to_model == "second"
    assert fallback.outcome == "error" and fallback.continues
    assert fallback.text_so_far == "".join(first_chunks)
    second_text = "".join(e.text for e in events if isinstance(e, TextChunk) and e.model == "second")
    assert done.result.text == fallback.text_so_far + second_text
    assert done.result.model == "second"
    assert done.result.usage.prompt_tokens > alone.usage.prompt_tokens, "the prefix was not sent"


def test_fallback_exhausted_carries_every_attempt(write_config: Callable[..., Path]):
    """When nothing can answer, one typed error lists each model and why."""
    models = {k: v for k, v in CHAIN_OF_FAILURES.items() if k != "good"}
    path = write_config(models)
    with ZetaDynamicRouter.from_toml(path) as router, pytest.raises(FallbackExhausted) as caught:
        router.generate("hello", task="code")
    error = caught.value
    assert error.task == "code"
    assert [a.model for a in error.attempts] == ["gone", "html", "cut", "refused"]
    assert [a.outcome for a in error.attempts] == ["missing", "invalid_file", "invalid_file", "load_failed"]
    assert "gone: missing" in str(error)
    assert isinstance(error, RuntimeError)


def test_never_answers_outside_the_chain(write_config: Callable[..., Path]):
    """A working model that is not in the task's chain is never used as a substitute."""
    path = write_config({"broken": {"model": "not-gguf"}, "fine": {"model": "tiny-a"}},
                        routes={"chat": ["broken"]}, default_chain=["fine"])
    with ZetaDynamicRouter.from_toml(path) as router:
        with pytest.raises(FallbackExhausted):
            router.generate("hello", task="chat")
        assert "fine" not in router.loaded_models()


def test_models_load_lazily_and_stay_loaded(router: ZetaDynamicRouter):
    """Nothing loads at start; a model loads on first use and is reused afterwards."""
    assert router.loaded_models() == []
    router.generate("hello", task="chat")
    assert router.loaded_models() == ["talker"]
    first = router._pool.workers[("talker", False)].model
    router.generate("again", task="chat")
    assert router._pool.workers[("talker", False)].model is first


def test_close_is_idempotent_and_final(router: ZetaDynamicRouter):
    """close() releases every model, may be called twice, and later requests are refused."""
    router.generate("hello", task="chat")
    router.close()
    router.close()
    assert router.loaded_models() == []
    with pytest.raises(InvalidRequest, match="closed"):
        router.generate("hello", task="chat")


def test_result_fields(router: ZetaDynamicRouter):
    """A result says what answered, why it stopped and what it cost."""
    result = router.generate("hello", task="chat", max_tokens=5)
    assert result.usage.completion_tokens <= 5
    assert result.usage.prompt_tokens > 0
    assert result.finish_reason in ("stop", "length")
    assert result.attempts[-1].outcome == "ok" and result.attempts[-1].model == result.model
    data = result.to_dict()
    assert data["model"] == "talker" and data["attempts"][0]["outcome"] == "ok"


def test_same_seed_same_text(router: ZetaDynamicRouter):
    """A fixed seed makes sampling reproducible, which benchmarks and bug reports rely on."""
    one = router.generate("hello", task="code", seed=123, temperature=1.0, max_tokens=20)
    two = router.generate("hello", task="code", seed=123, temperature=1.0, max_tokens=20)
    assert one.text == two.text


def test_chat_uses_the_models_own_template(router: ZetaDynamicRouter):
    """A GGUF that carries a chat template is prompted with it, stops included."""
    assert router.chat([{"role": "user", "content": "hi"}], task="chat").model == "talker"
    model = router._pool.workers[("talker", False)].model
    rendered = model.render_chat([{"role": "user", "content": "hi"}])
    assert rendered.text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert rendered.format == "gguf-template"


@pytest.mark.parametrize("call, message", [
    (lambda r: r.generate(""), "empty"),
    (lambda r: r.generate("   \n"), "empty"),
    (lambda r: r.generate(42), "must be a string"),
    (lambda r: r.generate("hi", task="poetry"), "unknown task 'poetry'"),
    (lambda r: r.generate("hi", task="embed"), "call embed()"),
    (lambda r: r.generate("hi", max_tokens=0), "max_tokens must be > 0"),
    (lambda r: r.generate("hi", max_tokens=-5), "max_tokens must be > 0"),
    (lambda r: r.generate("hi", temperature=-1), "temperature must be >= 0"),
    (lambda r: r.generate("hi", temperature=float("nan")), "temperature"),
    (lambda r: r.generate("hi", top_p=2), "top_p"),
    (lambda r: r.generate("hi", max_tokens="10"), "max_tokens must be an integer"),
    (lambda r: r.generate("hi", stop=[""]), "stop must be"),
    (lambda r: r.generate("hi", temprature=0.5), "unknown sampling parameter(s) temprature"),
    (lambda r: r.generate("hi", deadline_s=0), "deadline_s must be a positive number of seconds"),
    (lambda r: r.generate("hi", stall_timeout_s=-1), "stall_timeout_s must be a positive"),
    (lambda r: r.generate("hi", first_token_timeout_s="5"), "first_token_timeout_s must be"),
    (lambda r: r.embed(["hi"], deadline=3), "unknown option(s) deadline"),
    (lambda r: r.chat([]), "non-empty list"),
    (lambda r: r.chat("hello"), "use generate() for a plain prompt"),
    (lambda r: r.chat([{"role": "robot", "content": "x"}]), "role"),
    (lambda r: r.chat([{"role": "system", "content": "be brief"}]), "no user text"),
])
def test_bad_requests_are_typed_errors_before_any_work(router: ZetaDynamicRouter, call, message):
    """Bad input is an InvalidRequest (also a ValueError) naming the problem; nothing loads."""
    with pytest.raises(InvalidRequest) as caught:
        call(router)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert router.loaded_models() == []


def test_prompt_longer_than_the_context_falls_back(write_config: Callable[..., Path]):
    """A prompt that does not fit one model's context moves to a model with a larger one."""
    path = write_config({"small": {"model": "tiny-a", "n_ctx": 256},
                         "large": {"model": "tiny-b", "n_ctx": 2048}})
    with ZetaDynamicRouter.from_toml(path) as router:
        result = router.generate("x" * 600, task="chat")
    assert [a.outcome for a in result.attempts] == ["context_overflow", "ok"]
    assert "the prompt is 60" in result.attempts[0].detail
    assert "small's context holds 256" in result.attempts[0].detail


def test_max_tokens_is_capped_by_the_context(write_config: Callable[..., Path]):
    """Generation stops at the end of the context instead of failing past it."""
    path = write_config({"small": {"model": "tiny-a", "n_ctx": 256}})
    with ZetaDynamicRouter.from_toml(path) as router:
        result = router.generate("x" * 200, task="chat", max_tokens=500, stop=["\x00"])
    assert result.usage.prompt_tokens + result.usage.completion_tokens <= 256


def test_threads_share_one_router(router: ZetaDynamicRouter):
    """Concurrent requests on one router all get answers; a model serves one at a time."""
    results, errors = [], []

    def ask(i: int) -> None:
        try:
            results.append(router.generate(f"hello {i}", task=("code", "reason", "chat")[i % 3]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and len(results) == 9
    assert sorted(router.loaded_models()) == ["coder", "talker", "thinker"]


def test_unknown_fault_spec_is_rejected(write_config: Callable[..., Path]):
    """A fault aimed at a model that does not exist, or of an unknown kind, is an error."""
    path = write_config({"a": {"model": "tiny-a"}})
    with pytest.raises(InvalidRequest, match="unknown model"):
        ZetaDynamicRouter.from_toml(path, faults="nobody=fail_load")
    with pytest.raises(InvalidRequest, match="cannot read"):
        ZetaDynamicRouter.from_toml(path, faults="a=explode")


def test_fail_load_fault_from_the_environment(write_config: Callable[..., Path],
                                              monkeypatch: pytest.MonkeyPatch):
    """$ZETA_INJECT_FAULTS wraps the real backend of the named model."""
    path = write_config({"first": {"model": "tiny-a"}, "second": {"model": "tiny-b"}})
    monkeypatch.setenv("ZETA_INJECT_FAULTS", "first=fail_load")
    with ZetaDynamicRouter.from_toml(path) as router:
        result = router.generate("hello", task="chat")
    assert [(a.model, a.outcome) for a in result.attempts] == [("first", "load_failed"), ("second", "ok")]


def test_bad_config_is_a_config_error(tmp_path: Path):
    """from_toml on a broken file raises ConfigError (also a ValueError)."""
    bad = tmp_path / "models.toml"
    bad.write_text("[models.a]\npath = 3\n")
    with pytest.raises(ConfigError, match=r"\[models.a\] path: must be a string"):
        ZetaDynamicRouter.from_toml(bad)


LOAD_WHILE_PRINTING = """
import os, sys, threading
from pathlib import Path
from zeta_local.backend import LlamaCppBackend
from zeta_local.config import load_config
from zeta_local.gguf_info import read_gguf_info
spec = load_config(sys.argv[1]).models["a"]
done = threading.Event()
def load_repeatedly():
    try:
        for _ in range(30):
            LlamaCppBackend().load(spec, spec.path, read_gguf_info(spec.path), embedding=False,
                                   n_threads=1).close()
    finally:
        done.set()
threading.Thread(target=load_repeatedly).start()
written = 0
while not done.is_set() or written < 200:
    os.write(1, b"line\\n")
    written += 1
sys.stderr.write(f"{written}\\n")
"""


def test_loading_never_silences_other_threads_output(tmp_path: Path, write_config: Callable[..., Path]):
    """A load must not redirect the process's stdout/stderr (llama-cpp-python does so with
    verbose=False): an application's other threads would lose what they print meanwhile.
    Loads now run on worker threads, several at once, so nothing may swap sys.stderr either."""
    import subprocess
    import sys

    path = write_config({"a": {"model": "tiny-a"}})
    proc = subprocess.run([sys.executable, "-c", LOAD_WHILE_PRINTING, str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    written = int(proc.stderr.strip().splitlines()[-1])
    assert proc.stdout.count("line\n") == written
    assert "llama" not in proc.stderr.lower(), "llama.cpp or llama-cpp-python printed to stderr"
