"""The memory planner's estimate: checked against the formula on crafted headers carrying the
real shapes of models.toml's 7B, 4B and 14B models (sparse files: no disk used), and against
what llama.cpp itself reports allocating for the tiny and the real embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES

from zeta_local.gguf_info import read_gguf_info
from zeta_local.bench import measure_allocation
from zeta_local.memory import MARGIN, embedding_context, estimate_memory

MiB = 2**20
Q4_K, Q6_K, F32 = GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K, GGMLQuantizationType.F32

# Shapes from the models' published configs: layers, width, heads, KV heads, head dim, FFN, vocab.
REAL_SHAPES = {
    "coder-7b (Qwen2.5-Coder-7B)": ("qwen2", 28, 3584, 28, 4, 128, 18944, 152064),
    "general-4b (Qwen3-4B)": ("qwen3", 36, 2560, 32, 8, 128, 9728, 151936),
    "reason-14b (Qwen3-14B)": ("qwen3", 40, 5120, 40, 8, 128, 17408, 151936),
}


def nbytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    count = 1
    for dim in shape:
        count *= dim
    return count // block * size


def write_header(path: Path, arch: str, n_layer: int, n_embd: int, n_head: int, n_kv: int,
                 head_dim: int, n_ff: int, n_vocab: int) -> int:
    """A GGUF header with the model's real tensor shapes; the data section is a hole in a sparse
    file. Returns the declared tensor bytes."""
    writer = GGUFWriter(str(path), arch)
    writer.add_context_length(32768)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_token_list([b"x"] * n_vocab)
    tensors = [("token_embd.weight", (n_vocab, n_embd), Q4_K), ("output.weight", (n_vocab, n_embd), Q6_K),
               ("output_norm.weight", (n_embd,), F32)]
    for i in range(n_layer):
        tensors += [(f"blk.{i}.attn_q.weight", (n_head * head_dim, n_embd), Q4_K),
                    (f"blk.{i}.attn_k.weight", (n_kv * head_dim, n_embd), Q4_K),
                    (f"blk.{i}.attn_v.weight", (n_kv * head_dim, n_embd), Q6_K),
                    (f"blk.{i}.attn_output.weight", (n_embd, n_head * head_dim), Q4_K),
                    (f"blk.{i}.ffn_gate.weight", (n_ff, n_embd), Q4_K),
                    (f"blk.{i}.ffn_up.weight", (n_ff, n_embd), Q4_K),
                    (f"blk.{i}.ffn_down.weight", (n_embd, n_ff), Q6_K),
                    (f"blk.{i}.attn_norm.weight", (n_embd,), F32)]
    total = 0
    for name, shape, qtype in tensors:
        size = nbytes(shape, qtype)
        writer.add_tensor_info(name, shape, qtype, size, raw_dtype=qtype)
        total += size
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    info_end = path.stat().st_size
    with open(path, "r+b") as f:  # the data section: alignment padding, then a hole
        f.truncate(-(-info_end // 32) * 32 + sum(-(-nbytes(s, q) // 32) * 32 for _, s, q in tensors))
    return total


@pytest.mark.parametrize("model", list(REAL_SHAPES))
def test_real_shapes_kv_cache_and_weights(tmp_path: Path, model: str):
    """KV cache = layers x KV heads x (key + value length) x 2 bytes x context; weights = the
    declared tensors, and all of them on the GPU with n_gpu_layers = -1."""
    arch, n_layer, n_embd, n_head, n_kv, head_dim, n_ff, n_vocab = REAL_SHAPES[model]
    declared = write_header(tmp_path / "m.gguf", *REAL_SHAPES[model])
    info = read_gguf_info(tmp_path / "m.gguf")
    assert (tmp_path / "m.gguf").stat().st_blocks * 512 < 50 * MiB, "the weights must be a hole"
    cpu = estimate_memory(info, n_ctx=8192)
    assert cpu.kv_cache == n_layer * n_kv * 2 * head_dim * 2 * 8192
    assert cpu.weights_cpu == declared and cpu.weights_gpu == 0
    gpu = estimate_memory(info, n_ctx=8192, n_gpu_layers=-1)
    token_embd = nbytes((n_vocab, n_embd), Q4_K)
    assert gpu.weights_gpu == declared - token_embd and gpu.weights_cpu == token_embd
    half = estimate_memory(info, n_ctx=8192, n_gpu_layers=n_layer // 2)
    assert 0 < half.weights_gpu < gpu.weights_gpu
    assert cpu.compute >= n_vocab * 512 * 4, "the logits of one micro-batch"
    assert estimate_memory(info, n_ctx=4096).kv_cache * 2 == cpu.kv_cache


def test_known_kv_sizes():
    """Published figures: Qwen2.5-7B holds 448 MiB of f16 KV cache at 8k tokens."""
    arch, n_layer, _, _, n_kv, head_dim, _, _ = REAL_SHAPES["coder-7b (Qwen2.5-Coder-7B)"]
    assert n_layer * n_kv * 2 * head_dim * 2 * 8192 == 448 * MiB


def check_accuracy(path: Path, n_ctx: int, embedding: bool) -> None:
    measured, _ = measure_allocation(path, n_ctx, embedding)
    assert measured > 0, "llama.cpp reported no buffer sizes"
    # An embedding context is sized for the longest text it embeds, whatever the model's context.
    predicted = estimate_memory(read_gguf_info(path), n_ctx=embedding_context(n_ctx) if embedding else n_ctx,
                                embedding=embedding).total
    error = (predicted - measured) / measured
    assert abs(error) <= 0.10, f"predicted {predicted / MiB:.1f} MiB, llama.cpp allocated {measured / MiB:.1f} MiB"
    assert predicted >= measured * (1 - MARGIN)


@pytest.mark.parametrize("n_ctx", [1024, 2048])
@pytest.mark.parametrize("embedding", [False, True])
def test_estimate_matches_llama_cpp_on_tiny_models(tiny_models: dict[str, Path], n_ctx: int, embedding: bool):
    """Within 10 % of what llama.cpp allocates, at two context sizes, for both kinds of context."""
    check_accuracy(tiny_models["tiny-a"], n_ctx, embedding)


@pytest.mark.real_model
@pytest.mark.parametrize("n_ctx", [1024, 4096])
@pytest.mark.parametrize("embedding", [False, True])
def test_estimate_matches_llama_cpp_on_the_embedded_default(gemma_path: Path, n_ctx: int, embedding: bool):
    """Gemma 3 270M: 235 MiB of weights but ~800 MiB allocated, mostly the logits of a
    512-token micro-batch over its 262k vocabulary; the estimate must know that."""
    check_accuracy(gemma_path, n_ctx, embedding)


@pytest.mark.real_model
def test_estimate_is_never_below_the_resident_growth(gemma_path: Path):
    """Loading Gemma and evaluating a full 512-token batch grows the process by less than the
    estimate (mapped weights are only partly resident; the estimate counts all of them)."""
    _, grown = measure_allocation(gemma_path, 2048)
    predicted = estimate_memory(read_gguf_info(gemma_path), n_ctx=2048).total
    assert 0 < grown <= predicted, f"grew {grown / MiB:.0f} MiB, predicted {predicted / MiB:.0f} MiB"
