"""What a model will allocate, predicted from its GGUF header alone (no weights are read).

The parts, as llama.cpp allocates them on the CPU (the same sizes go to the GPU for offloaded
layers):
- weights: the tensors' bytes, split between GPU and CPU by n_gpu_layers;
- KV cache: for each layer, kv_heads x (key_length + value_length) x cells x bytes per element,
  with cells = n_ctx (llama.cpp keeps full-size caches for sliding-window layers too);
- output buffer: (n_vocab + n_embd) x 4 bytes for each sequence the context can output;
- compute buffer: the peak of the graph's live tensors for one micro-batch (n_ubatch tokens):
  the logits (n_vocab x n_ubatch floats, 512 MiB for Gemma 3's 262k vocabulary), or, without
  flash attention, the attention scores (heads x n_ctx x n_ubatch floats), or a feed-forward
  layer's activations, whichever is largest (see estimate_memory).
A stated margin covers what the formula leaves out (CPU repacking of some quantized weights,
allocator alignment).

A process that uses a GPU also holds memory there that belongs to no model (GPU_PROCESS_COST):
admission counts it once against the VRAM budget, not once per model.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable

from zeta_local.config import ModelSpec
from zeta_local.gguf_info import GGUFInfo, SkippedArray

# Of the total, for what the parts leave out: the CPU's repacked copies of some quantized weights
# (Gemma 3 270M: 12.7 MiB, 1.6 %) and other architectures' extra graph nodes. On the models
# measured the parts match llama.cpp's buffers to the MiB, so the margin is the whole error
# there: 4 % keeps it where it was and each model's VRAM within 5 % of its CUDA buffers.
MARGIN = 0.04
# What a process holds on the GPU beside its models, measured with NVML on an H200 (CUDA 13,
# llama-cpp-python 0.3.36): the CUDA context, still held after every model is unloaded, and
# the workspace of cuBLAS and ggml's CUDA memory pool after a full micro-batch.
GPU_CONTEXT = 586 * 2**20
GPU_WORKSPACE = 200 * 2**20  # about
GPU_PROCESS_COST = GPU_CONTEXT + GPU_WORKSPACE
_F32, _F16 = 4, 2
_CACHE_TYPE_BYTES = {"f16": 2, "q8_0": 34 / 32, "f32": 4}
_EMBEDDING_SEQUENCES = 16  # an embedding context evaluates up to this many texts per decode
_CELL_PADDING = 256  # llama.cpp rounds the context up to a multiple of this


@dataclass(frozen=True)
class MemoryEstimate:
    n_ctx: int
    weights_gpu: int
    weights_cpu: int
    kv_cache: int
    output: int
    compute: int
    margin: int
    vram: int = 0  # the part of the total on the GPU: offloaded weights, their KV, the compute buffer
    compute_gpu: int = 0  # the part of the compute buffer on the GPU
    flash_attn: bool = False

    @property
    def ram(self) -> int:
        return self.total - self.vram

    @property
    def total(self) -> int:
        return self.weights_gpu + self.weights_cpu + self.kv_cache + self.output + self.compute + self.margin

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ram": self.ram, "total": self.total}


# ---- the embedding context, and weights shared by two contexts -----------------------------
# A model that serves generation and embeddings loads its weights once: its two llama.cpp
# contexts are made on one llama_model (backend.py). The embedding context is sized for what it
# embeds: its context, batch and micro-batch are the longest text it accepts, and it evaluates up
# to _EMBEDDING_SEQUENCES texts per decode, each one sequence of the output buffer.

EMBED_BATCH = 512  # the longest text, in tokens, one embedding accepts
EMBED_SEQUENCES = _EMBEDDING_SEQUENCES


def embedding_context(n_ctx: int) -> int:
    """The context (and batch, and micro-batch) of a model's embedding context, given the
    model's own context: a whole text must fit one micro-batch to be pooled. llama.cpp sizes the
    compute buffer by it (Gemma 3 270M: 2.1 GiB at 2048, about 0.5 GiB at 512)."""
    return min(n_ctx, EMBED_BATCH)


def weights_part(estimate: MemoryEstimate) -> tuple[int, int]:
    """(RAM, VRAM) of an estimate that are its weights, with their share of the margin: what a
    second context on the same llama_model does not allocate again."""
    weights = estimate.weights_cpu + estimate.weights_gpu
    vram = min(estimate.vram, estimate.weights_gpu + int(estimate.weights_gpu * MARGIN)) if estimate.vram else 0
    return weights + int(weights * MARGIN) - vram, vram


def without_weights(estimate: MemoryEstimate) -> MemoryEstimate:
    """The estimate of a context whose weights another context of the same model holds: its KV
    cache, output and compute buffers. With weights_part() it adds up to `estimate`."""
    weights = estimate.weights_cpu + estimate.weights_gpu
    _, vram = weights_part(estimate)
    return replace(estimate, weights_cpu=0, weights_gpu=0, margin=estimate.margin - int(weights * MARGIN),
                   vram=estimate.vram - vram)


def context_length(n_ctx: int, info: GGUFInfo) -> int:
    """The context a model is given: as configured, capped at what it was trained for (more
    only produces garbage past that point)."""
    return min(n_ctx, info.context_length or n_ctx)


def flash_attn_on(spec: ModelSpec, *, gpu: bool) -> bool:
    """Whether the model runs with flash attention: as models.toml says, or, for "auto", when
    some of its layers go to a GPU (`gpu`: whether this build can offload at all). There it is
    faster (the 7B on an H200: prefill 6,864 -> 9,075 tok/s, decode 220 -> 242) and its compute
    buffer smaller. On the CPU the difference measured small (Gemma 3 270M, 2 cores: decode 93-95
    vs 98-99 tok/s, prompt evaluation the same within noise) and it moves embeddings in their
    third digit, so "auto" leaves a CPU-only build as it was."""
    if isinstance(spec.flash_attn, bool):
        return spec.flash_attn
    return gpu and spec.n_gpu_layers != 0


def estimate_for(spec: ModelSpec, info: GGUFInfo, *, gpu: bool, embedding: bool = False) -> MemoryEstimate:
    """The estimate for a models.toml entry, as it will be loaded on this build (`gpu`: whether
    it can offload at all). An embedding context is sized for the longest text it embeds; its
    estimate counts the weights, which without_weights() leaves out for a context that shares
    them with its model's generation context."""
    n_ctx = context_length(spec.n_ctx, info)
    return estimate_memory(info, n_ctx=embedding_context(n_ctx) if embedding else n_ctx,
                           embedding=embedding, n_gpu_layers=spec.n_gpu_layers if gpu else 0,
                           flash_attn=flash_attn_on(spec, gpu=gpu))


