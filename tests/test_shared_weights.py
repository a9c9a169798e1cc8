"""One copy of the weights per model: a model's generation and embedding contexts run on one
llama_model (seen by llama.cpp itself and in its allocation log), each on its own worker
thread, the weights freed with the last of them; the embedding context keeps its vectors, its
cancellation and its faults; the ledger and `plan` count the weights once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from conftest import GPU_BUILD

from zeta_local import ZetaDynamicRouter
from zeta_local.admission import MemoryLedger, footprint
from zeta_local.backend import LlamaCppBackend
from zeta_local.config import ModelSpec, load_config
from zeta_local.gguf_info import read_gguf_info
from zeta_local.inventory import plan_models
from zeta_local.bench import captured_llama_log
from zeta_local.memory import EMBED_BATCH, MARGIN, MemoryEstimate, estimate_for, weights_part, without_weights
from zeta_local.sampling import SamplingParams

MiB = 2**20
GREEDY = SamplingParams(max_tokens=8, temperature=0.0, top_p=1.0, top_k=1, repeat_penalty=1.0, seed=1)
TEXTS = ["hello world", "a second, longer text to embed than the first one", "x", "hello world"]


@pytest.fixture
def llama_log() -> Iterator[list[str]]:
    """llama.cpp's log lines, for the length of the test."""
    with captured_llama_log() as lines:
        yield lines


