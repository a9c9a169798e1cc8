"""Sampling per attempt: the caller's value, else the answering model's own default, else
[router]; checked at the edge, resolved for each model of the chain. What reached llama.cpp is
read off the real backend's generate()."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pytest

from zeta_local import InvalidRequest, ZetaDynamicRouter
from zeta_local.backend import LlamaCppModel
from zeta_local.config import ModelSpec, RouterSettings
from zeta_local.sampling import SamplingOverrides, SamplingParams

ROUTER = {"temperature": 0.9, "top_p": 0.9, "top_k": 50, "repeat_penalty": 1.0}


@pytest.fixture
def sampled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, SamplingParams]]:
    """(model, params) of every generation the real llama.cpp backend ran, in order."""
    seen: list[tuple[str, SamplingParams]] = []
    real = LlamaCppModel.generate

    def generate(self: LlamaCppModel, prompt: str, params: SamplingParams) -> Any:
        seen.append((self.name, params))
        return real(self, prompt, params)

    monkeypatch.setattr(LlamaCppModel, "generate", generate)
    return seen


def knobs(params: SamplingParams) -> tuple[float, float, int, float]:
    return params.temperature, params.top_p, params.top_k, params.repeat_penalty


def test_caller_then_model_then_router_key_by_key():
    """Each key is resolved on its own: a caller's top_k, the model's temperature, [router]'s
    top_p and max_tokens; the model's default never reaches a key the caller set."""
    router = RouterSettings(max_tokens=99, seed=5, **ROUTER)
    model = ModelSpec(name="m", capabilities=frozenset({"generate"}), temperature=0.2, top_k=7,
                      repeat_penalty=1.05)
    params = SamplingOverrides.from_options({"top_k": 3, "stop": "END"}).for_model(router, model)
    assert params == SamplingParams(max_tokens=99, temperature=0.2, top_p=0.9, top_k=3,
                                    repeat_penalty=1.05, seed=5, stop=("END",))
    bare = ModelSpec(name="bare", capabilities=frozenset({"generate"}))
    assert knobs(SamplingOverrides().for_model(router, bare)) == (0.9, 0.9, 50, 1.0)
    # A caller's 0 is a value, not "unset": greedy stays greedy whatever the model prefers.
    assert SamplingOverrides.from_options({"temperature": 0}).for_model(router, model).temperature == 0.0


def test_request_reaches_llama_cpp_with_the_models_defaults(write_config: Callable[..., Path],
                                                            sampled: list[tuple[str, SamplingParams]]):
    """Through the router to the real backend: the model's own temperature and top_k, the
    caller's top_p, [router]'s repeat_penalty."""
    path = write_config({"a": {"model": "tiny-a", "temperature": 0.2, "top_k": 7}}, router=ROUTER)
    with ZetaDynamicRouter.from_toml(path) as router:
        router.generate("hello", task="chat", top_p=0.5)
        router.generate("hello", task="chat", temperature=1.5, top_k=1)
    assert [(name, knobs(p)) for name, p in sampled] == [
        ("a", (0.2, 0.5, 7, 1.0)),
        ("a", (1.5, 0.9, 1, 1.0))]


def test_a_fallback_model_is_sampled_with_its_own_defaults(write_config: Callable[..., Path],
                                                           sampled: list[tuple[str, SamplingParams]]):
    """The first model fails; the second answers with its own temperature and repeat_penalty,
    not the first's, and the caller's top_p still holds for both."""
    path = write_config({"first": {"model": "tiny-a", "temperature": 0.1, "top_k": 5},
                         "second": {"model": "tiny-b", "temperature": 1.3, "repeat_penalty": 1.2}},
                        router=ROUTER)
    with ZetaDynamicRouter.from_toml(path, faults="first=raise_after:2") as router:
        result = router.generate("hello", task="chat", top_p=0.7, max_tokens=8)
    assert [(a.model, a.outcome) for a in result.attempts] == [("first", "error"), ("second", "ok")]
    assert [(name, knobs(p)) for name, p in sampled] == [
        ("first", (0.1, 0.7, 5, 1.0)),
        ("second", (1.3, 0.7, 50, 1.2))]
    assert all(p.max_tokens == 8 for _, p in sampled)


def test_the_same_seed_answers_alike_only_where_the_model_samples_alike(
        write_config: Callable[..., Path]):
    """Behaviour, not just bookkeeping: two tables for the same file, one greedy by default
    (top_k 1), one sampling hot (temperature 5); with one seed the greedy one answers the same
    whatever the caller's seed, and a caller's top_k=1 makes the hot one greedy too."""
    path = write_config({"greedy": {"model": "tiny-a", "top_k": 1},
                         "hot": {"model": "tiny-a", "temperature": 5.0, "top_k": 0, "top_p": 1.0}},
                        router={"max_tokens": 24})
    with ZetaDynamicRouter.from_toml(path) as router:
        greedy = {router.generate("hello", model="greedy", seed=s).text for s in (1, 2, 3)}
        hot = {router.generate("hello", model="hot", seed=s).text for s in (1, 2, 3)}
        forced = {router.generate("hello", model="hot", seed=s, top_k=1).text for s in (1, 2, 3)}
    assert len(greedy) == 1 and len(hot) == 3
    assert forced == greedy


@pytest.mark.parametrize("options, message", [
    ({"top_k": -1}, "top_k must be >= 0"),
    ({"temperature": 101}, "temperature must be >= 0 and <= 100"),
    ({"repeat_penalty": 0}, "repeat_penalty must be > 0"),
    ({"top_p": "0.5"}, "top_p must be a number"),
    ({"stop": ["ok", ""]}, "stop must be"),
    ({"min_p": 0.1}, "unknown sampling parameter(s) min_p"),
])
def test_a_bad_value_is_refused_before_the_first_event(write_config: Callable[..., Path],
                                                       options: dict[str, Any], message: str):
    """stream() checks the caller's values when called, before any model loads: a model's own
    defaults are resolved later, per attempt, and cannot excuse a bad request."""
    path = write_config({"a": {"model": "tiny-a", "temperature": 0.2, "top_k": 7}})
    with ZetaDynamicRouter.from_toml(path) as router:
        with pytest.raises(InvalidRequest, match="^" + re.escape(message)):
            router.stream("hello", task="chat", **options)
        assert router.loaded_models() == []
