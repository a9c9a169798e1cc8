"""embed(): normalised rows, which model made them, fallback, and the explicit-model rule."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import GPU_BUILD
from zeta_local import FallbackExhausted, InvalidRequest, UnknownModel, ZetaDynamicRouter

EMBEDDING_TOLERANCE = dict(rtol=1e-5, atol=1e-4) if GPU_BUILD else dict(rtol=1e-5)


@pytest.fixture
def router(write_config: Callable[..., Path]):
    path = write_config(
        {"broken": {"model": "no-output-norm"}, "a": {"model": "tiny-a"},
         "b": {"model": "tiny-b"}, "gen-only": {"model": "tiny-a", "capabilities": ["generate"]}},
        routes={"embed": ["broken", "a", "b"]}, default_chain=["a"])
    with ZetaDynamicRouter.from_toml(path) as r:
        yield r


def test_shape_norm_and_model(router: ZetaDynamicRouter):
    """One unit-length row per text, made by the first model of the chain that works."""
    result = router.embed(["hello world", "a second, longer text to embed", "x"])
    assert result.vectors.shape == (3, 64) and result.dim == 64
    assert result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, rtol=1e-5)
    assert result.model == "a"
    assert [(a.model, a.outcome) for a in result.attempts] == [("broken", "load_failed"), ("a", "ok")]


def test_a_single_string_is_one_row(router: ZetaDynamicRouter):
    """embed("text") is embed(["text"])."""
    assert router.embed("hello").vectors.shape == (1, 64)


def test_same_text_same_vector_different_texts_differ(router: ZetaDynamicRouter):
    """Embeddings are deterministic and depend on the text. On the CPU the same text gives the
    same vector wherever it sits in a batch; on a GPU its place in the batch changes the order of
    the sums, by about 5e-5 (measured on an H200), so there it is equal within 1e-4."""
    one, two = router.embed(["hello", "hello"]).vectors
    other = router.embed(["completely different"]).vectors[0]
    np.testing.assert_allclose(one, two, **EMBEDDING_TOLERANCE)
    assert not np.allclose(one, other)


def test_explicit_model_is_used_and_never_substituted(router: ZetaDynamicRouter):
    """model= picks exactly that model; if it fails the request fails, nothing else answers."""
    assert router.embed(["hi"], model="b").model == "b"
    with pytest.raises(FallbackExhausted) as caught:
        router.embed(["hi"], model="broken")
    assert [a.model for a in caught.value.attempts] == ["broken"]


def test_vectors_of_different_models_differ(router: ZetaDynamicRouter):
    """Different models live in different spaces, which is why the result names its model."""
    a = router.embed(["hello"], model="a")
    b = router.embed(["hello"], model="b")
    assert (a.model, b.model) == ("a", "b")
    assert not np.allclose(a.vectors, b.vectors)


@pytest.mark.parametrize("texts, model, error, fragment", [
    ([], None, InvalidRequest, "non-empty list"),
    ([""], None, InvalidRequest, "non-empty strings"),
    (["ok", 3], None, InvalidRequest, "non-empty strings"),
    (["hi"], "nobody", UnknownModel, "no model named 'nobody'"),
    (["hi"], "gen-only", InvalidRequest, "does not have the 'embed' capability"),
])
def test_bad_embed_requests(router: ZetaDynamicRouter, texts, model, error, fragment):
    """Bad input is a typed error naming the problem."""
    with pytest.raises(error, match=fragment):
        router.embed(texts, model=model)


def test_text_longer_than_the_embedding_window_falls_back(write_config: Callable[..., Path]):
    """A text over a model's window is context_overflow there, not a silent truncation."""
    path = write_config({"small": {"model": "tiny-a", "n_ctx": 256}, "big": {"model": "tiny-b"}})
    with ZetaDynamicRouter.from_toml(path) as router:
        result = router.embed(["y" * 400])
    assert [a.outcome for a in result.attempts] == ["context_overflow", "ok"]


@pytest.mark.real_model
def test_real_model_embeddings_are_semantic(gemma_path: Path, write_config: Callable[..., Path]):
    """On Gemma 3 270M, paraphrases are closer than unrelated sentences."""
    path = write_config({"gemma": {"path": str(gemma_path), "n_ctx": 512}})
    with ZetaDynamicRouter.from_toml(path) as router:
        result = router.embed(["The cat sat on the mat.", "A kitten is resting on a rug.",
                               "Quarterly revenue fell by four percent."])
    assert result.dim == 640
    sims = result.vectors @ result.vectors.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]
