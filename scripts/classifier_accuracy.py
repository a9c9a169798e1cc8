#!/usr/bin/env python3
"""Accuracy, confusion matrix, misclassified prompts and per-prompt latency of zeta_local.classifier.

Run from the repository root:  python scripts/classifier_accuracy.py [--reps 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABELLED = ROOT / "tests" / "data" / "labelled_prompts.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="timed classifications per prompt (default 200)")
    args = parser.parse_args()

    import zeta_local.classifier as clf
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    tasks = clf.TASKS

    confusion = {want: {got: 0 for got in tasks} for want in tasks}
    wrong = []
    for row in rows:
        result = clf.classify(row["prompt"])
        confusion[row["task"]][result.task] += 1
        if result.task != row["task"]:
            wrong.append((row, result))

    correct = len(rows) - len(wrong)
    print(f"accuracy: {correct}/{len(rows)} = {correct / len(rows):.3f}")
    print()
    print("confusion matrix (rows: label, columns: predicted)")
    print(f"{'':>10}" + "".join(f"{t:>8}" for t in tasks) + f"{'recall':>9}")
    for want in tasks:
        total = sum(confusion[want].values())
        recall = confusion[want][want] / total if total else 0.0
        print(f"{want:>10}" + "".join(f"{confusion[want][got]:>8}" for got in tasks) + f"{recall:>9.2f}")
    precisions = []
    for got in tasks:
        predicted = sum(confusion[want][got] for want in tasks)
        precisions.append(confusion[got][got] / predicted if predicted else 0.0)
    print(f"{'precision':>10}" + "".join(f"{p:>8.2f}" for p in precisions))
    print()
    print(f"misclassified ({len(wrong)}):")
    for row, result in wrong:
        print(f"  label {row['task']:<6} -> {result.reason}")
        print(f"      {row['prompt'][:120]!r}")
    print()

    # Latency: every prompt classified `reps` times, each call timed on its own.
    timings: list[int] = []
    for row in rows:
        prompt = row["prompt"]
        clf.classify(prompt)  # warm-up
        for _ in range(args.reps):
            start = time.perf_counter_ns()
            clf.classify(prompt)
            timings.append(time.perf_counter_ns() - start)
    timings.sort()
    p99 = timings[min(len(timings) - 1, int(0.99 * len(timings)))]
    print(f"latency over {len(rows)} prompts x {args.reps} reps: median {statistics.median(timings) / 1000:.1f} us, "
          f"p99 {p99 / 1000:.1f} us, max {timings[-1] / 1000:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
