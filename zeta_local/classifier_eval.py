"""Measuring the prompt classifier: accuracy, confusion, calibration and decision latency.

Shared by scripts/classifier_accuracy.py, the tests and `zeta-local bench`: each function takes
labelled rows ({"prompt", "task"}) and returns plain data, and `report_lines` renders it.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from zeta_local.bench_baseline import percentile
from zeta_local.classifier import Classification, classify
from zeta_local.classifier_rules import TASKS

# The labelled set, in a checkout of the repository (tests/data/classifier/README.md). The held-out
# part's file is named by its version: a spent set is folded into tuning and a new one written.
LABELLED_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "classifier"
TUNING_FILE = "tuning.jsonl"
HELDOUT_FILE = "heldout_v10.jsonl"

# Confidence bins of the reliability table: [lo, hi), the last one closed.
BIN_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
HIGH_CONFIDENCE = 0.9


def load_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class Bin:
    lo: float
    hi: float
    count: int
    accuracy: float  # NaN-free: 0.0 for an empty bin (count says so)
    mean_confidence: float


@dataclass
class Evaluation:
    n: int
    correct: int
    confusion: dict[str, dict[str, int]]  # label -> predicted -> count
    precision: dict[str, float]
    recall: dict[str, float]
    bins: list[Bin]
    ece: float  # expected calibration error: count-weighted |accuracy - mean confidence| over bins
    high_confidence: tuple[int, int]  # (right, total) among decisions with confidence >= HIGH_CONFIDENCE
    stages: dict[str, int]  # decisions per stage
    wrong: list[tuple[dict[str, str], Classification]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def high_confidence_accuracy(self) -> float:
        right, total = self.high_confidence
        return right / total if total else 1.0


def reliability(confidences: list[float], correct: list[bool],
                edges: tuple[float, ...] = BIN_EDGES) -> tuple[list[Bin], float]:
    """Per confidence bin: count, accuracy and mean confidence; and the expected calibration error."""
    bins = []
    ece = 0.0
    for i, (lo, hi) in enumerate(zip(edges, edges[1:])):
        last = i == len(edges) - 2
        members = [(c, r) for c, r in zip(confidences, correct) if lo <= c < hi or (last and c == hi)]
        if members:
            acc = sum(r for _, r in members) / len(members)
            mean = sum(c for c, _ in members) / len(members)
            ece += len(members) * abs(acc - mean)
        else:
            acc = mean = 0.0
        bins.append(Bin(lo, hi, len(members), acc, mean))
    return bins, ece / len(confidences) if confidences else 0.0


def evaluate(rows: Iterable[dict[str, str]],
             classifier: Callable[[str], Classification] = classify) -> Evaluation:
    rows = list(rows)
    confusion = {want: {got: 0 for got in TASKS} for want in TASKS}
    confidences, correct, wrong = [], [], []
    stages: dict[str, int] = {}
    for row in rows:
        result = classifier(row["prompt"])
        confusion[row["task"]][result.task] += 1
        right = result.task == row["task"]
        confidences.append(result.confidence)
        correct.append(right)
        stages[result.stage] = stages.get(result.stage, 0) + 1
        if not right:
            wrong.append((row, result))
    recall = {t: confusion[t][t] / max(1, sum(confusion[t].values())) for t in TASKS}
    precision = {t: confusion[t][t] / max(1, sum(confusion[w][t] for w in TASKS)) for t in TASKS}
    bins, ece = reliability(confidences, correct)
    high = [r for c, r in zip(confidences, correct) if c >= HIGH_CONFIDENCE]
    return Evaluation(len(rows), sum(correct), confusion, precision, recall, bins, ece,
                      (sum(high), len(high)), stages, wrong)


def latency(prompts: Iterable[str], reps: int = 50,
            classifier: Callable[[str], Classification] = classify) -> dict[str, float]:
    """Per-call decision time in microseconds over every prompt x reps (after one warm-up each)."""
    timings: list[int] = []
    for prompt in prompts:
        classifier(prompt)
        for _ in range(reps):
            start = time.perf_counter_ns()
            classifier(prompt)
            timings.append(time.perf_counter_ns() - start)
    if not timings:
        return {"p50_us": 0.0, "p99_us": 0.0, "max_us": 0.0, "calls": 0}
    return {"p50_us": statistics.median(timings) / 1000, "p99_us": percentile(timings, 0.99) / 1000,
            "max_us": max(timings) / 1000, "calls": len(timings)}


def long_prompts(rows: Iterable[dict[str, str]], chars: int = 4000) -> dict[str, str]:
    """One prompt of exactly `chars` characters per task, made of that task's labelled prompts."""
    out = {}
    rows = list(rows)
    for task in TASKS:
        parts = [r["prompt"] for r in rows if r["task"] == task]
        if not parts:
            continue
        text = ""
        while len(text) < chars:
            text += "\n\n".join(parts) + "\n\n"
        out[task] = text[:chars]
    return out


def report_lines(name: str, ev: Evaluation, *, list_wrong: bool = True) -> list[str]:
    lines = [f"== {name}: {ev.n} prompts",
             f"accuracy: {ev.correct}/{ev.n} = {ev.accuracy:.3f}",
             "decided by: " + ", ".join(f"{stage} {count} ({count / ev.n:.0%})"
                                        for stage, count in sorted(ev.stages.items())),
             "", "confusion matrix (rows: label, columns: predicted)",
             f"{'':>10}" + "".join(f"{t:>8}" for t in TASKS) + f"{'recall':>9}"]
    for want in TASKS:
        lines.append(f"{want:>10}" + "".join(f"{ev.confusion[want][got]:>8}" for got in TASKS)
                     + f"{ev.recall[want]:>9.3f}")
    lines.append(f"{'precision':>10}" + "".join(f"{ev.precision[t]:>8.3f}" for t in TASKS))
    lines += ["", "reliability (confidence bin: count, accuracy, mean confidence)"]
    for b in ev.bins:
        close = "]" if b.hi == BIN_EDGES[-1] else ")"
        acc = f"{b.accuracy:.3f}" if b.count else "  -  "
        mean = f"{b.mean_confidence:.3f}" if b.count else "  -  "
        lines.append(f"  [{b.lo:.2f}, {b.hi:.2f}{close}  {b.count:>5}  {acc}  {mean}")
    right, total = ev.high_confidence
    lines.append(f"expected calibration error {ev.ece:.3f}; confidence >= {HIGH_CONFIDENCE}: "
                 f"{right}/{total} right ({ev.high_confidence_accuracy:.3f})")
    if list_wrong:
        lines += ["", f"misclassified ({len(ev.wrong)}):"]
        for row, result in ev.wrong:
            lines.append(f"  label {row['task']:<6} -> {result.reason}")
            lines.append(f"      {row['prompt'][:140]!r}")
    return lines
