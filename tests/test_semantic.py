"""Tests for zeta_local.semantic: the kNN stage over labelled examples, embedded by real Gemma 3 270M."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from zeta_local import ZetaDynamicRouter
from zeta_local.semantic import TASKS, ExampleIndex, SemanticStage, packaged_examples

EXAMPLES = [
    ("how do i undo my last git commit", "code"),
    ("python: TypeError: 'NoneType' object is not subscriptable, what does it mean", "code"),
    ("write a bash loop that renames every .txt file to .md", "code"),
    ("my npm install fails with ERESOLVE unable to resolve dependency tree", "code"),
    ("why does my SQL query return duplicate rows after a join", "code"),
    ("if three cats catch three mice in three minutes, how long do 100 cats need for 100 mice", "reason"),
    ("Anna is taller than Ben, Ben is taller than Cara. Who is the shortest?", "reason"),
    ("a farmer must cross a river with a wolf, a goat and a cabbage; how?", "reason"),
    ("what is the probability of two sixes when rolling two dice", "reason"),
    ("should I take the job with the higher salary or the shorter commute? walk me through it", "reason"),
    ("tell me a fun fact about octopuses", "chat"),
    ("what's a good recipe for banana bread", "chat"),
    ("write a short poem about autumn rain", "chat"),
    ("how do I say thank you in Japanese", "chat"),
    ("recommend a novel for a long flight", "chat"),
]


@pytest.fixture
def gemma_router(write_config, gemma_path: Path):
    path = write_config({"gemma": {"path": str(gemma_path), "n_ctx": 1024}})
    with ZetaDynamicRouter.from_toml(path) as router:
        yield router


class CountingEmbed:
    """The router's real embeddings, counted."""

    def __init__(self, router: ZetaDynamicRouter):
        self.router, self.calls, self.texts = router, 0, 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        return self.router.embed(texts, model="gemma").vectors


def test_index_is_built_in_the_background_cached_on_disk_and_reused(gemma_router, gemma_path, tmp_path):
    """Embedding the examples is the stage's one expense: once per model file, then from disk."""
    embed = CountingEmbed(gemma_router)
    stage = SemanticStage(EXAMPLES, cache_root=tmp_path)
    assert stage.index(gemma_path, embed) is None  # abstains while it builds
    assert stage.wait_ready(120)
    index = stage.index(gemma_path, embed)
    assert index is not None and index.vectors.shape[0] == len(EXAMPLES)
    assert embed.texts == len(EXAMPLES)
    assert stage.index_path(gemma_path).exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("zeta-semantic")]

    again = SemanticStage(EXAMPLES, cache_root=tmp_path)
    loaded = again.index(gemma_path, CountingEmbed(gemma_router))
    assert loaded is not None
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    assert loaded.tau == index.tau

    other = SemanticStage(EXAMPLES[:-1], cache_root=tmp_path)  # other examples: another index
    assert other.index_path(gemma_path) != stage.index_path(gemma_path)


def test_vote_is_a_distribution_and_names_its_nearest_examples(gemma_router, gemma_path, tmp_path):
    embed = CountingEmbed(gemma_router)
    stage = SemanticStage(EXAMPLES, cache_root=tmp_path)
    stage.index(gemma_path, embed)
    assert stage.wait_ready(120)
    index = stage.index(gemma_path, embed)
    vote = index.vote(embed(["git push says rejected, non-fast-forward. how do i fix it"])[0])
    assert set(vote.probabilities) == set(TASKS)
    assert sum(vote.probabilities.values()) == pytest.approx(1.0, abs=0.01)
    assert vote.confidence == max(vote.probabilities.values())
    assert 0 < vote.confidence < 1  # ten neighbours never make a certainty
    assert vote.reason.startswith(f"{vote.task} (semantic, ")
    assert "nearest examples" in vote.reason
    assert len(vote.nearest) == 10


def test_fitted_temperature_beats_a_flat_vote_on_left_out_examples():
    """The fit must choose the sharpness that predicts left-out labels best, not any value."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    labels = np.repeat(np.arange(3), 20)
    vectors = centres[labels] + 0.8 * rng.normal(size=(60, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ExampleIndex.fit(vectors, labels)
    right = sum(index.vote(vectors[i] + 0.01).task == TASKS[labels[i]] for i in range(60))
    assert right >= 54
    assert 0.002 <= index.tau <= 0.5


def test_a_failing_embedding_model_leaves_the_stage_abstaining(gemma_path, tmp_path):
    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("the embedding model fell over")

    stage = SemanticStage(EXAMPLES, cache_root=tmp_path)
    assert stage.index(gemma_path, broken) is None
    assert stage.wait_ready(10)
    assert not stage.index_path(gemma_path).exists()


def test_an_unreadable_cache_file_is_rebuilt(gemma_router, gemma_path, tmp_path):
    stage = SemanticStage(EXAMPLES, cache_root=tmp_path)
    path = stage.index_path(gemma_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an npz")
    embed = CountingEmbed(gemma_router)
    assert stage.index(gemma_path, embed) is None
    assert stage.wait_ready(120)
    assert embed.texts == len(EXAMPLES)
    assert ExampleIndex.load(path) is not None


def test_close_stops_a_build_between_batches(gemma_path, tmp_path):
    release = threading.Event()
    started = threading.Event()

    def slow(texts: list[str]) -> np.ndarray:
        started.set()
        release.wait(10)
        return np.ones((len(texts), 4), dtype=np.float32) / 2

    stage = SemanticStage(EXAMPLES * 3, cache_root=tmp_path)  # three batches
    stage.index(gemma_path, slow)
    assert started.wait(10)
    closer = threading.Thread(target=stage.close)
    closer.start()
    release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("zeta-semantic")]
    assert not stage.index_path(gemma_path).exists()


def test_packaged_examples_are_labelled_prompts():
    examples = packaged_examples()
    assert len(examples) >= 300
    assert {task for _, task in examples} == set(TASKS)
    assert all(prompt.strip() for prompt, _ in examples)
