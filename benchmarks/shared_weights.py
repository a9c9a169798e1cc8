#!/usr/bin/env python3
"""A model that serves generation and embeddings: its memory with the generation context alone
and with both contexts, as llama.cpp reports allocating it (its log, by buffer) and as the
process holds it (resident and proportional set size after each context has evaluated a full
micro-batch). Each case runs in a fresh interpreter, so that one does not inherit the other's
pages.

    python benchmarks/shared_weights.py [--synth DIR] [--n-ctx 8192] [--json PATH]

The models: Qwen3-4B's real shape written by ../shared/gpu/synth_models.py into DIR (zero
weights in a sparse file: llama.cpp allocates for it exactly as for the real file) and the
embedded default, Gemma 3 270M, when its package is installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

MiB = 2**20
TEXT_TOKENS = 500  # the prompt and the embedded text: about one full 512-token micro-batch
_BUFFER = re.compile(r"(\S+)\s+(model|KV|output|compute) buffer size = +([\d.]+) MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", type=Path, default=Path("/tmp/synth"),
                        help="where synth_models.py wrote general-4b.gguf")
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=3, metavar=("CASE", "PATH", "N_CTX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, path, n_ctx = args.child
        print(json.dumps(_measure(case, Path(path), int(n_ctx))))
        return 0

    models: dict[str, Path] = {}
    synthetic = args.synth / "general-4b.gguf"
    if synthetic.exists():
        models["general-4b (synthetic Qwen3-4B shape)"] = synthetic
    else:
        print(f"no {synthetic}: run ../shared/gpu/synth_models.py {args.synth} general-4b", file=sys.stderr)
    from zeta_local.config import load_config
    from zeta_local.errors import ZetaError
    from zeta_local.sources import find_model_file

    try:
        gemma = find_model_file(load_config(None).models["tiny"])
        if gemma is not None:
            models["tiny (Gemma 3 270M)"] = gemma
    except ZetaError as exc:  # the package is optional
        print(f"Gemma 3 270M skipped: {exc}", file=sys.stderr)

    results: dict[str, Any] = {"n_ctx": args.n_ctx, "models": {}}
    for name, path in models.items():
        row = {case: _child(case, path, args.n_ctx) for case in ("generate", "both")}
        gen, both = row["generate"], row["both"]
        row["both_over_generate"] = {
            key: round(both[key] / gen[key], 3) for key in ("allocated_bytes", "rss_bytes", "pss_bytes")}
        results["models"][name] = row
        print(json.dumps({name: row["both_over_generate"]}), file=sys.stderr)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


def _child(case: str, path: Path, n_ctx: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", case, str(path), str(n_ctx)],
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{case} on {path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _measure(case: str, path: Path, n_ctx: int) -> dict[str, Any]:
    """In a fresh interpreter: load the generation context (and for `both` the embedding
    context), evaluate about one micro-batch on each, and report what was allocated."""
    import psutil

    from zeta_local.backend import LlamaCppBackend
    from zeta_local.config import ModelSpec
    from zeta_local.gguf_info import read_gguf_info
    from zeta_local.sampling import SamplingParams

    text = _text_of(path, TEXT_TOKENS)
    lines: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("zeta_local.llama_cpp")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    process = psutil.Process()
    rss, pss = process.memory_info().rss, _pss()
    spec = ModelSpec(name=path.stem, capabilities=frozenset({"generate", "embed"}), n_ctx=n_ctx)
    info = read_gguf_info(path)
    backend = LlamaCppBackend()
    threads = os.cpu_count() or 1
    loaded = [backend.load(spec, path, info, embedding=False, n_threads=threads)]
    params = SamplingParams(max_tokens=1, temperature=0.0, top_p=1.0, top_k=1, repeat_penalty=1.0, seed=1)
    list(loaded[0].generate(text, params))
    if case == "both":
        loaded.append(backend.load(spec, path, info, embedding=True, n_threads=threads))
        loaded[1].embed([text])
    result = {"allocated_bytes": _allocated(lines), "buffers_mib": _buffers(lines),
              "rss_bytes": process.memory_info().rss - rss, "pss_bytes": _pss() - pss}
    for model in reversed(loaded):
        model.close()
    return result


def _text_of(path: Path, tokens: int) -> str:
    """Words that make about `tokens` tokens for this model's vocabulary (counted by its own
    tokenizer, loaded alone: no buffers)."""
    import llama_cpp

    vocab = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    words = [f"w{i}" for i in range(4 * tokens)] if "synth" in vocab.metadata.get("general.name", "") \
        else ["word"] * (4 * tokens)
    low, high = 1, len(words)
    while low < high:  # the most words that stay within `tokens`
        mid = (low + high + 1) // 2
        if len(vocab.tokenize(" ".join(words[:mid]).encode(), add_bos=True)) <= tokens:
            low = mid
        else:
            high = mid - 1
    vocab.close()
    return " ".join(words[:low])


def _allocated(lines: list[str]) -> int:
    from zeta_local.memory import allocated_from_log

    return allocated_from_log(lines)


def _buffers(lines: list[str]) -> list[str]:
    """llama.cpp's buffer lines, in the order it allocated them: which weights, KV caches,
    output and compute buffers exist."""
    return [f"{m.group(1)} {m.group(2)} {float(m.group(3)):.2f}" for line in lines
            for m in _BUFFER.finditer(line)]


def _pss() -> int:
    """Proportional set size: a page mapped twice by this process counts once, unlike RSS."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
