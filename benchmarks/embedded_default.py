#!/usr/bin/env python3
"""First answer and decoding speed on the embedded default (Gemma 3 270M), router vs raw.

Runs the same greedy request through ZetaDynamicRouter and through llama-cpp-python directly,
interleaved (A, B, A, B, ...) so that a noisy shared machine affects both alike, after one
warm-up each, and reports medians and the ratio. The router runs on the shipped models.toml,
so every request also walks past the missing big models, as a fresh install does.

    python benchmarks/embedded_default.py [--runs 7] [--max-tokens 128] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

# A prompt the base model continues at length, so that decoding, not the prompt, dominates.
PROMPT = "The history of the Roman Empire is a long story. It began"
# The same sampling on both sides (greedy, so both produce the very same tokens).
SAMPLING = dict(temperature=0.0, top_k=40, top_p=0.95, repeat_penalty=1.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import llama_cpp

    from zeta_local import ZetaDynamicRouter
    from zeta_local.config import shipped_config_path
    from zeta_local.sources import find_model_file

    started = time.perf_counter()
    router = ZetaDynamicRouter.from_toml(shipped_config_path())
    first = router.generate(PROMPT, task="code", max_tokens=args.max_tokens, **SAMPLING)
    first_answer_s = time.perf_counter() - started
    assert first.model == "tiny", first.attempts

    spec = router.config.models["tiny"]
    raw = llama_cpp.Llama(str(find_model_file(spec)), n_ctx=spec.n_ctx, n_batch=spec.n_batch,
                          n_threads=router._n_threads, n_threads_batch=router._n_threads,
                          verbose=False)
    raw.create_completion(PROMPT, max_tokens=8, **SAMPLING)  # warm-up

    router_tps, raw_tps = [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        out = router.generate(PROMPT, task="code", max_tokens=args.max_tokens, **SAMPLING)
        router_tps.append(out.usage.completion_tokens / (time.perf_counter() - t))
        t = time.perf_counter()
        ref = raw.create_completion(PROMPT, max_tokens=args.max_tokens, **SAMPLING)
        assert ref["choices"][0]["text"] == out.text, "router and raw decoded different text"
        raw_tps.append(ref["usage"]["completion_tokens"] / (time.perf_counter() - t))
    router.close()
    raw.close()

    figures = {
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "llama_cpp_python": llama_cpp.__version__, "threads": router._n_threads},
        "first_answer_s": round(first_answer_s, 3),
        "first_answer_tokens": first.usage.completion_tokens,
        "router_tokens_per_s_median": round(statistics.median(router_tps), 1),
        "raw_tokens_per_s_median": round(statistics.median(raw_tps), 1),
        "tokens_per_s_ratio": round(statistics.median(r / b for r, b in zip(router_tps, raw_tps)), 3),
        "runs": args.runs, "max_tokens": args.max_tokens,
    }
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
