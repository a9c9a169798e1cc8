"""The `routing` section of `zeta-local bench`: how well and how fast requests are routed.

- The classifier on the held-out part of the labelled set (tests/data/classifier/, so a
  checkout's): accuracy, recall, the reliability table, and its decision time.
- The semantic stage on the same prompts: what it changes among the uncertain ones, and what
  it costs (full runs only: the examples are embedded once, then cached).
- Conversation affinity: the time to the first token of a conversation's second turn, with
  affinity on and off, on one real model (below).

Two router entries, "a" and "b", on the same GGUF file (one copy of the weights, a context
each). Turn 1 (a long-ish pasted file and a question about it: code) goes to "a"; turn 2 (a
short follow-up the classifier calls chat) goes to "b" without affinity, which must evaluate
the whole conversation, and stays on "a" with it, whose KV cache holds the conversation up to
its answer (llama-cpp-python reuses the longest common token prefix with the previous call),
so that only the follow-up's own tokens are evaluated.

Pairs are interleaved (which side goes first alternates), on two routers sharing one backend,
each conversation opening with its own number so that no context holds a previous pair's
conversation. Run it alone with `python -m zeta_local.bench_routing [--pairs N] [--json PATH]`;
`measure_affinity()` is the function a `routing` section of `zeta-local bench` calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

FOLLOW_UP = "Thanks! Can you say that more briefly?"


def measure_routing(model_path: Path, work: Path, *, quick: bool,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole section; parts that cannot run here say why in a `note`."""
    from zeta_local.classifier_eval import HELDOUT_FILE, LABELLED_DIR, load_rows

    out: dict[str, Any] = {}
    held_out = LABELLED_DIR / HELDOUT_FILE
    if held_out.exists():
        rows = load_rows(held_out)
        out["classifier"] = measure_classifier(rows, reps=10 if quick else 50)
        out["semantic"] = {"note": "full runs only (--quick skips it)"} if quick else \
            measure_semantic(model_path, work, rows, progress)
    else:
        out["classifier"] = out["semantic"] = {
            "note": f"no labelled set at {held_out}: run the bench from a checkout of the repository"}
    from zeta_local.errors import ZetaError
    from zeta_local.gguf_info import read_gguf_info

    # The pasted file is about 85 tokens a function for a real tokenizer; the generated test
    # models spend a token a character and hold 2,048, so they get a file of one function.
    functions = 14 if (read_gguf_info(model_path).context_length or 0) >= 4096 else 1
    try:
        out["affinity"] = measure_affinity(model_path, work, pairs=3 if quick else 7,
                                           functions=functions, progress=progress)
    except ZetaError as exc:
        out["affinity"] = {"note": f"could not run on {model_path.name}: {exc}"}
    return out


def measure_classifier(rows: list[dict[str, str]], reps: int) -> dict[str, Any]:
    """Accuracy, recall, reliability and decision time on labelled rows (the held-out part)."""
    from zeta_local.classifier_eval import evaluate, latency, long_prompts

    ev = evaluate(rows)
    long = {task: latency([prompt], max(reps, 200)) for task, prompt in long_prompts(rows).items()}
    return {
        "prompts": ev.n, "accuracy": round(ev.accuracy, 4),
        "recall": {t: round(r, 3) for t, r in ev.recall.items()},
        "precision": {t: round(p, 3) for t, p in ev.precision.items()},
        "reliability": [{"bin": f"[{b.lo:.2f}, {b.hi:.2f}{']' if b.hi == 1 else ')'}", "count": b.count,
                         "accuracy": round(b.accuracy, 3), "mean_confidence": round(b.mean_confidence, 3)}
                        for b in ev.bins],
        "ece": round(ev.ece, 4),
        "confident_right": {"right": ev.high_confidence[0], "of": ev.high_confidence[1]},
        "stages": ev.stages,
        "decision_us": {k: round(v, 1) for k, v in latency([r["prompt"] for r in rows], reps).items()},
        "decision_us_4000_chars": {t: {"p50": round(v["p50_us"], 1), "p99": round(v["p99_us"], 1)}
                                   for t, v in long.items()},
    }


