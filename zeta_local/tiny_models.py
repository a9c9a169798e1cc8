"""Tiny random-weight GGUF models that real llama.cpp loads in milliseconds.

Each is a 2-layer, 64-wide `llama` model with a byte-level SPM vocabulary (<unk> <s> </s> and the
256 byte tokens), about 0.5 MB. Its text is noise, but it exercises the real load, tokenize,
decode, sample and embed paths: what the tests and the router-behaviour benchmarks need.

    python scripts/make_test_models.py OUT_DIR     # writes the standard set used by the tests
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType



def _vocab(exact_text: bool) -> tuple[list[bytes], list[float], list[int]]:
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    if exact_text:  # SentencePiece writes a space as "▁": a token of its own reads back as " "
        tokens.append("▁".encode())
        types.append(TokenType.NORMAL)
    return tokens, [0.0] * len(tokens), [int(t) for t in types]


def write_tiny_model(path: str | os.PathLike[str], *, seed: int = 0, n_embd: int = 64,
                     n_layers: int = 2, n_head: int = 4, n_ff: int = 128,
                     context_length: int = 2048, chat_template: str | None = None,
                     drop_tensors: tuple[str, ...] = (), exact_text: bool = False) -> Path:
    """Write one model. `drop_tensors` leaves tensors out so that llama.cpp refuses to load a
    file whose header is perfectly valid (a real load failure, not a simulated one).
    `exact_text=True` makes any text tokenize and read back exactly, as a BPE vocabulary (Qwen's)
    does: no leading space added, a space a token of its own. A scripted answer needs it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head
    tokens, scores, types = _vocab(exact_text)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    tensors = {
        "token_embd.weight": weights(len(tokens), n_embd),
        "output_norm.weight": np.ones(n_embd, dtype=np.float32),
        "output.weight": weights(len(tokens), n_embd),
    }
    for i in range(n_layers):
        tensors |= {
            f"blk.{i}.attn_norm.weight": np.ones(n_embd, dtype=np.float32),
            f"blk.{i}.attn_q.weight": weights(n_embd, n_embd),
            f"blk.{i}.attn_k.weight": weights(n_embd, n_embd),
            f"blk.{i}.attn_v.weight": weights(n_embd, n_embd),
            f"blk.{i}.attn_output.weight": weights(n_embd, n_embd),
            f"blk.{i}.ffn_norm.weight": np.ones(n_embd, dtype=np.float32),
            f"blk.{i}.ffn_gate.weight": weights(n_ff, n_embd),
            f"blk.{i}.ffn_up.weight": weights(n_ff, n_embd),
            f"blk.{i}.ffn_down.weight": weights(n_embd, n_ff),
        }

    # Write to a temporary name and rename, so a half-written model never exists under its name.
    partial = path.with_name(path.name + ".partial")
    writer = GGUFWriter(str(partial), "llama")
    writer.add_name(f"zeta-tiny-{seed}")
    writer.add_file_type(0)  # all F32
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    if exact_text:
        writer.add_add_space_prefix(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for name, array in tensors.items():
        if name not in drop_tensors:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(partial, path)
    return path


# A small ChatML template, so the tests exercise the path where a GGUF brings its own template.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_standard_set(out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The models the test-suite uses, by role."""
    out = Path(out_dir)
    made = {
        "tiny-a": write_tiny_model(out / "tiny-a.gguf", seed=1),
        "tiny-b": write_tiny_model(out / "tiny-b.gguf", seed=2),
        "tiny-chatml": write_tiny_model(out / "tiny-chatml.gguf", seed=3, chat_template=CHATML_TEMPLATE),
        # A valid header that llama.cpp refuses: the final norm is missing.
        "no-output-norm": write_tiny_model(out / "no-output-norm.gguf", seed=4,
                                           drop_tensors=("output_norm.weight",)),
    }
    # A copy cut off half-way, as an interrupted download leaves it.
    whole = made["tiny-a"].read_bytes()
    truncated = out / "truncated.gguf"
    truncated.write_bytes(whole[: len(whole) // 2])
    made["truncated"] = truncated
    not_gguf = out / "not-a-model.gguf"
    not_gguf.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    made["not-gguf"] = not_gguf
    return made
