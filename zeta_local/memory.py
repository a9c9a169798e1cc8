"""What a model will allocate, predicted from its GGUF header alone (no weights are read).

The parts, as llama.cpp allocates them on the CPU (the same sizes go to the GPU for offloaded
layers):
- weights: the tensors' bytes, split between GPU and CPU by n_gpu_layers;
- KV cache: for each layer, kv_heads x (key_length + value_length) x cells x bytes per element,
  with cells = n_ctx (llama.cpp keeps full-size caches for sliding-window layers too);
- output buffer: (n_vocab + n_embd) x 4 bytes for each sequence the context can output;
- compute buffer: the peak of the graph's live tensors for one micro-batch (n_ubatch tokens),
  which is either the logits (n_vocab x n_ubatch floats, 512 MiB for Gemma 3's 262k vocabulary)
  or the attention scores (heads + mask x n_ctx x n_ubatch floats), plus the activations.
A stated margin covers what the formula leaves out (CPU repacking of some quantized weights,
allocator alignment).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable

from zeta_local.config import ModelSpec
from zeta_local.gguf_info import GGUFInfo, SkippedArray

MARGIN = 0.05  # of the total; measured errors on the tiny and Gemma models are within 7 %
_F32 = 4
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


def estimate_for(spec: ModelSpec, info: GGUFInfo, *, gpu: bool, embedding: bool = False) -> MemoryEstimate:
    """The estimate for a models.toml entry, as it will be loaded on this build (`gpu`: whether
    it can offload at all). An embedding context is sized for the longest text it embeds; its
    estimate counts the weights, which without_weights() leaves out for a context that shares
    them with its model's generation context."""
    n_ctx = context_length(spec.n_ctx, info)
    return estimate_memory(info, n_ctx=embedding_context(n_ctx) if embedding else n_ctx, embedding=embedding,
                           n_gpu_layers=spec.n_gpu_layers if gpu else 0)


def estimate_memory(info: GGUFInfo, *, n_ctx: int, n_ubatch: int = 512, n_gpu_layers: int = 0,
                    embedding: bool = False, cache_type: str = "f16") -> MemoryEstimate:
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

    kv_heads = _per_layer(info.arch_value("attention.head_count_kv"), n_layer, n_head)
    head_dim = n_embd // n_head if n_head else 0
    key_length = _int(info.arch_value("attention.key_length"), head_dim)
    value_length = _int(info.arch_value("attention.value_length"), head_dim)
    per_cell = sum(h * (key_length + value_length) for h in kv_heads) * _CACHE_TYPE_BYTES[cache_type]
    kv_cache = int(per_cell * cells)

    sequences = _EMBEDDING_SEQUENCES if embedding else 1
    output = (n_vocab + n_embd) * _F32 * sequences

    logits = n_vocab * n_ubatch * _F32
    attention = (n_head + 1) * cells * n_ubatch * _F32  # scores per head, plus the mask
    activations = (2 * n_embd + n_ff) * n_ubatch * _F32 + (n_embd * n_ubatch * _F32 if embedding else 0)
    compute = max(logits, attention) + activations

    subtotal = gpu_weights + cpu_weights + kv_cache + output + compute
    margin = int(subtotal * MARGIN)
    # With layers offloaded, their KV cache and the compute buffer live on the GPU too (not yet
    # checked on a GPU machine: see the notes on issue 4).
    vram = 0
    if on_gpu:
        vram = gpu_weights + kv_cache * on_gpu // n_layer + compute
        vram += int(vram * MARGIN)
    return MemoryEstimate(n_ctx=cells, weights_gpu=gpu_weights, weights_cpu=cpu_weights,
                          kv_cache=kv_cache, output=output, compute=compute, margin=margin,
                          vram=min(vram, subtotal + margin))


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
