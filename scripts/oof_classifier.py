#!/usr/bin/env python3
"""Out-of-fold (cross-validated) accuracy of the whole classifier on the tuning prompts only.

Run from the repository root:  python scripts/oof_classifier.py [--lam 1e-6] [--class-weights 2,1,1] [--chars 2,3,4,5]
                                    [--min-docs 3] [--no-shape] [--no-glosses] [--misses FILE] [--dump FILE.npz]

The yardstick for choosing changes to rules, features or training: the learned stage is fitted
on 4 folds and predicts the 5th (the folds and gate rule of classifier_training.train), the
rules decide where their strength reaches the gate, and the result is scored per class. The
held-out part is never read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's zeta_local, whatever is installed

from zeta_local import classifier_rules as rules  # noqa: E402
from zeta_local import classifier_training as ct  # noqa: E402
from zeta_local import learned_classifier as learned  # noqa: E402

TUNING = ROOT / "tests" / "data" / "classifier" / "tuning.jsonl"
# The sources split between tuning and held-out (the data README's split rule 5): their tuning
# rows are the ones most like the held-out prompts.
SPLIT_SOURCES = frozenset({"zeta-handwritten-v1", "zeta-handwritten-v2", "gsm8k", "bbh", "mbpp", "humaneval",
                           "dolly-15k"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuning", type=Path, default=TUNING)
    parser.add_argument("--lam", type=float, nargs="+", default=[1e-6])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class-weights", type=lambda s: tuple(float(x) for x in s.split(",")), default=None,
                        help="per-task loss weights code,reason,chat (default: none, the plain fit)")
    parser.add_argument("--chars", type=lambda s: tuple(int(x) for x in s.split(",")), default=None,
                        help="character n-gram lengths, e.g. 3,4,5 (default: the shipped CHAR_NS)")
    parser.add_argument("--min-docs", type=int, default=None,
                        help="least training prompts a bucket needs to get a weight (default: the shipped MIN_DOCS)")
    parser.add_argument("--no-shape", action="store_true",
                        help="leave out the prompt-shape features (as feature version 3)")
    parser.add_argument("--no-glosses", action="store_true",
                        help="leave out the English glosses of other languages' words (as feature version 4)")
    parser.add_argument("--misses", type=Path, help="write the out-of-fold misses (tuning only) here as jsonl")
    parser.add_argument("--dump", type=Path,
                        help="save every row's out-of-fold logits, rule task and strength here (.npz), "
                             "to try decision policies without refitting")
    args = parser.parse_args()

    if args.chars:
        try:
            learned.use_char_ngrams(args.chars)
        except ValueError as exc:
            parser.error(str(exc))
    if args.no_shape:
        learned.use_shape_features(False)
    if args.no_glosses:
        learned.use_glosses(False)
    if args.min_docs is not None:
        if args.min_docs < 1:
            parser.error("--min-docs must be at least 1")
        ct.MIN_DOCS = args.min_docs
    rows = [json.loads(line) for line in args.tuning.read_text(encoding="utf-8").splitlines() if line.strip()]
    t0 = time.time()
    data = ct.featurize([r["prompt"] for r in rows], [r["task"] for r in rows])
    split = np.array([r.get("source") in SPLIT_SOURCES for r in rows])
    print(f"featurized {data.n} prompts in {time.time() - t0:.0f} s")
    fold = ct.writer_folds([r["source"] for r in rows], data.y, ct.FOLDS, args.seed)
    strength = np.array([d.strength for d in data.decisions])
    rule_task = np.array([rules.TASKS.index(d.task) for d in data.decisions])
    for lam in args.lam:
        t0 = time.time()
        oof = ct.out_of_fold(data, lam, fold, args.class_weights)
        learned_task = oof.argmax(axis=1)
        scored = [(float(np.where(strength >= g, rule_task == data.y, learned_task == data.y).mean()), g)
                  for g in ct.GATES]
        top = max(a for a, _ in scored)
        gate = max(g for a, g in scored if a >= top - 1e-9)
        pred = np.where(strength >= gate, rule_task, learned_task)
        recall = {t: float((pred[data.y == k] == k).mean()) for k, t in enumerate(rules.TASKS)}
        conf = np.zeros((3, 3), dtype=int)
        np.add.at(conf, (data.y, pred), 1)
        print(f"L2 {lam:g}: learned-only OOF accuracy {(learned_task == data.y).mean():.4f}; gate {gate:.2f} "
              f"({(strength >= gate).mean():.2f} by rules); combined OOF accuracy {(pred == data.y).mean():.4f} "
              f"({int((pred == data.y).sum())}/{data.n}); recall "
              + " ".join(f"{t} {r:.4f}" for t, r in recall.items())
              + f"; confusion rows=label {conf.tolist()} [{time.time() - t0:.0f} s]")
        # The rows from the split sources (hand-written v1/v2 and the public sets, as in held-out).
        sp = split
        srecall = {t: float((pred[sp & (data.y == k)] == k).mean()) for k, t in enumerate(rules.TASKS)}
        print(f"    split-source rows ({sp.sum()}): accuracy {(pred[sp] == data.y[sp]).mean():.4f} "
              f"({int((pred[sp] == data.y[sp]).sum())}/{sp.sum()}); recall "
              + " ".join(f"{t} {r:.4f}" for t, r in srecall.items()))
        # The rows of the spent held-out sets (written as a new held-out set is): the nearest
        # thing in tuning to the next one.
        ho = np.array(["heldout" in (r.get("source") or "") for r in rows])
        hrecall = {t: float((pred[ho & (data.y == k)] == k).mean()) for k, t in enumerate(rules.TASKS)}
        print(f"    spent held-out rows ({ho.sum()}): accuracy {(pred[ho] == data.y[ho]).mean():.4f} "
              f"({int((pred[ho] == data.y[ho]).sum())}/{ho.sum()}); recall "
              + " ".join(f"{t} {r:.4f}" for t, r in hrecall.items()))
        if args.dump:
            np.savez_compressed(args.dump, oof=oof, y=data.y, strength=strength, rule_task=rule_task,
                                signals=np.array(["|".join(d.signals) for d in data.decisions]),
                                source=np.array([r.get("source") or "" for r in rows]))
        if args.misses:
            with args.misses.open("w", encoding="utf-8") as f:
                for i in np.flatnonzero(pred != data.y):
                    f.write(json.dumps({"task": rows[i]["task"], "pred": rules.TASKS[pred[i]],
                                        "source": rows[i].get("source"),
                                        "by": "rules" if strength[i] >= gate else "learned",
                                        "signals": list(data.decisions[i].signals),
                                        "prompt": rows[i]["prompt"][:300]}, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
