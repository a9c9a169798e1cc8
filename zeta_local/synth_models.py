"""Loadable GGUF files with the real shapes and Q4_K_M tensor types of models.toml's 7B, 4B and
14B, whose weights are a hole in a sparse file: no disk used, written in well under a second.

llama.cpp loads them like the real files (the same buffers, kernels, memory and decode speed);
only the text is meaningless, since zero weights make every logit equal. The GPU section of
`zeta-local bench` measures memory and speed on them where the real weights cannot be
downloaded, and the tests check them without a GPU.

The vocabulary is SentencePiece-style and padded to the real size; every prefix of a word is
a token ("\u2581w", "\u2581w1", "\u2581w12", ...), so that "w12 w13" is one token a word and a
prompt of N such words is N tokens.

    python -m zeta_local.synth_models OUT_DIR [NAME ...]     # NAME: coder-7b general-4b reason-14b
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, TokenType
from gguf.constants import GGML_QUANT_SIZES

_ALIGN = 32  # GGUF's default data alignment


@dataclass(frozen=True)
class Shape:
    """A model's published configuration (its config.json), as llama.cpp reads it."""

    arch: str  # "qwen2" (q/k/v biases) or "qwen3" (q/k norms)
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    context_length: int
    tied_embeddings: bool  # no output.weight: the output layer reads token_embd


SHAPES = {
    # Qwen2.5-Coder-7B-Instruct
    "coder-7b": Shape("qwen2", 28, 3584, 28, 4, 128, 18944, 152064, 32768, False),
    # Qwen3-4B (tie_word_embeddings = true: its Q4_K_M file has no output.weight)
    "general-4b": Shape("qwen3", 36, 2560, 32, 8, 128, 9728, 151936, 40960, True),
    # Qwen3-14B
    "reason-14b": Shape("qwen3", 40, 5120, 40, 8, 128, 17408, 151936, 40960, False),
}

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Common words, each with every prefix as a token, so that English prompts take about one token
# a word as well.
_ENGLISH = """the be to of and a in that have I it for not on with he as you do at this but his by
from they we say her she or an will my one all would there their what so up out if about who get
which go me when make can like time no just him know take people into year your good some could
them see other than then now look only come its over think also back after use two how our work
first well way even new want because any these give day most us is are was were has had been
being The It This What How Why Write write Python function code string list number quick brown
fox jumps lazy dog history Roman Empire long story began answer question explain hello there
world please thanks reverse sort file error test value return print def class import data model"""


def words_prompt(n: int, start: int = 0) -> str:
    """A prompt of exactly `n` tokens on these models: "w0 w1 w2 ..."."""
    return " ".join(f"w{i}" for i in range(start, start + n))


def tensor_bytes(shape: tuple[int, ...], qtype: Q) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    count = 1
    for dim in shape:
        count *= dim
    return count // block * size


def _more_bits(i: int, n: int) -> bool:
    """llama.cpp's Q4_K_M recipe: these layers keep attn_v and ffn_down in Q6_K."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensors(s: Shape) -> list[tuple[str, tuple[int, ...], Q]]:
    """Every tensor of the model: name, shape in numpy order (rows, columns), type, as llama.cpp's
    Q4_K_M quantization writes them (the output matrix, or a tied token_embd, in Q6_K)."""
    hd = s.head_dim
    out = [("token_embd.weight", (s.n_vocab, s.n_embd), Q.Q6_K if s.tied_embeddings else Q.Q4_K)]
    if not s.tied_embeddings:
        out.append(("output.weight", (s.n_vocab, s.n_embd), Q.Q6_K))
    out.append(("output_norm.weight", (s.n_embd,), Q.F32))
    for i in range(s.n_layer):
        v = Q.Q6_K if _more_bits(i, s.n_layer) else Q.Q4_K
        out += [(f"blk.{i}.attn_norm.weight", (s.n_embd,), Q.F32),
                (f"blk.{i}.attn_q.weight", (s.n_head * hd, s.n_embd), Q.Q4_K),
                (f"blk.{i}.attn_k.weight", (s.n_head_kv * hd, s.n_embd), Q.Q4_K),
                (f"blk.{i}.attn_v.weight", (s.n_head_kv * hd, s.n_embd), v),
                (f"blk.{i}.attn_output.weight", (s.n_embd, s.n_head * hd), Q.Q4_K),
                (f"blk.{i}.ffn_norm.weight", (s.n_embd,), Q.F32),
                (f"blk.{i}.ffn_gate.weight", (s.n_ff, s.n_embd), Q.Q4_K),
                (f"blk.{i}.ffn_up.weight", (s.n_ff, s.n_embd), Q.Q4_K),
                (f"blk.{i}.ffn_down.weight", (s.n_embd, s.n_ff), v)]
        if s.arch == "qwen2":
            out += [(f"blk.{i}.attn_q.bias", (s.n_head * hd,), Q.F32),
                    (f"blk.{i}.attn_k.bias", (s.n_head_kv * hd,), Q.F32),
                    (f"blk.{i}.attn_v.bias", (s.n_head_kv * hd,), Q.F32)]
        else:
            out += [(f"blk.{i}.attn_q_norm.weight", (hd,), Q.F32),
                    (f"blk.{i}.attn_k_norm.weight", (hd,), Q.F32)]
    return out


def _vocabulary(n_vocab: int) -> tuple[list[bytes], list[int]]:
    tokens = [b"<unk>", b"<|im_start|>", b"<|im_end|>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    words = sorted({"\u2581" + w[:k] for w in _ENGLISH.split() for k in range(1, len(w) + 1)}
                   - {"\u2581w"})
    tokens += [w.encode() for w in words]
    types += [TokenType.NORMAL] * len(words)
    pad = n_vocab - len(tokens)
    tokens += ["\u2581w".encode()] + [f"\u2581w{i}".encode() for i in range(pad - 1)]
    types += [TokenType.NORMAL] * pad
    return tokens, [int(t) for t in types]


def write_synth_model(path: str | os.PathLike[str], name: str) -> Path:
    """Write the model `name` (a key of SHAPES) to `path`: header and tensor index for real, the
    data section as a hole. Written under a temporary name and renamed, so a half-written file
    never exists under its name."""
    s = SHAPES[name]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    w = GGUFWriter(str(partial), s.arch)
    w.add_name(f"synthetic {name}")
    w.add_file_type(15)  # MOSTLY_Q4_K_M
    w.add_context_length(s.context_length)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_key_length(s.head_dim)
    w.add_value_length(s.head_dim)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    tokens, types = _vocabulary(s.n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * s.n_vocab)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    listed = tensors(s)
    for tname, shape, qtype in listed:
        # gguf-py takes shapes in numpy order and reverses them for ggml.
        w.add_tensor_info(tname, shape, qtype, tensor_bytes(shape, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    end = partial.stat().st_size
    data = sum(-(-tensor_bytes(shape, q) // _ALIGN) * _ALIGN for _, shape, q in listed)
    with open(partial, "r+b") as f:  # alignment padding, then the data section as a hole
        f.truncate(-(-end // _ALIGN) * _ALIGN + data)
    os.replace(partial, path)
    return path


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0])
    for name in argv[1:] or list(SHAPES):
        p = write_synth_model(out / f"{name}.gguf", name)
        print(f"{p}  {p.stat().st_size / 2**30:.2f} GiB (sparse: {p.stat().st_blocks * 512 / 2**20:.1f} MiB on disk)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
