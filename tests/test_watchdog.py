"""Never left hanging: each fault kind, injected into the real llama.cpp backend, ends in the
next model's answer within its budget; cancellation, deadlines, the circuit breaker, queue
limits, status(), and no thread left behind.

Budgets in these tests are short (tenths of a second) and the asserted bounds generous (the
budget plus a few seconds), so that a busy machine does not make them flake."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from zeta_local import (CancelToken, Cancelled, Done, Fallback, FallbackExhausted, TextChunk,
                        ZetaDynamicRouter, ZetaError)

MARGIN_S = 5.0  # generous: timing is measured in the benchmarks, not asserted here
# Short budgets go on the model that misbehaves only (per-model keys); the healthy models keep
# the generous defaults, so that a busy machine never makes *them* trip.
FAST = {"load_timeout_s": 0.5, "first_token_timeout_s": 0.5, "stall_timeout_s": 0.5}
ROUTER = {"cancel_grace_s": 2.0, "max_tokens": 24}


def zeta_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("zeta-")]


@pytest.fixture
def two_models(write_config: Callable[..., Path]) -> Path:
    return write_config({"first": {"model": "tiny-a"} | FAST, "second": {"model": "tiny-b"}}, router=ROUTER)


@pytest.mark.parametrize("fault, outcome", [
    ("hang_load", "timeout_load"),
    ("hang_prefill", "timeout_first_token"),
    ("stall_after:3", "stalled"),
    ("oom_load", "out_of_memory"),
    ("fail_load", "load_failed"),
    ("raise_after:2", "error"),
])
@pytest.mark.parametrize("task", ["code", "reason", "chat"])
def test_each_fault_falls_back_within_its_budget(two_models: Path, fault: str, outcome: str, task: str):
    """The failed model's outcome is recorded and the next model answers, within the budget."""
    with ZetaDynamicRouter.from_toml(two_models, faults=f"first={fault}") as router:
        started = time.monotonic()
        result = router.generate("hello there", task=task)
        elapsed = time.monotonic() - started
    assert result.model == "second"
    assert [(a.model, a.outcome) for a in result.attempts] == [("first", outcome), ("second", "ok")]
    assert elapsed < 0.5 + MARGIN_S


@pytest.mark.parametrize("fault, outcome", [
    ("hang_load", "timeout_load"), ("hang_prefill", "timeout_first_token"),
    ("oom_load", "out_of_memory"), ("raise_after:0", "error"),
])
def test_embedding_faults_fall_back(two_models: Path, fault: str, outcome: str):
    """Embeddings run under the same watchdog and fall back the same way."""
    with ZetaDynamicRouter.from_toml(two_models, faults=f"first={fault}") as router:
        result = router.embed(["hello", "world"])
    assert result.model == "second"
    assert [(a.model, a.outcome) for a in result.attempts] == [("first", outcome), ("second", "ok")]


def test_slow_but_steady_is_not_a_stall(write_config: Callable[..., Path]):
    """Tokens 100 ms apart under a 1 s stall budget, 3 s in all: slow, not stalled, so it answers."""
    path = write_config({"first": {"model": "tiny-a", "stall_timeout_s": 1.0}, "second": {"model": "tiny-b"}},
                        router=ROUTER | {"max_tokens": 30})
    with ZetaDynamicRouter.from_toml(path, faults="first=slow_token:100") as router:
        result = router.generate("hello", task="chat")
    assert result.model == "first" and result.attempts[0].outcome == "ok"
    assert result.usage.seconds > 1.0, "the answer as a whole took longer than the stall budget"


def test_stall_mid_answer_is_continued_by_the_next_model(two_models: Path):
    """A stream that stalls after 3 pieces reaches the fallback, which continues the text."""
    with ZetaDynamicRouter.from_toml(two_models, faults="first=stall_after:3") as router:
        events = list(router.stream("hello", task="chat"))
    fallback = next(e for e in events if isinstance(e, Fallback))
    assert fallback.outcome == "stalled" and fallback.continues
    done = events[-1]
    assert isinstance(done, Done) and done.result.model == "second"
    assert done.result.text.startswith(fallback.text_so_far)