def contexts(router: ZetaDynamicRouter, name: str) -> tuple[Any, Any]:
    """The loaded generation and embedding contexts of a model (under any fault wrapper)."""
    models = [router._pool.workers[(name, embedding)].model for embedding in (False, True)]
    return tuple(getattr(m, "inner", m) for m in models)  # type: ignore[return-value]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def high_level_vectors(path: Path, texts: list[str]) -> np.ndarray:
    """The vectors of the way embeddings were made before: llama-cpp-python's own embed() on a
    Llama(embedding=True) of its own."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=EMBED_BATCH, n_batch=EMBED_BATCH, n_ubatch=EMBED_BATCH,
                          embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False)
    try:
        return np.asarray(llm.embed(texts, normalize=False), dtype=np.float32)
    finally:
        llm.close()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ---- one llama_model -------------------------------------------------------------------------

def test_both_contexts_run_on_one_llama_model(write_config: Callable[..., Path], llama_log: list[str]):
    """llama.cpp reports the same llama_model under both contexts, and its log shows the model's
    buffers allocated once while the KV cache, output and compute buffers come twice."""
    backend = LlamaCppBackend()
    with ZetaDynamicRouter.from_toml(write_config({"a": {"model": "tiny-a"}}), backend=backend) as router:
        router.generate("hello", task="chat")
        after_generation = [line for line in llama_log if "buffer size =" in line]
        router.embed(["hello"])
        generation, embedding = contexts(router, "a")
        assert generation.weights_id == embedding.weights_id != 0
        assert list(backend.loaded_weights().values()) == [2], "one set of weights, two users"
    buffers = [line for line in llama_log if "buffer size =" in line]  # allocations, not their release
    added = buffers[len(after_generation):]
    assert sum(" model buffer" in line for line in after_generation) >= 1
    assert not any(" model buffer" in line for line in added), added
    assert sum("KV buffer" in line for line in added) >= 1
    # one compute buffer per device for the new context (CPU; or CUDA0 and its CUDA_Host staging)
    devices = [line.split(" compute buffer")[0].split()[-1] for line in added if " compute buffer" in line]
    assert devices and len(devices) == len(set(devices)), added
    assert backend.loaded_weights() == {}, "closing the router freed the weights"


def test_unloading_one_context_keeps_the_other_working(write_config: Callable[..., Path]):
    """Either context can be unloaded while the other serves on the same weights; a context
    made again shares them again; the weights go with the last context."""
    backend = LlamaCppBackend()
    with ZetaDynamicRouter.from_toml(write_config({"a": {"model": "tiny-a"}}), backend=backend) as router:
        first = router.generate("hello", task="chat", temperature=0).text
        vectors = router.embed(TEXTS).vectors
        weights = contexts(router, "a")[1].weights_id
        generation_worker, embedding_worker = (router._pool.workers[("a", e)] for e in (False, True))

        generation_worker.unload()
        wait_until(lambda: generation_worker.model is None)
        assert list(backend.loaded_weights().values()) == [1]
        np.testing.assert_array_equal(router.embed(TEXTS).vectors, vectors)
        assert router.generate("hello", task="chat", temperature=0).text == first
        assert contexts(router, "a")[0].weights_id == weights, "made again on the weights in use"

        embedding_worker.unload()
        wait_until(lambda: embedding_worker.model is None)
        assert router.generate("hello", task="chat", temperature=0).text == first
        np.testing.assert_array_equal(router.embed(TEXTS).vectors, vectors)

        router.unload("a")
        wait_until(lambda: router.loaded_models() == [])
        assert backend.loaded_weights() == {}


def run_both_at_once(path: Path, rounds: int) -> None:
    """Generation and embedding on one llama_model at the same time, from two threads, `rounds`
    times each: every result must equal the one each context gives alone."""
    spec = ModelSpec(name="m", capabilities=frozenset({"generate", "embed"}), n_ctx=1024)
    backend = LlamaCppBackend()
    info = read_gguf_info(path)
    generation = backend.load(spec, path, info, embedding=False, n_threads=1)
    embedding = backend.load(spec, path, info, embedding=True, n_threads=1)
    try:
        prompt, texts = "the quick brown fox " * 20, TEXTS * 8

        def generate() -> str:
            return "".join(p for p in generation.generate(prompt, GREEDY) if isinstance(p, str))

        expected = {generate: generate(), embedding.embed: embedding.embed(texts)}
        failures: list[str] = []

        def run(work: Callable[..., Any], *args: Any) -> None:
            for _ in range(rounds):
                got = work(*args)
                if not np.array_equal(np.asarray(got), np.asarray(expected[work])):
                    failures.append(repr(got)[:80])

        threads = [threading.Thread(target=run, args=(generate,)),
                   threading.Thread(target=run, args=(embedding.embed, texts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads) and failures == []
    finally:
        embedding.close()
        generation.close()
    assert backend.loaded_weights() == {}


def test_both_contexts_run_at_once_on_their_own_threads(tiny_models: dict[str, Path]):
    """The two contexts of one model run concurrently, each on its worker's thread, and give
    exactly what they give alone (llama.cpp's test-thread-safety runs contexts of one model on
    several threads too)."""
    run_both_at_once(tiny_models["tiny-a"], rounds=25)


@pytest.mark.real_model
def test_real_model_contexts_run_at_once(gemma_path: Path):
    """The same on Gemma 3 270M, whose decodes are long enough to overlap for real."""
    run_both_at_once(gemma_path, rounds=4)


def test_two_contexts_asking_at_once_load_the_weights_once(write_config: Callable[..., Path],
                                                           llama_log: list[str]):
    """A chat and an embedding request arriving together for an unloaded model: one load of
    the weights, which the later context waits for and shares."""
    backend = LlamaCppBackend()
    with ZetaDynamicRouter.from_toml(write_config({"a": {"model": "tiny-a"}}), backend=backend) as router:
        start = threading.Barrier(2)
        results: list[Any] = []

        def ask(call: Callable[[], Any]) -> None:
            start.wait(timeout=30)
            results.append(call())

        threads = [threading.Thread(target=ask, args=(lambda: router.generate("x", task="chat"),)),
                   threading.Thread(target=ask, args=(lambda: router.embed(["x"]),))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(results) == 2
        assert list(backend.loaded_weights().values()) == [2]
    assert sum("CPU_Mapped model buffer" in line for line in llama_log) == 1


def test_a_cancelled_load_leaves_nothing_behind(write_config: Callable[..., Path]):
    """Both contexts waiting on a load that hangs: both time out, no weights stay loaded, and
    the model loads again once the fault is gone."""
    from zeta_local.faults import Fault, FaultInjectingBackend

    real = LlamaCppBackend()
    faulty = FaultInjectingBackend(real, {"a": Fault("hang_load")})
    path = write_config({"a": {"model": "tiny-a", "load_timeout_s": 0.3}, "b": {"model": "tiny-b"}},
                        router={"allowed_fails": 100})
    with ZetaDynamicRouter.from_toml(path, backend=faulty) as router:
        outcomes: list[str] = []
        threads = [threading.Thread(target=lambda: outcomes.append(
                       router.generate("x", task="chat").attempts[0].outcome)),
                   threading.Thread(target=lambda: outcomes.append(
                       router.embed(["x"]).attempts[0].outcome))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert outcomes == ["timeout_load", "timeout_load"]
        wait_until(lambda: "a" not in router.loaded_models())
        assert not any("tiny-a" in key for key in real.loaded_weights())
        faulty.faults.clear()
        assert router.embed(["x"], model="a").model == "a"
        assert router.generate("x", model="a").model == "a"


# ---- the embedding context ------------------------------------------------------------------

def test_vectors_match_the_high_level_path(tiny_models: dict[str, Path]):
    """The embedding context on shared weights gives the vectors llama-cpp-python's own
    Llama(embedding=True).embed() gives, row for row."""
    path = tiny_models["tiny-a"]
    spec = ModelSpec(name="a", capabilities=frozenset({"embed"}), n_ctx=2048)
    model = LlamaCppBackend().load(spec, path, read_gguf_info(path), embedding=True, n_threads=2)
    try:
        ours = model.embed(TEXTS)
        assert model.n_ctx == EMBED_BATCH
    finally:
        model.close()
    assert ours.shape == (len(TEXTS), 64) and ours.dtype == np.float32
    assert np.all(cosine(ours, high_level_vectors(path, TEXTS)) >= 0.999)


def test_many_texts_are_split_into_decodes_and_stay_in_order(write_config: Callable[..., Path]):
    """More texts than one decode holds come back in order, each as it is alone, and the same
    request gives the same rows."""
    texts = [f"text number {i} " * (1 + i % 7) for i in range(40)]
    with ZetaDynamicRouter.from_toml(write_config({"a": {"model": "tiny-a"}})) as router:
        together = router.embed(texts).vectors
        alone = np.stack([router.embed([t]).vectors[0] for t in texts])
        np.testing.assert_array_equal(router.embed(texts).vectors, together)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)
    assert np.all(cosine(together, alone) >= 0.9999)


@pytest.mark.parametrize("fault, outcome", [("hang_prefill", "timeout_first_token"), ("raise_after:0", "error")])
def test_embedding_faults_with_the_generation_context_loaded(write_config: Callable[..., Path],
                                                             fault: str, outcome: str):
    """A hang inside the embedding context's decode is cancelled through its own abort callback
    while the generation context on the same weights is loaded; the chain falls back, and both
    contexts serve afterwards."""
    path = write_config({"a": {"model": "tiny-a", "first_token_timeout_s": 0.3}, "b": {"model": "tiny-b"}},
                        router={"cancel_grace_s": 2.0})
    with ZetaDynamicRouter.from_toml(path, faults=f"a={fault}") as router:
        router.preload("a")
        started = time.monotonic()
        result = router.embed(["hello", "world"])
        assert time.monotonic() - started < 5
        assert [(a.model, a.outcome) for a in result.attempts] == [("a", outcome), ("b", "ok")]
        generation, embedding = contexts(router, "a")
        assert generation.weights_id == embedding.weights_id
        assert {router._pool.workers[("a", e)].state for e in (False, True)} == {"ready"}


# ---- memory: the weights counted once --------------------------------------------------------

def estimate(weights: int, own: int, vram: int = 0) -> MemoryEstimate:
    """A crafted estimate: `weights` bytes of weights (on the GPU when vram), `own` of the rest."""
    return MemoryEstimate(n_ctx=512, weights_gpu=weights if vram else 0, weights_cpu=0 if vram else weights,
                          kv_cache=own, output=0, compute=0, margin=int((weights + own) * MARGIN), vram=vram)


def test_weights_part_and_the_rest_add_up():
    """An estimate splits into its weights (with their margin) and the context's own part."""
    for e in (estimate(100 * MiB, 20 * MiB), estimate(100 * MiB, 20 * MiB, vram=int(125 * MiB))):
        rest = without_weights(e)
        ram, vram = weights_part(e)
        assert rest.weights_cpu == rest.weights_gpu == 0
        assert (rest.ram + ram, rest.vram + vram) == (e.ram, e.vram)
        assert ram + vram == 100 * MiB + int(100 * MiB * MARGIN)


