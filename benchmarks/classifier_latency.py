"""Fixed latency harness for classify(): p50/p99 over REPS calls of each long prompt, and over
every tuning prompt. Also times the rules stage (decide) and the learned features alone. The
long prompts: 4,000 characters of each task's tuning prompts and of its held-out ones (timed
only: the held-out code one, 34 rule signals, was the slowest), and the adversarial ones of
the snapshot test.

    python benchmarks/classifier_latency.py [--reps 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from zeta_local import classifier_eval as ce  # noqa: E402
from zeta_local import classifier_rules as rules  # noqa: E402
from zeta_local import learned_classifier as learned  # noqa: E402
from zeta_local.classifier import classify  # noqa: E402
from test_classifier_snapshot import TUNING, adversarial  # noqa: E402


def stats(fn, prompts, reps):
    """(p50, p99) in microseconds of `fn` over every prompt x reps."""
    lat = ce.latency(prompts, reps, fn)
    return lat["p50_us"], lat["p99_us"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = ce.load_rows(TUNING)
    long = {f"long_{k}": v for k, v in ce.long_prompts(rows).items()}
    held_out = ce.load_rows(ce.LABELLED_DIR / ce.HELDOUT_FILE)
    long |= {f"held_out_{k}": v for k, v in ce.long_prompts(held_out).items()}
    adv = adversarial()
    for k in ("a10k", "code4k", "prose4k", "digits_ops4k", "log4k", "mixed_long"):
        long[k] = adv[k]

    def decide(p):
        return rules.decide(rules.scan_text(p))

    def features(p):
        t = rules.scan_text(p)
        return learned.extract(t, rules.decide(t))

    gc.disable()
    out = {"load": os.getloadavg()[0]}
    print(f"load {out['load']:.2f}; reps {args.reps}")
    print(f"{'prompt':<16}{'classify p50':>14}{'p99':>10}{'rules p50':>12}{'p99':>10}{'feat p50':>10}{'p99':>10}  task/stage")
    for name, p in long.items():
        c = classify(p)
        a = stats(classify, [p], args.reps)
        b = stats(decide, [p], args.reps)
        f = stats(features, [p], max(1, args.reps // 5))
        out[name] = {"classify": a, "rules": b, "features": f}
        print(f"{name:<16}{a[0]:>14.1f}{a[1]:>10.1f}{b[0]:>12.1f}{b[1]:>10.1f}{f[0]:>10.1f}{f[1]:>10.1f}  {c.task}/{c.stage}")
    prompts = [r["prompt"] for r in rows]
    a = stats(classify, prompts, 20)
    b = stats(decide, prompts, 20)
    out["tuning"] = {"classify": a, "rules": b}
    print(f"{'tuning (all)':<16}{a[0]:>14.1f}{a[1]:>10.1f}{b[0]:>12.1f}{b[1]:>10.1f}")
    out["load_end"] = os.getloadavg()[0]
    print(f"load at end {out['load_end']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
