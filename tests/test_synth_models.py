"""The synthetic real-shape models the GPU benchmark measures: the published shapes, a sparse
file, and a file llama.cpp itself accepts (it checks every tensor's shape against its
architecture) without allocating or reading the weights."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from zeta_local.gguf_info import read_gguf_info
from zeta_local.synth_models import SHAPES, tensor_bytes, tensors, words_prompt, write_synth_model

MiB = 2**20


@pytest.fixture(scope="module")
def general_4b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synth_model(tmp_path_factory.mktemp("synth") / "general-4b.gguf", "general-4b")


def test_the_4b_has_qwen3_4bs_published_shapes(general_4b: Path):
    """Qwen3-4B's config.json: 36 layers, 2560 wide, 32 query and 8 KV heads of 128, FFN 9728,
    vocabulary 151,936, 40,960 trained positions, tied embeddings (no output.weight)."""
    info = read_gguf_info(general_4b)
    assert info.architecture == "qwen3"
    expected = {"block_count": 36, "embedding_length": 2560, "attention.head_count": 32,
                "attention.head_count_kv": 8, "attention.key_length": 128, "attention.value_length": 128,
                "feed_forward_length": 9728, "context_length": 40960}
    assert {key: info.arch_value(key) for key in expected} == expected
    names = {t.name for t in info.tensors}
    assert "output.weight" not in names and "token_embd.weight" in names
    assert len(info.tensors) == 3 - 1 + 36 * 11  # token_embd + output_norm, and 11 per layer
    assert sum(t.nbytes for t in info.tensors) == sum(tensor_bytes(s, q) for _, s, q in tensors(SHAPES["general-4b"]))


def test_the_file_is_sparse(general_4b: Path):
    """2.3 GiB long, a few MiB on disk: the weights are a hole."""
    assert general_4b.stat().st_size > 2 * 2**30
    assert general_4b.stat().st_blocks * 512 < 50 * MiB
    assert not general_4b.with_name(general_4b.name + ".partial").exists()


def test_llama_cpp_loads_the_4b_and_calls_it_a_4b(general_4b: Path):
    """llama.cpp's loader accepts every tensor (no_alloc: shapes checked, nothing allocated or
    read) and reports the published model: qwen3 4B, 4.02 billion parameters."""
    import llama_cpp.llama_cpp as ll

    params = ll.llama_model_default_params()
    params.no_alloc = True  # check the tensors, allocate and read nothing
    params.use_extra_bufts = False
    params.load_mode = ll.LLAMA_LOAD_MODE_NONE  # no_alloc does not go with a memory map
    params.n_gpu_layers = 0  # on the CPU on every build: the file is under test, not the offload
    model = ll.llama_model_load_from_file(str(general_4b).encode(), params)
    assert model, "llama.cpp refused the file"
    try:
        desc = ctypes.create_string_buffer(128)
        ll.llama_model_desc(model, desc, len(desc))
        assert desc.value.decode() == "qwen3 4B Q4_K - Medium"
        assert (ll.llama_model_n_layer(model), ll.llama_model_n_embd(model), ll.llama_model_n_head(model),
                ll.llama_model_n_head_kv(model)) == (36, 2560, 32, 8)
        assert ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(model)) == 151936
        assert 4.00e9 < ll.llama_model_n_params(model) < 4.05e9  # Qwen3-4B: 4.0 B
        assert ll.llama_model_size(model) == sum(t.nbytes for t in read_gguf_info(general_4b).tensors)
    finally:
        ll.llama_model_free(model)


def test_a_prompt_of_n_words_is_n_tokens(general_4b: Path):
    """Every prefix of "w123" is a token, so the benchmark's prompts have exact lengths."""
    import llama_cpp

    vocab = llama_cpp.Llama(str(general_4b), vocab_only=True, verbose=False)
    try:
        assert len(vocab.tokenize(b"w12 w13", add_bos=False)) == 2
        assert len(vocab.tokenize(words_prompt(600, start=10_000).encode(), add_bos=False)) == 600
        assert len(vocab.tokenize(b"The quick brown fox", add_bos=False)) == 4
    finally:
        vocab.close()


@pytest.mark.parametrize("name, params, file_gb", [("coder-7b", 7.62e9, 4.68), ("reason-14b", 14.77e9, 9.00)])
def test_the_7b_and_14b_match_their_published_sizes(tmp_path: Path, name: str, params: float, file_gb: float):
    """Qwen2.5-Coder-7B (7.6 B parameters, a 4.68 GB Q4_K_M file) and Qwen3-14B (14.8 B, 9.0 GB)."""
    shape = SHAPES[name]
    counted = sum(_elements(s) for _, s, _ in tensors(shape))
    assert abs(counted - params) / params < 0.005
    path = write_synth_model(tmp_path / f"{name}.gguf", name)
    assert abs(path.stat().st_size / 1e9 - file_gb) < 0.05
    assert path.stat().st_blocks * 512 < 50 * MiB


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