def test_ledger_counts_a_models_weights_once():
    """Admitting the embedding context of a model whose generation context is held needs only
    its own buffers; the weights go when the last context of the model goes."""
    gen, emb = estimate(100 * MiB, 40 * MiB), estimate(100 * MiB, 10 * MiB)
    ledger = MemoryLedger(ram_budget=170 * MiB, vram_budget=None)
    ledger.take(("m", False), gen, pinned=False)
    admission = ledger.consider(("m", True), emb, busy=set())
    assert admission.fits and not admission.evict
    own = 10 * (1 + MARGIN)  # its own buffers and their share of the margin
    assert f"needs {own:.1f} MiB of RAM beside the weights its other context holds" in admission.detail
    ledger.take(("m", True), emb, pinned=False)
    assert footprint(ledger.held()) == (gen.total + without_weights(emb).total, 0)
    ledger.release(("m", False))
    assert footprint(ledger.held()) == (emb.total, 0), "the weights stay with the other context"
    ledger.release(("m", True))
    assert footprint(ledger.held()) == (0, 0)


def test_evicting_one_context_of_a_model_frees_only_its_own_buffers():
    """To make room, evicting a context whose sibling stays frees its own buffers, not the
    weights; evicting both frees the weights too."""
    gen, emb = estimate(100 * MiB, 40 * MiB), estimate(100 * MiB, 10 * MiB)
    ledger = MemoryLedger(ram_budget=260 * MiB, vram_budget=None)
    ledger.take(("m", False), gen, pinned=False)
    ledger.take(("m", True), emb, pinned=False)
    # held: 100 MiB of weights + 40 + 10 of the contexts' own, 5 % margin: 157.5 MiB
    smaller = ledger.consider(("other", False), estimate(80 * MiB, 30 * MiB), busy=set())  # 115.5 MiB
    assert smaller.fits and smaller.evict == (("m", False),)
    needs_more = ledger.consider(("other", False), estimate(150 * MiB, 20 * MiB), busy=set())
    assert needs_more.fits and set(needs_more.evict) == {("m", False), ("m", True)}
    busy = ledger.consider(("other", False), estimate(150 * MiB, 20 * MiB), busy={("m", True)})
    assert not busy.fits and "m (generate + embed)" in busy.detail