def test_worker_is_ready_again_after_a_cancelled_prefill(write_config: Callable[..., Path]):
    """After a trip inside prompt evaluation the same model serves the next request normally:
    the cancel reached llama.cpp, and the context was reset."""
    path = write_config({"only": {"model": "tiny-a"}}, router=ROUTER)
    with ZetaDynamicRouter.from_toml(path) as router:
        router.generate("warm up", task="chat")
        model = router._pool.workers[("only", False)].model
        blocked = threading.Event()
        model.decode_hook = lambda: (blocked.set(), model.cancel.wait(10))  # hang inside decode
        with pytest.raises(FallbackExhausted) as caught:
            router.generate("hello", task="chat", first_token_timeout_s=0.5)
        assert caught.value.attempts[0].outcome == "timeout_first_token" and blocked.is_set()
        model.decode_hook = None
        assert router.generate("hello again", task="chat").model == "only"
        assert router.status()[0].state == "ready"


@pytest.mark.real_model
def test_a_long_real_prompt_evaluation_is_cancelled_in_place(gemma_path: Path,
                                                             write_config: Callable[..., Path]):
    """On Gemma 3 270M, a ~2,000-token prompt is cancelled by the caller during its evaluation;
    the call ends with Cancelled long before the evaluation could have finished, and the
    model answers the next request."""
    path = write_config({"gemma": {"path": str(gemma_path), "n_ctx": 4096}})
    prompt = "The quick brown fox jumps over the lazy dog. " * 200
    with ZetaDynamicRouter.from_toml(path) as router:
        router.generate("Hi", task="chat", max_tokens=1)  # load outside the measured part
        token = CancelToken()
        threading.Timer(0.3, token.cancel).start()
        started = time.monotonic()
        with pytest.raises(Cancelled) as caught:
            router.generate(prompt, task="chat", cancel=token, max_tokens=4)
        assert time.monotonic() - started < 0.3 + MARGIN_S
        assert caught.value.attempts[-1].outcome == "cancelled"
        assert router.generate("Hi", task="chat", max_tokens=2).model == "gemma"


def test_caller_cancellation_before_and_during(two_models: Path):
    """A token cancelled before the call, or while a model hangs, ends in Cancelled."""
    with ZetaDynamicRouter.from_toml(two_models, faults="first=hang_prefill") as router:
        token = CancelToken()
        token.cancel()
        with pytest.raises(Cancelled):
            router.generate("hello", task="chat", cancel=token)
        token = CancelToken()
        threading.Timer(0.1, token.cancel).start()
        with pytest.raises(Cancelled) as caught:
            router.generate("hello", task="chat", cancel=token, first_token_timeout_s=30)
        assert [a.outcome for a in caught.value.attempts] == ["cancelled"]


def test_deadline_shared_by_the_chain_ends_in_fallback_exhausted(write_config: Callable[..., Path]):
    """Every model hangs; the request's deadline stops the chain, well before the sum of the
    per-attempt budgets."""
    path = write_config({"a": {"model": "tiny-a"}, "b": {"model": "tiny-b"}, "c": {"model": "tiny-chatml"}},
                        router=ROUTER)
    with ZetaDynamicRouter.from_toml(path, faults="a=hang_prefill;b=hang_prefill;c=hang_prefill") as router:
        started = time.monotonic()
        with pytest.raises(FallbackExhausted) as caught:
            router.generate("hello", task="chat", deadline_s=1.0)
        assert time.monotonic() - started < 1.0 + MARGIN_S
    assert caught.value.attempts[-1].outcome == "deadline"
    assert len(caught.value.attempts) == 1, "no model is started once the deadline has passed"


