"""Memory admission on real llama.cpp with small budgets: does_not_fit with the numbers, LRU
eviction that spares pinned and busy models, keep_alive, preload/unload, the loaded-first
fallback preference, and the estimate corrected after an out-of-memory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest

from conftest import GPU_BUILD
from zeta_local import ConfigError, FallbackExhausted, ZetaDynamicRouter
from zeta_local.admission import OOM_CORRECTION, parse_size
from zeta_local.memory import GPU_PROCESS_COST

SMALL = {"n_ctx": 1024}  # a tiny model then needs about 12 MiB
# The tests of the RAM budget keep their models on the CPU, on every build: on a CUDA build a
# model with its layers offloaded holds VRAM, not RAM, and a RAM budget would never bind.
ON_CPU = {"n_gpu_layers": 0}


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@pytest.mark.parametrize("text, size", [("6GiB", 6 * 2**30), ("512 MiB", 512 * 2**20), ("2GB", 2 * 10**9),
                                        ("1.5gib", int(1.5 * 2**30)), (4096, 4096)])
def test_sizes(text, size):
    """Budgets are written as sizes people use."""
    assert parse_size(text) == size


def test_bad_budget_is_a_config_error(write_config: Callable[..., Path]):
    """A budget that is not a size names the key."""
    path = write_config({"a": {"model": "tiny-a"}}, router={"ram_budget": "lots"})
    with pytest.raises(ConfigError, match=r"\[router\] ram_budget: must be a size"):
        ZetaDynamicRouter.from_toml(path)


@pytest.mark.real_model
def test_model_over_the_budget_does_not_fit_and_the_next_answers(gemma_path: Path,
                                                                 write_config: Callable[..., Path]):
    """ram_budget below the embedded default's estimate: skipped as does_not_fit, with the
    numbers, and the smaller model in the chain answers."""
    path = write_config({"gemma": {"path": str(gemma_path), "n_ctx": 2048} | ON_CPU,
                         "small": {"model": "tiny-a"} | SMALL | ON_CPU}, router={"ram_budget": "100MiB"})
    with ZetaDynamicRouter.from_toml(path) as router:
        result = router.generate("hello", task="chat")
    assert [(a.model, a.outcome) for a in result.attempts] == [("gemma", "does_not_fit"), ("small", "ok")]
    detail = result.attempts[0].detail
    assert "needs 8" in detail and "MiB of RAM" in detail and "free: 100.0 MiB of ram_budget 100.0 MiB" in detail


@pytest.fixture
def three(write_config: Callable[..., Path]) -> Callable[..., Path]:
    def make(router: dict | None = None, **model_options: dict) -> Path:
        models = {name: {"model": role} | SMALL | ON_CPU | model_options.get(name, {})
                  for name, role in (("a", "tiny-a"), ("b", "tiny-b"), ("c", "tiny-chatml"))}
        return write_config(models, routes={"code": ["a"], "reason": ["b"], "chat": ["c"], "embed": ["a"]},
                            router={"ram_budget": "30MiB"} | (router or {}))
    return make


def test_least_recently_used_idle_model_is_evicted(three: Callable[..., Path]):
    """Two models fit, a third needs room: the least recently *used* one goes."""
    with ZetaDynamicRouter.from_toml(three()) as router:
        router.generate("x", task="code")    # a
        router.generate("x", task="reason")  # b
        router.generate("x", task="code")    # a again: b is now the least recently used
        router.generate("x", task="chat")    # c evicts b
        wait_until(lambda: router.loaded_models() == ["a", "c"])
        held = {s.name: s.memory_bytes for s in router.status()}
        assert held["b"] == 0 and held["a"] > 0 and held["c"] > 0


def test_pinned_models_are_never_evicted(three: Callable[..., Path]):
    """A pinned model stays even when it is the least recently used; with every other model
    pinned too, the newcomer does not fit."""
    with ZetaDynamicRouter.from_toml(three(a={"pinned": True})) as router:
        router.generate("x", task="code")
        router.generate("x", task="reason")
        router.generate("x", task="chat")  # evicts b, not the older a
        wait_until(lambda: router.loaded_models() == ["a", "c"])
    with ZetaDynamicRouter.from_toml(three(a={"pinned": True}, b={"pinned": True})) as router:
        router.generate("x", task="code")
        router.generate("x", task="reason")
        with pytest.raises(FallbackExhausted) as caught:
            router.generate("x", task="chat")
        assert caught.value.attempts[0].outcome == "does_not_fit"


def test_keep_alive_unloads_idle_models(three: Callable[..., Path]):
    """keep_alive_s: an idle model gives its memory back."""
    with ZetaDynamicRouter.from_toml(three(a={"keep_alive_s": 0.3})) as router:
        router.generate("x", task="code")
        assert router.loaded_models() == ["a"]
        wait_until(lambda: router.loaded_models() == [])
        assert {s.name: s.memory_bytes for s in router.status()}["a"] == 0
        assert router.generate("x", task="code").model == "a"  # and loads again on demand


def test_preload_and_unload(three: Callable[..., Path]):
    """preload() loads ahead of the first request; unload() releases; both are admitted."""
    with ZetaDynamicRouter.from_toml(three()) as router:
        assert router.preload("b").outcome == "ok"
        assert router.loaded_models() == ["b"]
        router.unload("b")
        wait_until(lambda: router.loaded_models() == [])
    with ZetaDynamicRouter.from_toml(three(router={"ram_budget": "5MiB"})) as router:
        with pytest.raises(FallbackExhausted) as caught:
            router.preload("a")
        assert caught.value.attempts[0].outcome == "does_not_fit"


def test_a_loaded_later_model_beats_evicting_and_cold_loading(write_config: Callable[..., Path]):
    """The first model would need an eviction while the second is loaded already: the first
    is skipped (does_not_fit, saying why) and the loaded one answers at once."""
    path = write_config({"first": {"model": "tiny-a"} | SMALL | ON_CPU, "second": {"model": "tiny-b"} | SMALL | ON_CPU,
                         "other": {"model": "tiny-chatml"} | SMALL | ON_CPU},
                        routes={"code": ["first", "second"], "reason": ["second"], "chat": ["other"]},
                        router={"ram_budget": "20MiB"})
    with ZetaDynamicRouter.from_toml(path) as router:
        router.preload("second")
        result = router.generate("x", task="code")
    assert [(a.model, a.outcome) for a in result.attempts] == [("first", "does_not_fit"), ("second", "ok")]
    assert "a model later in the chain is loaded already" in result.attempts[0].detail


@pytest.mark.parametrize("strict, expected", [(False, ["a", "c"]), (True, ["a", "b", "c"])])
def test_fallback_prefers_a_loaded_model(write_config: Callable[..., Path], strict: bool, expected: list[str]):
    """After the chosen model fails, a loaded model is tried before an unloaded one earlier in
    the chain, unless the route asks for strict order."""
    route = {"chain": ["a", "b", "c"], "strict_order": True} if strict else ["a", "b", "c"]
    path = write_config({"a": {"model": "tiny-a"}, "b": {"model": "tiny-b"}, "c": {"model": "tiny-chatml"}},
                        routes={"code": route})
    with ZetaDynamicRouter.from_toml(path, faults="a=raise_after:0;b=raise_after:0") as router:
        router.preload("c")
        result = router.generate("x", task="code")
    assert [a.model for a in result.attempts] == expected
    assert result.model == "c"


def test_out_of_memory_corrects_the_estimate_upward(write_config: Callable[..., Path]):
    """A load that fails to allocate is out_of_memory, and the model's estimate grows: all of it
    RAM on a CPU build; RAM and VRAM alike on a CUDA build, where the layers are offloaded."""
    path = write_config({"a": {"model": "tiny-a"}, "b": {"model": "tiny-b"}})
    with ZetaDynamicRouter.from_toml(path, faults="a=oom_load") as router:
        result = router.generate("x", task="chat")
        assert [a.outcome for a in result.attempts] == ["out_of_memory", "ok"]
        estimate = router._pool.estimates[("a", False)]
        ram, vram = router._pool.ledger.needs(("a", False), estimate)
        assert (ram, vram) == (int(estimate.ram * OOM_CORRECTION), int(estimate.vram * OOM_CORRECTION))
        if GPU_BUILD:
            assert estimate.vram > 0 and estimate.weights_gpu > 0
        else:
            assert estimate.vram == 0 and ram == int(estimate.total * OOM_CORRECTION)
        assert {s.name: s.memory_bytes for s in router.status()}["a"] == 0, "nothing held after a failed load"


@pytest.mark.parametrize("partial", [False, True])
def test_partial_offload_before_skipping(write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
                                         partial: bool):
    """Under a VRAM budget too small for full offload, allow_partial_offload puts fewer layers
    on the GPU instead of skipping the model; the process's own GPU cost comes off the budget
    first, leaving 3 MiB for a model that needs 3.2 MiB with every layer offloaded (and flash
    attention on). (A GPU build is simulated: this CPU build ignores n_gpu_layers when loading,
    which is what lets the test run here.)"""
    monkeypatch.setattr("zeta_local.pool.gpu_offload_supported", lambda: True)
    path = write_config({"a": {"model": "tiny-a", "allow_partial_offload": partial} | SMALL,
                         "b": {"model": "tiny-b", "n_gpu_layers": 0} | SMALL},
                        router={"vram_budget": "789MiB", "ram_budget": "1GiB"})
    with ZetaDynamicRouter.from_toml(path) as router:
        assert router._pool.estimates == {} and router._pool.ledger.vram_budget == 789 * 2**20
        assert router._pool.ledger.process_vram == GPU_PROCESS_COST == 786 * 2**20
        result = router.generate("x", task="chat")
        if partial:
            assert result.model == "a" and router._pool.gpu_layers[("a", False)] < 2
            assert router._pool.estimates[("a", False)].vram <= 3 * 2**20
        else:
            assert [(a.model, a.outcome) for a in result.attempts][0] == ("a", "does_not_fit")
            assert "of VRAM" in result.attempts[0].detail
            assert "3.0 MiB of vram_budget 789.0 MiB (786.0 MiB of it kept for this process's CUDA " \
                   "context and workspace)" in result.attempts[0].detail
            assert result.model == "b"


def test_a_model_is_never_loaded_twice_at_once(write_config: Callable[..., Path]):
    """Eight requests for an unloaded model at the same moment: one load, eight answers."""
    import threading

    from zeta_local.backend import LlamaCppBackend

    class CountingBackend(LlamaCppBackend):  # the real backend, counting its loads
        loads = 0

        def load(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            CountingBackend.loads += 1
            return super().load(*args, **kwargs)

    path = write_config({"a": {"model": "tiny-a"}})
    with ZetaDynamicRouter.from_toml(path, backend=CountingBackend()) as router:
        start = threading.Barrier(8)
        results = []

        def ask() -> None:
            start.wait(timeout=30)
            results.append(router.generate("x", task="chat").model)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert results == ["a"] * 8 and CountingBackend.loads == 1