def measure_semantic(model_path: Path, work: Path, rows: list[dict[str, str]],
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The classifier alone vs with the semantic stage (model_path embedding), on `rows`."""
    from zeta_local import ZetaDynamicRouter
    from zeta_local.bench_baseline import percentile
    from zeta_local.classifier import classify
    from zeta_local.config import load_config

    config = work / "routing-semantic.toml"
    config.write_text(f'[router]\nsemantic_routing = true\nmetrics = false\n\n[models.m]\npath = {json.dumps(str(model_path))}\n'
                      'capabilities = ["generate", "embed"]\n\n'
                      '[routes]\ncode = ["m"]\nreason = ["m"]\nchat = ["m"]\nembed = ["m"]\n')
    with ZetaDynamicRouter(load_config(config)) as router:
        threshold = router.config.router.uncertain_below
        router.preload("m", embedding=True)
        started = time.perf_counter()
        router.route("hmm")  # too little to go on: uncertain, so it starts the examples' embedding
        router._semantic.wait_ready(1800)
        index_s = time.perf_counter() - started
        if progress:
            progress(f"semantic index ready in {index_s:.1f} s")
        uncertain = decided = right_before = right_after = correct = 0
        timings = []
        for row in rows:
            found = classify(row["prompt"])
            correct += found.task == row["task"]
            if found.confidence >= threshold:
                continue
            uncertain += 1
            t0 = time.perf_counter()
            decision = router.route(row["prompt"])
            timings.append((time.perf_counter() - t0) * 1000)
            if "(semantic," in decision.reason:
                decided += 1
                right_before += found.task == row["task"]
                right_after += decision.task == row["task"]
    return {
        "prompts": len(rows), "uncertain": uncertain, "decided_by_semantic": decided,
        "of_those_right_classifier": right_before, "of_those_right_semantic": right_after,
        "accuracy_classifier": round(correct / len(rows), 4),
        "accuracy_with_semantic": round((correct - right_before + right_after) / len(rows), 4),
        "index_build_s": round(index_s, 1),
        "route_ms_uncertain": {"p50": round(statistics.median(timings), 1) if timings else None,
                               "p99": round(percentile(timings, 0.99), 1) if timings else None},
    }


def pasted_file(functions: int = 14) -> str:
    """A plausible Python module of about 85 tokens per function, the same on every run."""
    parts = ['"""Inventory helpers: prices, stock levels and reorder points."""', "",
             "from dataclasses import dataclass", "", "",
             "@dataclass\nclass Item:\n    sku: str\n    price: float\n    stock: int\n    reorder_at: int", ""]
    for i in range(functions):
        parts.append(
            f"def check_{i}(items: list[Item], threshold: int = {i + 3}) -> list[str]:\n"
            f'    """The SKUs of group {i} whose stock is under {i + 3} or their reorder point."""\n'
            f"    low = [it.sku for it in items if it.stock < max(threshold, it.reorder_at)]\n"
            f"    return sorted(low)[:{i + 5}]\n")
    return "\n".join(parts)


def first_question(n: int, source: str) -> str:
    return (f"Review request {n}. Here is a Python file:\n```python\n{source}\n```\n"
            f"Explain what this Python code does.")


def measure_affinity(model_path: Path, work: Path | None = None, *, pairs: int = 7,
                     functions: int = 14, turn1_tokens: int = 32, turn2_tokens: int = 8,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Median time to first token of turn 2 with affinity on and off, over `pairs` interleaved
    pairs, and their ratio (off / on). Greedy sampling; times in milliseconds."""
    from zeta_local import Done, TextChunk, ZetaDynamicRouter
    from zeta_local.backend import LlamaCppBackend
    from zeta_local.config import load_config

    work = Path(work or tempfile.mkdtemp(prefix="zeta-bench-routing-"))
    source = pasted_file(functions)
    backend = LlamaCppBackend()  # one copy of the weights for the four contexts
    routers = {on: ZetaDynamicRouter(load_config(_write_config(work, model_path, on)), backend=backend)
               for on in (True, False)}
    sampling = {"temperature": 0.0, "seed": 1}
    try:
        for router in routers.values():
            router.preload("a")
            router.preload("b")

        def pair_side(on: bool, n: int) -> dict[str, Any]:
            router = routers[on]
            turn1 = [{"role": "user", "content": first_question(n, source)}]
            first = router.chat(turn1, max_tokens=turn1_tokens, **sampling)
            turn2 = turn1 + [{"role": "assistant", "content": first.text},
                             {"role": "user", "content": FOLLOW_UP}]
            reusable = _reusable_prefix(router, "a", turn2)
            started = time.perf_counter()
            ttft = None
            for event in router.stream(turn2, max_tokens=turn2_tokens, **sampling):
                if ttft is None and isinstance(event, (TextChunk, Done)):
                    ttft = time.perf_counter() - started
                if isinstance(event, Done):
                    result = event.result
            return {"turn1_model": first.model, "turn2_model": result.model, "ttft_s": ttft,
                    "turn2_prompt_tokens": result.usage.prompt_tokens, "reusable_on_a": reusable,
                    "route_reason": result.route.reason, "text": result.text}

        pair_side(True, 0), pair_side(False, 0)  # warm up, unrecorded (each side its own router)
        rows = []
        for i in range(1, pairs + 1):
            order = (True, False) if i % 2 else (False, True)
            sides = {on: pair_side(on, i) for on in order}
            rows.append(sides)
            if progress:
                progress(f"pair {i}/{pairs}: on {sides[True]['ttft_s'] * 1000:.0f} ms, "
                         f"off {sides[False]['ttft_s'] * 1000:.0f} ms")
    finally:
        for router in routers.values():
            router.close()
    on = [r[True]["ttft_s"] * 1000 for r in rows]
    off = [r[False]["ttft_s"] * 1000 for r in rows]
    last = rows[-1]
    return {
        "model_path": str(model_path), "pairs": pairs,
        "turn2_prompt_tokens": last[True]["turn2_prompt_tokens"],
        "kv_prefix_reusable_tokens": last[True]["reusable_on_a"],
        "turn1_tokens": turn1_tokens, "turn2_tokens": turn2_tokens,
        "answered_by": {"on": sorted({r[True]["turn2_model"] for r in rows}),
                        "off": sorted({r[False]["turn2_model"] for r in rows})},
        "route_reason_on": last[True]["route_reason"], "route_reason_off": last[False]["route_reason"],
        "ttft_ms_on": [round(x, 1) for x in on], "ttft_ms_off": [round(x, 1) for x in off],
        "ttft_ms_on_median": round(statistics.median(on), 1),
        "ttft_ms_off_median": round(statistics.median(off), 1),
        "ratio_off_over_on": round(statistics.median(off) / statistics.median(on), 2),
        "pair_ratios_median": round(statistics.median(b / a for a, b in zip(on, off)), 2),
        # Greedy, the same conversation: the context that reused its cache must answer as the
        # one that evaluated everything afresh (a check that the reuse is sound).
        "same_answer_on_off": sum(r[True]["text"] == r[False]["text"] for r in rows),
    }


def _write_config(work: Path, model_path: Path, affinity: bool) -> Path:
    """Models "a" and "b" on one file; code goes to "a", chat (and reason) to "b"."""
    table = (f'path = {json.dumps(str(model_path))}\nchat_format = "plain"\nn_ctx = 4096\n'
             'capabilities = ["generate", "embed"]\nrepeat_penalty = 1.1\n')
    text = (f"[router]\naffinity = {'true' if affinity else 'false'}\nuncertain_below = 0\nmetrics = false\n\n"
            f"[models.a]\n{table}\n[models.b]\n{table}\n"
            '[routes]\ncode = ["a", "b"]\nchat = ["b", "a"]\nreason = ["b", "a"]\nembed = ["a"]\n')
    path = work / f"routing-affinity-{'on' if affinity else 'off'}.toml"
    path.write_text(text)
    return path


def _reusable_prefix(router: Any, name: str, messages: list[dict[str, str]]) -> int:
    """How many tokens of the request's prompt model `name`'s context holds already (the
    longest common prefix llama-cpp-python will reuse), read between requests."""
    model = router._pool.workers[(name, False)].model
    llm = model._llm
    tokens = llm.tokenize(model.render_chat(messages).text.encode("utf-8"), add_bos=True, special=True)
    held = list(llm._input_ids[:llm.n_tokens])
    common = 0
    for a, b in zip(held, tokens):
        if a != b:
            break
        common += 1
    return common


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zeta_local.bench_routing",
                                     description="turn 2's first token with affinity on and off; "
                                                 "with --all, the whole routing section of the bench")
    parser.add_argument("--config", help="models.toml whose `tiny` (or --model) model to use")
    parser.add_argument("--model", default="tiny", help="the model of models.toml to measure")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--functions", type=int, default=14,
                        help="functions in the pasted file (about 85 tokens each)")
    parser.add_argument("--all", action="store_true",
                        help="also the classifier on the held-out prompts and the semantic stage")
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args(argv)
    from zeta_local.config import load_config
    from zeta_local.sources import find_model_file

    path = find_model_file(load_config(args.config).models[args.model])
    assert path is not None

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.all:
        result = measure_routing(path, Path(tempfile.mkdtemp(prefix="zeta-bench-routing-")), quick=False,
                                 progress=progress)
    else:
        result = measure_affinity(path, pairs=args.pairs, functions=args.functions, progress=progress)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