def test_prompt_overflowing_one_context_fits_the_next(write_config: Callable[..., Path]):
    """context_overflow on the small model, an answer from the larger one."""
    path = write_config({"small": {"model": "tiny-a", "n_ctx": 256},
                         "large": {"model": "tiny-b", "n_ctx": 2048}}, router=ROUTER)
    with ZetaDynamicRouter.from_toml(path) as router:
        result = router.generate("z" * 700, task="chat")
    assert [a.outcome for a in result.attempts] == ["context_overflow", "ok"]


def test_circuit_breaker_skips_then_retries(write_config: Callable[..., Path]):
    """After allowed_fails failures the model is skipped (cooling_down); after the cooldown one
    trial request goes through again."""
    path = write_config({"flaky": {"model": "tiny-a"}, "steady": {"model": "tiny-b"}},
                        router=ROUTER | {"allowed_fails": 2, "cooldown_s": 0.5})
    with ZetaDynamicRouter.from_toml(path, faults="flaky=raise_after:0") as router:
        outcomes = [router.generate("hi", task="chat").attempts[0].outcome for _ in range(3)]
        assert outcomes == ["error", "error", "cooling_down"]
        assert {s.name: s.state for s in router.status()}["flaky"] == "cooling_down"
        time.sleep(0.6)
        assert router.generate("hi", task="chat").attempts[0].outcome == "error"  # the trial
        assert router.generate("hi", task="chat").attempts[0].outcome == "cooling_down"


def test_full_queue_moves_on(write_config: Callable[..., Path]):
    """With one slot and the model busy, a further request goes to the next model at once."""
    path = write_config({"slow": {"model": "tiny-a"}, "other": {"model": "tiny-b"}},
                        router=ROUTER | {"queue_size": 1, "max_tokens": 30})
    with ZetaDynamicRouter.from_toml(path, faults="slow=slow_token:100") as router:
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(router.generate("hi", task="chat")))
                   for _ in range(3)]
        for t in threads:
            t.start()
            time.sleep(0.2)
        for t in threads:
            t.join(timeout=60)
    outcomes = sorted(a.outcome for r in results for a in r.attempts if a.model == "slow")
    assert "queue_full" in outcomes
    assert all(r.attempts[-1].outcome == "ok" for r in results) and len(results) == 3


def test_status_reports_every_model(write_config: Callable[..., Path]):
    """status() shows unavailable files with why, and loaded models with their counts."""
    path = write_config({"gone": {"path": "/nonexistent.gguf"}, "here": {"model": "tiny-a"}})
    with ZetaDynamicRouter.from_toml(path) as router:
        before = {s.name: s for s in router.status()}
        assert before["gone"].state == "unavailable" and "no file at" in before["gone"].detail
        assert before["here"].state == "unloaded"
        router.generate("hi", task="chat")
        after = {s.name: s for s in router.status()}
    assert after["here"].state == "ready" and after["here"].served == 1 and after["here"].failed == 0


def test_sixteen_threads_mixed_tasks_random_faults(write_config: Callable[..., Path]):
    """Every request ends in exactly one result or one typed error; nothing is lost."""
    path = write_config({"a": {"model": "tiny-a"}, "b": {"model": "tiny-b"}, "c": {"model": "tiny-chatml"}},
                        routes={"code": ["a", "b", "c"], "reason": ["b", "c", "a"],
                                "chat": ["c", "a", "b"], "embed": ["a", "b"]},
                        router=ROUTER | FAST | {"allowed_fails": 1000, "max_tokens": 12})
    rng = random.Random(5)
    faults = ";".join(f"{m}={rng.choice(['hang_prefill', 'stall_after:2', 'raise_after:1', 'slow_token:5'])}"
                      for m in ("a", "b"))
    outcomes: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for j in range(4):
            try:
                if (i + j) % 4 == 3:
                    router.embed([f"text {i} {j}"])
                else:
                    router.generate(f"request {i} {j}", task=("code", "reason", "chat")[(i + j) % 3])
                result = "result"
            except ZetaError as exc:
                result = type(exc).__name__
            with lock:
                outcomes.append(result)

    with ZetaDynamicRouter.from_toml(path, faults=faults) as router:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
    assert len(outcomes) == 64
    assert set(outcomes) <= {"result", "FallbackExhausted"}
    assert outcomes.count("result") > 0