def test_a_budget_for_one_copy_of_the_weights_holds_both_contexts(write_config: Callable[..., Path],
                                                                  tiny_models: dict[str, Path]):
    """ram_budget fits the generation context and the embedding context's own buffers, not a
    second copy of the weights: both load, nothing is evicted, status counts the weights once.
    On the CPU on every build (n_gpu_layers 0), so that ram_budget is what decides."""
    model = {"model": "tiny-a", "n_gpu_layers": 0}
    spec = load_config(write_config({"a": model})).models["a"]
    info = read_gguf_info(tiny_models["tiny-a"])
    gen, emb = (estimate_for(spec, info, gpu=GPU_BUILD, embedding=e) for e in (False, True))
    one_copy = gen.total + without_weights(emb).total
    weights, _ = weights_part(emb)
    assert one_copy + weights == gen.total + emb.total
    budget = one_copy + weights // 2  # room for one copy of the weights, not two
    with ZetaDynamicRouter.from_toml(write_config({"a": model}, router={"ram_budget": budget})) as router:
        router.generate("x", task="chat")
        router.embed(["x"])
        assert {k: w.model is not None for k, w in router._pool.workers.items()} == \
            {("a", False): True, ("a", True): True}
        held = {s.name: s.memory_bytes for s in router.status()}["a"]
    assert abs(held - one_copy) <= 2


def test_plan_counts_the_weights_once(write_config: Callable[..., Path], tiny_models: dict[str, Path]):
    """`plan`: a model that generates and embeds shows its weights on the generation row only;
    a model that only embeds carries its own."""
    path = write_config({"both": {"model": "tiny-a"}, "embed-only": {"model": "tiny-b", "capabilities": ["embed"]}},
                        routes={"embed": ["both", "embed-only"]}, default_chain=["both"])
    plan = {r["name"]: r for r in plan_models(load_config(path))["models"]}
    both, alone = plan["both"], plan["embed-only"]
    assert both["embed"]["shares_weights"] and both["embed"]["weights_cpu"] == both["embed"]["weights_gpu"] == 0
    assert not both["generate"]["shares_weights"] and both["generate"]["weights_cpu"] > 0
    assert both["embed"]["n_ctx"] == EMBED_BATCH
    assert not alone["embed"]["shares_weights"] and alone["embed"]["weights_cpu"] > 0
    spec = load_config(path).models["both"]
    info = read_gguf_info(tiny_models["tiny-a"])
    assert both["embed"]["total"] == without_weights(estimate_for(spec, info, gpu=GPU_BUILD, embedding=True)).total


# ---- the real model -------------------------------------------------------------------------

@pytest.mark.real_model
def test_real_model_vectors_match_the_high_level_path_and_stay_semantic(gemma_path: Path,
                                                                        write_config: Callable[..., Path]):
    """Gemma 3 270M on shared weights: the high-level path's vectors (cosine >= 0.999), and
    paraphrases closer than unrelated sentences."""
    texts = ["The cat sat on the mat.", "A kitten is resting on a rug.", "Quarterly revenue fell by four percent."]
    with ZetaDynamicRouter.from_toml(write_config({"gemma": {"path": str(gemma_path), "n_ctx": 2048}})) as router:
        router.generate("Hello", task="chat", max_tokens=2)
        vectors = router.embed(texts).vectors
        generation, embedding = contexts(router, "gemma")
        assert generation.weights_id == embedding.weights_id
    reference = high_level_vectors(gemma_path, texts)
    assert np.all(cosine(vectors, reference) >= 0.999)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]