def estimate_memory(info: GGUFInfo, *, n_ctx: int, n_ubatch: int = 512, n_gpu_layers: int = 0,
                    embedding: bool = False, cache_type: str = "f16",
                    flash_attn: bool = False) -> MemoryEstimate:
    """Predict what llama.cpp allocates for this model and context. `n_ctx` is the context the
    model will be given (already capped at its trained length); `n_gpu_layers` counts layers
    on the GPU (-1: all), which only matters for a GPU build."""
    n_layer = _int(info.arch_value("block_count"), 1)
    n_embd = _int(info.arch_value("embedding_length"), 0)
    n_head = _int(info.arch_value("attention.head_count"), 1)
    n_ff = _int(info.arch_value("feed_forward_length"), 4 * n_embd)
    n_vocab = _vocab_size(info)
    cells = -(-max(n_ctx, 1) // _CELL_PADDING) * _CELL_PADDING
    n_ubatch = min(n_ubatch, cells)

    on_gpu = n_layer if n_gpu_layers < 0 else min(n_gpu_layers, n_layer)
    gpu_weights = cpu_weights = 0
    for t in info.tensors:
        layer = _layer_of(t.name)
        # llama.cpp offloads the last `on_gpu` layers; the output layer goes too when all do.
        offloaded = (layer is not None and layer >= n_layer - on_gpu) or \
            (layer is None and on_gpu == n_layer and not t.name.startswith("token_embd"))
        if offloaded:
            gpu_weights += t.nbytes
        else:
            cpu_weights += t.nbytes
    if on_gpu == n_layer and tied_embeddings(info):
        # The offloaded output layer gets a copy of the token embeddings on the GPU while the
        # lookup keeps the table on the CPU (the 4B on an H200: CUDA model buffer 2,375.91 MiB =
        # the offloaded tensors + token_embd's 304.28).
        gpu_weights += token_embedding_bytes(info)

    kv_heads = _per_layer(info.arch_value("attention.head_count_kv"), n_layer, n_head)
    head_dim = n_embd // n_head if n_head else 0
    key_length = _int(info.arch_value("attention.key_length"), head_dim)
    value_length = _int(info.arch_value("attention.value_length"), head_dim)
    per_cell = sum(h * (key_length + value_length) for h in kv_heads) * _CACHE_TYPE_BYTES[cache_type]
    kv_cache = int(per_cell * cells)

    sequences = _EMBEDDING_SEQUENCES if embedding else 1
    output = (n_vocab + n_embd) * _F32 * sequences

    # The compute buffer. llama.cpp's graph allocator hands a tensor's memory on once its last
    # reader has run, so the buffer is the most that is live at one point of the graph. Per
    # token of the micro-batch, in f32 unless said, that point is one of:
    # - a layer's attention: without flash attention, the scores of every head over every cell
    #   (the softmax runs in place on them; flash attention never forms them); the mask over
    #   every cell (f16 for flash attention; sliding-window models have a second one); beside
    #   them the residual stream, the normalized input, Q, K, V and the attention's output,
    #   which the allocator lays out in 3 x n_embd + 2 x Q + K + V;
    # - a layer's feed-forward: gate, up and their product (3 x n_ff) beside 4 x n_embd, and
    #   the mask, which lives until the last layer has read it;
    # - the output layer: the logits beside the hidden state they come from and one more row;
    #   an embedding context also keeps its masks there, and a row for the pooled output
    #   throughout.
    # Checked against llama.cpp's log on this build (the 7B/4B/14B shapes at n_ctx 8192:
    # 501/563/710 MiB without flash attention, 311/307/317 with it, each to 0.01 MiB; n_ctx
    # 2048-16384, n_ubatch 128-1024; small-vocabulary variants where the feed-forward peaks).
    mask = (2 if info.arch_value("attention.sliding_window") else 1) * cells * (_F16 if flash_attn else _F32)
    scores = 0 if flash_attn else n_head * cells * _F32
    q_width = n_head * key_length
    kv_width = max(kv_heads) * (key_length + value_length)
    attention = scores + mask + (3 * n_embd + 2 * q_width + kv_width) * _F32
    feed_forward = mask + (3 * n_ff + 4 * n_embd) * _F32
    logits = (n_vocab + 2 * n_embd) * _F32 + (mask if embedding else 0)
    pooled = n_embd * _F32 if embedding else 0
    compute = (max(attention, feed_forward, logits) + pooled) * n_ubatch

    # With layers offloaded, their KV cache and the compute buffer live on the GPU too, all of
    # it but one row per token: the token embeddings are looked up on the CPU, which keeps
    # their table. On an H200 the CUDA buffers matched these parts: weights and KV exactly,
    # compute 494/558/700 MiB for the 7B/4B/14B at n_ctx 8192 (302/304/307 MiB for the
    # 4B/7B/14B with flash attention, each to the 0.01 MiB). Beside it llama.cpp keeps a
    # compute buffer in pinned host memory (CUDA_Host) for the inputs: measured, two rows of
    # n_embd floats per token and a mask over every cell, f16 with flash attention (exactly
    # 18.01/22.01/28.01 MiB for the 4B/7B/14B at n_ctx 8192 on the H200) and f32 without (the
    # tiny test model within 3 %). A partial offload is not checked yet: there the logits stay
    # on the CPU.
    vram = compute_gpu = 0
    if on_gpu:
        compute_gpu = compute - n_embd * n_ubatch * _F32
        compute = compute_gpu + (2 * n_embd * _F32 + cells * (_F16 if flash_attn else _F32)) * n_ubatch
        vram = gpu_weights + kv_cache * on_gpu // n_layer + compute_gpu
        vram += int(vram * MARGIN)
    subtotal = gpu_weights + cpu_weights + kv_cache + output + compute
    margin = int(subtotal * MARGIN)
    return MemoryEstimate(n_ctx=cells, weights_gpu=gpu_weights, weights_cpu=cpu_weights,
                          kv_cache=kv_cache, output=output, compute=compute, margin=margin,
                          vram=min(vram, subtotal + margin), compute_gpu=compute_gpu,
                          flash_attn=flash_attn)


def tied_embeddings(info: GGUFInfo) -> bool:
    """No output.weight: the output layer reads the token embeddings (Qwen3-4B, Gemma 3)."""
    return not any(t.name == "output.weight" for t in info.tensors)


def token_embedding_bytes(info: GGUFInfo) -> int:
    return sum(t.nbytes for t in info.tensors if t.name == "token_embd.weight")


def _int(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else default


def _per_layer(value: Any, n_layer: int, default: int) -> list[int]:
    """A count that GGUF gives once or once per layer (some models vary KV heads by layer)."""
    if isinstance(value, tuple) and value:
        return [int(v) for v in value][:n_layer]
    return [_int(value, default)] * n_layer


def _vocab_size(info: GGUFInfo) -> int:
    tokens = info.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, SkippedArray):
        return tokens.length
    if isinstance(tokens, tuple):
        return len(tokens)
    return _int(info.arch_value("vocab_size"), 32000)


def _layer_of(tensor_name: str) -> int | None:
    if tensor_name.startswith("blk."):
        number = tensor_name.split(".", 2)[1]
        if number.isdigit():
            return int(number)
    return None


_BUFFER_LINE = re.compile(r"buffer size = +([\d.]+) MiB")


def allocated_from_log(lines: Iterable[str]) -> int:
    """What llama.cpp says it allocated for one load (model, repacked, KV, output and compute
    buffers), summed from its log lines: the measurement the estimate is held to."""
    return int(sum(float(m.group(1)) for line in lines for m in _BUFFER_LINE.finditer(line)) * 2**20)