def test_no_thread_is_left_after_close(two_models: Path):
    """close() stops every worker and the watchdog, even with a model hung mid-request."""
    before = set(zeta_threads())
    router = ZetaDynamicRouter.from_toml(two_models, faults="first=hang_prefill")
    hung = threading.Thread(target=lambda: pytest.raises(ZetaError, router.generate, "hi",
                                                         task="chat", first_token_timeout_s=30))
    hung.start()
    time.sleep(0.3)
    router.close()
    hung.join(timeout=30)
    assert not hung.is_alive()
    assert set(zeta_threads()) - before == set()


def test_stream_abandoned_by_its_consumer_stops_the_model(two_models: Path):
    """Breaking out of a stream cancels the generation, and the model serves again."""
    with ZetaDynamicRouter.from_toml(two_models) as router:
        for event in router.stream("hello", task="chat", max_tokens=200):
            if isinstance(event, TextChunk):
                break
        assert router.generate("again", task="chat", first_token_timeout_s=30, stall_timeout_s=30).model == "first"


@pytest.mark.real_model
def test_budget_of_a_new_phase_is_enforced_after_a_slow_load(gemma_path: Path,
                                                             write_config: Callable[..., Path]):
    """A load longer than the first-token budget, then a hang in prompt evaluation: the
    watchdog must wake for the new phase's closer deadline (it once slept 60 s here)."""
    path = write_config({"gemma": {"path": str(gemma_path), "n_ctx": 512, "first_token_timeout_s": 0.2},
                         "tiny": {"model": "tiny-a"}}, router=ROUTER)
    with ZetaDynamicRouter.from_toml(path, faults="gemma=hang_prefill") as router:
        started = time.monotonic()
        result = router.generate("hello", task="chat")
        elapsed = time.monotonic() - started
    assert [a.outcome for a in result.attempts] == ["timeout_first_token", "ok"]
    assert elapsed < 0.2 + 2 * MARGIN_S  # the load (about 1 s) included


def test_worker_that_ignores_its_cancel_is_quarantined_until_it_returns(write_config: Callable[..., Path]):
    """A model stuck inside llama_decode past cancel_grace_s is skipped (quarantined) and shown
    in status(); the request moves on without it; when it returns it serves again."""
    path = write_config({"first": {"model": "tiny-a", "first_token_timeout_s": 0.3}, "second": {"model": "tiny-b"}},
                        router=ROUTER | {"cancel_grace_s": 0.3})
    with ZetaDynamicRouter.from_toml(path) as router:
        router.generate("warm up", task="chat")
        model = router._pool.workers[("first", False)].model
        release = threading.Event()
        model.decode_hook = lambda: release.wait(30)  # deaf to the cancel flag
        result = router.generate("hello", task="chat")
        assert [a.outcome for a in result.attempts] == ["timeout_first_token", "ok"]
        deadline = time.monotonic() + 10
        while {s.name: s.state for s in router.status()}["first"] != "quarantined":
            assert time.monotonic() < deadline, "never quarantined"
            time.sleep(0.05)
        skipped = router.generate("hello", task="chat")
        assert [a.outcome for a in skipped.attempts] == ["quarantined", "ok"]
        model.decode_hook = None
        release.set()
        deadline = time.monotonic() + 10
        while {s.name: s.state for s in router.status()}["first"] != "ready":
            assert time.monotonic() < deadline, "never came back"
            time.sleep(0.05)
        assert router.generate("hello", task="chat", first_token_timeout_s=30).model == "first"
