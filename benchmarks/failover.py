#!/usr/bin/env python3
"""Failover and cancel latency on the embedded default (Gemma 3 270M), real llama.cpp.

- cancel: a ~2,000-token prompt is cancelled during its evaluation; time from the cancel to
  the worker being ready for its next request.
- stall: the primary stalls after 3 pieces of text (injected inside llama_decode); time from
  its last piece to the fallback's first piece, minus stall_timeout_s.
- hang: the primary hangs in prompt evaluation; time from the request to the fallback's first
  piece, minus first_token_timeout_s.

Medians and p95 over --runs, after a warm-up; the fallback model is already loaded, as the
router's fallback preference intends.

    python benchmarks/failover.py [--runs 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

STALL_S = 1.0
FIRST_TOKEN_S = 1.0
LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 200  # about 2,000 tokens


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"ms_p50": round(statistics.median(ms), 1), "ms_p95": round(p95(ms), 1),
            "ms_min": round(min(ms), 1), "ms_max": round(max(ms), 1), "runs": len(ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from zeta_local import CancelToken, Cancelled, TextChunk, ZetaDynamicRouter
    from zeta_local.config import shipped_config_path, load_config
    from zeta_local.sources import find_model_file

    gemma = find_model_file(load_config(shipped_config_path()).models["tiny"])
    config = Path(tempfile.mkdtemp()) / "models.toml"
    config.write_text(f"""
[router]
max_tokens = 16
stall_timeout_s = {STALL_S}
first_token_timeout_s = {FIRST_TOKEN_S}
first_token_s_per_1k_tokens = 0.001
allowed_fails = 1000  # measure every failover; the breaker would skip the primary
[models.primary]
path = "{gemma}"
n_ctx = 4096
capabilities = ["generate", "embed"]
[models.fallback]
path = "{gemma}"
n_ctx = 4096
[routes]
code = ["primary", "fallback"]
reason = ["primary", "fallback"]
chat = ["primary", "fallback"]
embed = ["primary"]
""")
    figures: dict[str, object] = {}

    # cancel during a long prompt evaluation
    with ZetaDynamicRouter.from_toml(config) as router:
        router.generate("Hi", task="chat", max_tokens=1)
        worker = router._workers[("primary", False)]
        started = time.monotonic()
        router.generate(LONG_PROMPT, task="chat", max_tokens=1, first_token_timeout_s=120)
        prefill_s = time.monotonic() - started
        cancels = []
        for i in range(args.runs):
            token = CancelToken()
            at = 0.2 + 0.3 * i / max(1, args.runs - 1)  # spread over the evaluation
            threading.Timer(at, token.cancel).start()
            try:
                router.generate(f"{i} {LONG_PROMPT}", task="chat", cancel=token, max_tokens=1,
                                first_token_timeout_s=120)
                continue  # finished before the cancel (the prompt cache differs per run)
            except Cancelled:
                cancelled_at = time.monotonic()
            while worker.current is not None:
                time.sleep(0.0002)
            cancels.append(time.monotonic() - cancelled_at)
        figures["cancel"] = summary(cancels) | {"prompt_evaluation_s": round(prefill_s, 2)}

    # stall mid-answer, and hang in prompt evaluation. Part of the excess is the fallback's own
    # time to first token (evaluating its prompt): measured alone, interleaved, as `fallback_ttft`.
    healthy = ZetaDynamicRouter.from_toml(config, faults="")
    healthy.generate("Hi", task="chat", max_tokens=1)
    for fault, key in (("stall_after:3", "stall"), ("hang_prefill", "hang")):
        with ZetaDynamicRouter.from_toml(config, faults=f"primary={fault}") as router:
            router.generate("Hi", task="chat", max_tokens=1)  # loads the fallback
            excess, ttft = [], []
            for i in range(args.runs + 1):
                started = time.monotonic()
                next(e for e in healthy.stream(f"Tell me a story about a dog number {i}", task="chat")
                     if isinstance(e, TextChunk))
                if i:
                    ttft.append(time.monotonic() - started)
                started = last_primary = time.monotonic()
                for event in router.stream(f"Tell me a story about a cat number {i}", task="chat"):
                    if isinstance(event, TextChunk) and event.model == "primary":
                        last_primary = time.monotonic()
                    elif isinstance(event, TextChunk) and event.model == "fallback":
                        first_fallback = time.monotonic()
                        break
                budget, since = (STALL_S, last_primary) if key == "stall" else (FIRST_TOKEN_S, started)
                if i:  # the first run warms the fallback's prompt cache; not counted
                    excess.append(first_fallback - since - budget)
            figures[key] = summary(excess) | {"budget_s": budget,
                                              "fallback_ttft_ms_p50": summary(ttft)["ms_p50"]}
    healthy.close()

    import llama_cpp
    import platform
    figures["machine"] = {"cpu": platform.machine(), "python": platform.python_version(),
                          "llama_cpp_python": llama_cpp.__version__}
    text = json.dumps(figures, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
